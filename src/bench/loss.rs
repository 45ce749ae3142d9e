//! `ssl-bench loss`: forward + backward time of the efficient O(K) multi-view loss against the
//! naive all-pairs form, for several K and projector dimensions, on random embeddings.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use crate::loss::{LossConfig, LossForm, LossKind};

/// What to time; also `ssl-bench loss`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LossArgs {
    #[arg(long, value_delimiter = ',', default_values_t = [2, 4, 8, 16])]
    pub k: Vec<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [256, 8192])]
    pub pdim: Vec<usize>,
    #[arg(long, value_enum, default_value_t = LossKind::BarlowTwins)]
    pub loss: LossKind,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Skip the naive form where it would hold more than this many GB for backward.
    #[arg(long, default_value_t = 8.0)]
    pub max_gb: f64,
}

/// The header of the table that [`LossTiming`]'s rows print under.
pub const TABLE_HEADER: &str = "   K  batch   pdim   efficient_ms   naive_ms  speedup";

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

impl std::fmt::Display for LossTiming {
    /// One row of the table under [`TABLE_HEADER`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, batch, pdim, eff) = (self.k, self.batch, self.pdim, self.efficient_ms);
        write!(f, "{k:>4} {batch:>6} {pdim:>6} {eff:>14.2}")?;
        if self.naive_ms.is_nan() {
            let gb = naive_bytes(k, pdim) as f64 / 1e9;
            write!(f, "   naive skipped: needs ~{gb:.0} GB (raise --max-gb)")
        } else {
            write!(f, " {:>10.2} {:>7.2}x", self.naive_ms, self.speedup)
        }
    }
}

fn time(
    z: &Var,
    k: usize,
    kind: LossKind,
    form: LossForm,
    reps: usize,
) -> candle_core::Result<f64> {
    // λ = 1/pdim and VICReg's default weights: the loss a run gets by default.
    let loss = LossConfig {
        kind,
        form,
        ..LossConfig::default()
    };
    let run = || loss.compute(z.as_tensor(), k)?.total.backward().map(|_| ());
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
/// form is skipped (`naive_ms` NaN) where it would need more than `max_gb`.
pub fn bench_loss(
    args: &LossArgs,
    mut report: impl FnMut(&LossTiming),
) -> candle_core::Result<Vec<LossTiming>> {
    let (kind, batch, reps) = (args.loss, args.batch, args.reps);
    let memory_budget = (args.max_gb * 1e9) as u64;
    let mut out = Vec::new();
    for &pdim in &args.pdim {
        for &k in &args.k {
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
