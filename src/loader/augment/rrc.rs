//! RandomResizedCrop with torchvision's sampling: up to 10 tries of an area fraction drawn from
//! `scale` and a log-uniform aspect ratio from `ratio`; if none fits, a centre crop clamped to the
//! ratio range. The crop is resized to `side x side` with OpenCV's `INTER_AREA` (FFCV's crop
//! decoder, fastssl's recipe: see `area`), or bilinear with antialiasing when shrinking
//! (torchvision's `antialias=True`) through fast_image_resize (SIMD).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand::Rng;

use super::ViewRng;

/// Aspect-ratio range of torchvision's RandomResizedCrop.
pub const DEFAULT_RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Bilinear, antialiased when downscaling (torchvision's default).
    Bilinear,
    /// OpenCV's INTER_AREA, as FFCV's crop decoder (fastssl's recipe): area averaging when
    /// shrinking, sharp pixel copies when enlarging.
    #[default]
    Area,
}

/// Buffers a worker keeps for resizing.
#[derive(Default)]
pub struct ResizeScratch {
    pub resizer: Resizer,
    pub area: super::area::AreaScratch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    pub side: u32,
    pub scale: (f32, f32),
    pub ratio: (f32, f32),
    pub interpolation: Interpolation,
}

impl RandomResizedCrop {
    pub fn out_shape(&self) -> (u32, u32) {
        (self.side, self.side)
    }

    /// torchvision's `RandomResizedCrop.get_params` for a `width x height` image.
    pub fn sample(&self, rng: &mut ViewRng, width: u32, height: u32) -> CropBox {
        let area = (width * height) as f32;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let aspect = rng.random_range(log_lo..=log_hi).exp();
            let w = (target * aspect).sqrt().round() as u32;
            let h = (target / aspect).sqrt().round() as u32;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox {
                    left,
                    top,
                    width: w,
                    height: h,
                };
            }
        }
        self.centre_fallback(width, height)
    }

    fn centre_fallback(&self, width: u32, height: u32) -> CropBox {
        let in_ratio = width as f32 / height as f32;
        let (w, h) = if in_ratio < self.ratio.0 {
            (
                width,
                ((width as f32 / self.ratio.0).round() as u32).clamp(1, height),
            )
        } else if in_ratio > self.ratio.1 {
            (
                ((height as f32 * self.ratio.1).round() as u32).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        CropBox {
            left: (width - w) / 2,
            top: (height - h) / 2,
            width: w,
            height: h,
        }
    }

    /// Resizes `crop` of the RGB8 image `src` (`width x height`) into `dst` (`side x side x 3`).
    pub fn apply(
        &self,
        scratch: &mut ResizeScratch,
        src: &[u8],
        width: u32,
        height: u32,
        crop: CropBox,
        dst: &mut Vec<u8>,
    ) {
        let side = self.side;
        dst.resize((side * side * 3) as usize, 0);
        if self.interpolation == Interpolation::Area {
            super::area::resize_area(src, width, crop, side, &mut scratch.area, dst);
            return;
        }
        let source = ImageRef::new(width, height, src, PixelType::U8x3)
            .expect("src holds width*height*3 bytes");
        let mut target =
            Image::from_slice_u8(side, side, dst, PixelType::U8x3).expect("dst sized above");
        let options = ResizeOptions::new()
            .crop(
                f64::from(crop.left),
                f64::from(crop.top),
                f64::from(crop.width),
                f64::from(crop.height),
            )
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        scratch
            .resizer
            .resize(&source, &mut target, &options)
            .expect("same pixel type on both sides");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::augment::view_rng;

    fn rrc(scale: (f32, f32)) -> RandomResizedCrop {
        RandomResizedCrop {
            side: 16,
            scale,
            ratio: DEFAULT_RATIO,
            interpolation: Interpolation::Bilinear,
        }
    }

    #[test]
    fn crops_lie_inside_and_follow_the_scale_range() {
        let t = rrc((0.2, 0.6));
        for i in 0..2000 {
            let (w, h) = (32 + i % 50, 24 + i % 70);
            let c = t.sample(&mut view_rng(0, 0, u64::from(i), 0), w, h);
            assert!(
                c.left + c.width <= w && c.top + c.height <= h,
                "{c:?} outside {w}x{h}"
            );
            let frac = (c.width * c.height) as f32 / (w * h) as f32;
            // Rounding of w and h moves the area a little off the drawn fraction.
            assert!(
                (0.15..0.7).contains(&frac) || c.width == w || c.height == h,
                "{frac} {c:?}"
            );
        }
    }

    #[test]
    fn impossible_ratio_falls_back_to_a_centre_crop() {
        let t = RandomResizedCrop {
            side: 8,
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
            interpolation: Interpolation::Area,
        };
        let c = t.sample(&mut view_rng(0, 0, 0, 0), 40, 10);
        assert_eq!(
            c,
            CropBox {
                left: 15,
                top: 0,
                width: 10,
                height: 10
            }
        );
    }

    #[test]
    fn full_crop_of_same_size_is_identity() {
        let src: Vec<u8> = (0..16 * 16 * 3).map(|v| (v % 251) as u8).collect();
        for interpolation in [Interpolation::Bilinear, Interpolation::Area] {
            let mut out = Vec::new();
            RandomResizedCrop {
                interpolation,
                ..rrc((1.0, 1.0))
            }
            .apply(
                &mut ResizeScratch::default(),
                &src,
                16,
                16,
                CropBox {
                    left: 0,
                    top: 0,
                    width: 16,
                    height: 16,
                },
                &mut out,
            );
            assert_eq!(out, src, "{interpolation:?}");
        }
    }
}
