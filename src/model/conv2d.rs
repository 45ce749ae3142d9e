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

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn new(x: &Layout, w: &Layout, stride: usize, pad: usize) -> Result<Self> {
        let (batch, c_in, h, width) = x.shape().dims4()?;
        let (c_out, wc_in, kh, kw) = w.shape().dims4()?;
        if wc_in != c_in || h + 2 * pad < kh || width + 2 * pad < kw || stride == 0 {
            candle_core::bail!(
                "conv2d: input {:?} does not fit kernel {:?} with stride {stride}, padding {pad}",
                x.shape(),
                w.shape()
            );
        }
        Ok(Self {
            batch,
            c_in,
            h,
            w: width,
            c_out,
            kh,
            kw,
            stride,
            pad,
        })
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

    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.c_out * self.p()
    }

    /// Images per chunk: enough GEMM columns, yet two chunks per thread when the batch allows.
    fn chunk(&self) -> usize {
        let for_columns = TARGET_COLUMNS.div_ceil(self.p());
        let for_balance = self.batch.div_ceil(2 * rayon::current_num_threads());
        for_columns.min(for_balance).max(1)
    }

    /// Calls `f(row, kx, oy, src)` for every (im2col row, output row) pair: the loop nest that
    /// im2col and col2im share. `src` is the offset in the image of the input row the kernel
    /// row meets, `None` where it lies in the padding.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize, Option<usize>)) {
        let (kh, kw, oh) = (self.kh, self.kw, self.oh());
        for ci in 0..self.c_in {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = (ci * kh + ky) * kw + kx;
                    for oy in 0..oh {
                        let iy = (oy * self.stride + ky).checked_sub(self.pad);
                        let src = iy
                            .filter(|&iy| iy < self.h)
                            .map(|iy| (ci * self.h + iy) * self.w);
                        f(row, kx, oy, src);
                    }
                }
            }
        }
    }

    /// For kernel column `kx`, the output columns `ox` whose input column `ox·s + kx − pad`
    /// lies inside the image, as a range, and that input column for the first of them.
    fn valid_columns(&self, kx: usize) -> (std::ops::Range<usize>, usize) {
        let s = self.stride;
        let first = self.pad.saturating_sub(kx).div_ceil(s);
        // ox·s + kx − pad < w  ⇔  ox < (w + pad − kx) / s, rounded up.
        let end = (self.w + self.pad)
            .saturating_sub(kx)
            .div_ceil(s)
            .min(self.ow());
        let first = first.min(end);
        (first..end, (first * s + kx).saturating_sub(self.pad))
    }

    /// Writes the columns of one image into `cols` (`K` rows of stride `ld`, from column `col0`).
    fn im2col(&self, x: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
        let (ow, s) = (self.ow(), self.stride);
        self.for_each_row(|row, kx, oy, src| {
            let dst = &mut cols[row * ld + col0 + oy * ow..][..ow];
            let Some(src) = src else {
                dst.fill(0.0);
                return;
            };
            let (valid, ix0) = self.valid_columns(kx);
            dst[..valid.start].fill(0.0);
            dst[valid.end..].fill(0.0);
            let src = &x[src..src + self.w];
            if s == 1 {
                dst[valid.clone()].copy_from_slice(&src[ix0..ix0 + valid.len()]);
            } else {
                for (i, d) in dst[valid].iter_mut().enumerate() {
                    *d = src[ix0 + i * s];
                }
            }
        });
    }

    /// Adds the columns of one image back onto `dx`: the transpose of [`Self::im2col`].
    fn col2im(&self, cols: &[f32], ld: usize, col0: usize, dx: &mut [f32]) {
        let (ow, s) = (self.ow(), self.stride);
        self.for_each_row(|row, kx, oy, src| {
            let Some(src) = src else { return };
            let (valid, ix0) = self.valid_columns(kx);
            let col = &cols[row * ld + col0 + oy * ow..][..ow];
            let dst = &mut dx[src..src + self.w];
            for (i, c) in col[valid].iter().enumerate() {
                dst[ix0 + i * s] += c;
            }
        });
    }
}

impl Geometry {
    /// One chunk of images: writes its input gradient into `dx` and adds its weight gradient
    /// onto `dw`.
    fn backward_chunk(&self, w: &[f32], (x, dy): (&[f32], &[f32]), dx: &mut [f32], dw: &mut [f32]) {
        let (k, p) = (self.k(), self.p());
        let nb = x.len() / self.in_len();
        let ld = nb * p;
        let mut dyt = vec![0f32; self.c_out * ld];
        gather_chunk(self, dy, nb, &mut dyt);
        let mut cols = vec![0f32; k * ld];
        // Input gradient: cols = Wᵀ · dy, folded back onto the images.
        gemm(
            (k, ld, self.c_out),
            &mut cols,
            ld,
            false,
            w,
            (1, k),
            &dyt,
            (ld, 1),
        );
        for (j, dx) in dx.chunks_mut(self.in_len()).enumerate() {
            self.col2im(&cols, ld, j * p, dx);
        }
        // Weight gradient: dW += dy · colsᵀ, with the columns of x this time.
        for (j, x) in x.chunks(self.in_len()).enumerate() {
            self.im2col(x, &mut cols, ld, j * p);
        }
        gemm(
            (self.c_out, k, ld),
            dw,
            k,
            true,
            &dyt,
            (ld, 1),
            &cols,
            (1, ld),
        );
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
        let (k, p, nb) = (g.k(), g.p(), g.chunk());
        let mut y = vec![0f32; g.batch * g.out_len()];
        y.par_chunks_mut(nb * g.out_len())
            .zip(x.par_chunks(nb * g.in_len()))
            .for_each(|(y, x)| {
                let nb = x.len() / g.in_len();
                let ld = nb * p;
                let mut cols = vec![0f32; k * ld];
                for (j, x) in x.chunks(g.in_len()).enumerate() {
                    g.im2col(x, &mut cols, ld, j * p);
                }
                let mut out = vec![0f32; g.c_out * ld];
                gemm(
                    (g.c_out, ld, k),
                    &mut out,
                    ld,
                    false,
                    w,
                    (k, 1),
                    &cols,
                    (ld, 1),
                );
                for (j, y) in y.chunks_mut(g.out_len()).enumerate() {
                    for co in 0..g.c_out {
                        y[co * p..][..p].copy_from_slice(&out[co * ld + j * p..][..p]);
                    }
                }
            });
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.batch, g.c_out, g.oh(), g.ow())),
        ))
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
        let dx = both.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
        let dw = both
            .narrow(0, x.elem_count(), w.elem_count())?
            .reshape(w.shape())?;
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
        let (k, nb) = (g.k(), g.chunk());
        let w_len = g.c_out * k;
        let mut out = vec![0f32; g.batch * g.in_len() + w_len];
        let (dx, dw_out) = out.split_at_mut(g.batch * g.in_len());
        // The weight gradient is summed per group of chunks, each group in order, then over the
        // groups in order: the same bits whatever rayon's scheduling, so a resumed run repeats
        // an uninterrupted one. (A rayon fold/reduce sums in whatever order work was stolen.)
        let chunks = g.batch.div_ceil(nb);
        let group = chunks.div_ceil(chunks.min(MAX_WEIGHT_PARTIALS)) * nb;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(group * g.in_len())
            .zip(x.par_chunks(group * g.in_len()))
            .zip(dy.par_chunks(group * g.out_len()))
            .map(|((dx, x), dy)| {
                let mut dw = vec![0f32; w_len];
                let chunks = dx
                    .chunks_mut(nb * g.in_len())
                    .zip(x.chunks(nb * g.in_len()))
                    .zip(dy.chunks(nb * g.out_len()));
                for ((dx, x), dy) in chunks {
                    g.backward_chunk(w, (x, dy), dx, &mut dw);
                }
                dw
            })
            .collect();
        for partial in &partials {
            dw_out.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{max_diff, uniform};
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
        let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (&theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad = |g: &candle_core::backprop::GradStore, v: &Var| g.get(v).unwrap().clone();
        [
            (ours, theirs),
            (grad(&g_ours, &xv), grad(&g_theirs, &xv)),
            (grad(&g_ours, &wv), grad(&g_theirs, &wv)),
        ]
    }

    #[test]
    fn matches_candle_forward_and_backward() {
        // (input, kernel, stride, padding): odd sizes, batch 1, strides 1/2, kernels 1/3/7.
        let cases: &[(&[usize], &[usize], usize, usize)] = &[
            (&[2, 3, 8, 8], &[4, 3, 3, 3], 1, 1),
            (&[1, 5, 7, 9], &[6, 5, 3, 3], 2, 1),
            (&[3, 4, 9, 9], &[8, 4, 1, 1], 2, 0),
            (&[5, 6, 5, 5], &[3, 6, 1, 1], 1, 0),
            (&[2, 3, 13, 11], &[4, 3, 7, 7], 2, 3),
            (&[1, 2, 5, 5], &[2, 2, 3, 3], 1, 0),
            (&[9, 8, 2, 2], &[16, 8, 3, 3], 1, 1),
            (&[2, 2, 3, 3], &[2, 2, 3, 3], 2, 1),
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
