//! How a convolution's input becomes GEMM columns (im2col) and column gradients flow back into
//! the input (col2im), by one of three walks chosen once per op call ([`ColumnPath`]); and the
//! BatchNorm+ReLU that `bn_relu_conv` applies to the input as im2col reads it.

use std::ops::Range;

use super::Geometry;

/// Output maps of at most this many pixels (8x8) go through im2col by a gather table.
pub(super) const SMALL_MAP: usize = 64;

/// The three ways im2col and col2im walk a convolution.
#[derive(Debug, Clone)]
pub(super) enum ColumnPath {
    /// Small maps: a gather per im2col row through [`Geometry::gather_table`].
    Table(Vec<Option<u32>>),
    /// Stride 1, "same" padding: each kernel position's plane as one shifted block.
    Shifted,
    /// Anything else, one output row at a time.
    Rows,
}

/// A per-channel `max(scale·x + shift, 0)` applied to a conv's input as im2col reads it: the
/// BatchNorm+ReLU before the conv, fused into it (see `bn_relu_conv`).
pub(in crate::model::ops) struct InputActivation {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl InputActivation {
    /// `(scale, shift)` of `channel`.
    pub(in crate::model::ops) fn at(&self, channel: usize) -> (f32, f32) {
        (self.scale[channel], self.shift[channel])
    }

    pub(in crate::model::ops) fn apply(&self, channel: usize, values: &mut [f32]) {
        let (a, b) = (self.scale[channel], self.shift[channel]);
        values.iter_mut().for_each(|v| *v = (*v * a + b).max(0.0));
    }
}

impl Geometry {
    /// Calls `f(row, oy, src, valid, ix0)` for every (im2col row, output row) pair: the loop
    /// nest that im2col and col2im share. `src` is the offset in the image of the input row the
    /// kernel row meets, `None` where it lies in the padding; `valid` and `ix0` are those of
    /// [`Self::valid_columns`] for the row's kernel column.
    pub(super) fn for_each_row(
        &self,
        mut f: impl FnMut(usize, usize, Option<usize>, Range<usize>, usize),
    ) {
        let (kh, kw, oh) = (self.kh, self.kw, self.oh());
        // Per kernel column, not per row: the divisions cost more than copying a short row.
        let columns: Vec<_> = (0..kw).map(|kx| self.valid_columns(kx)).collect();
        for ci in 0..self.c_in {
            for ky in 0..kh {
                for (kx, (valid, ix0)) in columns.iter().enumerate() {
                    let row = (ci * kh + ky) * kw + kx;
                    for oy in 0..oh {
                        let iy = (oy * self.stride + ky).checked_sub(self.pad);
                        let src = iy
                            .filter(|&iy| iy < self.h)
                            .map(|iy| (ci * self.h + iy) * self.w);
                        f(row, oy, src, valid.clone(), *ix0);
                    }
                }
            }
        }
    }

    /// For kernel column `kx`, the output columns `ox` whose input column `ox·s + kx − pad`
    /// lies inside the image, as a range, and that input column for the first of them.
    pub(super) fn valid_columns(&self, kx: usize) -> (Range<usize>, usize) {
        let s = self.stride;
        let first = self.pad.saturating_sub(kx).div_ceil(s);
        // ox·s + kx − pad < w  ⇔  ox < (w + pad − kx) / s, rounded up.
        let end = (self.w + self.pad)
            .saturating_sub(kx)
            .div_ceil(s)
            .min(self.ow());
        let first = first.min(end);
        // Clamped for an empty range, where a kernel wider than the padded image ends past it.
        (
            first..end,
            (first * s + kx).saturating_sub(self.pad).min(self.w),
        )
    }

    /// Whether output rows line up with input rows (stride 1, "same" padding, as in most of a
    /// ResNet): then the im2col row of one kernel position is its image plane shifted by a
    /// constant offset, one copy instead of one per output row.
    pub(super) fn is_same_shape(&self) -> bool {
        self.stride == 1 && self.oh() == self.h && self.ow() == self.w
    }

    /// For [`Self::is_same_shape`] convolutions and kernel position `(ky, kx)`: the output pixels
    /// `d` that read the image, at `d + shift`, and the output rows they lie in. Within those
    /// rows the columns outside [`Self::valid_columns`] read a neighbouring row instead of the
    /// padding: callers zero them.
    pub(super) fn shifted_span(&self, ky: usize, kx: usize) -> (Range<usize>, Range<usize>, isize) {
        let (h, w, pad) = (self.h, self.w, self.pad);
        let first = pad.saturating_sub(ky).min(h);
        let rows = first..(h + pad).saturating_sub(ky).clamp(first, h);
        let shift = (ky as isize - pad as isize) * w as isize + kx as isize - pad as isize;
        let lo = (rows.start * w)
            .max((-shift).max(0) as usize)
            .min(rows.end * w);
        let hi = ((rows.end * w) as isize)
            .min((h * w) as isize - shift)
            .max(0) as usize;
        (lo..hi.max(lo), rows, shift)
    }

    /// Where in the image the pixels of `span` read, plane `plane` shifted by `shift`.
    pub(super) fn shifted(span: &Range<usize>, plane: usize, shift: isize) -> Range<usize> {
        if span.is_empty() {
            return plane..plane;
        }
        let start = (plane as isize + shift + span.start as isize) as usize;
        start..start + span.len()
    }

    /// Calls `f(row, ky, kx, plane)` per im2col row, `plane` being the offset of its input
    /// channel in the image.
    pub(super) fn for_each_plane(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for ci in 0..self.c_in {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    f(
                        (ci * self.kh + ky) * self.kw + kx,
                        ky,
                        kx,
                        ci * self.h * self.w,
                    );
                }
            }
        }
    }

    /// Zeroes the columns of `rows` that lie in the padding for kernel column `kx`.
    pub(super) fn zero_padding_columns(&self, dst: &mut [f32], rows: Range<usize>, kx: usize) {
        let (valid, _) = self.valid_columns(kx);
        for row in dst[rows.start * self.w..rows.end * self.w].chunks_mut(self.w) {
            row[..valid.start].fill(0.0);
            row[valid.end..].fill(0.0);
        }
    }

    /// Writes the columns of one image into `cols` (`K` rows of stride `ld`, from column `col0`),
    /// passing each input value through `act` if given (the padding stays zero).
    pub(super) fn im2col(
        &self,
        x: &[f32],
        act: Option<&InputActivation>,
        cols: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        match &self.columns {
            ColumnPath::Table(table) => self.im2col_by_table(table, x, act, cols, ld, col0),
            ColumnPath::Shifted => self.im2col_shifted(x, act, cols, ld, col0),
            ColumnPath::Rows => self.im2col_by_rows(x, act, cols, ld, col0),
        }
    }

    /// Adds the columns of one image back onto `dx`: the transpose of [`Self::im2col`]. May zero
    /// the padding entries of `cols` on the way.
    pub(super) fn col2im(&self, cols: &mut [f32], ld: usize, col0: usize, dx: &mut [f32]) {
        match &self.columns {
            ColumnPath::Table(table) => self.col2im_by_table(table, cols, ld, col0, dx),
            ColumnPath::Shifted => self.col2im_shifted(cols, ld, col0, dx),
            ColumnPath::Rows => self.col2im_by_rows(cols, ld, col0, dx),
        }
    }

    /// [`Self::im2col`] for [`Self::is_same_shape`] convolutions, a plane at a time.
    pub(super) fn im2col_shifted(
        &self,
        x: &[f32],
        act: Option<&InputActivation>,
        cols: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        let p = self.p();
        self.for_each_plane(|row, ky, kx, plane| {
            let dst = &mut cols[row * ld + col0..][..p];
            let (span, rows, shift) = self.shifted_span(ky, kx);
            dst[..span.start].fill(0.0);
            dst[span.end..].fill(0.0);
            dst[span.clone()].copy_from_slice(&x[Self::shifted(&span, plane, shift)]);
            if let Some(act) = act {
                act.apply(row / (self.kh * self.kw), &mut dst[span]);
            }
            self.zero_padding_columns(dst, rows, kx);
        });
    }

    /// [`Self::col2im`] for [`Self::is_same_shape`] convolutions; zeroes the padding entries of
    /// `cols` so that each plane is one shifted add.
    pub(super) fn col2im_shifted(&self, cols: &mut [f32], ld: usize, col0: usize, dx: &mut [f32]) {
        let p = self.p();
        self.for_each_plane(|row, ky, kx, plane| {
            let col = &mut cols[row * ld + col0..][..p];
            let (span, rows, shift) = self.shifted_span(ky, kx);
            self.zero_padding_columns(col, rows, kx);
            let dst = &mut dx[Self::shifted(&span, plane, shift)];
            dst.iter_mut().zip(&col[span]).for_each(|(d, c)| *d += c);
        });
    }

    /// Per kernel position and output pixel, the offset in the input plane it reads, `None`
    /// in the padding: `[kh·kw, P]`.
    pub(super) fn gather_table(&self) -> Vec<Option<u32>> {
        let (ow, s, pad) = (self.ow(), self.stride, self.pad);
        let inside =
            |o: usize, k: usize, len: usize| (o * s + k).checked_sub(pad).filter(|&i| i < len);
        let mut table = Vec::with_capacity(self.kh * self.kw * self.p());
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                for o in 0..self.p() {
                    let (iy, ix) = (inside(o / ow, ky, self.h), inside(o % ow, kx, self.w));
                    table.push(iy.zip(ix).map(|(iy, ix)| (iy * self.w + ix) as u32));
                }
            }
        }
        table
    }

    /// [`Self::im2col`] for small output maps, where per-row copies cost more than the values:
    /// one gather per im2col row through [`Self::gather_table`].
    pub(super) fn im2col_by_table(
        &self,
        table: &[Option<u32>],
        x: &[f32],
        act: Option<&InputActivation>,
        cols: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        let (p, taps) = (self.p(), self.kh * self.kw);
        self.for_each_plane(|row, ky, kx, plane| {
            let dst = &mut cols[row * ld + col0..][..p];
            let sources = &table[(ky * self.kw + kx) * p..][..p];
            let x = &x[plane..plane + self.h * self.w];
            let value = |source: &Option<u32>| source.map_or(0.0, |i| x[i as usize]);
            match act.map(|act| act.at(row / taps)) {
                None => dst.iter_mut().zip(sources).for_each(|(d, s)| *d = value(s)),
                Some((a, b)) => (dst.iter_mut().zip(sources)).for_each(|(d, source)| {
                    *d = source.map_or(0.0, |i| (x[i as usize] * a + b).max(0.0));
                }),
            }
        });
    }

    /// [`Self::col2im`] through [`Self::gather_table`].
    pub(super) fn col2im_by_table(
        &self,
        table: &[Option<u32>],
        cols: &[f32],
        ld: usize,
        col0: usize,
        dx: &mut [f32],
    ) {
        let p = self.p();
        self.for_each_plane(|row, ky, kx, plane| {
            let col = &cols[row * ld + col0..][..p];
            let sources = &table[(ky * self.kw + kx) * p..][..p];
            let dx = &mut dx[plane..plane + self.h * self.w];
            for (c, source) in col.iter().zip(sources) {
                if let Some(i) = source {
                    dx[*i as usize] += c;
                }
            }
        });
    }

    /// [`Self::im2col`] one output row at a time, for any stride and padding.
    pub(super) fn im2col_by_rows(
        &self,
        x: &[f32],
        act: Option<&InputActivation>,
        cols: &mut [f32],
        ld: usize,
        col0: usize,
    ) {
        let (ow, s) = (self.ow(), self.stride);
        self.for_each_row(|row, oy, src, valid, ix0| {
            let dst = &mut cols[row * ld + col0 + oy * ow..][..ow];
            let Some(src) = src else {
                dst.fill(0.0);
                return;
            };
            dst[..valid.start].fill(0.0);
            dst[valid.end..].fill(0.0);
            let src = &x[src + ix0..src + self.w];
            if s == 1 {
                dst[valid.clone()].copy_from_slice(&src[..valid.len()]);
            } else {
                for (d, x) in dst[valid.clone()].iter_mut().zip(src.iter().step_by(s)) {
                    *d = *x;
                }
            }
            if let Some(act) = act {
                act.apply(row / (self.kh * self.kw), &mut dst[valid]);
            }
        });
    }

    /// [`Self::col2im`] one output row at a time, for any stride and padding.
    pub(super) fn col2im_by_rows(&self, cols: &[f32], ld: usize, col0: usize, dx: &mut [f32]) {
        let (ow, s) = (self.ow(), self.stride);
        self.for_each_row(|row, oy, src, valid, ix0| {
            let Some(src) = src else { return };
            let col = &cols[row * ld + col0 + oy * ow..][..ow];
            let dst = &mut dx[src + ix0..src + self.w];
            if s == 1 {
                let n = valid.len();
                dst[..n]
                    .iter_mut()
                    .zip(&col[valid])
                    .for_each(|(d, c)| *d += c);
            } else {
                for (d, c) in dst.iter_mut().step_by(s).zip(&col[valid]) {
                    *d += c;
                }
            }
        });
    }
}
