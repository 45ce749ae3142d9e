//! Max pooling with padding (the ImageNet stem's 3x3, stride 2, padding 1) for f32 on the CPU as
//! a candle op with a backward: candle 0.11 has a max-pool backward only when kernel == stride,
//! so ResNets with that stem could not train. Padding counts as -inf, as in PyTorch; each output
//! takes the first maximum of its window in row-major order, and the backward sends the output's
//! gradient to that input (PyTorch's tie rule). Other devices and dtypes keep candle's pooling
//! on zero padding (exact only on inputs >= 0, as after the stem's ReLU; forward only).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous;

/// `x [B, C, H, W]` max-pooled with a square `kernel`, `stride` and `padding`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let op = MaxPool {
        kernel,
        stride,
        padding,
    };
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        let padded = x
            .pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?;
        return padded.max_pool2d_with_stride(kernel, stride);
    }
    x.contiguous()?.apply_op1(op)
}

#[derive(Debug, Clone, Copy)]
struct MaxPool {
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// The shapes of one call: planes (B·C), input and output sides.
struct Dims {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl MaxPool {
    fn dims(&self, layout: &Layout) -> Result<Dims> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if k == 0 || s == 0 || p >= k || h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("max_pool2d: kernel {k}, stride {s}, padding {p} on {h}x{w}");
        }
        Ok(Dims {
            planes: b * c,
            h,
            w,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        })
    }

    /// The flat index within `plane` of the first maximum of output `(oy, ox)`'s window.
    fn argmax(&self, d: &Dims, plane: &[f32], oy: usize, ox: usize) -> usize {
        let (y0, x0) = (
            (oy * self.stride) as isize - self.padding as isize,
            (ox * self.stride) as isize - self.padding as isize,
        );
        let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
        for y in y0.max(0)..(y0 + self.kernel as isize).min(d.h as isize) {
            for x in x0.max(0)..(x0 + self.kernel as isize).min(d.w as isize) {
                let i = y as usize * d.w + x as usize;
                // `>` keeps the first of equal values; NaN is taken, so it propagates.
                if plane[i] > best || at == usize::MAX || plane[i].is_nan() && !best.is_nan() {
                    (best, at) = (plane[i], i);
                }
            }
        }
        at
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "sslfast-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l)?;
        let x = contiguous(s, l, self.name())?;
        let mut y = vec![0f32; d.planes * d.oh * d.ow];
        y.par_chunks_mut(d.oh * d.ow)
            .zip(x.par_chunks(d.h * d.w))
            .for_each(|(out, plane)| {
                for oy in 0..d.oh {
                    for ox in 0..d.ow {
                        out[oy * d.ow + ox] = plane[self.argmax(&d, plane, oy, ox)];
                    }
                }
            });
        let (b, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(y), Shape::from((b, c, d.oh, d.ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&dy, &MaxPoolBackward(*self))?))
    }
}

/// `(x, dy)` to `dx`: each output's gradient added to its window's first maximum.
struct MaxPoolBackward(MaxPool);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "sslfast-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let pool = &self.0;
        let d = pool.dims(xl)?;
        let (x, dy) = (
            contiguous(xs, xl, self.name())?,
            contiguous(ds, dl, self.name())?,
        );
        if dy.len() != d.planes * d.oh * d.ow {
            candle_core::bail!(
                "{}: gradient of {:?} for input {:?}",
                self.name(),
                dl.shape(),
                xl.shape()
            );
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(d.h * d.w)
            .zip(x.par_chunks(d.h * d.w).zip(dy.par_chunks(d.oh * d.ow)))
            .for_each(|(grad, (plane, g))| {
                for oy in 0..d.oh {
                    for ox in 0..d.ow {
                        grad[pool.argmax(&d, plane, oy, ox)] += g[oy * d.ow + ox];
                    }
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::test_util::{max_diff, uniform, weighted_grads};
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_on_padded_non_negative_inputs_and_its_gradient_is_exact() {
        for (shape, k, s, p) in [
            ([2, 3, 9, 9], 3, 2, 1),
            ([1, 2, 8, 7], 3, 2, 1),
            ([2, 2, 6, 6], 2, 2, 0),
            ([1, 1, 5, 5], 3, 1, 1),
        ] {
            let x = Var::from_tensor(&uniform(&shape, 1, (0.0, 1.0))).unwrap();
            let ours = max_pool2d(&x, k, s, p).unwrap();
            let padded = x
                .pad_with_zeros(2, p, p)
                .unwrap()
                .pad_with_zeros(3, p, p)
                .unwrap();
            let theirs = padded.max_pool2d_with_stride(k, s).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(max_diff(&ours, &theirs), 0.0, "{shape:?} k{k} s{s} p{p}");
            // d(sum(y · r))/dx: each r added once at its window's maximum (values are distinct).
            let r = uniform(ours.dims(), 2, (-1.0, 1.0));
            let dx = weighted_grads(&ours, &r).get(&x).unwrap().clone();
            let expected = manual_grad(&x.as_tensor().clone(), &r, k, s, p);
            assert!(max_diff(&dx, &expected) < 1e-6, "{shape:?} k{k} s{s} p{p}");
        }
    }

    /// The gradient by brute force over the padded windows.
    fn manual_grad(x: &Tensor, r: &Tensor, k: usize, s: usize, p: usize) -> Tensor {
        let (b, c, h, w) = x.dims4().unwrap();
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut g = vec![0f32; xv.len()];
        for plane in 0..b * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(f32, usize)> = None;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (y, xx) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let i = plane * h * w + y as usize * w + xx as usize;
                            if best.is_none_or(|(v, _)| xv[i] > v) {
                                best = Some((xv[i], i));
                            }
                        }
                    }
                    g[best.unwrap().1] += rv[plane * oh * ow + oy * ow + ox];
                }
            }
        }
        Tensor::from_vec(g, (b, c, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn negative_inputs_see_padding_as_minus_infinity() {
        let x =
            Tensor::from_vec(vec![-3f32, -1.0, -2.0, -4.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = max_pool2d(&x, 3, 2, 1).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [-1.0]);
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum() {
        let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let y = max_pool2d(&x, 2, 2, 0).unwrap();
        let dx = y
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .clone();
        assert_eq!(
            dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 0.0, 0.0, 0.0]
        );
    }
}
