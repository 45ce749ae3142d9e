//! OpenCV's `resize(..., INTER_AREA)`, which FFCV's crop decoder (and so fastssl's recipe) uses:
//! when the crop shrinks on both axes, every output pixel averages the source area it covers
//! (`computeResizeAreaTab`); otherwise OpenCV switches to its "area mode" linear interpolation,
//! which copies source pixels and blends only where an output pixel straddles two of them, so
//! enlarged crops stay sharp (a bilinear filter would blur them). Separable: rows, then columns,
//! in f32. Rounding to u8 follows OpenCV's: half to even (`cvRound`) on the area table, half up
//! where OpenCV adds half before shifting (the linear mode's 11-bit fixed point, whose weights
//! we keep in f32, so a value on a rounding edge can land one step away, and the 2x2 average).

use super::rrc::CropBox;

/// Source taps `(index, weight)` of each output index along one axis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AxisTaps {
    /// `taps[offsets[d]..offsets[d + 1]]` feed output index `d`.
    offsets: Vec<usize>,
    taps: Vec<(usize, f32)>,
}

impl AxisTaps {
    fn of(&self, d: usize) -> &[(usize, f32)] {
        &self.taps[self.offsets[d]..self.offsets[d + 1]]
    }

    /// The taps for `src` pixels to `dst` pixels; `shrink_both` is OpenCV's choice of the area
    /// table (every axis shrinks or keeps its size) over the area-mode linear one.
    pub fn new(src: usize, dst: usize, shrink_both: bool) -> Self {
        let mut t = Self::default();
        t.fill(src, dst, shrink_both);
        t
    }

    /// [`AxisTaps::new`] into this table's storage.
    fn fill(&mut self, src: usize, dst: usize, shrink_both: bool) {
        self.offsets.clear();
        self.offsets.push(0);
        self.taps.clear();
        let scale = src as f64 / dst as f64;
        for d in 0..dst {
            if shrink_both {
                self.push_area(d, src, scale);
            } else {
                self.push_linear(d, src, scale, dst as f64 / src as f64);
            }
            self.offsets.push(self.taps.len());
        }
    }

    /// `computeResizeAreaTab`: the fraction of each source pixel under the output cell.
    fn push_area(&mut self, d: usize, src: usize, scale: f64) {
        let f1 = d as f64 * scale;
        let f2 = f1 + scale;
        let cell = scale.min(src as f64 - f1);
        let s2 = (f2.floor() as usize).min(src - 1);
        let s1 = (f1.ceil() as usize).min(s2);
        if s1 as f64 - f1 > 1e-3 {
            self.taps.push((s1 - 1, ((s1 as f64 - f1) / cell) as f32));
        }
        for s in s1..s2 {
            self.taps.push((s, (1.0 / cell) as f32));
        }
        if f2 - s2 as f64 > 1e-3 {
            let w = (f2 - s2 as f64).min(1.0).min(cell) / cell;
            self.taps.push((s2, w as f32));
        }
    }

    /// OpenCV's linear coefficients in area mode.
    fn push_linear(&mut self, d: usize, src: usize, scale: f64, inv_scale: f64) {
        let mut s = (d as f64 * scale).floor() as usize;
        let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
        let mut f = if f <= 0.0 { 0.0 } else { f - f.floor() };
        if s >= src - 1 {
            (s, f) = (src - 1, 0.0);
        }
        self.taps.push((s, 1.0 - f));
        if f > 0.0 {
            self.taps.push((s + 1, f));
        }
    }
}

/// Buffers a worker keeps across views: tap tables and the passes' rows.
#[derive(Debug, Default)]
pub struct AreaScratch {
    xs: AxisTaps,
    ys: AxisTaps,
    rows: Vec<f32>,
    acc: Vec<f32>,
}

/// Resizes `crop` of the RGB8 image `src` (`width` pixels a row) to `side x side` into `dst`
/// (HWC).
pub fn resize_area(
    src: &[u8],
    width: u32,
    crop: CropBox,
    side: u32,
    scratch: &mut AreaScratch,
    dst: &mut [u8],
) {
    let (cw, ch, side) = (crop.width as usize, crop.height as usize, side as usize);
    let shrink_both = cw >= side && ch >= side;
    let AreaScratch { xs, ys, rows, acc } = scratch;
    let halving = cw == 2 * side && ch == 2 * side;
    let half_even = shrink_both && !halving;
    xs.fill(cw, side, shrink_both);
    ys.fill(ch, side, shrink_both);
    // Horizontal pass over the crop's rows: [ch][side][3].
    rows.clear();
    rows.resize(ch * side * 3, 0.0);
    let stride = width as usize * 3;
    for y in 0..ch {
        let line = &src[(crop.top as usize + y) * stride + crop.left as usize * 3..];
        let out = &mut rows[y * side * 3..(y + 1) * side * 3];
        for x in 0..side {
            let mut acc = [0f32; 3];
            for &(s, w) in xs.of(x) {
                for c in 0..3 {
                    acc[c] += w * f32::from(line[s * 3 + c]);
                }
            }
            out[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass, rounded into u8.
    acc.clear();
    acc.resize(side * 3, 0.0);
    for y in 0..side {
        let out = &mut dst[y * side * 3..(y + 1) * side * 3];
        acc.iter_mut().for_each(|a| *a = 0.0);
        for &(s, w) in ys.of(y) {
            let row = &rows[s * side * 3..(s + 1) * side * 3];
            for (a, v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
        // Values are non-negative. Without a library call (the baseline x86-64 target has no
        // rounding instruction): adding and removing 1.5 * 2^23 rounds half to even under the
        // default rounding mode; adding 0.5 before the truncating cast rounds half up.
        if half_even {
            for (o, a) in out.iter_mut().zip(acc.iter()) {
                *o = ((a + 12_582_912.0) - 12_582_912.0).min(255.0) as u8;
            }
        } else {
            for (o, a) in out.iter_mut().zip(acc.iter()) {
                *o = (a + 0.5).min(255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(t: &AxisTaps, d: usize) -> Vec<(usize, f32)> {
        t.of(d).to_vec()
    }

    #[test]
    fn same_size_is_the_identity() {
        let t = AxisTaps::new(5, 5, true);
        for d in 0..5 {
            assert_eq!(weights(&t, d), vec![(d, 1.0)]);
        }
    }

    #[test]
    fn halving_averages_pairs_and_thirds_split_pixels() {
        let t = AxisTaps::new(4, 2, true);
        assert_eq!(weights(&t, 0), vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(weights(&t, 1), vec![(2, 0.5), (3, 0.5)]);
        // 3 -> 2: each output covers 1.5 source pixels.
        let t = AxisTaps::new(3, 2, true);
        let w0 = weights(&t, 0);
        assert_eq!(w0.len(), 2);
        assert!((w0[0].1 - 2.0 / 3.0).abs() < 1e-6 && (w0[1].1 - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn enlarging_copies_pixels_and_blends_only_at_boundaries() {
        // 2 -> 5: outputs 0,1 take pixel 0, output 2 straddles, 3,4 take pixel 1.
        let t = AxisTaps::new(2, 5, false);
        assert_eq!(weights(&t, 0), vec![(0, 1.0)]);
        assert_eq!(weights(&t, 1), vec![(0, 1.0)]);
        let w2 = weights(&t, 2);
        assert_eq!(w2.len(), 2);
        assert!((w2[0].1 - 0.5).abs() < 1e-6, "{w2:?}");
        assert_eq!(weights(&t, 4), vec![(1, 1.0)]);
    }

    #[test]
    fn resizes_a_crop_of_a_larger_image() {
        // A 4x2 image whose right half is white; crop its right 2x2 and enlarge to 3x3.
        let mut src = vec![0u8; 4 * 2 * 3];
        for y in 0..2 {
            for x in 2..4 {
                src[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let crop = CropBox {
            left: 2,
            top: 0,
            width: 2,
            height: 2,
        };
        let mut dst = vec![0u8; 3 * 3 * 3];
        resize_area(&src, 4, crop, 3, &mut AreaScratch::default(), &mut dst);
        assert!(dst.iter().all(|&v| v == 255), "{dst:?}");
    }
}
