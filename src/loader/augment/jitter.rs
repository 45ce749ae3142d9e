//! ColorJitter as fastssl (FFCV-SSL's `ColorJitter`, the paper's recipe) applies it, with
//! probability `p`: factors drawn uniformly from `[max(0, 1-x), 1+x]` for brightness, contrast
//! and saturation (hue shift from `[-h, h]`), applied in that fixed order, clamping to 0..255
//! after each step.
//!
//! brightness: x * b; contrast: blend with the image's mean luma; saturation: blend with each
//! pixel's luma truncated to an integer (fastssl stores that grey in its uint8 output first).
//! The jittered image is truncated to integers, as fastssl's uint8 store does. A strength of 0
//! turns its step off. A non-zero `hue` departs from fastssl (whose recipe has none, and whose
//! hue step is a rotation in RGB): it shifts H in HSV space as torchvision does.

use rand::Rng;

use super::{truncate, Planes, ViewRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    pub p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

/// The factors of one application; 1 (0 for hue) where a step is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterFactors {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl ColorJitter {
    /// Returns whether it was applied.
    pub fn apply(&self, rng: &mut ViewRng, img: &mut Planes) -> bool {
        match self.sample(rng) {
            Some(factors) => {
                apply_factors(img, &factors);
                true
            }
            None => false,
        }
    }

    /// Whether to jitter (probability `p`) and with which factors.
    pub fn sample(&self, rng: &mut ViewRng) -> Option<JitterFactors> {
        if rng.random::<f32>() >= self.p {
            return None;
        }
        let mut factor = |x: f32| {
            if x > 0.0 {
                rng.random_range((1.0 - x).max(0.0)..=1.0 + x)
            } else {
                1.0
            }
        };
        let (brightness, contrast, saturation) = (
            factor(self.brightness),
            factor(self.contrast),
            factor(self.saturation),
        );
        let hue = if self.hue > 0.0 {
            rng.random_range(-self.hue..=self.hue)
        } else {
            0.0
        };
        Some(JitterFactors {
            brightness,
            contrast,
            saturation,
            hue,
        })
    }
}

/// Brightness, contrast, saturation, hue, in that order, then truncation to integers. The first
/// three run per pixel in f64, as fastssl's numba code does, so that its truncations fall on the
/// same side of every integer.
pub fn apply_factors(img: &mut Planes, f: &JitterFactors) {
    let (b, c, s) = (
        f64::from(f.brightness),
        f64::from(f.contrast),
        f64::from(f.saturation),
    );
    let clip = |v: f64| v.clamp(0.0, 255.0);
    let bright = |v: f32| {
        if b != 1.0 {
            clip(b * f64::from(v))
        } else {
            f64::from(v)
        }
    };
    let n = img.area();
    // Contrast blends with the mean luma of the image as brightness left it.
    let mean = if c != 1.0 {
        let (r, g, bl) = (&img.data[..n], &img.data[n..2 * n], &img.data[2 * n..]);
        let sum: f64 = (0..n)
            .map(|i| luma64(bright(r[i]), bright(g[i]), bright(bl[i])))
            .sum();
        sum / n as f64
    } else {
        0.0
    };
    let hue_after = f.hue != 0.0;
    let (r, g, bl) = img.rgb_mut();
    for ((r, g), bl) in r.iter_mut().zip(g.iter_mut()).zip(bl.iter_mut()) {
        let mut px = [bright(*r), bright(*g), bright(*bl)];
        if c != 1.0 {
            px = px.map(|v| clip(c * v + (1.0 - c) * mean));
        }
        if s != 1.0 {
            // fastssl stores the grey in its uint8 output first: truncated.
            let gray = (1.0 - s) * luma64(px[0], px[1], px[2]).trunc();
            px = px.map(|v| clip(s * v + gray));
        }
        // Truncated now unless hue follows: an f64 just below an integer may round up to it in f32.
        let store = |v: f64| {
            if hue_after {
                v as f32
            } else {
                v.trunc() as f32
            }
        };
        (*r, *g, *bl) = (store(px[0]), store(px[1]), store(px[2]));
    }
    if hue_after {
        hue(img, f.hue);
        for v in &mut img.data {
            *v = truncate(*v);
        }
    }
}

/// fastssl's luma in f64 (numba computes its `0.2989 * img` in double precision).
pub fn luma64(r: f64, g: f64, b: f64) -> f64 {
    0.2989 * r + 0.5870 * g + 0.1140 * b
}

pub fn hue(img: &mut Planes, shift: f32) {
    let (r, g, b) = img.rgb_mut();
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        (*r, *g, *b) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
    }
}

/// torchvision's `_rgb2hsv`: h and s in 0..1, v in the input's scale.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let chroma = max - min;
    if chroma == 0.0 {
        return (0.0, 0.0, max);
    }
    let s = chroma / max;
    let (rc, gc, bc) = ((max - r) / chroma, (max - g) / chroma, (max - b) / chroma);
    let h = if max == r {
        bc - gc
    } else if max == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, max)
}

/// torchvision's `_hsv2rgb`.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 255.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 255.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 255.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(r: f32, g: f32, b: f32) -> Planes {
        Planes {
            side: 1,
            data: vec![r, g, b],
        }
    }

    #[test]
    fn hsv_round_trips() {
        for &(r, g, b) in &[
            (255.0, 0.0, 0.0),
            (10.0, 200.0, 90.0),
            (30.0, 30.0, 30.0),
            (0.0, 40.0, 250.0),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!(
                (r - r2).abs() < 1e-3 && (g - g2).abs() < 1e-3 && (b - b2).abs() < 1e-3,
                "{r},{g},{b}"
            );
        }
    }

    #[test]
    fn hue_shift_by_a_third_rotates_primaries() {
        let mut red = px(255.0, 0.0, 0.0);
        hue(&mut red, 1.0 / 3.0);
        assert!(
            (red.data[1] - 255.0).abs() < 1e-2 && red.data[0].abs() < 1e-2,
            "{:?}",
            red.data
        );
    }

    fn factors(brightness: f32, contrast: f32, saturation: f32) -> JitterFactors {
        JitterFactors {
            brightness,
            contrast,
            saturation,
            hue: 0.0,
        }
    }

    #[test]
    fn saturation_zero_is_gray_and_contrast_zero_is_the_mean() {
        let mut p = px(200.0, 100.0, 50.0);
        apply_factors(&mut p, &factors(1.0, 1.0, 0.0));
        assert!(
            p.data[0] == p.data[1] && p.data[1] == p.data[2],
            "{:?}",
            p.data
        );
        let mut two = Planes {
            side: 2,
            data: vec![
                0.0, 100.0, 0.0, 100.0, 0.0, 100.0, 0.0, 100.0, 0.0, 100.0, 0.0, 100.0,
            ],
        };
        // fastssl's luma weights sum to 0.9999: the mean is 49.995, truncated to 49.
        apply_factors(&mut two, &factors(1.0, 0.0, 1.0));
        assert!(two.data.iter().all(|&v| v == 49.0), "{:?}", two.data);
        apply_factors(&mut two, &factors(10.0, 1.0, 1.0));
        assert!(two.data.iter().all(|&v| v == 255.0));
    }

    /// A 2x2 image through fastssl's ColorJitter body (tools/reference_torch.py's
    /// `color_jitter`): brightness, contrast, saturation in that order, uint8 truncation.
    #[test]
    fn factors_apply_in_fastssl_order_and_arithmetic() {
        let source = [200, 10, 90, 255, 100, 40, 180, 250, 50, 220, 30, 5];
        for ((b, c, s), expected) in [
            (
                (1.3, 0.6, 1.4),
                [238, 58, 118, 222, 133, 91, 217, 222, 79, 255, 53, 14],
            ),
            (
                (0.7, 1.4, 0.5),
                [121, 10, 73, 198, 72, 11, 117, 196, 47, 99, 48, 92],
            ),
        ] {
            let mut img = Planes {
                side: 2,
                data: source.iter().map(|&v| f32::from(v as u8)).collect(),
            };
            apply_factors(&mut img, &factors(b, c, s));
            let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
            assert_eq!(img.data, expected, "{:?}", (b, c, s));
        }
    }
}
