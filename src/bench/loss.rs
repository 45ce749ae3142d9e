//! `ssl-bench loss`: forward + backward time of the efficient O(K) multi-view loss against the
//! naive all-pairs form, for several K and projector dimensions, on random embeddings.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use crate::loss::{barlow_twins, vicreg, LossForm, LossKind};

#[derive(Debug, Clone, Serialize)]
pub struct LossTiming {
    pub loss: LossKind,
    pub k: usize,
    pub batch: usize,
    pub pdim: usize,
    pub efficient_ms: f64,
    pub naive_ms: f64,
    pub speedup: f64,
}

fn time(
    z: &Var,
    k: usize,
    kind: LossKind,
    form: LossForm,
    reps: usize,
) -> candle_core::Result<f64> {
    let run = || -> candle_core::Result<()> {
        let t = z.as_tensor();
        let parts = match kind {
            LossKind::BarlowTwins => barlow_twins::loss(t, k, 1.0 / t.dim(1)? as f64, form)?,
            LossKind::Vicreg => vicreg::loss(t, k, vicreg::Weights::default(), form)?,
        };
        parts.total.backward().map(|_| ())
    };
    run()?;
    let start = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

/// The naive form keeps about two D×D matrices per ordered pair for the backward pass.
pub fn naive_bytes(k: usize, pdim: usize) -> u64 {
    (k * (k - 1)) as u64 * 2 * (pdim * pdim) as u64 * 4
}

/// Times both forms for every (k, pdim); `reps` repetitions after one warm-up each. The naive
/// form is skipped (`naive_ms` NaN) where it would need more than `memory_budget` bytes.
pub fn bench_loss(
    kind: LossKind,
    ks: &[usize],
    batch: usize,
    pdims: &[usize],
    reps: usize,
    memory_budget: u64,
    mut report: impl FnMut(&LossTiming),
) -> candle_core::Result<Vec<LossTiming>> {
    let mut out = Vec::new();
    for &pdim in pdims {
        for &k in ks {
            let z = Var::from_tensor(&Tensor::randn(0f32, 1.0, (k * batch, pdim), &Device::Cpu)?)?;
            let efficient_ms = time(&z, k, kind, LossForm::Efficient, reps)?;
            let naive_ms = if naive_bytes(k, pdim) <= memory_budget {
                time(&z, k, kind, LossForm::Naive, reps)?
            } else {
                f64::NAN
            };
            let row = LossTiming {
                loss: kind,
                k,
                batch,
                pdim,
                efficient_ms,
                naive_ms,
                speedup: naive_ms / efficient_ms,
            };
            report(&row);
            out.push(row);
        }
    }
    Ok(out)
}
