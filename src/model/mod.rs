//! Backbones (ResNet-18/34/50 with CIFAR or ImageNet stem and a width multiplier; `conv4`) and
//! the projector. Global average pooling lets views of several sizes share the backbone: each
//! resolution group is one forward pass, and their features are concatenated in view order
//! before the projector, whose BatchNorm then sees all K·B rows.

pub mod conv4;
pub mod ops;
pub mod projector;
pub mod resnet;

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use ops::sync_bn::sync_batch_norm;
pub use ops::use_candle_ops;
pub use projector::Projector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    /// 4 x [conv3x3 - BN - ReLU], widths w..8w, strides 1,2,2,2: the quick CPU model.
    #[default]
    Conv4,
    Resnet18,
    Resnet34,
    Resnet50,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// CIFAR stem for inputs up to 64 px, ImageNet stem above.
    #[default]
    Auto,
    /// 3x3 conv, stride 1, no max-pool.
    Cifar,
    /// 7x7 conv, stride 2, then 3x3 max-pool with stride 2.
    Imagenet,
}

/// The device named by `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<candle_core::Device> {
    use candle_core::Device;
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::new_cuda(n),
            None => candle_core::bail!("expected cpu, cuda or cuda:N"),
        },
    }
}

/// Inputs at or below this side get the CIFAR stem under `Stem::Auto`.
pub const CIFAR_STEM_MAX_SIDE: u32 = 64;

/// What the model needs to know (a run's config keys `backbone`, `width`, `stem`, `pdim`,
/// `projector_depth`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSpec {
    pub backbone: BackboneKind,
    pub width: usize,
    pub stem: Stem,
    pub pdim: usize,
    pub projector_depth: usize,
}

/// The paper's small projector (its claim: 64-256 with a tuned λ matches 8192).
pub const DEFAULT_PDIM: usize = 256;

impl Default for ModelSpec {
    /// ResNet-18 at the standard width, the stem chosen by view size, a 2-layer projector.
    fn default() -> Self {
        Self {
            backbone: BackboneKind::Resnet18,
            width: 64,
            stem: Stem::Auto,
            pdim: DEFAULT_PDIM,
            projector_depth: 2,
        }
    }
}

pub enum Backbone {
    Conv4(conv4::Conv4),
    Resnet(resnet::ResNet),
}

impl Backbone {
    /// Builds the backbone for inputs whose largest side is `side` (which picks the `Auto` stem).
    pub fn new(spec: &ModelSpec, side: u32, vb: VarBuilder) -> Result<Self> {
        let cifar = match spec.stem {
            Stem::Cifar => true,
            Stem::Imagenet => false,
            Stem::Auto => side <= CIFAR_STEM_MAX_SIDE,
        };
        Ok(match spec.backbone {
            BackboneKind::Conv4 => Self::Conv4(conv4::Conv4::new(spec.width, vb)?),
            BackboneKind::Resnet18 => Self::Resnet(resnet::ResNet::new(
                resnet::Depth::R18,
                spec.width,
                cifar,
                vb,
            )?),
            BackboneKind::Resnet34 => Self::Resnet(resnet::ResNet::new(
                resnet::Depth::R34,
                spec.width,
                cifar,
                vb,
            )?),
            BackboneKind::Resnet50 => Self::Resnet(resnet::ResNet::new(
                resnet::Depth::R50,
                spec.width,
                cifar,
                vb,
            )?),
        })
    }

    /// Size of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::Conv4(m) => m.feature_dim(),
            Self::Resnet(m) => m.feature_dim(),
        }
    }
}

impl ModuleT for Backbone {
    /// `[N, 3, S, S]` to pooled features `[N, F]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let maps = match self {
            Self::Conv4(m) => m.forward_t(x, train)?,
            Self::Resnet(m) => m.forward_t(x, train)?,
        };
        maps.mean((2, 3))
    }
}

/// Backbone + projector.
pub struct SslModel {
    pub backbone: Backbone,
    pub projector: Projector,
}

impl SslModel {
    /// Parameters live under `backbone.*` (torchvision's ResNet names below it) and `projector.*`.
    pub fn new(spec: &ModelSpec, side: u32, vb: VarBuilder) -> Result<Self> {
        // A zero would surface as a NaN initialisation or an empty layer far from its cause.
        for (name, value) in [("width", spec.width), ("pdim", spec.pdim)] {
            if value == 0 {
                candle_core::bail!("{name} must be at least 1, is 0");
            }
        }
        let backbone = Backbone::new(spec, side, vb.pp("backbone"))?;
        let projector = Projector::new(
            backbone.feature_dim(),
            spec.pdim,
            spec.projector_depth,
            vb.pp("projector"),
        )?;
        Ok(Self {
            backbone,
            projector,
        })
    }

    /// Builds the model on `device` with weights drawn from `seed` (see [`init_seeded`]), and
    /// the VarMap that holds them.
    pub fn seeded(
        spec: &ModelSpec,
        side: u32,
        seed: u64,
        device: &candle_core::Device,
    ) -> Result<(candle_nn::VarMap, Self)> {
        let varmap = candle_nn::VarMap::new();
        let model = Self::new(
            spec,
            side,
            VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device),
        )?;
        init_seeded(&varmap, seed)?;
        Ok((varmap, model))
    }

    /// Pooled features of every group, concatenated in view order: `[K * B, F]`.
    pub fn features(&self, groups: &[Tensor], train: bool) -> Result<Tensor> {
        let feats = groups
            .iter()
            .map(|g| self.backbone.forward_t(g, train))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&feats, 0)
    }

    /// Projector outputs `[K * B, D]` for the views of a batch.
    pub fn embed(&self, groups: &[Tensor], train: bool) -> Result<Tensor> {
        self.projector
            .forward_t(&self.features(groups, train)?, train)
    }
}

/// Re-draws every weight from a generator seeded by `seed`, so a run's initialisation is
/// reproducible (candle's CPU device cannot be seeded). Conv and linear layers get PyTorch's
/// default init, which fastssl trains with: weights and biases uniform in `±1/sqrt(fan_in)`
/// (`kaiming_uniform_(a=sqrt(5))`); BatchNorm keeps γ = 1, β = 0. Variables are visited in name
/// order.
pub fn init_seeded(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1A17);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let fan_in = if var.rank() >= 2 {
            var.dims()[1..].iter().product::<usize>()
        } else if let Some(weight) = layer_bias_weight(&data, name) {
            weight.dims()[1..].iter().product::<usize>()
        } else {
            continue;
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let t = Tensor::from_vec(values, var.dims(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// The weight beside a conv or linear layer's `.bias` (BatchNorm's weight is a vector: none).
fn layer_bias_weight<'a>(
    vars: &'a std::collections::HashMap<String, candle_core::Var>,
    name: &str,
) -> Option<&'a candle_core::Var> {
    name.strip_suffix(".bias")
        .and_then(|prefix| vars.get(&format!("{prefix}.weight")))
        .filter(|w| w.rank() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(backbone: BackboneKind, stem: Stem, side: u32) -> (VarMap, SslModel) {
        let varmap = VarMap::new();
        let spec = ModelSpec {
            backbone,
            width: 4,
            stem,
            pdim: 8,
            projector_depth: 2,
        };
        let model = SslModel::new(
            &spec,
            side,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        (varmap, model)
    }

    #[test]
    fn feature_sizes_and_torchvision_names() {
        let x = |n, s| Tensor::randn(0f32, 1.0, (n, 3, s, s), &Device::Cpu).unwrap();
        let (vars, r18) = build(BackboneKind::Resnet18, Stem::Auto, 16);
        assert_eq!(r18.features(&[x(3, 16)], true).unwrap().dims(), &[3, 32]);
        let names: Vec<String> = vars.data().lock().unwrap().keys().cloned().collect();
        for name in [
            "backbone.conv1.weight",
            "backbone.layer1.0.conv1.weight",
            "backbone.layer2.0.downsample.0.weight",
            "backbone.layer4.1.bn2.running_var",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        let (_, r50) = build(BackboneKind::Resnet50, Stem::Imagenet, 64);
        assert_eq!(r50.features(&[x(2, 64)], false).unwrap().dims(), &[2, 128]);
        let (_, c4) = build(BackboneKind::Conv4, Stem::Auto, 16);
        // Two resolution groups share the backbone; the projector sees all rows at once.
        assert_eq!(
            c4.embed(&[x(4, 16), x(6, 8)], true).unwrap().dims(),
            &[10, 8]
        );
    }

    #[test]
    fn training_mode_updates_batchnorm_running_stats() {
        let (vars, model) = build(BackboneKind::Conv4, Stem::Auto, 8);
        let get = || {
            vars.data().lock().unwrap()["backbone.layers.0.bn.running_mean"]
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap()
        };
        let before = get();
        let x = (Tensor::randn(0f32, 1.0, (4, 3, 8, 8), &Device::Cpu).unwrap() + 3.0).unwrap();
        model.features(std::slice::from_ref(&x), false).unwrap();
        assert_eq!(get(), before, "inference leaves running stats alone");
        model.features(&[x], true).unwrap();
        assert_ne!(get(), before);
    }

    #[test]
    fn seeded_init_is_repeatable() {
        let weights = |seed| {
            let (vars, _) = build(BackboneKind::Conv4, Stem::Auto, 8);
            init_seeded(&vars, seed).unwrap();
            let w = vars.data().lock().unwrap()["backbone.layers.1.conv.weight"]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            w
        };
        assert_eq!(weights(1), weights(1));
        assert_ne!(weights(1), weights(2));
        // PyTorch's default: U(±1/sqrt(fan_in)), fan-in 4 channels x 3 x 3 = 36.
        let w = weights(3);
        let bound = 1.0 / 36f32.sqrt();
        assert!(w.iter().all(|v| v.abs() < bound), "inside ±{bound}");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            (std - bound / 3f32.sqrt()).abs() < 0.05 * bound,
            "uniform std for fan-in 36: {std}"
        );
    }

    /// Loss, every gradient and the updated running statistics of one step.
    fn step(backbone: BackboneKind, stem: Stem, candle_ops: bool) -> (f32, Vec<(String, Tensor)>) {
        use_candle_ops(candle_ops);
        let spec = ModelSpec {
            backbone,
            width: 4,
            stem,
            pdim: 16,
            projector_depth: 2,
        };
        let (vars, model) = SslModel::seeded(&spec, 16, 3, &Device::Cpu).unwrap();
        let x = ops::test_util::uniform(&[12, 3, 16, 16], 11, (0.0, 1.0));
        let z = model.embed(&[x], true).unwrap();
        let loss =
            crate::loss::barlow_twins::loss(&z, 2, 1.0 / 16.0, crate::loss::LossForm::Efficient)
                .unwrap()
                .total;
        let grads = loss.backward().unwrap();
        use_candle_ops(false);
        let data = vars.data().lock().unwrap();
        let mut out: Vec<(String, Tensor)> = data
            .iter()
            .map(|(name, var)| match grads.get(var.as_tensor()) {
                Some(g) => (format!("grad {name}"), g.clone()),
                None => (name.clone(), var.as_tensor().clone()),
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (loss.to_scalar::<f32>().unwrap(), out)
    }

    #[test]
    fn a_whole_step_matches_plain_candle() {
        for backbone in [BackboneKind::Conv4, BackboneKind::Resnet18] {
            let (ours_loss, ours) = step(backbone, Stem::Cifar, false);
            let (plain_loss, plain) = step(backbone, Stem::Cifar, true);
            assert!(
                (ours_loss - plain_loss).abs() < 1e-4 * plain_loss.abs(),
                "{backbone:?}: loss {ours_loss} vs {plain_loss}"
            );
            assert_eq!(ours.len(), plain.len());
            for ((name, a), (_, b)) in ours.iter().zip(&plain) {
                let scale = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(
                    diff <= 1e-3 * scale.max(1e-3),
                    "{backbone:?} {name}: differs by {diff} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn the_imagenet_stem_trains_every_weight() {
        // candle alone cannot: its max-pool backward needs kernel == stride (3 != 2 here).
        let (loss, tensors) = step(BackboneKind::Resnet18, Stem::Imagenet, false);
        assert!(loss.is_finite());
        let grads: Vec<&(String, Tensor)> = tensors
            .iter()
            .filter(|(n, _)| n.starts_with("grad "))
            .collect();
        let stats = tensors
            .iter()
            .filter(|(n, _)| n.contains("running_"))
            .count();
        assert_eq!(
            grads.len() + stats,
            tensors.len(),
            "every weight has a gradient"
        );
        assert!(
            grads.iter().any(|(n, _)| n.contains("conv1")),
            "the stem's conv learns"
        );
        for (name, g) in grads {
            let max = g
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(max.is_finite(), "{name}");
        }
    }
}
