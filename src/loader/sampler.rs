//! Which samples go into which batch: the epoch order (`random`, `quasi`, `sequential`), a seeded
//! class-balanced `fraction` of the data, disjoint `rank`/`world` parts, batching with `drop_last`,
//! and the cursor `(epoch, batches_done)` from which iteration resumes exactly.
//!
//! Positions are indices into the split in storage order. Orders are pure functions of
//! (seed, epoch), so every rank and every resumed run computes the same sequence.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Default rows in the `quasi` order's shuffle buffer.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// A full permutation per epoch, seeded by (seed, epoch).
    #[default]
    Random,
    /// Row groups shuffled, then rows through a bounded shuffle buffer: for data larger than memory.
    Quasi,
    /// Storage order.
    Sequential,
}

/// Where an iteration starts: `batches_done` batches into `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub batches_done: usize,
}

#[derive(Debug, Clone)]
pub struct Sampler {
    pub order: Order,
    pub seed: u64,
    pub batch_size: usize,
    pub drop_last: bool,
    pub rank: usize,
    pub world: usize,
    pub shuffle_buffer: usize,
    /// The positions in use (after `fraction`), sorted.
    subset: Vec<u32>,
    /// First position of each row group, for `quasi` (ascending, starting at 0).
    group_starts: Vec<u32>,
}

impl Sampler {
    /// `labels[p]` is the label of position `p`; `group_starts` the first position of each row group.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        labels: &[i32],
        group_starts: Vec<u32>,
        order: Order,
        seed: u64,
        batch_size: usize,
        drop_last: bool,
        fraction: f64,
        rank: usize,
        world: usize,
        shuffle_buffer: usize,
    ) -> Self {
        Self {
            order,
            seed,
            batch_size,
            drop_last,
            rank,
            world,
            shuffle_buffer: shuffle_buffer.max(1),
            subset: balanced_subset(labels, fraction, seed),
            group_starts,
        }
    }

    /// The positions kept by `fraction`, sorted.
    pub fn subset(&self) -> &[u32] {
        &self.subset
    }

    /// This rank's positions for `epoch`, in order.
    pub fn epoch_order(&self, epoch: u64) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0DE7,
        );
        let order = match self.order {
            Order::Sequential => self.subset.clone(),
            Order::Random => {
                let mut all = self.subset.clone();
                all.shuffle(&mut rng);
                all
            }
            Order::Quasi => self.quasi_order(&mut rng),
        };
        self.rank_part(order)
    }

    fn quasi_order(&self, rng: &mut ChaCha8Rng) -> Vec<u32> {
        // Subset positions grouped by row group (the subset is sorted, so groups are runs).
        let mut by_group: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for &p in &self.subset {
            let g = self
                .group_starts
                .partition_point(|&s| s <= p)
                .saturating_sub(1);
            by_group.entry(g).or_default().push(p);
        }
        let mut groups: Vec<Vec<u32>> = by_group.into_values().collect();
        groups.shuffle(rng);
        let mut buffer: Vec<u32> = Vec::with_capacity(self.shuffle_buffer);
        let mut out = Vec::with_capacity(self.subset.len());
        for p in groups.into_iter().flatten() {
            if buffer.len() == self.shuffle_buffer {
                let i = rng.random_range(0..buffer.len());
                out.push(buffer.swap_remove(i));
            }
            buffer.push(p);
        }
        buffer.shuffle(rng);
        out.extend(buffer);
        out
    }

    /// Rank `rank` of `world` takes every world-th position (as PyTorch's DistributedSampler),
    /// after dropping the tail (`drop_last`) or padding from the start so all parts are equal.
    fn rank_part(&self, mut order: Vec<u32>) -> Vec<u32> {
        if self.world <= 1 || order.is_empty() {
            return order;
        }
        let per_rank = if self.drop_last {
            order.len() / self.world
        } else {
            order.len().div_ceil(self.world)
        };
        let total = per_rank * self.world;
        let mut i = 0;
        while order.len() < total {
            order.push(order[i]);
            i += 1;
        }
        order.truncate(total);
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.world)
            .collect()
    }

    /// Samples this rank sees per epoch.
    pub fn samples_per_epoch(&self) -> usize {
        let n = self.subset.len();
        match self.world {
            0 | 1 => n,
            w if self.drop_last => n / w,
            w => n.div_ceil(w),
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        let n = self.samples_per_epoch();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The batches of `epoch`, as position lists.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<u32>> {
        let order = self.epoch_order(epoch);
        let n = self.batches_per_epoch();
        order
            .chunks(self.batch_size)
            .take(n)
            .map(<[u32]>::to_vec)
            .collect()
    }
}

/// A seeded, class-balanced subset: each label (unlabeled included) keeps round(fraction * count)
/// of its positions, at least one. The choice depends on the seed only, never on the epoch.
pub fn balanced_subset(labels: &[i32], fraction: f64, seed: u64) -> Vec<u32> {
    if fraction >= 1.0 {
        return (0..labels.len() as u32).collect();
    }
    let mut by_label: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (p, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(p as u32);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xF4AC_7104);
    let mut keep = Vec::new();
    for (_, mut positions) in by_label {
        let k = ((positions.len() as f64 * fraction).round() as usize).clamp(1, positions.len());
        positions.shuffle(&mut rng);
        keep.extend_from_slice(&positions[..k]);
    }
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(n: usize, order: Order, rank: usize, world: usize, drop_last: bool) -> Sampler {
        let labels: Vec<i32> = (0..n).map(|i| (i % 10) as i32).collect();
        let starts = (0..n as u32).step_by(7).collect();
        Sampler::new(
            &labels, starts, order, 3, 16, drop_last, 1.0, rank, world, 20,
        )
    }

    #[test]
    fn every_order_visits_each_position_once() {
        for order in [Order::Random, Order::Quasi, Order::Sequential] {
            let s = sampler(1000, order, 0, 1, false);
            let mut seen = s.epoch_order(5);
            seen.sort_unstable();
            assert_eq!(seen, (0..1000).collect::<Vec<u32>>(), "{order:?}");
        }
        let s = sampler(1000, Order::Random, 0, 1, false);
        assert_ne!(s.epoch_order(0), s.epoch_order(1), "epochs reshuffle");
        assert_eq!(s.epoch_order(4), s.epoch_order(4));
    }

    #[test]
    fn quasi_order_stays_local() {
        let s = sampler(1000, Order::Quasi, 0, 1, false);
        let order = s.epoch_order(0);
        assert_ne!(order, (0..1000).collect::<Vec<u32>>());
        // With a 20-row buffer over 7-row groups, the first 20 outputs come from few groups.
        let groups: std::collections::BTreeSet<u32> = order[..20].iter().map(|p| p / 7).collect();
        assert!(groups.len() < 12, "{groups:?}");
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_epoch() {
        let parts: Vec<Vec<u32>> = (0..3)
            .map(|r| sampler(999, Order::Random, r, 3, true).epoch_order(2))
            .collect();
        let mut all: Vec<u32> = parts.concat();
        assert!(parts.iter().all(|p| p.len() == 333));
        all.sort_unstable();
        assert_eq!(all, (0..999).collect::<Vec<u32>>());
        let padded: Vec<usize> = (0..4)
            .map(|r| sampler(10, Order::Random, r, 4, false).epoch_order(0).len())
            .collect();
        assert_eq!(padded, vec![3; 4]);
    }

    #[test]
    fn batches_respect_drop_last() {
        let keep = sampler(100, Order::Random, 0, 1, false);
        assert_eq!(
            keep.batches(0).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![16, 16, 16, 16, 16, 16, 4]
        );
        let drop = sampler(100, Order::Random, 0, 1, true);
        assert_eq!(drop.batches_per_epoch(), 6);
        assert!(drop.batches(0).iter().all(|b| b.len() == 16));
    }

    #[test]
    fn fraction_is_class_balanced_and_seeded() {
        let labels: Vec<i32> = (0..1000).map(|i| i % 4).collect();
        let half = balanced_subset(&labels, 0.5, 1);
        for c in 0..4 {
            assert_eq!(
                half.iter().filter(|&&p| labels[p as usize] == c).count(),
                125
            );
        }
        assert_eq!(half, balanced_subset(&labels, 0.5, 1));
        assert_ne!(half, balanced_subset(&labels, 0.5, 2));
    }
}
