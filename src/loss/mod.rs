//! Multi-view SSL losses on projector outputs `z: [K * B, D]` (view-major: row `v * B + b` is view
//! v of image b), each in three forms:
//! - `Pairwise`: the standard two-view loss (K = 2);
//! - `Efficient`: the paper's O(K) multi-view loss, as its reference code computes it (which
//!   uses the pairwise form when K = 2);
//! - `Naive`: the average of the pairwise loss over all K(K-1) ordered pairs, O(K^2), kept as a
//!   reference for tests and benchmarks.

pub mod barlow_twins;
pub mod vicreg;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    #[default]
    BarlowTwins,
    Vicreg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossForm {
    #[default]
    Efficient,
    Naive,
}

/// Which loss and its weights, as a run's config names them (keys `loss`, `loss_form`, `lambda`,
/// `vicreg_*`); [`LossConfig::compute`] is the one place a loss is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    #[serde(rename = "loss")]
    pub kind: LossKind,
    #[serde(rename = "loss_form")]
    pub form: LossForm,
    /// Barlow Twins redundancy weight λ; absent means 1/pdim.
    pub lambda: Option<f64>,
    pub vicreg_invariance: f64,
    pub vicreg_variance: f64,
    pub vicreg_covariance: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        let w = vicreg::Weights::default();
        Self {
            kind: LossKind::BarlowTwins,
            form: LossForm::Efficient,
            lambda: None,
            vicreg_invariance: w.invariance,
            vicreg_variance: w.variance,
            vicreg_covariance: w.covariance,
        }
    }
}

impl LossConfig {
    /// λ (when set) and the VICReg weights in range, each error naming its key.
    pub fn check(&self) -> std::result::Result<(), crate::config::ConfigError> {
        use crate::config::check;
        if let Some(lambda) = self.lambda {
            check::non_negative("lambda", lambda)?;
        }
        check::non_negative("vicreg_invariance", self.vicreg_invariance)?;
        check::non_negative("vicreg_variance", self.vicreg_variance)?;
        check::non_negative("vicreg_covariance", self.vicreg_covariance)
    }

    /// λ for Barlow Twins on a `pdim`-wide projector: the configured one or 1/pdim.
    pub fn lambda(&self, pdim: usize) -> f64 {
        self.lambda.unwrap_or(1.0 / pdim as f64)
    }

    /// The configured loss of `z: [K * B, D]`.
    pub fn compute(&self, z: &Tensor, k: usize) -> Result<LossParts> {
        match self.kind {
            LossKind::BarlowTwins => barlow_twins::loss(z, k, self.lambda(z.dim(1)?), self.form),
            LossKind::Vicreg => vicreg::loss(
                z,
                k,
                vicreg::Weights {
                    invariance: self.vicreg_invariance,
                    variance: self.vicreg_variance,
                    covariance: self.vicreg_covariance,
                },
                self.form,
            ),
        }
    }
}

/// A loss value and its named terms (for metrics).
#[derive(Debug, Clone)]
pub struct LossParts {
    pub total: Tensor,
    /// (name, value) of each term before weighting, e.g. ("on_diag", ..), ("off_diag", ..).
    pub terms: Vec<(&'static str, Tensor)>,
}

/// `Σ_{d≠e} c_de²` for `c = aᵀ b / divisor` (`a`, `b`: `[N, D]`), given c's diagonal `diag`
/// (computed by the caller in O(N·D)): `Σ c² − Σ diag²`. Masking with an identity would keep
/// three more D×D temporaries alive for the backward pass (0.8 GB each at D = 8192).
pub fn off_diagonal_sq_sum(a: &Tensor, b: &Tensor, divisor: f64, diag: &Tensor) -> Result<Tensor> {
    cross_sq_sum(a, b, divisor)? - diag.sqr()?.sum_all()?
}

/// `Σ_{d,e} (aᵀ b / divisor)_de²`. When D exceeds 2N it is `Σ_{i,j} (a aᵀ)_ij (b bᵀ)_ij /
/// divisor²` (the trace of a product of two N×N Gram matrices): O(N²·D) instead of O(N·D²), a
/// sixteenth of the work at B = 256, D = 8192 and no D×D matrix in memory, forward or backward.
/// Narrower projectors keep the D×D product, whose rounding the shipped runs were trained with.
fn cross_sq_sum(a: &Tensor, b: &Tensor, divisor: f64) -> Result<Tensor> {
    let (n, d) = a.dims2()?;
    if d <= 2 * n {
        return (a.t()?.matmul(b)? / divisor)?.sqr()?.sum_all();
    }
    let gram_a = a.matmul(&a.t()?)?;
    let gram_b = match a.id() == b.id() {
        true => gram_a.clone(),
        false => b.matmul(&b.t()?)?,
    };
    (gram_a * gram_b)?.sum_all()? / (divisor * divisor)
}

/// Splits `z: [K * B, D]` into the K views.
pub fn views(z: &Tensor, k: usize) -> Result<Vec<Tensor>> {
    let rows = z.dim(0)?;
    // `chunk` would make unequal views of a ragged batch, or none of an empty one.
    if k == 0 || rows == 0 || rows % k != 0 {
        candle_core::bail!("{rows} embeddings cannot be split into {k} views of equal size");
    }
    z.chunk(k, 0)
}

/// Unbiased standard deviation over rows (dim 0), as torch's `std(0)`.
pub fn std_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)? as f64;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    (centred.sqr()?.sum_keepdim(0)? / (n - 1.0))?.sqrt()
}
