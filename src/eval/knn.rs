//! Weighted kNN classification as InstDisc and solo-learn do it: cosine similarity of
//! L2-normalised features, the k nearest training samples vote for their class with weight
//! `exp(sim / T)` (k = 200, T = 0.1), and the class with the largest total wins.

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::model::ops::gemm::gemm;

/// Features of `n` samples, row-major `[n, dim]`, with labels.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub dim: usize,
    pub data: Vec<f32>,
    pub labels: Vec<i32>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// At most `limit` rows (0: all): the seeded class-balanced subset a loader with
    /// `fraction = bank_fraction(len, limit)` and seed 0 takes, so a bank limited after
    /// extraction holds the same images as one limited while loading.
    pub fn limited(self, limit: usize) -> FeatureSet {
        let fraction = bank_fraction(self.len(), limit);
        if fraction >= 1.0 {
            return self;
        }
        let keep = crate::loader::sampler::balanced_subset(&self.labels, fraction, 0);
        FeatureSet {
            dim: self.dim,
            data: keep
                .iter()
                .flat_map(|&i| self.row(i as usize).iter().copied())
                .collect(),
            labels: keep.iter().map(|&i| self.labels[i as usize]).collect(),
        }
    }

    /// Scales every row to unit length (rows of zeros stay zero).
    pub fn normalise(&mut self) {
        let dim = self.dim;
        for row in self.data.chunks_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
}

/// The loader `fraction` that keeps about `limit` of `rows` images (1: all; `limit` 0 is all).
pub fn bank_fraction(rows: usize, limit: usize) -> f64 {
    match limit {
        0 => 1.0,
        n if n >= rows => 1.0,
        n => n as f64 / rows as f64,
    }
}

/// Queries per block: one GEMM against the whole bank each (`[block, bank]` similarities,
/// 50 MB for a 50,000-image bank), blocks in parallel on rayon.
const QUERY_BLOCK: usize = 256;

/// Top-1 accuracy of weighted kNN; `bank` and `queries` must be L2-normalised. Similarities
/// come from matrix products (the GEMM our conv uses), query blocks run on all cores, and a
/// progress bar shows on a terminal.
pub fn knn_top1(bank: &FeatureSet, queries: &FeatureSet, k: usize, temperature: f32) -> f64 {
    let classes = bank
        .labels
        .iter()
        .chain(&queries.labels)
        .copied()
        .max()
        .unwrap_or(0)
        .max(0) as usize
        + 1;
    if bank.is_empty() || queries.is_empty() || bank.dim != queries.dim || bank.dim == 0 {
        return 0.0;
    }
    let k = k.min(bank.len()).max(1);
    let blocks = queries.len().div_ceil(QUERY_BLOCK);
    let progress = ProgressBar::new(blocks as u64).with_style(
        ProgressStyle::with_template("kNN [{bar:30}] {pos}/{len} query blocks eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let correct: usize = (0..blocks)
        .into_par_iter()
        .map(|block| {
            let rows = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(queries.len());
            let sims = similarities(bank, queries, rows.clone());
            let hits = rows
                .enumerate()
                .filter(|&(r, q)| {
                    let row = &sims[r * bank.len()..(r + 1) * bank.len()];
                    vote(row, &bank.labels, k, temperature, classes) == queries.labels[q]
                })
                .count();
            progress.inc(1);
            hits
        })
        .sum();
    progress.finish_and_clear();
    correct as f64 / queries.len() as f64
}

/// `[rows, bank]` cosine similarities of the queries `rows` with every bank row.
fn similarities(bank: &FeatureSet, queries: &FeatureSet, rows: std::ops::Range<usize>) -> Vec<f32> {
    let (n, d, m) = (bank.len(), bank.dim, rows.len());
    assert!(bank.data.len() == n * d && queries.data.len() >= rows.end * d);
    let mut sims = vec![0f32; m * n];
    // sims [m, n] = Q [m, d] · Bankᵀ [d, n]; Bankᵀ(i, j) = bank[j * d + i].
    gemm(
        (m, n, d),
        &mut sims,
        n,
        false,
        &queries.data[rows.start * d..rows.end * d],
        (d, 1),
        &bank.data,
        (1, d),
    );
    sims
}

/// The class with the largest `exp(sim / T)` vote among the `k` most similar bank rows.
fn vote(sims: &[f32], labels: &[i32], k: usize, temperature: f32, classes: usize) -> i32 {
    let mut order: Vec<u32> = (0..sims.len() as u32).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        sims[b as usize].total_cmp(&sims[a as usize])
    });
    let mut votes = vec![0f64; classes];
    for &i in &order[..k] {
        let label = labels[i as usize];
        if label >= 0 {
            votes[label as usize] += f64::from((sims[i as usize] / temperature).exp());
        }
    }
    votes
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(c, _)| c as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_bank_keeps_each_class_in_proportion_with_its_rows() {
        let labels: Vec<i32> = (0..1000).map(|i| i % 10).collect();
        let set = FeatureSet {
            dim: 2,
            data: (0..2000).map(|i| i as f32).collect(),
            labels,
        };
        assert_eq!(set.clone().limited(0).len(), 1000);
        assert_eq!(set.clone().limited(5000).len(), 1000);
        let small = set.clone().limited(100);
        assert_eq!(small.len(), 100);
        for class in 0..10 {
            assert_eq!(small.labels.iter().filter(|&&l| l == class).count(), 10);
        }
        for i in 0..small.len() {
            let original = small.row(i)[0] as usize / 2;
            assert_eq!(
                set.row(original),
                small.row(i),
                "rows move with their labels"
            );
            assert_eq!(set.labels[original], small.labels[i]);
        }
    }

    #[test]
    fn separated_clusters_are_classified_exactly() {
        // Three clusters around orthogonal axes; queries near each axis.
        let make = |points: &[([f32; 3], i32)]| {
            let mut set = FeatureSet {
                dim: 3,
                data: points.iter().flat_map(|p| p.0).collect(),
                labels: points.iter().map(|p| p.1).collect(),
            };
            set.normalise();
            set
        };
        let bank = make(&[
            ([1.0, 0.1, 0.0], 0),
            ([1.0, 0.0, 0.1], 0),
            ([0.9, 0.1, 0.1], 0),
            ([0.1, 1.0, 0.0], 1),
            ([0.0, 1.0, 0.1], 1),
            ([0.1, 0.9, 0.1], 1),
            ([0.0, 0.1, 1.0], 2),
            ([0.1, 0.0, 1.0], 2),
            ([0.1, 0.1, 0.9], 2),
        ]);
        let queries = make(&[
            ([1.0, 0.2, 0.2], 0),
            ([0.2, 1.0, 0.0], 1),
            ([0.0, 0.3, 1.0], 2),
            ([0.3, 1.0, 0.3], 1),
        ]);
        assert_eq!(knn_top1(&bank, &queries, 3, 0.1), 1.0);
        let wrong = make(&[([1.0, 0.2, 0.2], 2)]);
        assert_eq!(knn_top1(&bank, &wrong, 3, 0.1), 0.0);
    }

    #[test]
    fn blocked_products_agree_with_a_plain_loop_on_many_queries() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut set = |n: usize| {
            let mut s = FeatureSet {
                dim: 24,
                data: (0..n * 24).map(|_| rng.random::<f32>() - 0.5).collect(),
                labels: (0..n).map(|i| (i % 7) as i32).collect(),
            };
            s.normalise();
            s
        };
        let (bank, queries) = (set(900), set(2 * QUERY_BLOCK + 37));
        let k = 15;
        let mut correct = 0;
        for q in 0..queries.len() {
            let sims: Vec<f32> = (0..bank.len())
                .map(|i| {
                    bank.row(i)
                        .iter()
                        .zip(queries.row(q))
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect();
            correct += usize::from(vote(&sims, &bank.labels, k, 0.1, 7) == queries.labels[q]);
        }
        let expected = correct as f64 / queries.len() as f64;
        // Summation order differs between a GEMM and a loop: at most a neighbour at the k-th
        // place may swap, which can move a vote or two, but a wrong block or stride would not.
        let got = knn_top1(&bank, &queries, k, 0.1);
        assert!(
            (got - expected).abs() <= 2.0 / queries.len() as f64,
            "{got} vs {expected}"
        );
        assert!(
            expected > 0.0 && expected < 1.0,
            "a non-trivial case: {expected}"
        );
    }
}
