//! Barlow Twins over K views, as the paper's reference code (fastssl) computes it.
//!
//! Each row of z is L2-normalised, then each dimension is standardised over all K·B rows
//! (mean 0, unbiased std 1); `z_i` is view i, `[B, D]`.
//! - pairwise (K = 2), per ordered pair (i, j): `c = z_iᵀ z_j / B`,
//!   `on = Σ_d (c_dd − 1)²`, `off = Σ_{d≠e} c_de²`; loss = (Σ over both pairs of on + λ·off) / 2.
//! - efficient (K > 2): `zbar = (1/K) Σ_i z_i`;
//!   `on = Σ_i Σ_d (mean_b(z_i[b,d] · zbar[b,d]) − 1)²`, `off = Σ_{d≠e} (zbarᵀ zbar / B)_de²`;
//!   loss = on / K + λ·off: one D×D product whatever K is, O(K·B·D + B·D²) (O(B²·D) when
//!   D > 2B, see `off_diagonal_sq_sum`).
//! - naive: the pairwise loss averaged over all K(K−1) ordered pairs, K(K−1) D×D products.
//!
//! λ defaults to 1/D (the paper tunes it per D: 0.02 for D=256, K=2).

use candle_core::{Result, Tensor, D};

use super::{off_diagonal_sq_sum, views, LossForm, LossParts};

/// Floor of a dimension's standard deviation when standardising (see `standardise`).
const MIN_STD: f64 = 1e-6;

/// Standardised views of `z: [K * B, D]`.
fn standardise(z: &Tensor, k: usize) -> Result<Vec<Tensor>> {
    let norm = z
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    let z = z.broadcast_div(&norm)?;
    let mean = z.mean_keepdim(0)?;
    let std = super::std_rows(&z)?;
    // A dimension with (numerically) zero variance would turn rounding noise into O(1) values;
    // flooring its std keeps it near 0, and the loss finite, without touching real dimensions.
    let z = z
        .broadcast_sub(&mean)?
        .broadcast_div(&std.clamp(MIN_STD, f64::MAX)?)?;
    views(&z, k)
}

/// `(Σ_d (c_dd − 1)², Σ_{d≠e} c_de²)` for `c = aᵀ b / B`.
fn pair_terms(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = a.dim(0)? as f64;
    let diag = (a * b)?.mean(0)?;
    let on = (&diag - 1.0)?.sqr()?.sum_all()?;
    Ok((on, off_diagonal_sq_sum(a, b, n, &diag)?))
}

/// Barlow Twins loss of `z: [K * B, D]` with redundancy weight `lambda`.
pub fn loss(z: &Tensor, k: usize, lambda: f64, form: LossForm) -> Result<LossParts> {
    if k < 2 {
        candle_core::bail!("barlow twins needs at least 2 views, got {k}");
    }
    let zs = standardise(z, k)?;
    match form {
        LossForm::Efficient if k == 2 => pairwise(&zs, lambda),
        LossForm::Efficient => efficient(&zs, lambda),
        LossForm::Naive => naive(&zs, lambda),
    }
}

fn finish(on: Tensor, off: Tensor, lambda: f64) -> Result<LossParts> {
    let total = (&on + (&off * lambda)?)?;
    Ok(LossParts {
        total,
        terms: vec![("on_diag", on), ("off_diag", off)],
    })
}

/// K = 2: both ordered pairs, averaged (they are equal: c₂₁ = c₁₂ᵀ).
fn pairwise(zs: &[Tensor], lambda: f64) -> Result<LossParts> {
    let (on, off) = pair_terms(&zs[0], &zs[1])?;
    finish(on, off, lambda)
}

fn efficient(zs: &[Tensor], lambda: f64) -> Result<LossParts> {
    let k = zs.len() as f64;
    let stacked = Tensor::stack(zs, 0)?;
    let zbar = stacked.mean(0)?;
    let n = zbar.dim(0)? as f64;
    let on = (stacked.broadcast_mul(&zbar.unsqueeze(0)?)?.mean(1)? - 1.0)?
        .sqr()?
        .sum_all()?;
    let off = off_diagonal_sq_sum(&zbar, &zbar, n, &zbar.sqr()?.mean(0)?)?;
    finish((on / k)?, off, lambda)
}

fn naive(zs: &[Tensor], lambda: f64) -> Result<LossParts> {
    let k = zs.len();
    let (mut on, mut off) = (
        Tensor::zeros((), zs[0].dtype(), zs[0].device())?,
        Tensor::zeros((), zs[0].dtype(), zs[0].device())?,
    );
    for i in 0..k {
        for j in (0..k).filter(|&j| j != i) {
            let (a, b) = pair_terms(&zs[i], &zs[j])?;
            on = (on + a)?;
            off = (off + b)?;
        }
    }
    let pairs = (k * (k - 1)) as f64;
    finish((on / pairs)?, (off / pairs)?, lambda)
}
