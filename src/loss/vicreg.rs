//! VICReg over K views, as the paper's reference code (fastssl) computes it.
//!
//! For view i with target `t_i` (the mean of the other K−1 views; the other view when K = 2):
//! `inv = mse(z_i, t_i)`; `var = mean_d relu(1 − std(z_i)) / 2 + mean_d relu(1 − std(t_i)) / 2`
//! (unbiased std over the batch); `cov = Σ_{d≠e} cov(z_i)_de² / D + Σ_{d≠e} cov(t_i)_de² / D`
//! with `cov(x) = x̃ᵀ x̃ / (B − 1)` on batch-centred x.
//! loss = Σ_i (λ_inv·inv + μ·var + ν·cov), divided by K when K > 2; K = 2 takes one view
//! (the terms are symmetric). Defaults λ_inv = μ = 25, ν = 1.
//! The naive form averages the K = 2 loss over all K(K−1) ordered pairs.

use candle_core::{Result, Tensor};

use super::{off_diagonal_sq_sum, std_rows, views, LossForm, LossParts};

pub const DEFAULT_INVARIANCE: f64 = 25.0;
pub const DEFAULT_VARIANCE: f64 = 25.0;
pub const DEFAULT_COVARIANCE: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            invariance: DEFAULT_INVARIANCE,
            variance: DEFAULT_VARIANCE,
            covariance: DEFAULT_COVARIANCE,
        }
    }
}

/// (inv, var, cov) of view `a` against target `b`.
fn pair_terms(a: &Tensor, b: &Tensor) -> Result<[Tensor; 3]> {
    let inv = (a - b)?.sqr()?.mean_all()?;
    let hinge = |x: &Tensor| -> Result<Tensor> { (1.0 - std_rows(x)?)?.relu()?.mean_all()? / 2.0 };
    let var = (hinge(a)? + hinge(b)?)?;
    let cov = (cov_term(a)? + cov_term(b)?)?;
    Ok([inv, var, cov])
}

fn cov_term(x: &Tensor) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let diag = (centred.sqr()?.sum(0)? / (n as f64 - 1.0))?;
    off_diagonal_sq_sum(&centred, &centred, n as f64 - 1.0, &diag)? / d as f64
}

/// VICReg loss of `z: [K * B, D]`.
pub fn loss(z: &Tensor, k: usize, w: Weights, form: LossForm) -> Result<LossParts> {
    if k < 2 {
        candle_core::bail!("vicreg needs at least 2 views, got {k}");
    }
    let zs = views(z, k)?;
    let zero = Tensor::zeros((), z.dtype(), z.device())?;
    let mut sums = [zero.clone(), zero.clone(), zero];
    let mut add = |terms: [Tensor; 3]| -> Result<()> {
        for (s, t) in sums.iter_mut().zip(terms) {
            *s = (&*s + t)?;
        }
        Ok(())
    };
    let divisor = match form {
        LossForm::Efficient if k == 2 => {
            add(pair_terms(&zs[0], &zs[1])?)?;
            1.0
        }
        LossForm::Efficient => {
            let total = Tensor::stack(&zs, 0)?.sum(0)?;
            for z_i in &zs {
                let target = ((&total - z_i)? / (k as f64 - 1.0))?;
                add(pair_terms(z_i, &target)?)?;
            }
            k as f64
        }
        LossForm::Naive => {
            for i in 0..k {
                for j in (0..k).filter(|&j| j != i) {
                    add(pair_terms(&zs[i], &zs[j])?)?;
                }
            }
            (k * (k - 1)) as f64
        }
    };
    let [inv, var, cov] = sums.map(|s| s / divisor);
    let (inv, var, cov) = (inv?, var?, cov?);
    let total = ((&inv * w.invariance)? + (&var * w.variance)? + (&cov * w.covariance)?)?;
    Ok(LossParts {
        total,
        terms: vec![("invariance", inv), ("variance", var), ("covariance", cov)],
    })
}
