//! Conv2d for f32 on the CPU as a candle custom op, forward and backward on one im2col + GEMM
//! scheme (the `gemm` crate candle itself uses). With `K = C_in·kh·kw` and `P = OH·OW`:
//!
//! - forward:      `y_b [C_out, P] = W [C_out, K] · cols(x_b) [K, P]`
//! - input grad:   `dx_b = col2im(Wᵀ [K, C_out] · dy_b [C_out, P])`
//! - weight grad:  `dW [C_out, K] = Σ_b dy_b [C_out, P] · cols(x_b)ᵀ [P, K]`
//!
//! candle's own backward computes the input gradient with a direct `conv_transpose2d` loop and
//! the weight gradient as a convolution whose kernel is the whole output map, 3-6x the forward's
//! cost; here both gradients come from one pass over the batch (the backward is about twice the
//! forward, as in PyTorch). Images go through in chunks so every GEMM has enough columns, and
//! chunks run in parallel on rayon, each with its own workspace. Other devices and dtypes keep
//! candle's conv2d (see [`conv2d`]).

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// GEMM columns a chunk aims for: below this the packing of `W` dominates small late layers.
const TARGET_COLUMNS: usize = 1024;

/// Output maps of at most this many pixels (8x8) go through im2col by a gather table.
const SMALL_MAP: usize = 64;

/// The three ways im2col and col2im walk a convolution.
#[derive(Debug, Clone)]
enum ColumnPath {
    /// Small maps: a gather per im2col row through [`Geometry::gather_table`].
    Table(Vec<Option<u32>>),
    /// Stride 1, "same" padding: each kernel position's plane as one shifted block.
    Shifted,
    /// Anything else, one output row at a time.
    Rows,
}

/// Partial weight gradients summed in parallel by the backward pass: enough groups to keep the
/// cores busy, few enough that their buffers stay small next to the activations.
const MAX_WEIGHT_PARTIALS: usize = 16;

/// `x [B, C_in, H, W]` convolved with `w [C_out, C_in, kh, kw]`, no bias, square stride and
/// zero padding. f32 CPU tensors take the GEMM op; everything else candle's conv2d.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    x.apply_op2(&w, Conv2d { stride, padding })
}

/// The forward op; its backward is [`Conv2dBackward`].
struct Conv2d {
    stride: usize,
    padding: usize,
}

/// Everything the kernels need about one convolution.
#[derive(Debug, Clone)]
pub(super) struct Geometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    /// How im2col and col2im walk this geometry, chosen once per op call.
    columns: ColumnPath,
}

impl Geometry {
    pub(super) fn new(x: &Layout, w: &Layout, stride: usize, pad: usize) -> Result<Self> {
        let (batch, c_in, h, width) = x.shape().dims4()?;
        let (c_out, wc_in, kh, kw) = w.shape().dims4()?;
        if batch == 0 {
            candle_core::bail!("conv2d: empty batch {:?}", x.shape());
        }
        if wc_in != c_in || h + 2 * pad < kh || width + 2 * pad < kw || stride == 0 {
            candle_core::bail!(
                "conv2d: input {:?} does not fit kernel {:?} with stride {stride}, padding {pad}",
                x.shape(),
                w.shape()
            );
        }
        let mut g = Self {
            batch,
            c_in,
            h,
            w: width,
            c_out,
            kh,
            kw,
            stride,
            pad,
            columns: ColumnPath::Rows,
        };
        g.columns = if g.p() <= SMALL_MAP {
            ColumnPath::Table(g.gather_table())
        } else if g.is_same_shape() {
            ColumnPath::Shifted
        } else {
            ColumnPath::Rows
        };
        Ok(g)
    }

    /// `[B, C_out, OH, OW]`.
    pub(super) fn out_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.oh(), self.ow()))
    }

    fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }

    fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }

    /// Rows of the im2col matrix.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh() * self.ow()
    }

    pub(super) fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub(super) fn out_len(&self) -> usize {
        self.c_out * self.p()
    }

    /// Images per chunk: enough GEMM columns, yet two chunks per thread when the batch allows.
    fn chunk(&self) -> usize {
        let for_columns = TARGET_COLUMNS.div_ceil(self.p());
        let for_balance = self.batch.div_ceil(2 * rayon::current_num_threads());
        for_columns.min(for_balance).max(1)
    }

    /// Calls `f(row, oy, src, valid, ix0)` for every (im2col row, output row) pair: the loop
    /// nest that im2col and col2im share. `src` is the offset in the image of the input row the
    /// kernel row meets, `None` where it lies in the padding; `valid` and `ix0` are those of
    /// [`Self::valid_columns`] for the row's kernel column.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, Option<usize>, Range<usize>, usize)) {
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
    fn valid_columns(&self, kx: usize) -> (Range<usize>, usize) {
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
    fn is_same_shape(&self) -> bool {
        self.stride == 1 && self.oh() == self.h && self.ow() == self.w
    }

    /// For [`Self::is_same_shape`] convolutions and kernel position `(ky, kx)`: the output pixels
    /// `d` that read the image, at `d + shift`, and the output rows they lie in. Within those
    /// rows the columns outside [`Self::valid_columns`] read a neighbouring row instead of the
    /// padding: callers zero them.
    fn shifted_span(&self, ky: usize, kx: usize) -> (Range<usize>, Range<usize>, isize) {
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
    fn shifted(span: &Range<usize>, plane: usize, shift: isize) -> Range<usize> {
        if span.is_empty() {
            return plane..plane;
        }
        let start = (plane as isize + shift + span.start as isize) as usize;
        start..start + span.len()
    }

    /// Calls `f(row, ky, kx, plane)` per im2col row, `plane` being the offset of its input
    /// channel in the image.
    fn for_each_plane(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
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
    fn zero_padding_columns(&self, dst: &mut [f32], rows: Range<usize>, kx: usize) {
        let (valid, _) = self.valid_columns(kx);
        for row in dst[rows.start * self.w..rows.end * self.w].chunks_mut(self.w) {
            row[..valid.start].fill(0.0);
            row[valid.end..].fill(0.0);
        }
    }

    /// Writes the columns of one image into `cols` (`K` rows of stride `ld`, from column `col0`),
    /// passing each input value through `act` if given (the padding stays zero).
    fn im2col(
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
    fn col2im(&self, cols: &mut [f32], ld: usize, col0: usize, dx: &mut [f32]) {
        match &self.columns {
            ColumnPath::Table(table) => self.col2im_by_table(table, cols, ld, col0, dx),
            ColumnPath::Shifted => self.col2im_shifted(cols, ld, col0, dx),
            ColumnPath::Rows => self.col2im_by_rows(cols, ld, col0, dx),
        }
    }

    /// [`Self::im2col`] for [`Self::is_same_shape`] convolutions, a plane at a time.
    fn im2col_shifted(
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
    fn col2im_shifted(&self, cols: &mut [f32], ld: usize, col0: usize, dx: &mut [f32]) {
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
    fn gather_table(&self) -> Vec<Option<u32>> {
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
    fn im2col_by_table(
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
    fn col2im_by_table(
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
    fn im2col_by_rows(
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
    fn col2im_by_rows(&self, cols: &[f32], ld: usize, col0: usize, dx: &mut [f32]) {
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

impl Geometry {
    /// One chunk of images: the forward output `y` (`[nb, C_out, P]`) of the images `x`.
    fn forward_chunk(
        &self,
        w: &[f32],
        (x, act): (&[f32], Option<&InputActivation>),
        y: &mut [f32],
        ws: &mut Workspace,
    ) {
        let (k, p) = (self.k(), self.p());
        let nb = x.len() / self.in_len();
        let ld = nb * p;
        let [cols, out] = ws.buffers([k * ld, if nb == 1 { 0 } else { self.c_out * ld }]);
        for (j, x) in x.chunks(self.in_len()).enumerate() {
            self.im2col(x, act, cols, ld, j * p);
        }
        // A single image's `[C_out, P]` is already the GEMM's layout: no copy.
        let dst = if nb == 1 { &mut *y } else { &mut *out };
        gemm(
            (self.c_out, ld, k),
            dst,
            ld,
            false,
            w,
            (k, 1),
            cols,
            (ld, 1),
        );
        if nb > 1 {
            for (j, y) in y.chunks_mut(self.out_len()).enumerate() {
                for co in 0..self.c_out {
                    y[co * p..][..p].copy_from_slice(&out[co * ld + j * p..][..p]);
                }
            }
        }
    }

    /// One chunk of images: writes its input gradient into `dx` and adds its weight gradient,
    /// transposed (`[K, C_out]`), onto `dwt`.
    fn backward_chunk(
        &self,
        w: &[f32],
        (x, act, dy): (&[f32], Option<&InputActivation>, &[f32]),
        dx: &mut [f32],
        dwt: &mut [f32],
        ws: &mut Workspace,
    ) {
        let (k, p, c_out) = (self.k(), self.p(), self.c_out);
        let nb = x.len() / self.in_len();
        let ld = nb * p;
        let gathered = if nb == 1 { 0 } else { c_out * ld };
        let [cols, dy_gathered, dy_t] = ws.buffers([k * ld, gathered, c_out * ld]);
        // Input gradient: cols = Wᵀ · dy, folded back onto the images. A single image's dy is
        // already `[C_out, P]`.
        let dy_rows = if nb == 1 {
            dy
        } else {
            gather_chunk(self, dy, nb, dy_gathered);
            &*dy_gathered
        };
        gemm((k, ld, c_out), cols, ld, false, w, (1, k), dy_rows, (ld, 1));
        for (j, dx) in dx.chunks_mut(self.in_len()).enumerate() {
            self.col2im(cols, ld, j * p, dx);
        }
        // Weight gradient: dWᵀ += cols · dyᵀ, with the columns of x this time. Computed as
        // `dy · colsᵀ` the GEMM would pack both operands against their memory order, 3-5x slower
        // on the early layers; with dy transposed it reads each along its rows.
        for (j, x) in x.chunks(self.in_len()).enumerate() {
            self.im2col(x, act, cols, ld, j * p);
        }
        for (j, dy) in dy.chunks(self.out_len()).enumerate() {
            transpose(dy, c_out, p, &mut dy_t[j * p * c_out..][..p * c_out]);
        }
        gemm(
            (k, c_out, ld),
            dwt,
            c_out,
            true,
            cols,
            (ld, 1),
            dy_t,
            (c_out, 1),
        );
    }
}

/// Scratch buffers of one rayon thread, grown to the largest layer and kept across calls and
/// steps: fresh ones cost an allocation and page faults per chunk.
#[derive(Default)]
struct Workspace(Vec<f32>);

impl Workspace {
    /// Runs `f` with this thread's workspace.
    fn with<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
        thread_local! {
            static WORKSPACE: std::cell::RefCell<Workspace> = Default::default();
        }
        WORKSPACE.with_borrow_mut(f)
    }

    /// `N` disjoint buffers of the given lengths, with whatever values they held before: every
    /// caller writes them in full before reading.
    fn buffers<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [f32]; N] {
        let total = lens.iter().sum();
        if self.0.len() < total {
            self.0.resize(total, 0.0);
        }
        let mut rest = &mut self.0[..];
        lens.map(|len| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            head
        })
    }
}

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]`, in tiles that stay in cache.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// A per-channel `max(scale·x + shift, 0)` applied to a conv's input as im2col reads it: the
/// BatchNorm+ReLU before the conv, fused into it (see `bn_relu_conv`).
pub(super) struct InputActivation {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl InputActivation {
    /// `(scale, shift)` of `channel`.
    fn at(&self, channel: usize) -> (f32, f32) {
        (self.scale[channel], self.shift[channel])
    }

    fn apply(&self, channel: usize, values: &mut [f32]) {
        let (a, b) = (self.scale[channel], self.shift[channel]);
        values.iter_mut().for_each(|v| *v = (*v * a + b).max(0.0));
    }
}

/// The convolution of the images `x` (through `act` if given) with `w`: `[B, C_out, OH, OW]`.
pub(super) fn forward(
    g: &Geometry,
    x: &[f32],
    act: Option<&InputActivation>,
    w: &[f32],
) -> Vec<f32> {
    let nb = g.chunk();
    let mut y = super::zeros(g.batch * g.out_len());
    y.par_chunks_mut(nb * g.out_len())
        .zip(x.par_chunks(nb * g.in_len()))
        .for_each(|(y, x)| Workspace::with(|ws| g.forward_chunk(w, (x, act), y, ws)));
    y
}

/// The gradients of [`forward`] for the output gradient `dy`: the input's (of the activated
/// input when `act` is given) into `dx`, which must be zero, and the weight's into `dw_out`.
pub(super) fn backward(
    g: &Geometry,
    (x, act): (&[f32], Option<&InputActivation>),
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw_out: &mut [f32],
) {
    let (k, nb) = (g.k(), g.chunk());
    let w_len = g.c_out * k;
    // The weight gradient is summed per group of chunks, each group in order, then over the
    // groups in order: the same bits whatever rayon's scheduling, so a resumed run on the same
    // thread count (which sets the chunks) repeats an uninterrupted one. (A rayon fold/reduce
    // sums in whatever order work was stolen.)
    let chunks = g.batch.div_ceil(nb);
    let group = chunks.div_ceil(chunks.min(MAX_WEIGHT_PARTIALS)) * nb;
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(group * g.in_len())
        .zip(x.par_chunks(group * g.in_len()))
        .zip(dy.par_chunks(group * g.out_len()))
        .map(|((dx, x), dy)| {
            let mut dwt = vec![0f32; w_len];
            let chunks = dx
                .chunks_mut(nb * g.in_len())
                .zip(x.chunks(nb * g.in_len()))
                .zip(dy.chunks(nb * g.out_len()));
            Workspace::with(|ws| {
                for ((dx, x), dy) in chunks {
                    g.backward_chunk(w, (x, act, dy), dx, &mut dwt, ws);
                }
            });
            dwt
        })
        .collect();
    let mut partials = partials.into_iter();
    if let Some(mut dwt) = partials.next() {
        for partial in partials {
            dwt.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
        }
        transpose(&dwt, k, g.c_out, dw_out);
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`, each given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above state the extents; the slices outlive the call and `dst` is
    // exclusively borrowed. Chunks already run in parallel, so the GEMM itself runs on one thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: expects contiguous inputs"),
    }
}

/// Copies `dy` of a chunk of images (`[nb, C_out, P]`) into `[C_out, nb·P]`.
fn gather_chunk(g: &Geometry, dy: &[f32], nb: usize, dst: &mut [f32]) {
    let p = g.p();
    for j in 0..nb {
        for co in 0..g.c_out {
            dst[co * nb * p + j * p..][..p].copy_from_slice(&dy[(j * g.c_out + co) * p..][..p]);
        }
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "sslfast-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl, wl, self.stride, self.padding)?;
        let (x, w) = (
            contiguous(xs, xl, self.name())?,
            contiguous(ws, wl, self.name())?,
        );
        let y = forward(&g, x, None, w);
        Ok((CpuStorage::F32(y), g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let back = Conv2dBackward {
            stride: self.stride,
            padding: self.padding,
        };
        let dy = dy.contiguous()?;
        // One op yields both gradients, packed end to end: they share the pass over the batch.
        let both = x.apply_op3_no_bwd(w, &dy, &back)?;
        let mut grads = super::PackedGrads::new(both);
        let dx = grads.activation(x)?;
        let dw = grads.parameter(w)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(x, w, dy)` to `[dx, dW]` flattened and concatenated.
struct Conv2dBackward {
    stride: usize,
    padding: usize,
}

impl candle_core::CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "sslfast-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl, wl, self.stride, self.padding)?;
        let name = self.name();
        let (x, w, dy) = (
            contiguous(xs, xl, name)?,
            contiguous(ws, wl, name)?,
            contiguous(dys, dyl, name)?,
        );
        let mut out = super::zeros(g.batch * g.in_len() + g.c_out * g.k());
        let (dx, dw) = out.split_at_mut(g.batch * g.in_len());
        backward(&g, (x, None), w, dy, dx, dw);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{max_diff, uniform, weighted_grads};
    use candle_core::{Device, Var};

    /// Values in [-1, 1).
    fn randn(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, (-1.0, 1.0))
    }

    /// Output, input gradient and weight gradient of ours and candle's, for `sum(y · r)`.
    fn both(x: &[usize], w: &[usize], stride: usize, pad: usize) -> [(Tensor, Tensor); 3] {
        let xv = Var::from_tensor(&randn(x, 1)).unwrap();
        let wv = Var::from_tensor(&randn(w, 2)).unwrap();
        let ours = conv2d(&xv, &wv, stride, pad).unwrap();
        let theirs = xv.conv2d(&wv, pad, stride, 1, 1).unwrap();
        let r = randn(theirs.dims(), 3);
        let (g_ours, g_theirs) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
        let grad = |g: &candle_core::backprop::GradStore, v: &Var| g.get(v).unwrap().clone();
        [
            (ours, theirs),
            (grad(&g_ours, &xv), grad(&g_theirs, &xv)),
            (grad(&g_ours, &wv), grad(&g_theirs, &wv)),
        ]
    }

    #[test]
    fn matches_candle_forward_and_backward() {
        // (input, kernel, stride, padding): odd sizes, batch 1, strides 1/2, kernels 1/3/5/7, inputs
        // smaller than the kernel; stride 1 with "same" padding takes the shifted-plane path.
        let cases: &[(&[usize], &[usize], usize, usize)] = &[
            (&[2, 3, 8, 8], &[4, 3, 3, 3], 1, 1),
            (&[1, 5, 7, 9], &[6, 5, 3, 3], 2, 1),
            (&[3, 4, 9, 9], &[8, 4, 1, 1], 2, 0),
            (&[5, 6, 5, 5], &[3, 6, 1, 1], 1, 0),
            (&[2, 3, 13, 11], &[4, 3, 7, 7], 2, 3),
            (&[1, 2, 5, 5], &[2, 2, 3, 3], 1, 0),
            (&[9, 8, 2, 2], &[16, 8, 3, 3], 1, 1),
            (&[2, 2, 3, 3], &[2, 2, 3, 3], 2, 1),
            (&[2, 3, 2, 3], &[4, 3, 7, 7], 1, 3),
            (&[3, 2, 7, 5], &[3, 2, 5, 5], 1, 2),
            // Maps over 64 output pixels, past the gather table: shifted planes, then rows.
            (&[2, 3, 12, 10], &[4, 3, 3, 3], 1, 1),
            (&[1, 2, 11, 9], &[3, 2, 5, 5], 1, 2),
            (&[2, 2, 17, 15], &[3, 2, 3, 3], 2, 1),
            (&[1, 3, 12, 12], &[2, 3, 3, 3], 1, 0),
            // Chunks of several images whatever the thread count (up to 35 threads).
            (&[70, 4, 2, 2], &[5, 4, 3, 3], 1, 1),
            (&[1, 2, 1, 1], &[3, 2, 5, 5], 2, 2),
        ];
        for &(x, w, s, p) in cases {
            for (what, (ours, theirs)) in ["output", "input grad", "weight grad"]
                .iter()
                .zip(both(x, w, s, p))
            {
                assert_eq!(ours.dims(), theirs.dims(), "{what} {x:?} {w:?} s{s} p{p}");
                let d = max_diff(&ours, &theirs);
                assert!(d < 1e-4, "{what} {x:?} {w:?} s{s} p{p}: differs by {d}");
            }
        }
    }

    #[test]
    fn im2col_paths_agree() {
        // (input [C, H, W], kernel, stride, padding)
        let cases = [
            ([3, 6, 5], 3, 1, 1),
            ([2, 5, 7], 3, 2, 1),
            ([2, 9, 8], 5, 1, 2),
            ([1, 4, 4], 7, 1, 3),
            ([2, 6, 6], 1, 2, 0),
            ([2, 5, 5], 3, 1, 0),
        ];
        for ([c, h, w], k, stride, pad) in cases {
            let x = randn(&[1, c, h, w], 1)
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let xl = Layout::contiguous((1, c, h, w));
            let g = Geometry::new(&xl, &Layout::contiguous((2, c, k, k)), stride, pad).unwrap();
            let act = InputActivation {
                scale: vec![0.5; c],
                shift: vec![-0.1; c],
            };
            let (len, table) = (g.k() * g.p(), g.gather_table());
            let mut expected = vec![f32::NAN; len];
            g.im2col_by_rows(&x, Some(&act), &mut expected, g.p(), 0);
            let mut by_table = vec![f32::NAN; len];
            g.im2col_by_table(&table, &x, Some(&act), &mut by_table, g.p(), 0);
            assert_eq!(
                by_table, expected,
                "gather table {c}x{h}x{w} k{k} s{stride} p{pad}"
            );
            let mut dx_rows = vec![0.0; x.len()];
            g.col2im_by_rows(&expected, g.p(), 0, &mut dx_rows);
            let mut dx_table = vec![0.0; x.len()];
            g.col2im_by_table(&table, &expected, g.p(), 0, &mut dx_table);
            assert_eq!(dx_table, dx_rows, "col2im table {c}x{h}x{w} k{k}");
            if g.is_same_shape() {
                let mut shifted = vec![f32::NAN; len];
                g.im2col_shifted(&x, Some(&act), &mut shifted, g.p(), 0);
                assert_eq!(shifted, expected, "shifted {c}x{h}x{w} k{k}");
                let mut dx_shifted = vec![0.0; x.len()];
                g.col2im_shifted(&mut expected.clone(), g.p(), 0, &mut dx_shifted);
                assert_eq!(dx_shifted, dx_rows, "col2im shifted {c}x{h}x{w} k{k}");
            }
        }
    }

    #[test]
    fn weight_gradient_has_the_same_bits_on_every_run() {
        // Many chunks, so a reduction in scheduling order would show.
        let x = randn(&[256, 16, 16, 16], 7);
        let w = Var::from_tensor(&randn(&[32, 16, 3, 3], 8)).unwrap();
        let r = randn(&[256, 32, 16, 16], 9);
        let grad = || {
            let g = (conv2d(&x, &w, 1, 1).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            g.get(&w)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let first = grad();
        for _ in 0..8 {
            assert_eq!(grad(), first);
        }
    }

    #[test]
    fn weight_gradient_matches_finite_differences() {
        let x = randn(&[2, 2, 5, 5], 4);
        let w = Var::from_tensor(&randn(&[3, 2, 3, 3], 5)).unwrap();
        let r = randn(&[2, 3, 3, 3], 6);
        let f = |w: &Tensor| {
            (conv2d(&x, w, 2, 1).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let g = (conv2d(&x, &w, 2, 1).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = g
            .get(&w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let w0 = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in [0, 7, 20, 53] {
            let at = |d: f32| {
                let mut v = w0.clone();
                v[i] += d;
                f(&Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap())
            };
            let fd = (at(1e-2) - at(-1e-2)) / 2e-2;
            assert!(
                (fd - g[i]).abs() < 2e-2,
                "w[{i}]: analytic {} vs fd {fd}",
                g[i]
            );
        }
    }
}
