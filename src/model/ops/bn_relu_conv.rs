//! `conv(relu(bn(z)))` in training mode, f32 on the CPU, as one candle op. Inside a ResNet block
//! (and between conv4's layers) the BatchNorm+ReLU output is read by nothing but the next conv,
//! so that conv applies the normalisation and ReLU to each value as its im2col reads it, and
//! the normalised map is never stored: one full-size activation less per block kept for the
//! backward pass (ResNet-18 w64, batch 256 x 2 views, 32 px: 480 MiB) and one pass less over
//! it. The backward recomputes the activation the same way for the weight gradient and takes
//! the ReLU mask from `z`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::batch_norm::{self, Stats};
use super::conv2d::{self, Geometry, InputActivation};

/// `conv(relu(bn(z)), w)` with square stride and zero padding; in training mode the running
/// statistics of `bn` are updated. Other devices, dtypes and inference compose the layers.
pub fn bn_relu_conv2d(
    bn: &candle_nn::BatchNorm,
    z: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    train: bool,
) -> Result<Tensor> {
    let fused = batch_norm::fused_affine(bn, z, train)?.filter(|_| w.dtype() == DType::F32);
    let Some(affine) = fused.filter(|_| z.rank() == 4) else {
        let activated = batch_norm::batch_norm(bn, z, train, true)?;
        return conv2d::conv2d(&activated, w, stride, padding);
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    let op = BnReluConv2d {
        stride,
        padding,
        eps: bn.eps() as f32,
        stats: stats.clone(),
    };
    let y = z.contiguous()?.apply_op3(&affine, &w.contiguous()?, op)?;
    batch_norm::update_running(bn, &stats.lock().expect("batch-norm stats"))?;
    Ok(y)
}

/// The forward op over `(z, [γ; β], w)`; its backward is [`BnReluConv2dBackward`].
struct BnReluConv2d {
    stride: usize,
    padding: usize,
    eps: f32,
    stats: Arc<Mutex<Stats>>,
}

fn activation(stats: &Stats) -> InputActivation {
    let (scale, shift) = stats.scale_shift();
    InputActivation { scale, shift }
}

impl CustomOp3 for BnReluConv2d {
    fn name(&self) -> &'static str {
        "sslfast-bn-relu-conv2d"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        a_s: &CpuStorage,
        al: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(zl, wl, self.stride, self.padding)?;
        let dims = batch_norm::planes(zl)?;
        let (z, affine, w) = (
            batch_norm::slice(zs, zl)?,
            batch_norm::slice(a_s, al)?,
            batch_norm::slice(ws, wl)?,
        );
        if affine.len() != 2 * dims.1 {
            candle_core::bail!(
                "bn-relu-conv2d: {} channels but {} weights",
                dims.1,
                affine.len() / 2
            );
        }
        let stats = batch_norm::batch_stats(dims, z, affine.split_at(dims.1), self.eps)?;
        let y = conv2d::forward(&g, z, Some(&activation(&stats)), w);
        *self.stats.lock().expect("batch-norm stats") = stats;
        Ok((CpuStorage::F32(y), g.out_shape()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        affine: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = BnReluConv2dBackward {
            stride: self.stride,
            padding: self.padding,
            stats: self.stats.lock().expect("batch-norm stats").clone(),
        };
        let packed = z.apply_op3_no_bwd(w, &dy.contiguous()?, &back)?;
        let mut grads = super::PackedGrads::new(packed);
        let dz = grads.activation(z)?;
        let dw = grads.parameter(w)?;
        Ok((Some(dz), Some(grads.parameter(affine)?), Some(dw)))
    }
}

/// `(z, w, dy)` to `[dz, dW, dγ, dβ]` flattened and concatenated.
struct BnReluConv2dBackward {
    stride: usize,
    padding: usize,
    stats: Stats,
}

impl CustomOp3 for BnReluConv2dBackward {
    fn name(&self) -> &'static str {
        "sslfast-bn-relu-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(zl, wl, self.stride, self.padding)?;
        let dims = batch_norm::planes(zl)?;
        let (z, w, dy) = (
            batch_norm::slice(zs, zl)?,
            batch_norm::slice(ws, wl)?,
            batch_norm::slice(ds, dl)?,
        );
        let act = activation(&self.stats);
        let mut out = super::zeros(z.len() + w.len() + 2 * dims.1);
        let (dz, rest) = out.split_at_mut(z.len());
        let (dw, d_affine) = rest.split_at_mut(w.len());
        // dz first holds the gradient at the activation relu(bn(z)), the conv's actual input.
        conv2d::backward(&g, (z, Some(&act)), w, dy, dz, dw);
        batch_norm::mask_by_input(dims, dz, z, (&act.scale, &act.shift));
        batch_norm::backward_in_place(dims, z, &self.stats, dz, d_affine)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::test_util::{
        assert_same_batch_norm, batch_norm_layer, max_diff, uniform, weighted_grads,
    };
    use candle_core::Var;
    use candle_nn::{ModuleT, VarMap};

    /// A BatchNorm with γ, β in [-1, 1): some channels flipped, many values clipped by the
    /// ReLU.
    fn layer(c: usize) -> (VarMap, candle_nn::BatchNorm) {
        batch_norm_layer(c, (-1.0, 1.0))
    }

    #[test]
    fn matches_candle_batch_norm_relu_then_conv() {
        // (input, kernel, stride, padding): batch 1, odd sizes, strides 1/2, kernels 1/3; up to
        // 64 output pixels im2col goes through its gather table.
        let cases: &[(&[usize], &[usize], usize, usize)] = &[
            (&[4, 3, 6, 6], &[5, 3, 3, 3], 1, 1),
            (&[1, 4, 7, 5], &[3, 4, 3, 3], 2, 1),
            (&[3, 6, 5, 5], &[4, 6, 1, 1], 2, 0),
            (&[2, 2, 4, 4], &[2, 2, 3, 3], 1, 0),
            // Past 64 output pixels: the shifted-plane and the row-by-row im2col.
            (&[2, 3, 10, 10], &[4, 3, 3, 3], 1, 1),
            (&[1, 2, 19, 17], &[3, 2, 3, 3], 2, 1),
        ];
        for &(zs, ws, stride, pad) in cases {
            let z = Var::from_tensor(&uniform(zs, 1, (-1.0, 3.0))).unwrap();
            let w = Var::from_tensor(&uniform(ws, 2, (-1.0, 1.0))).unwrap();
            let (ours_vars, ours_bn) = layer(zs[1]);
            let (theirs_vars, theirs_bn) = layer(zs[1]);
            let ours = bn_relu_conv2d(&ours_bn, &z, &w, stride, pad, true).unwrap();
            let activated = theirs_bn.forward_t(&z, true).unwrap().relu().unwrap();
            let theirs = activated.conv2d(&w, pad, stride, 1, 1).unwrap();
            let case = format!("{zs:?} {ws:?} s{stride} p{pad}");
            assert!(max_diff(&ours, &theirs) < 1e-4, "{case}: output");
            let r = uniform(theirs.dims(), 3, (-1.0, 1.0));
            let (go, gt) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
            for (what, o, t) in [("z", &z, &z), ("w", &w, &w)] {
                let d = max_diff(go.get(o).unwrap(), gt.get(t).unwrap());
                assert!(d < 1e-3, "{case}: {what} grad differs by {d}");
            }
            assert_same_batch_norm(&case, (&ours_vars, &go), (&theirs_vars, &gt));
        }
    }
}
