//! Per-view augmentations, one file each. A view is made in this order (DESIGN.md):
//! RandomResizedCrop -> horizontal flip -> colour jitter (p) -> grayscale (p) -> Gaussian blur (p)
//! -> solarization (p). After the crop, a view is a [`Planes`] image (f32, CHW, 0..255), so every
//! colour op runs over whole contiguous rows that the compiler vectorises; it is quantised to u8
//! once, straight into the batch buffer.
//!
//! Randomness: each view draws from its own generator, seeded from (seed, epoch, sample, view), so a
//! view is the same whichever thread makes it and any batch can be regenerated.

pub mod area;
pub mod blur;
pub mod config;
pub mod flip;
pub mod grayscale;
pub mod jitter;
pub mod rrc;
pub mod solarize;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use blur::GaussianBlur;
pub use config::AugmentConfig;
pub use flip::HorizontalFlip;
pub use grayscale::RandomGrayscale;
pub use jitter::{ColorJitter, JitterFactors};
pub use rrc::{CropBox, RandomResizedCrop, ResizeScratch};
pub use solarize::Solarize;

/// The random generator of one view.
pub type ViewRng = ChaCha8Rng;

/// The generator for view `view` of sample `sample` in `epoch`; a pure function of its inputs.
pub fn view_rng(seed: u64, epoch: u64, sample: u64, view: u64) -> ViewRng {
    let mut h = splitmix(seed ^ 0x5EED_0F55_1A57);
    h = splitmix(h ^ epoch);
    h = splitmix(h ^ sample);
    h = splitmix(h ^ view);
    ChaCha8Rng::seed_from_u64(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A square view being augmented: three planes (R, G, B) of `side * side` f32 values in 0..255.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub side: usize,
    pub data: Vec<f32>,
}

impl Planes {
    pub fn new(side: usize) -> Self {
        Self {
            side,
            data: vec![0.0; 3 * side * side],
        }
    }

    pub fn area(&self) -> usize {
        self.side * self.side
    }

    /// The three planes, mutably.
    pub fn rgb_mut(&mut self) -> (&mut [f32], &mut [f32], &mut [f32]) {
        let n = self.area();
        let (r, gb) = self.data.split_at_mut(n);
        let (g, b) = gb.split_at_mut(n);
        (r, g, b)
    }

    /// Loads an interleaved RGB8 `side x side` image, mirrored left-right when `mirror`.
    pub fn load_hwc(&mut self, hwc: &[u8], mirror: bool) {
        let side = self.side;
        let (r, g, b) = self.rgb_mut();
        for y in 0..side {
            let src = &hwc[y * side * 3..(y + 1) * side * 3];
            let row = y * side;
            for x in 0..side {
                let sx = if mirror { side - 1 - x } else { x };
                r[row + x] = f32::from(src[sx * 3]);
                g[row + x] = f32::from(src[sx * 3 + 1]);
                b[row + x] = f32::from(src[sx * 3 + 2]);
            }
        }
    }

    /// Rounds and clamps into a CHW u8 slot of a batch buffer.
    pub fn store_chw(&self, dst: &mut [u8]) {
        for (d, &v) in dst.iter_mut().zip(&self.data) {
            *d = (v + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
}

/// The whole per-view pipeline of one view group, built from the config.
#[derive(Debug, Clone)]
pub struct ViewPipeline {
    pub crop: RandomResizedCrop,
    pub flip: HorizontalFlip,
    pub jitter: ColorJitter,
    pub grayscale: RandomGrayscale,
    pub blur: GaussianBlur,
    pub solarize: Solarize,
}

/// Buffers a worker reuses for every view it makes.
pub struct ViewScratch {
    pub resize: ResizeScratch,
    pub crop: Vec<u8>,
    pub planes: Planes,
    pub blur: Vec<f32>,
}

impl Default for ViewScratch {
    fn default() -> Self {
        Self {
            resize: ResizeScratch::default(),
            crop: Vec::new(),
            planes: Planes::new(0),
            blur: Vec::new(),
        }
    }
}

impl ViewPipeline {
    pub fn new(side: u32, scale: (f32, f32), cfg: &AugmentConfig) -> Self {
        Self {
            crop: RandomResizedCrop {
                side,
                scale,
                ratio: cfg.ratio,
                interpolation: cfg.interpolation,
            },
            flip: HorizontalFlip { p: cfg.flip_p },
            jitter: ColorJitter {
                p: cfg.jitter_p,
                brightness: cfg.brightness,
                contrast: cfg.contrast,
                saturation: cfg.saturation,
                hue: cfg.hue,
            },
            grayscale: RandomGrayscale { p: cfg.grayscale_p },
            blur: GaussianBlur {
                p: cfg.blur_p,
                sigma: cfg.blur_sigma,
            },
            solarize: Solarize {
                p: cfg.solarize_p,
                threshold: cfg.solarize_threshold,
            },
        }
    }

    /// Makes one view of the RGB8 image `src` (`width x height`) into `dst` (CHW, `3 * side^2`).
    pub fn make_view(
        &self,
        rng: &mut ViewRng,
        src: &[u8],
        width: u32,
        height: u32,
        scratch: &mut ViewScratch,
        dst: &mut [u8],
    ) {
        let crop = self.crop.sample(rng, width, height);
        self.crop.apply(
            &mut scratch.resize,
            src,
            width,
            height,
            crop,
            &mut scratch.crop,
        );
        let mirror = self.flip.sample(rng);
        let side = self.crop.side as usize;
        if scratch.planes.side != side {
            scratch.planes = Planes::new(side);
        }
        scratch.planes.load_hwc(&scratch.crop, mirror);
        self.jitter.apply(rng, &mut scratch.planes);
        self.grayscale.apply(rng, &mut scratch.planes);
        self.blur.apply(rng, &mut scratch.planes, &mut scratch.blur);
        self.solarize.apply(rng, &mut scratch.planes);
        scratch.planes.store_chw(dst);
    }
}

/// `v` truncated to an integer as fastssl's uint8 stores do, for pixel values in 0..=255:
/// truncation through `i32` vectorises where `floor` (without SSE4.1) is a library call.
#[inline]
pub fn truncate(v: f32) -> f32 {
    (v as i32) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn view_rng_depends_on_every_input() {
        let draw = |s, e, i, v| view_rng(s, e, i, v).random::<u64>();
        let base = draw(1, 2, 3, 4);
        assert_eq!(base, draw(1, 2, 3, 4));
        for other in [
            draw(9, 2, 3, 4),
            draw(1, 9, 3, 4),
            draw(1, 2, 9, 4),
            draw(1, 2, 3, 9),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn planes_round_trip_and_mirror() {
        let hwc: Vec<u8> = (0..2 * 2 * 3).map(|v| v as u8 * 10).collect();
        let mut p = Planes::new(2);
        p.load_hwc(&hwc, false);
        assert_eq!(&p.data[..4], &[0.0, 30.0, 60.0, 90.0]);
        p.load_hwc(&hwc, true);
        assert_eq!(&p.data[..4], &[30.0, 0.0, 90.0, 60.0]);
        let mut out = vec![0u8; 12];
        p.store_chw(&mut out);
        assert_eq!(out[..4], [30, 0, 90, 60]);
    }
}
