//! Solarization with probability `p`: values at or above `threshold` (0..255) are inverted.

use rand::Rng;

use super::{Planes, ViewRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solarize {
    pub p: f32,
    pub threshold: f32,
}

impl Solarize {
    pub fn apply(&self, rng: &mut ViewRng, img: &mut Planes) -> bool {
        if rng.random::<f32>() >= self.p {
            return false;
        }
        for v in &mut img.data {
            if *v >= self.threshold {
                *v = 255.0 - *v;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::augment::view_rng;

    #[test]
    fn inverts_only_bright_values() {
        let mut p = Planes {
            side: 1,
            data: vec![10.0, 128.0, 250.0],
        };
        Solarize {
            p: 1.0,
            threshold: 128.0,
        }
        .apply(&mut view_rng(0, 0, 0, 0), &mut p);
        assert_eq!(p.data, vec![10.0, 127.0, 5.0]);
    }
}
