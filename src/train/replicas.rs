//! Data parallelism inside the training loop, over whatever [`Collective`] group it is given
//! (one process: [`crate::collective::Local`], and every step here is the identity).
//!
//! Each rank trains on its share of every global batch. The loss is computed on every rank over
//! the whole global batch: the ranks' embeddings are all-gathered (as VICReg's reference does)
//! into the one-process row order, this rank's rows live and the others' constant, so the loss,
//! and Barlow Twins' standardisation and cross-correlation over all K·B rows, are exactly the
//! one-process ones, and backward gives each rank the gradient through its own rows. The sum of
//! the ranks' parameter gradients is then the one-process gradient; it is all-reduced after
//! backward in buckets (the same as DDP's average of per-rank mean losses). BatchNorm is per rank
//! unless `sync_bn` is on (see `model::ops::sync_bn`).

use std::sync::Arc;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

use crate::collective::{Collective, Group, Local};

/// Values per gradient all-reduce: 25 MB of f32, DDP's default bucket.
const BUCKET_VALUES: usize = 25 * 1024 * 1024 / 4;

pub struct Replicas {
    group: Group,
    /// Seconds spent in this step's collectives (gather and gradients; not BatchNorm's).
    pub comm_seconds: f64,
    /// Bytes this rank sent in this step's collectives.
    pub comm_bytes: u64,
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new(Arc::new(Local))
    }
}

fn wrap(e: crate::collective::CollectiveError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

impl Replicas {
    pub fn new(group: Group) -> Self {
        Self {
            group,
            comm_seconds: 0.0,
            comm_bytes: 0,
        }
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world(&self) -> usize {
        self.group.world()
    }

    /// Rank 0 writes the run's files; the others only train.
    pub fn primary(&self) -> bool {
        self.group.rank() == 0
    }

    /// Starts a step's accounting of communication.
    pub fn start_step(&mut self) {
        self.comm_seconds = 0.0;
        self.comm_bytes = 0;
    }

    fn timed<T>(
        &mut self,
        bytes: usize,
        f: impl FnOnce(&dyn Collective) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let out = f(&*self.group);
        self.comm_seconds += start.elapsed().as_secs_f64();
        self.comm_bytes += bytes as u64;
        out
    }

    /// Every rank's image count in this global batch, in rank order.
    pub fn counts(&mut self, local: usize) -> Result<Vec<usize>> {
        if self.world() == 1 {
            return Ok(vec![local]);
        }
        let counts = self.timed(8, |g| g.all_gather_u64(local as u64).map_err(wrap))?;
        Ok(counts.into_iter().map(|c| c as usize).collect())
    }

    /// This rank's embeddings `[K·b, D]` (view-major) to the global batch's `[K·B, D]` in the
    /// one-process order: for each view, every rank's rows in rank order. Only this rank's rows
    /// carry gradient.
    pub fn gather_embeddings(&mut self, z: &Tensor, k: usize, counts: &[usize]) -> Result<Tensor> {
        if self.world() == 1 {
            return Ok(z.clone());
        }
        let d = z.dim(1)?;
        let send: Vec<f32> = z
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let sizes: Vec<usize> = counts.iter().map(|c| k * c * d).collect();
        let mut recv = vec![0f32; sizes.iter().sum()];
        self.timed(send.len() * 4, |g| {
            g.all_gather_f32(&send, &sizes, &mut recv).map_err(wrap)
        })?;
        let starts: Vec<usize> = sizes
            .iter()
            .scan(0, |at, s| {
                *at += s;
                Some(*at - s)
            })
            .collect();
        let me = self.rank();
        let mut pieces = Vec::with_capacity(k * counts.len());
        for v in 0..k {
            for (r, &b) in counts.iter().enumerate().filter(|(_, &b)| b > 0) {
                pieces.push(match r == me {
                    true => z.narrow(0, v * b, b)?,
                    false => {
                        let rows = &recv[starts[r] + v * b * d..][..b * d];
                        Tensor::from_slice(rows, (b, d), z.device())?.to_dtype(z.dtype())?
                    }
                });
            }
        }
        Tensor::cat(&pieces, 0)
    }

    /// Sums the gradients of `params` over the ranks, in buckets, in place in `grads`. Every
    /// rank lists the same parameters in the same order (the optimiser's, sorted by name).
    pub fn reduce_gradients<'a>(
        &mut self,
        grads: &mut GradStore,
        params: impl Iterator<Item = &'a Var>,
    ) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        let mut bucket: Vec<(&Var, Tensor)> = Vec::new();
        let mut values = 0;
        for var in params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            values += grad.elem_count();
            bucket.push((var, grad.clone()));
            if values >= BUCKET_VALUES {
                self.reduce_bucket(grads, std::mem::take(&mut bucket))?;
                values = 0;
            }
        }
        self.reduce_bucket(grads, bucket)
    }

    fn reduce_bucket(&mut self, grads: &mut GradStore, bucket: Vec<(&Var, Tensor)>) -> Result<()> {
        if bucket.is_empty() {
            return Ok(());
        }
        let mut flat = Vec::new();
        for (_, grad) in &bucket {
            flat.extend(grad.flatten_all()?.to_vec1::<f32>()?);
        }
        self.timed(flat.len() * 4, |g| {
            g.all_reduce_sum_f32(&mut flat).map_err(wrap)
        })?;
        let mut at = 0;
        for (var, grad) in bucket {
            let n = grad.elem_count();
            let summed = Tensor::from_slice(&flat[at..at + n], grad.shape(), grad.device())?;
            grads.insert(var.as_tensor(), summed);
            at += n;
        }
        Ok(())
    }

    /// Rank 0's weights and BatchNorm statistics to every rank, so all start from the same model
    /// whatever each drew or loaded.
    pub fn broadcast_weights(&mut self, varmap: &VarMap) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, var) in vars {
            let mut values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            self.timed(values.len() * 4, |g| {
                g.broadcast_f32(&mut values, 0).map_err(wrap)
            })?;
            let t = Tensor::from_vec(values, var.shape(), var.device())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Waits for every rank (before rank 0's files are read, and at the end).
    pub fn barrier(&mut self) -> Result<()> {
        self.timed(0, |g| g.barrier().map_err(wrap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn one_process_is_the_identity() {
        let mut r = Replicas::default();
        let z = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap();
        let z = z.reshape((6, 2)).unwrap();
        let counts = r.counts(3).unwrap();
        assert_eq!(counts, vec![3]);
        let g = r.gather_embeddings(&z, 2, &counts).unwrap();
        assert_eq!(g.to_vec2::<f32>().unwrap(), z.to_vec2::<f32>().unwrap());
        assert!(r.primary());
    }
}
