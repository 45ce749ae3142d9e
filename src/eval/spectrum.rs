//! Spectrum metrics of a feature matrix `[N, F]`: the eigenvalues of its covariance, the
//! effective rank RankMe (Garrido et al. 2023: `exp(−Σ p_k log p_k)` with `p_k = σ_k / Σ σ`,
//! σ the singular values of the centred features, i.e. `sqrt` of the covariance eigenvalues),
//! and the power-law decay α (Agrawal et al. 2022: `λ_k ∝ k^−α`, a least-squares line through
//! `(log k, log λ_k)` over 1-based indices `k ∈ [lo, hi]`).

use nalgebra::DMatrix;

use super::knn::FeatureSet;

/// Default index range of the α fit: from the 10th eigenvalue to half the dimension, which
/// skips the few leading directions and the noisy tail.
pub const DEFAULT_ALPHA_FROM: usize = 10;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Spectrum {
    /// Covariance eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
    pub rankme: f64,
    pub alpha: f64,
    /// The 1-based index range α was fitted on.
    pub alpha_range: (usize, usize),
}

/// Covariance eigenvalues of the features, descending (negative round-off clamped to 0).
pub fn covariance_eigenvalues(features: &FeatureSet) -> Vec<f64> {
    let (n, f) = (features.len(), features.dim);
    let mut mean = vec![0f64; f];
    for i in 0..n {
        for (m, v) in mean.iter_mut().zip(features.row(i)) {
            *m += f64::from(*v) / n as f64;
        }
    }
    let mut cov = DMatrix::<f64>::zeros(f, f);
    let mut centred = vec![0f64; f];
    for i in 0..n {
        for ((c, v), m) in centred.iter_mut().zip(features.row(i)).zip(&mean) {
            *c = f64::from(*v) - m;
        }
        for a in 0..f {
            let ca = centred[a];
            if ca != 0.0 {
                for b in a..f {
                    cov[(a, b)] += ca * centred[b];
                }
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for a in 0..f {
        for b in a..f {
            let v = cov[(a, b)] / denom;
            cov[(a, b)] = v;
            cov[(b, a)] = v;
        }
    }
    let mut eig: Vec<f64> = cov
        .symmetric_eigenvalues()
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    eig.sort_by(|a, b| b.total_cmp(a));
    eig
}

/// RankMe from covariance eigenvalues (descending).
pub fn rankme(eigenvalues: &[f64]) -> f64 {
    let sigma: Vec<f64> = eigenvalues.iter().map(|l| l.max(0.0).sqrt()).collect();
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| s / total + 1e-7)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// α of `λ_k ∝ k^−α` fitted on 1-based indices `lo..=hi` (only positive eigenvalues count).
pub fn power_law_alpha(eigenvalues: &[f64], lo: usize, hi: usize) -> f64 {
    let points: Vec<(f64, f64)> = (lo.max(1)..=hi.min(eigenvalues.len()))
        .filter(|&k| eigenvalues[k - 1] > 0.0)
        .map(|k| ((k as f64).ln(), eigenvalues[k - 1].ln()))
        .collect();
    if points.len() < 2 {
        return f64::NAN;
    }
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    -sxy / sxx
}

/// All spectrum metrics, α fitted on `[DEFAULT_ALPHA_FROM, F / 2]` unless `range` says otherwise.
pub fn spectrum(features: &FeatureSet, range: Option<(usize, usize)>) -> Spectrum {
    let eigenvalues = covariance_eigenvalues(features);
    let alpha_range = range.unwrap_or((
        DEFAULT_ALPHA_FROM.min(features.dim / 4).max(1),
        (features.dim / 2).max(2),
    ));
    Spectrum {
        rankme: rankme(&eigenvalues),
        alpha: power_law_alpha(&eigenvalues, alpha_range.0, alpha_range.1),
        alpha_range,
        eigenvalues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankme_of_equal_and_single_spectra() {
        // Four equal singular values: p = 1/4 each, entropy ln 4, rank 4 (up to the 1e-7 guard).
        assert!((rankme(&[9.0, 9.0, 9.0, 9.0]) - 4.0).abs() < 1e-5);
        assert!((rankme(&[5.0, 0.0, 0.0]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn alpha_of_an_exact_power_law_is_recovered() {
        let eig: Vec<f64> = (1..=200).map(|k| 3.0 * (k as f64).powf(-1.3)).collect();
        assert!((power_law_alpha(&eig, 10, 100) - 1.3).abs() < 1e-9);
    }

    #[test]
    fn covariance_eigenvalues_of_known_features() {
        // Rows (±a, 0) and (0, ±b): covariance diag(a²·2/3, b²·2/3) with n = 4, ddof 1.
        let features = FeatureSet {
            dim: 2,
            data: vec![3.0, 0.0, -3.0, 0.0, 0.0, 1.0, 0.0, -1.0],
            labels: vec![0; 4],
        };
        let eig = covariance_eigenvalues(&features);
        assert!(
            (eig[0] - 6.0).abs() < 1e-9 && (eig[1] - 2.0 / 3.0).abs() < 1e-9,
            "{eig:?}"
        );
    }
}
