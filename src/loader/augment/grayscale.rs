//! RandomGrayscale: with probability `p`, every channel becomes the pixel's luma, truncated to an
//! integer as fastssl's uint8 store does.

use rand::Rng;

use super::{Planes, ViewRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomGrayscale {
    pub p: f32,
}

impl RandomGrayscale {
    /// Returns whether it was applied.
    pub fn apply(&self, rng: &mut ViewRng, img: &mut Planes) -> bool {
        if rng.random::<f32>() >= self.p {
            return false;
        }
        to_gray(img);
        true
    }
}

pub fn to_gray(img: &mut Planes) {
    let (r, g, b) = img.rgb_mut();
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        // In f64, as fastssl's numba code computes it.
        let y = super::jitter::luma64(f64::from(*r), f64::from(*g), f64::from(*b)).trunc() as f32;
        (*r, *g, *b) = (y, y, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_has_equal_channels_and_keeps_luma() {
        let mut p = Planes {
            side: 1,
            data: vec![200.0, 100.0, 50.0],
        };
        to_gray(&mut p);
        let y = (0.2989f64 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0).floor() as f32;
        assert!(p.data.iter().all(|&v| v == y), "{:?}", p.data);
    }
}
