//! Which samples go into which batch: the epoch order (`random`, `quasi`, `sequential`), a seeded
//! class-balanced `fraction` of the data, batching with `drop_last`, each rank's share of every
//! global batch (`world x batch_size` images),
//! and the cursor `(epoch, batches_done)` from which iteration resumes exactly.
//!
//! Positions are indices into the split in storage order. Orders are pure functions of
//! (seed, epoch), so every rank and every resumed run computes the same sequence.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::collective::share;
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

    /// This rank's positions for `epoch`, in order: its shares of the global batches.
    pub fn epoch_order(&self, epoch: u64) -> Vec<u32> {
        self.batches(epoch).concat()
    }

    /// Every position of `epoch` in the order the global batches take them.
    pub fn global_order(&self, epoch: u64) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0DE7,
        );
        match self.order {
            Order::Sequential => self.subset.clone(),
            Order::Random => {
                let mut all = self.subset.clone();
                all.shuffle(&mut rng);
                all
            }
            Order::Quasi => self.quasi_order(&mut rng),
        }
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

    /// Images in one global batch: `batch_size` per rank, as PyTorch's DDP counts it.
    pub fn global_batch_size(&self) -> usize {
        self.batch_size * self.world.max(1)
    }

    /// Samples this rank sees per epoch.
    pub fn samples_per_epoch(&self) -> usize {
        let (n, g) = (self.subset.len(), self.global_batch_size());
        let full = (n / g) * self.batch_size;
        match self.drop_last {
            true => full,
            false => full + share(n % g, self.rank, self.world.max(1)).len(),
        }
    }

    /// Global batches per epoch, the same on every rank.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, g) = (self.subset.len(), self.global_batch_size());
        if self.drop_last {
            n / g
        } else {
            n.div_ceil(g)
        }
    }

    /// This rank's share of each global batch of `epoch`, as position lists. The global batches
    /// are those one process with a batch of `world x batch_size` would take, and rank r's share
    /// is its contiguous part of each, so N ranks see exactly the images (and, each view's
    /// randomness depending only on seed, epoch, image and view, the views) of one. A short
    /// last batch is shared as evenly as it goes; a rank's share may then be empty.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<u32>> {
        let order = self.global_order(epoch);
        let n = self.batches_per_epoch();
        order
            .chunks(self.global_batch_size())
            .take(n)
            .map(|global| global[share(global.len(), self.rank, self.world.max(1))].to_vec())
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
    fn rank_shares_make_up_the_one_process_batches() {
        // 3 ranks x 16 = the batches of one process with 48, split into contiguous thirds.
        let one = Sampler {
            batch_size: 48,
            ..sampler(999, Order::Random, 0, 1, true)
        };
        let ranks: Vec<Sampler> = (0..3)
            .map(|r| sampler(999, Order::Random, r, 3, true))
            .collect();
        assert!(ranks.iter().all(|s| s.batches_per_epoch() == 20));
        assert!(ranks.iter().all(|s| s.samples_per_epoch() == 320));
        for (b, global) in one.batches(2).iter().enumerate() {
            let parts: Vec<Vec<u32>> = ranks.iter().map(|s| s.batches(2)[b].clone()).collect();
            assert!(parts.iter().all(|p| p.len() == 16));
            assert_eq!(&parts.concat(), global, "batch {b}");
        }
        // A short last batch is shared as evenly as it goes.
        let short: Vec<usize> = (0..4)
            .map(|r| sampler(10, Order::Random, r, 4, false).epoch_order(0).len())
            .collect();
        assert_eq!(short, vec![2, 3, 2, 3]);
        let counted: Vec<usize> = (0..4)
            .map(|r| sampler(10, Order::Random, r, 4, false).samples_per_epoch())
            .collect();
        assert_eq!(counted, short);
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
