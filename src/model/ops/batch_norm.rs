//! Training-mode BatchNorm (optionally followed by ReLU) for f32 on the CPU as one candle custom
//! op with a closed-form backward. Over the `M = N·H·W` values of each channel:
//!
//! - forward:  `x̂ = (x − μ) / sqrt(σ² + ε)`, `y = γ x̂ + β` (then `max(y, 0)`; at the end of
//!   a ResNet block `max(y + residual, 0)`, see [`batch_norm_add_relu`])
//! - backward: `g = dy · [y > 0]` (also the residual's gradient), `dβ = Σ g`, `dγ = Σ g x̂`,
//!   `dx = γ / sqrt(σ² + ε) · (g − dβ / M − x̂ · dγ / M)`
//!
//! candle's own BatchNorm builds this from a dozen tensor ops, each a full-size temporary with
//! its own backward node; here the forward is two passes and the backward two more. Running
//! statistics are updated as candle does (momentum, unbiased variance). Inference mode, other
//! devices and dtypes use candle's layer (see [`batch_norm`]).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, Var};

use super::sync_bn::{self, Synced};
use candle_nn::ModuleT;
use rayon::prelude::*;

/// `bn(x)` then, if `relu`, `max(·, 0)`; `x` is `[N, C]` or `[N, C, H, W]`. In training mode
/// the running statistics of `bn` are updated.
pub fn batch_norm(
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    match fused_affine(bn, x, train)? {
        Some(affine) => train_op(bn, x, &affine, None, relu),
        None => {
            let y = bn.forward_t(x, train)?;
            if relu {
                y.relu()
            } else {
                Ok(y)
            }
        }
    }
}

/// `relu(bn(x) + residual)`, the end of a ResNet block, as one op: neither the normalised map
/// nor the sum is kept for the backward pass, two fewer full-size activations per block
/// (ResNet-18, batch 256 x 2 views, 32 px: about 1 GB less at peak).
pub fn batch_norm_add_relu(
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    residual: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let affine = fused_affine(bn, x, train)?
        .filter(|_| residual.dtype() == DType::F32 && residual.dims() == x.dims());
    match affine {
        Some(affine) => train_op(bn, x, &affine, Some(residual), true),
        None => (bn.forward_t(x, train)? + residual)?.relu(),
    }
}

/// `[γ; β]` as one `[2, C]` tensor, where the fused op applies: training mode, f32 on the CPU.
pub(super) fn fused_affine(
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    train: bool,
) -> Result<Option<Tensor>> {
    let fused = train && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 2;
    match bn.weight_and_bias().filter(|_| fused) {
        Some((gamma, beta)) => Ok(Some(Tensor::stack(&[gamma, beta], 0)?)),
        // candle's layer knows nothing of the group: it would train on local statistics.
        None if train && sync_bn::current().is_some() => candle_core::bail!(
            "sync_bn needs the fused CPU BatchNorm (f32 on the CPU, not --use-candle-ops); \
             this is {:?} on {:?}",
            x.dtype(),
            x.device().location()
        ),
        None => Ok(None),
    }
}

/// Runs [`BatchNormTrain`], with or without a residual, and updates the running statistics.
fn train_op(
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    affine: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let saved = Arc::new(Mutex::new(Stats::default()));
    let op = BatchNormTrain {
        eps: bn.eps() as f32,
        relu,
        stats: saved.clone(),
    };
    let x = x.contiguous()?;
    let y = match residual {
        None => x.apply_op2(affine, op)?,
        Some(r) => x.apply_op3(affine, &r.contiguous()?, op)?,
    };
    let stats = saved.lock().expect("batch-norm stats").clone();
    update_running(bn, &stats)?;
    Ok(y)
}

/// What the forward pass leaves for the backward pass and the running statistics.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    mean: Vec<f32>,
    /// Biased variance, as the normalisation uses.
    var: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// Values per channel, `N·H·W` (over the whole group when synchronised).
    count: usize,
    /// The group the statistics were taken over, for the backward pass.
    sync: Synced,
}

impl Stats {
    /// Per channel `(γ / sqrt(σ² + ε), β − μ γ / sqrt(σ² + ε))`: the normalisation as one
    /// multiply-add, in the order the forward computes it (the ReLU mask of the backward
    /// depends on the exact bits).
    pub(super) fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = (self.gamma.iter().zip(&self.inv_std))
            .map(|(g, s)| g * s)
            .collect();
        let shift = (self.beta.iter().zip(&self.mean).zip(&scale))
            .map(|((b, m), a)| b - m * a)
            .collect();
        (scale, shift)
    }
}

pub(super) fn update_running(bn: &candle_nn::BatchNorm, stats: &Stats) -> Result<()> {
    let m = bn.momentum();
    let unbias = stats.count as f64 / (stats.count as f64 - 1.0).max(1.0);
    let blend = |running: &Tensor, batch: &[f32], scale: f64| -> Result<()> {
        let batch = Tensor::from_slice(batch, batch.len(), running.device())?;
        let new = ((running * (1.0 - m))? + (batch * (m * scale))?)?;
        Var::from_tensor(running)?.set(&new)
    };
    blend(bn.running_mean(), &stats.mean, 1.0)?;
    blend(bn.running_var(), &stats.var, unbias)
}

/// `(channels, values per channel within one sample)` of an `[N, C, ...]` layout.
pub(super) fn planes(l: &Layout) -> Result<(usize, usize, usize)> {
    let dims = l.dims();
    if dims.len() < 2 {
        candle_core::bail!("batch-norm: input must be [N, C, ...], is {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

pub(super) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("batch-norm: expects contiguous inputs"),
    }
}

/// Per channel, `f` summed over the `N` planes of `hw` values that belong to it.
fn per_channel(
    (n, c, hw): (usize, usize, usize),
    f: impl Fn(usize, std::ops::Range<usize>) -> (f32, f32) + Sync,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold((0f64, 0f64), |(a, b), s| {
                let (da, db) = f(ch, (s * c + ch) * hw..(s * c + ch + 1) * hw);
                (a + f64::from(da), b + f64::from(db))
            })
        })
        .collect()
}

/// The training-mode forward over `x` (`dims` as [`planes`] gives them): batch statistics, then
/// `γ x̂ + β`, plus `residual` if given, then ReLU if `relu`.
fn normalise(
    dims: (usize, usize, usize),
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    relu: bool,
    eps: f32,
) -> Result<(Vec<f32>, Stats)> {
    let (_, c, hw) = dims;
    if gamma.len() != c || beta.len() != c {
        candle_core::bail!("batch-norm: {c} channels but {} weights", gamma.len());
    }
    if residual.is_some_and(|r| r.len() != x.len()) {
        candle_core::bail!("batch-norm: residual and input differ in size");
    }
    let stats = batch_stats(dims, x, (gamma, beta), eps)?;
    let (scale, shift) = stats.scale_shift();
    let mut y = super::zeros(x.len());
    y.par_chunks_mut(c * hw)
        .zip(x.par_chunks(c * hw))
        .enumerate()
        .for_each(|(sample, (y, x))| {
            for ch in 0..c {
                let (a, b) = (scale[ch], shift[ch]);
                let (y, x) = (&mut y[ch * hw..][..hw], &x[ch * hw..][..hw]);
                for (y, x) in y.iter_mut().zip(x) {
                    *y = x * a + b;
                }
                if let Some(r) = residual {
                    let r = &r[(sample * c + ch) * hw..][..hw];
                    y.iter_mut().zip(r).for_each(|(y, r)| *y += r);
                }
                if relu {
                    y.iter_mut().for_each(|y| *y = y.max(0.0));
                }
            }
        });
    Ok((y, stats))
}

/// Batch mean and variance of `x` per channel (over the group set by
/// [`sync_bn::sync_batch_norm`], if any), with the affine parameters.
pub(super) fn batch_stats(
    dims: (usize, usize, usize),
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
) -> Result<Stats> {
    let (n, _, hw) = dims;
    let sync = Synced(sync_bn::current());
    // The count travels with the sums: a group's shares of a last batch may differ in size.
    let mut sums: Vec<f64> = per_channel(dims, |_, r| (x[r].iter().sum(), 0.0))
        .iter()
        .map(|s| s.0)
        .collect();
    sums.push((n * hw) as f64);
    let sums = sync.sum(sums)?;
    let (sums, count) = sums.split_at(sums.len() - 1);
    let count = count[0];
    let mean: Vec<f32> = sums.iter().map(|s| (s / count) as f32).collect();
    let sq = per_channel(dims, |ch, r| {
        let m = mean[ch];
        (x[r].iter().map(|v| (v - m) * (v - m)).sum(), 0.0)
    });
    let sq = sync.sum(sq.iter().map(|s| s.0).collect())?;
    let var: Vec<f32> = sq.iter().map(|s| (s / count) as f32).collect();
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Ok(Stats {
        mean,
        var,
        inv_std,
        gamma: gamma.to_vec(),
        beta: beta.to_vec(),
        count: count as usize,
        sync,
    })
}

/// Training-mode BatchNorm over `(x, [γ; β])` (then ReLU if `relu`), and over
/// `(x, [γ; β], residual)` to `relu(γ x̂ + β + residual)`.
struct BatchNormTrain {
    eps: f32,
    relu: bool,
    stats: Arc<Mutex<Stats>>,
}

impl BatchNormTrain {
    fn forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (a_s, al): (&CpuStorage, &Layout),
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, affine) = (slice(xs, xl)?, slice(a_s, al)?);
        let (gamma, beta) = affine.split_at(affine.len() / 2);
        let (y, stats) = normalise(planes(xl)?, x, (gamma, beta), residual, self.relu, self.eps)?;
        *self.stats.lock().expect("batch-norm stats") = stats;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// `(dx, d[γ; β], d residual)`; the ReLU mask comes from the output `y`.
    fn backward(
        &self,
        x: &Tensor,
        affine: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let back = BatchNormBackward {
            relu: self.relu,
            residual_grad: residual,
            stats: self.stats.lock().expect("batch-norm stats").clone(),
        };
        let packed = x.apply_op3_no_bwd(y, &dy.contiguous()?, &back)?;
        let mut grads = super::PackedGrads::new(packed);
        let dx = grads.activation(x)?;
        let d_affine = grads.parameter(affine)?;
        let d_residual = residual.then(|| grads.activation(x)).transpose()?;
        Ok((dx, d_affine, d_residual))
    }
}

impl CustomOp2 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "sslfast-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        a_s: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((xs, xl), (a_s, al), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, d_affine, _) = self.backward(x, affine, y, dy, false)?;
        Ok((Some(dx), Some(d_affine)))
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "sslfast-batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        a_s: &CpuStorage,
        al: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((xs, xl), (a_s, al), Some(slice(rs, rl)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        _residual: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, d_affine, d_residual) = self.backward(x, affine, y, dy, true)?;
        Ok((Some(dx), Some(d_affine), d_residual))
    }
}

/// `(x, y, dy)` to `[dx, dγ, dβ]` (and `d residual`) flattened and concatenated.
struct BatchNormBackward {
    relu: bool,
    /// Also append the gradient that reaches a residual added before the ReLU: the masked dy.
    residual_grad: bool,
    stats: Stats,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "sslfast-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = planes(xl)?;
        let (x, y, dy) = (slice(xs, xl)?, slice(ys, yl)?, slice(ds, dl)?);
        let residual_len = if self.residual_grad { x.len() } else { 0 };
        let mut out = super::zeros(x.len() + 2 * dims.1 + residual_len);
        let (dx, rest) = out.split_at_mut(x.len());
        let (d_affine, d_residual) = rest.split_at_mut(2 * dims.1);
        dx.copy_from_slice(dy);
        if self.relu {
            mask_by_output(dx, y);
        }
        if self.residual_grad {
            d_residual.copy_from_slice(dx);
        }
        backward_in_place(dims, x, &self.stats, dx, d_affine)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// The closed-form backward over `x`, in place: `grad` holds the gradient at the normalised
/// output (ReLU mask already applied) on entry and `dx` on return; `[dγ; dβ]` go to `d_affine`.
/// Synchronised statistics make `dx` use the group's sums and `[dγ; dβ]` this rank's share.
pub(super) fn backward_in_place(
    dims: (usize, usize, usize),
    x: &[f32],
    stats: &Stats,
    grad: &mut [f32],
    d_affine: &mut [f32],
) -> Result<()> {
    let (_, c, hw) = dims;
    let Stats {
        mean,
        inv_std,
        gamma,
        count,
        ..
    } = stats;
    // Per channel: dβ = Σ g and dγ = Σ g x̂.
    let g = &*grad;
    let local = per_channel(dims, |ch, r| {
        let (m, s) = (mean[ch], inv_std[ch]);
        (g[r.clone()].iter().zip(&x[r]))
            .fold((0.0, 0.0), |(a, b), (&g, &x)| (a + g, b + g * (x - m) * s))
    });
    let sums = stats.sync.sum_pairs(&local)?;
    let m = *count as f64;
    grad.par_chunks_mut(c * hw)
        .zip(x.par_chunks(c * hw))
        .for_each(|(grad, x)| {
            for ch in 0..c {
                let k = gamma[ch] * inv_std[ch];
                let (gm, gxm) = ((sums[ch].0 / m) as f32, (sums[ch].1 / m) as f32);
                let (mu, s) = (mean[ch], inv_std[ch]);
                let (grad, x) = (&mut grad[ch * hw..][..hw], &x[ch * hw..][..hw]);
                for (d, &x) in grad.iter_mut().zip(x) {
                    *d = k * (*d - gm - (x - mu) * s * gxm);
                }
            }
        });
    for (ch, (db, dg)) in local.iter().enumerate() {
        d_affine[ch] = *dg as f32;
        d_affine[c + ch] = *db as f32;
    }
    Ok(())
}

/// Zeroes `grad` where the ReLU's output `y` was clipped.
fn mask_by_output(grad: &mut [f32], y: &[f32]) {
    grad.par_chunks_mut(1 << 16)
        .zip(y.par_chunks(1 << 16))
        .for_each(|(g, y)| {
            for (g, &y) in g.iter_mut().zip(y) {
                *g = if y > 0.0 { *g } else { 0.0 };
            }
        });
}

/// Zeroes `grad` where `relu(scale·x + shift)`, per channel, was clipped.
pub(super) fn mask_by_input(
    (_, c, hw): (usize, usize, usize),
    grad: &mut [f32],
    x: &[f32],
    (scale, shift): (&[f32], &[f32]),
) {
    grad.par_chunks_mut(c * hw)
        .zip(x.par_chunks(c * hw))
        .for_each(|(grad, x)| {
            for ch in 0..c {
                let (a, b) = (scale[ch], shift[ch]);
                let (grad, x) = (&mut grad[ch * hw..][..hw], &x[ch * hw..][..hw]);
                for (g, &x) in grad.iter_mut().zip(x) {
                    *g = if x * a + b > 0.0 { *g } else { 0.0 };
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::test_util::{
        assert_same_batch_norm, batch_norm_layer, max_diff, uniform, weighted_grads,
    };
    use candle_core::Device;
    use candle_nn::VarMap;

    /// Values in [-1, 3): channel means away from 0.
    fn randn(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, (-1.0, 3.0))
    }

    /// A BatchNorm with γ, β in [-1, 3), fresh running statistics.
    fn layer(c: usize) -> (VarMap, candle_nn::BatchNorm) {
        batch_norm_layer(c, (-1.0, 3.0))
    }

    #[test]
    fn matches_candle_forward_backward_and_running_stats() {
        for (shape, relu) in [
            (vec![4, 3, 5, 5], true),
            (vec![1, 2, 3, 7], false),
            (vec![16, 6], true),
            (vec![7, 5], false),
        ] {
            let c = shape[1];
            let x = candle_core::Var::from_tensor(&randn(&shape, 1)).unwrap();
            let r = randn(&shape, 2);
            let (ours_vars, ours_bn) = layer(c);
            let (theirs_vars, theirs_bn) = layer(c);
            let ours = batch_norm(&ours_bn, &x, true, relu).unwrap();
            let theirs = theirs_bn.forward_t(&x, true).unwrap();
            let theirs = if relu { theirs.relu().unwrap() } else { theirs };
            assert!(max_diff(&ours, &theirs) < 1e-4, "{shape:?} output");
            let (go, gt) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
            let d = max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
            assert!(d < 1e-3, "{shape:?} input grad differs by {d}");
            let case = format!("{shape:?}");
            assert_same_batch_norm(&case, (&ours_vars, &go), (&theirs_vars, &gt));
        }
    }

    #[test]
    fn fused_residual_add_relu_matches_candle() {
        for shape in [vec![3, 4, 5, 5], vec![1, 2, 3, 3], vec![6, 3]] {
            let c = shape[1];
            let x = candle_core::Var::from_tensor(&randn(&shape, 1)).unwrap();
            let res = candle_core::Var::from_tensor(&randn(&shape, 3)).unwrap();
            let r = randn(&shape, 2);
            let (ours_vars, ours_bn) = layer(c);
            let (theirs_vars, theirs_bn) = layer(c);
            let ours = batch_norm_add_relu(&ours_bn, &x, &res, true).unwrap();
            let theirs = (theirs_bn.forward_t(&x, true).unwrap() + res.as_tensor())
                .unwrap()
                .relu()
                .unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "{shape:?} output");
            let (go, gt) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
            for (what, v) in [("input", &x), ("residual", &res)] {
                let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                assert!(d < 1e-3, "{shape:?} {what} grad differs by {d}");
            }
            let case = format!("{shape:?}");
            assert_same_batch_norm(&case, (&ours_vars, &go), (&theirs_vars, &gt));
        }
    }

    #[test]
    fn constant_channel_gives_finite_gradients() {
        let (_, bn) = layer(2);
        let x = candle_core::Var::from_tensor(
            &Tensor::ones((4, 2, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = batch_norm(&bn, &x, true, true).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let dx = g
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(dx.iter().all(|v| v.is_finite()));
        // Inference mode leaves the running statistics and takes candle's path.
        let before = bn.running_mean().to_vec1::<f32>().unwrap();
        batch_norm(&bn, &x, false, false).unwrap();
        assert_eq!(bn.running_mean().to_vec1::<f32>().unwrap(), before);
    }
}
