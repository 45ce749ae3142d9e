//! The collective operations data-parallel training needs, as a trait the model's synchronised
//! BatchNorm and the training loop call without knowing the engine behind it. [`Local`] (one
//! process) is always here; `dist` supplies the engines (MPI) and the launchers.
//!
//! Every rank must call the same collectives in the same order with matching lengths: the
//! engines are the field's (MPI, NCCL), whose contract this is.

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("collective `{op}` on rank {rank} of {world}: {message}")]
pub struct CollectiveError {
    pub op: &'static str,
    pub rank: usize,
    pub world: usize,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, CollectiveError>;

/// A group of `world` processes; this one is `rank`.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// The engine's name for logs and metrics (`local`, `mpi`).
    fn engine(&self) -> &'static str;
    /// Element-wise sum over the ranks, in place.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Every rank's `send` concatenated in rank order into `recv`; rank r sends `counts[r]`
    /// values (`counts` is the same on every rank).
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()>;
    /// One `u64` from each rank, in rank order.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>>;
    /// Rank `root`'s `buf` into every rank's `buf`.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
}

/// A shared handle to the group, for the places that keep one (BatchNorm statistics).
pub type Group = Arc<dyn Collective>;

/// One process: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "local"
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        if counts != [send.len()] || recv.len() != send.len() {
            return Err(CollectiveError {
                op: "all_gather",
                rank: 0,
                world: 1,
                message: format!(
                    "{} values sent, counts {counts:?}, room for {}",
                    send.len(),
                    recv.len()
                ),
            });
        }
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value])
    }
    fn broadcast_f32(&self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Rank `rank`'s share of `len` items split into `world` contiguous parts whose sizes differ by
/// at most one: `[start, end)`. Parts of a global batch, in rank order, make up the whole.
pub fn share(len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    (rank * len / world)..((rank + 1) * len / world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_in_rank_order() {
        for (len, world) in [(10, 3), (2, 4), (512, 2), (0, 2), (7, 1)] {
            let parts: Vec<_> = (0..world).map(|r| share(len, r, world)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[world - 1].end, len);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{len}/{world}: {sizes:?}");
        }
    }

    #[test]
    fn local_gather_checks_lengths() {
        let mut out = [0f32; 2];
        Local.all_gather_f32(&[1.0, 2.0], &[2], &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0]);
        let err = Local.all_gather_f32(&[1.0], &[2], &mut out).unwrap_err();
        assert!(err.to_string().contains("all_gather"), "{err}");
    }
}
