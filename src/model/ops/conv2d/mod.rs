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
//!
//! The im2col/col2im walks are in [`im2col`]; the GEMM and per-thread workspaces in
//! [`super::gemm`].

mod im2col;
#[cfg(test)]
mod tests;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous;
use super::gemm::{gemm, transpose, Workspace};
pub(super) use im2col::InputActivation;
use im2col::{ColumnPath, SMALL_MAP};

/// GEMM columns a chunk aims for: below this the packing of `W` dominates small late layers.
const TARGET_COLUMNS: usize = 1024;

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
