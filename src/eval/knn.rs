//! Weighted kNN classification as InstDisc and solo-learn do it: cosine similarity of
//! L2-normalised features, the k nearest training samples vote for their class with weight
//! `exp(sim / T)` (k = 200, T = 0.1), and the class with the largest total wins.

/// Features of `n` samples, row-major `[n, dim]`, with labels.
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

/// Top-1 accuracy of weighted kNN; `bank` and `queries` must be L2-normalised.
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
    let k = k.min(bank.len()).max(1);
    let mut correct = 0usize;
    let mut sims: Vec<(f32, i32)> = Vec::with_capacity(bank.len());
    for q in 0..queries.len() {
        let query = queries.row(q);
        sims.clear();
        sims.extend((0..bank.len()).map(|i| (dot(query, bank.row(i)), bank.labels[i])));
        sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let mut votes = vec![0f64; classes];
        for &(sim, label) in &sims[..k] {
            if label >= 0 {
                votes[label as usize] += f64::from((sim / temperature).exp());
            }
        }
        let predicted = votes
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(c, _)| c);
        correct += usize::from(predicted as i32 == queries.labels[q]);
    }
    correct as f64 / queries.len().max(1) as f64
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
