//! The device-specific operations the models are built from: our fused CPU ops (conv by
//! im2col + GEMM, BatchNorm(+ReLU, + residual), BatchNorm+ReLU fused into the next conv) and the
//! dispatch that sends everything else (other devices, dtypes, inference-mode BatchNorm, or
//! [`use_candle_ops`]) to candle's own. A GPU implementation goes beside the CPU one here.

pub mod batch_norm;
pub mod bn_relu_conv;
pub mod conv2d;
pub(crate) mod gemm;
pub mod max_pool;
pub mod sync_bn;

use candle_core::{CpuStorage, Layout, Module, ModuleT, Result, Tensor};
use rayon::prelude::*;

thread_local! {
    static CANDLE_OPS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes models run on this thread use candle's own conv and BatchNorm even on the CPU: the
/// reference that our ops are tested and benchmarked against. Thread-local, so parallel tests
/// cannot switch each other's models.
pub fn use_candle_ops(on: bool) {
    CANDLE_OPS_ONLY.with(|c| c.set(on));
}

pub(crate) fn candle_ops_only() -> bool {
    CANDLE_OPS_ONLY.with(|c| c.get())
}

/// Whether a BatchNorm goes to candle's layer: [`use_candle_ops`] is on. Refused in training
/// with synchronised BatchNorm, which candle's layer would silently leave local.
fn candle_batch_norm(train: bool) -> Result<bool> {
    let candle = candle_ops_only();
    if candle && train && sync_bn::current().is_some() {
        candle_core::bail!("sync_bn needs our fused BatchNorm; turn use_candle_ops off");
    }
    Ok(candle)
}

/// Conv, BatchNorm (training mode updates running stats), ReLU: on the CPU our im2col/GEMM
/// conv and fused BatchNorm(+ReLU) ops, elsewhere candle's.
pub(crate) fn conv_bn(
    conv: &candle_nn::Conv2d,
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    batch_norm_relu(bn, &conv2d(conv, x)?, train, relu)
}

/// A conv alone: its BatchNorm is left to whatever consumes the output.
pub(crate) fn conv2d(conv: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    if candle_ops_only() {
        return conv.forward(x);
    }
    let cfg = conv.config();
    conv2d::conv2d(x, conv.weight(), cfg.stride, cfg.padding)
}

/// BatchNorm, then ReLU if `relu`.
pub(crate) fn batch_norm_relu(
    bn: &candle_nn::BatchNorm,
    z: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    if candle_batch_norm(train)? {
        let y = bn.forward_t(z, train)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    batch_norm::batch_norm(bn, z, train, relu)
}

/// `conv(relu(bn(z)))`, the inner step of a block: in training on the CPU one op that never
/// stores `relu(bn(z))` (see [`bn_relu_conv`]).
pub(crate) fn bn_relu_conv(
    bn: &candle_nn::BatchNorm,
    z: &Tensor,
    conv: &candle_nn::Conv2d,
    train: bool,
) -> Result<Tensor> {
    if candle_batch_norm(train)? {
        return conv.forward(&bn.forward_t(z, train)?.relu()?);
    }
    let cfg = conv.config();
    bn_relu_conv::bn_relu_conv2d(bn, z, conv.weight(), cfg.stride, cfg.padding, train)
}

/// `layers` as conv → BatchNorm → ReLU → conv ...: the last conv's output and its BatchNorm,
/// left to the caller (ReLU, or a residual first). Each inner BatchNorm+ReLU goes into the
/// conv after it ([`bn_relu_conv`]).
pub(crate) fn conv_chain<'a>(
    layers: &'a [(candle_nn::Conv2d, candle_nn::BatchNorm)],
    x: &Tensor,
    train: bool,
) -> Result<(Tensor, &'a candle_nn::BatchNorm)> {
    let ((first_conv, first_bn), rest) = layers
        .split_first()
        .ok_or_else(|| candle_core::Error::Msg("conv chain: no layers".into()))?;
    let mut z = conv2d(first_conv, x)?;
    let mut bn = first_bn;
    for (conv, next_bn) in rest {
        z = bn_relu_conv(bn, &z, conv, train)?;
        bn = next_bn;
    }
    Ok((z, bn))
}

/// BatchNorm, `+ residual`, ReLU: the end of a ResNet block, fused on the CPU.
pub(crate) fn batch_norm_add_relu(
    bn: &candle_nn::BatchNorm,
    z: &Tensor,
    residual: &Tensor,
    train: bool,
) -> Result<Tensor> {
    if candle_batch_norm(train)? {
        return (bn.forward_t(z, train)? + residual)?.relu();
    }
    batch_norm::batch_norm_add_relu(bn, z, residual, train)
}

/// The gradients an op's backward packed end to end into one flat tensor (one pass computes
/// them all), read back in order.
pub(crate) struct PackedGrads {
    packed: Tensor,
    offset: usize,
}

impl PackedGrads {
    pub(crate) fn new(packed: Tensor) -> Self {
        Self { packed, offset: 0 }
    }

    /// The next gradient, shaped like `like`, as a view of the buffer: activation gradients,
    /// consumed and dropped during the backward pass.
    pub(crate) fn activation(&mut self, like: &Tensor) -> Result<Tensor> {
        let len = like.elem_count();
        let grad = self
            .packed
            .narrow(0, self.offset, len)?
            .reshape(like.shape())?;
        self.offset += len;
        Ok(grad)
    }

    /// The next gradient in its own storage: a parameter's gradient lives until the optimiser
    /// step, and as a view it would keep the whole buffer, activation gradients included,
    /// alive as long.
    pub(crate) fn parameter(&mut self, like: &Tensor) -> Result<Tensor> {
        self.activation(like)?.force_contiguous()
    }
}

/// `n` zeros, written by all of rayon's threads: the ops' full-size outputs, where a serial
/// `vec![0.0; n]` (a memset, as the allocator reuses memory) held back the second core.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// The f32 values of a contiguous CPU storage, as the custom ops read their inputs.
pub(crate) fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: expects contiguous inputs"),
    }
}

/// Random inputs and comparisons shared by the op tests.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// Uniform values in `[lo, hi)` from a seeded generator.
    pub fn uniform(shape: &[usize], seed: u64, (lo, hi): (f32, f32)) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| lo + rng.random::<f32>() * (hi - lo))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The gradients of `sum(y · r)`: every output weighted differently.
    pub fn weighted_grads(y: &Tensor, r: &Tensor) -> GradStore {
        (y * r).unwrap().sum_all().unwrap().backward().unwrap()
    }

    /// A training BatchNorm over `c` channels with γ, β uniform in `range` and fresh running
    /// statistics.
    pub fn batch_norm_layer(c: usize, range: (f32, f32)) -> (VarMap, candle_nn::BatchNorm) {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let bn = candle_nn::batch_norm(c, 1e-5, vb).unwrap();
        for (name, seed) in [("weight", 7), ("bias", 8)] {
            let v = &vars.data().lock().unwrap()[name];
            v.set(&uniform(&[c], seed, range)).unwrap();
        }
        (vars, bn)
    }

    /// Asserts that two BatchNorm layers got the same γ and β gradients and running statistics.
    pub fn assert_same_batch_norm(
        case: &str,
        (ours, ours_grads): (&VarMap, &GradStore),
        (theirs, theirs_grads): (&VarMap, &GradStore),
    ) {
        let (ours, theirs) = (ours.data().lock().unwrap(), theirs.data().lock().unwrap());
        for name in ["weight", "bias"] {
            let grad = ours_grads.get(&ours[name]);
            let grad = grad.unwrap_or_else(|| panic!("{case}: no {name} gradient"));
            let d = max_diff(grad, theirs_grads.get(&theirs[name]).unwrap());
            assert!(d < 1e-3, "{case}: {name} grad differs by {d}");
        }
        for name in ["running_mean", "running_var"] {
            let d = max_diff(&ours[name], &theirs[name]);
            assert!(d < 1e-5, "{case}: {name} differs by {d}");
        }
    }
}
