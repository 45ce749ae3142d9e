//! Synchronised BatchNorm: with a group set on this thread ([`sync_batch_norm`]), the fused
//! training-mode BatchNorm ops take their statistics over the whole global batch instead of this
//! process's share: the forward all-reduces each channel's sum and count, then its squared
//! deviations; the backward all-reduces `Σ g` and `Σ g x̂` for the input gradient and keeps the
//! local sums for γ and β, whose gradients the training loop reduces with the others (as
//! PyTorch's `SyncBatchNorm` does). Every rank runs the same graph, so the collectives meet in
//! the same order.

use std::cell::RefCell;

use candle_core::Result;

use crate::collective::Group;

thread_local! {
    static GROUP: RefCell<Option<Group>> = const { RefCell::new(None) };
}

/// Makes the training-mode BatchNorm of models run on this thread synchronise over `group`
/// (`None`: per-process statistics, the default). Thread-local, like [`super::use_candle_ops`].
pub fn sync_batch_norm(group: Option<Group>) {
    GROUP.with(|g| *g.borrow_mut() = group.filter(|g| g.world() > 1));
}

/// The group BatchNorm synchronises over on this thread, if any.
pub(crate) fn current() -> Option<Group> {
    GROUP.with(|g| g.borrow().clone())
}

/// The group a forward pass used, kept for its backward pass.
#[derive(Clone, Default)]
pub(super) struct Synced(pub Option<Group>);

impl std::fmt::Debug for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(g) => write!(f, "Synced(rank {} of {})", g.rank(), g.world()),
            None => f.write_str("Synced(local)"),
        }
    }
}

impl Synced {
    /// `values` summed over the group (unchanged without one).
    pub(super) fn sum(&self, mut values: Vec<f64>) -> Result<Vec<f64>> {
        if let Some(group) = &self.0 {
            group
                .all_reduce_sum_f64(&mut values)
                .map_err(candle_core::Error::wrap)?;
        }
        Ok(values)
    }

    /// Per-channel `(a, b)` pairs summed over the group.
    pub(super) fn sum_pairs(&self, pairs: &[(f64, f64)]) -> Result<Vec<(f64, f64)>> {
        if self.0.is_none() {
            return Ok(pairs.to_vec());
        }
        let flat = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let flat = self.sum(flat)?;
        Ok(flat.chunks(2).map(|p| (p[0], p[1])).collect())
    }
}
