//! `builtin-shapes`: a procedural dataset that needs no download. Ten classes of textured shapes
//! (circle, ring, square, frame, triangle, cross, star, ellipse, crescent, pair of discs) at a
//! random position, size and rotation, filled with a solid colour or stripes, on a gradient
//! background with value noise; 64x64 RGB, 2x2 supersampled edges.
//!
//! Every image derives from (seed, split, index) alone, so any image can be regenerated and the
//! dataset is identical whatever the number of threads.

use std::f32::consts::PI;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::SourceFormat;
use super::{Payload, Record, Source, SourceSplit};

pub const SIDE: u32 = 64;
/// Train images per class; the test split gets a fifth as many (5,000 train, 1,000 test).
pub const DEFAULT_PER_CLASS: usize = 500;
pub const CLASSES: [&str; 10] = [
    "circle", "ring", "square", "frame", "triangle", "cross", "star", "ellipse", "crescent", "pair",
];

/// The dataset as a packable source.
pub fn source(seed: u64, per_class: usize) -> Source {
    let split = |name: &str, split_id: u64, n: usize| {
        let records = (0..n).map(move |i| {
            let label = (i % CLASSES.len()) as i32;
            Ok(Record {
                index: i as u64,
                label,
                origin: format!("builtin-shapes: {split_id}/{i}"),
                payload: Payload::Render(Box::new(move || {
                    render(seed, split_id, i as u64, label as usize)
                })),
            })
        });
        SourceSplit {
            name: name.to_string(),
            len: n,
            records: Box::new(records),
            not_images: Default::default(),
        }
    };
    Source {
        format: SourceFormat::BuiltinShapes,
        classes: Some(CLASSES.iter().map(|s| s.to_string()).collect()),
        splits: vec![
            split("train", 0, per_class * CLASSES.len()),
            split("test", 1, (per_class / 5).max(1) * CLASSES.len()),
        ],
    }
}

/// Whether the point (u, v), in the shape's frame scaled to its radius, lies inside `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    let r = (u * u + v * v).sqrt();
    match class {
        0 => r <= 1.0,
        1 => (0.55..=1.0).contains(&r),
        2 => u.abs().max(v.abs()) <= 0.75,
        3 => (0.5..=0.8).contains(&u.abs().max(v.abs())),
        4 => [-PI / 2.0, PI / 6.0, 5.0 * PI / 6.0]
            .iter()
            .all(|a| u * a.cos() + v * a.sin() <= 0.5),
        5 => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        6 => {
            let t = (v.atan2(u) / (2.0 * PI) * 5.0).rem_euclid(1.0);
            r <= 0.4 + 0.6 * (2.0 * t - 1.0).abs()
        }
        7 => u * u + (v / 0.45) * (v / 0.45) <= 1.0,
        8 => r <= 1.0 && (u - 0.45) * (u - 0.45) + v * v > 0.64,
        _ => [(-0.55f32), 0.55]
            .iter()
            .any(|c| (u - c) * (u - c) + v * v <= 0.16),
    }
}

fn render(seed: u64, split: u64, index: u64, class: usize) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ split.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    let colour = |rng: &mut ChaCha8Rng| {
        [
            rng.random::<f32>(),
            rng.random::<f32>(),
            rng.random::<f32>(),
        ]
    };
    let (bg_a, bg_b) = (colour(&mut rng), colour(&mut rng));
    let mut fill_a = colour(&mut rng);
    let fill_b = colour(&mut rng);
    let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    if (luma(fill_a) - luma(bg_a) * 0.5 - luma(bg_b) * 0.5).abs() < 0.25 {
        fill_a = fill_a.map(|c| 1.0 - c);
    }
    let striped = rng.random_bool(0.5);
    let stripe_angle = rng.random_range(0.0..PI);
    let stripe_period = rng.random_range(4.0..10.0f32);
    let gradient_angle = rng.random_range(0.0..2.0 * PI);
    let side = SIDE as f32;
    let radius = rng.random_range(0.22..0.42) * side;
    let cx = rng.random_range(radius..side - radius);
    let cy = rng.random_range(radius..side - radius);
    let rotation = rng.random_range(0.0..2.0 * PI);
    let noise: Vec<f32> = (0..81).map(|_| rng.random_range(-0.12..0.12)).collect();
    let (sin, cos) = rotation.sin_cos();
    RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let (x, y) = (x as f32, y as f32);
        let t = ((x / side - 0.5) * gradient_angle.cos()
            + (y / side - 0.5) * gradient_angle.sin()
            + 0.5)
            .clamp(0.0, 1.0);
        let n = value_noise(&noise, x / 8.0, y / 8.0);
        let bg: [f32; 3] = std::array::from_fn(|c| bg_a[c] * (1.0 - t) + bg_b[c] * t + n);
        let mut cover = 0.0;
        for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
            let (px, py) = (x + dx - cx, y + dy - cy);
            let (u, v) = (
                (px * cos + py * sin) / radius,
                (-px * sin + py * cos) / radius,
            );
            if inside(class, u, v) {
                cover += 0.25;
            }
        }
        let stripe = ((x * stripe_angle.cos() + y * stripe_angle.sin()) / stripe_period)
            .rem_euclid(1.0)
            < 0.5;
        let fill = if striped && stripe { fill_b } else { fill_a };
        image::Rgb(std::array::from_fn(|c| {
            ((bg[c] * (1.0 - cover) + fill[c] * cover).clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}

/// Bilinear interpolation in a 9x9 grid of random values (a smooth texture).
fn value_noise(grid: &[f32], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor().min(7.0) as usize, y.floor().min(7.0) as usize);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |i: usize, j: usize| grid[j * 9 + i];
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_image_other_seed_other_image() {
        assert_eq!(render(3, 0, 17, 4), render(3, 0, 17, 4));
        assert_ne!(render(3, 0, 17, 4), render(4, 0, 17, 4));
    }

    #[test]
    fn every_class_draws_a_visible_shape() {
        for class in 0..CLASSES.len() {
            let covered = (0..400)
                .filter(|i| {
                    let (u, v) = ((i % 20) as f32 / 10.0 - 1.0, (i / 20) as f32 / 10.0 - 1.0);
                    inside(class, u, v)
                })
                .count();
            assert!(
                (20..380).contains(&covered),
                "class {class} covers {covered} of 400"
            );
        }
    }
}
