//! `ssl-bench step`: seconds per training step of backbone + projector + efficient Barlow Twins
//! with AdamW on random K-view batches, split into forward (model and loss), backward and
//! optimiser, with peak RSS. `tools/bench_step_torch.py` is the same step in PyTorch.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::loss::LossConfig;
use crate::model::{BackboneKind, ModelSpec, SslModel, Stem};
use crate::train::optim::Optimizer;
use crate::train::OptimizerKind;

/// Sizes and counts of zero make no step: refused when the arguments are parsed.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// What to time; also `ssl-bench step`'s arguments.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct StepSpec {
    #[arg(long, value_enum, default_value_t = BackboneKind::Resnet18)]
    pub backbone: BackboneKind,
    #[arg(long, default_value_t = 64, value_parser = at_least_one())]
    pub width: usize,
    /// Images per batch; the step sees `views * batch` crops.
    #[arg(long, default_value_t = 64, value_parser = at_least_one())]
    pub batch: usize,
    #[arg(long, default_value_t = 32, value_parser = at_least_one())]
    pub size: usize,
    #[arg(long, default_value_t = 2, value_parser = at_least_one())]
    pub views: usize,
    #[arg(long, default_value_t = 256, value_parser = at_least_one())]
    pub pdim: usize,
    /// Timed steps, after `warmup` untimed ones.
    #[arg(long, default_value_t = 5, value_parser = at_least_one())]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The ResNet stem: cifar (3x3 conv) or imagenet (7x7 stride-2 conv and max-pool).
    #[arg(long, value_enum, default_value_t = Stem::Cifar)]
    pub stem: Stem,
    /// candle's own conv and BatchNorm instead of ours: the plain-candle reference.
    #[arg(long)]
    pub candle_ops: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub spec: StepSpec,
    pub threads: usize,
    pub sec_per_step: f64,
    pub images_per_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    pub peak_rss_mb: f64,
    pub final_loss: f32,
}

impl std::fmt::Display for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (r, spec) = (self, &self.spec);
        write!(
            f,
            "step {:?}({}) stem={:?} batch={} size={} views={} ops={} threads={}: sec/step={:.4} images/s={:.1} forward_s={:.4} backward_s={:.4} optimizer_s={:.4} peak_rss_mb={:.0} loss={:.4}",
            spec.backbone, spec.width, spec.stem, spec.batch, spec.size, spec.views,
            if spec.candle_ops { "candle" } else { "ours" },
            r.threads, r.sec_per_step, r.images_per_s, r.forward_s, r.backward_s, r.optimizer_s, r.peak_rss_mb, r.final_loss
        )
    }
}

#[derive(Default)]
struct Split {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// Runs `warmup + steps` steps and reports the mean of the timed ones.
pub fn bench_step(spec: &StepSpec) -> candle_core::Result<StepReport> {
    crate::model::use_candle_ops(spec.candle_ops);
    let model_spec = ModelSpec {
        backbone: spec.backbone,
        width: spec.width,
        stem: spec.stem,
        pdim: spec.pdim,
        projector_depth: 2,
    };
    let device = Device::Cpu;
    let (varmap, model) = SslModel::seeded(&model_spec, spec.size as u32, 0, &device)?;
    let mut optimizer = Optimizer::new(&varmap, OptimizerKind::Adamw, 1e-6)?;
    let shape = (spec.views * spec.batch, 3, spec.size, spec.size);
    let x = Tensor::randn(0f32, 1.0, shape, &device)?;
    let loss_config = LossConfig::default();
    let mut split = Split::default();
    let mut last = f32::NAN;
    for i in 0..spec.warmup + spec.steps {
        let t0 = Instant::now();
        let z = model.embed(std::slice::from_ref(&x), true)?;
        let loss = loss_config.compute(&z, spec.views)?.total;
        last = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        optimizer.step(&grads, 1e-3)?;
        let t3 = Instant::now();
        if i >= spec.warmup {
            split.forward += (t1 - t0).as_secs_f64();
            split.backward += (t2 - t1).as_secs_f64();
            split.optimizer += (t3 - t2).as_secs_f64();
        }
    }
    crate::model::use_candle_ops(false);
    let n = spec.steps.max(1) as f64;
    let sec_per_step = (split.forward + split.backward + split.optimizer) / n;
    Ok(StepReport {
        spec: spec.clone(),
        threads: rayon::current_num_threads(),
        sec_per_step,
        images_per_s: spec.batch as f64 / sec_per_step,
        forward_s: split.forward / n,
        backward_s: split.backward / n,
        optimizer_s: split.optimizer / n,
        peak_rss_mb: super::loader::peak_rss_mb(),
        final_loss: last,
    })
}
