//! The per-view augmentation settings, [`AugmentConfig`], owned by the loader's augment stage.

use serde::{Deserialize, Serialize};

use crate::config::{check, ConfigError};

use super::rrc::{Interpolation, DEFAULT_RATIO};

/// The per-view augmentations. Defaults are fastssl's CIFAR recipe (the paper's): DESIGN.md's
/// list with hue 0 and OpenCV's INTER_AREA crop resize, as FFCV-SSL does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Horizontal flip probability (0.5).
    pub flip_p: f32,
    /// Probability of applying colour jitter (0.8).
    pub jitter_p: f32,
    /// Jitter strengths: factors in [1-x, 1+x] (0.4 each); hue shift in [-h, h] (0: fastssl's).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    /// Grayscale probability (0.2).
    pub grayscale_p: f32,
    /// Gaussian blur probability (0: off for CIFAR-sized images) and sigma range (0.1-2.0).
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    /// Solarization probability (0) and threshold on 0..255 (128).
    pub solarize_p: f32,
    pub solarize_threshold: f32,
    pub interpolation: Interpolation,
    /// RandomResizedCrop aspect-ratio range (3/4 - 4/3).
    pub ratio: (f32, f32),
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.0,
            grayscale_p: 0.2,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
            solarize_threshold: 128.0,
            interpolation: Interpolation::Area,
            ratio: DEFAULT_RATIO,
        }
    }
}

impl AugmentConfig {
    /// Every value within what the augmentations can do (torchvision's limits), each error
    /// naming its `augment.*` key.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, p) in [
            ("augment.flip_p", self.flip_p),
            ("augment.jitter_p", self.jitter_p),
            ("augment.grayscale_p", self.grayscale_p),
            ("augment.blur_p", self.blur_p),
            ("augment.solarize_p", self.solarize_p),
        ] {
            check::within(key, check::wide(p), 0.0, 1.0)?;
        }
        for (key, strength) in [
            ("augment.brightness", self.brightness),
            ("augment.contrast", self.contrast),
            ("augment.saturation", self.saturation),
        ] {
            // Factors are drawn from [max(0, 1-x), 1+x], so any x >= 0 works, as in torchvision.
            check::non_negative(key, check::wide(strength))?;
        }
        check::within("augment.hue", check::wide(self.hue), 0.0, 0.5)?;
        check::within(
            "augment.solarize_threshold",
            check::wide(self.solarize_threshold),
            0.0,
            256.0,
        )?;
        let pair = |(a, b): (f32, f32)| (check::wide(a), check::wide(b));
        check::range("augment.blur_sigma", pair(self.blur_sigma), false)?;
        check::range("augment.ratio", pair(self.ratio), false)
    }

    /// The default without grayscale: crop, flip, brightness/contrast/saturation (p 0.8), the
    /// set the loader benchmark compares with FFCV's own CIFAR pipeline.
    pub fn ffcv() -> Self {
        Self {
            grayscale_p: 0.0,
            ..Self::default()
        }
    }

    /// Evaluation views: no randomness; with scale 1-1 this is the largest centred square.
    pub fn centre() -> Self {
        Self {
            flip_p: 0.0,
            jitter_p: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            solarize_p: 0.0,
            ratio: (1.0, 1.0),
            ..Self::default()
        }
    }

    /// Crop and flip only.
    pub fn crop_only() -> Self {
        Self {
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..Self::default()
        }
    }
}
