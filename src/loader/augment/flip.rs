//! Horizontal flip with probability `p`. The flip itself happens when a crop is loaded into
//! planes ([`super::Planes::load_hwc`] with `mirror`), so it costs nothing.

use rand::Rng;

use super::ViewRng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizontalFlip {
    pub p: f32,
}

impl HorizontalFlip {
    /// Whether this view is mirrored.
    pub fn sample(&self, rng: &mut ViewRng) -> bool {
        rng.random::<f32>() < self.p
    }
}
