//! Gaussian blur with probability `p`: sigma uniform in `sigma`, kernel side about 10% of the view
//! (odd, at least 3; solo-learn's 23 px at 224), separable, reflect padding as torchvision.

use rand::Rng;

use super::{Planes, ViewRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianBlur {
    pub p: f32,
    pub sigma: (f32, f32),
}

impl GaussianBlur {
    pub fn apply(&self, rng: &mut ViewRng, img: &mut Planes, scratch: &mut Vec<f32>) -> bool {
        if rng.random::<f32>() >= self.p {
            return false;
        }
        let sigma = rng.random_range(self.sigma.0..=self.sigma.1);
        blur(img, sigma, kernel_side(img.side), scratch);
        true
    }
}

pub fn kernel_side(side: usize) -> usize {
    ((side as f32 * 0.1) as usize / 2 * 2 + 1).max(3)
}

/// Reflect-101 index (torchvision's "reflect"): -1 -> 1, n -> n-2.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

pub fn blur(img: &mut Planes, sigma: f32, ksize: usize, scratch: &mut Vec<f32>) {
    let half = (ksize / 2) as isize;
    let mut kernel: Vec<f32> = (-half..=half)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let side = img.side;
    let area = img.area();
    scratch.resize(area, 0.0);
    for plane in img.data.chunks_mut(area) {
        for y in 0..side {
            for x in 0..side {
                scratch[y * side + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| {
                        w * plane[y * side + reflect(x as isize + k as isize - half, side)]
                    })
                    .sum();
            }
        }
        for y in 0..side {
            for x in 0..side {
                plane[y * side + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| {
                        w * scratch[reflect(y as isize + k as isize - half, side) * side + x]
                    })
                    .sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_flat_images_and_the_mean_of_an_impulse() {
        let mut flat = Planes {
            side: 8,
            data: vec![77.0; 192],
        };
        blur(&mut flat, 1.5, 3, &mut Vec::new());
        assert!(flat.data.iter().all(|v| (v - 77.0).abs() < 1e-3));
        let mut impulse = Planes::new(9);
        impulse.data[4 * 9 + 4] = 90.0;
        blur(&mut impulse, 1.0, 5, &mut Vec::new());
        let red: f32 = impulse.data[..81].iter().sum();
        assert!((red - 90.0).abs() < 1e-3, "{red}");
        assert!(impulse.data[4 * 9 + 4] < 90.0 && impulse.data[4 * 9 + 5] > 0.0);
        assert_eq!(kernel_side(224), 23);
        assert_eq!(kernel_side(32), 3);
    }
}
