//! The MPI engine (Open MPI or MPICH through rsmpi): the collectives of [`Collective`] on
//! `MPI_COMM_WORLD`. Calls are serialised by a lock, so MPI runs at `MPI_THREAD_SERIALIZED`.

use std::sync::Mutex;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use crate::collective::{Collective, CollectiveError, Result};

pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    lock: Mutex<()>,
    /// Dropped last: finalises MPI.
    _universe: mpi::environment::Universe,
}

// SAFETY: MPI is initialised at MPI_THREAD_SERIALIZED or above and every call below holds
// `lock`, so no two threads are ever inside MPI at once, which is all that level asks.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initialises MPI (once per process) on the world the launcher started.
    pub fn init() -> std::result::Result<Self, String> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or("MPI was already initialised in this process")?;
        if level < Threading::Serialized {
            return Err(format!(
                "the MPI library offers thread level {level:?}; ssl-train needs Serialized"
            ));
        }
        let world = universe.world();
        Ok(Self {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            lock: Mutex::new(()),
            _universe: universe,
        })
    }

    fn call<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        f(&self.world)
    }

    fn error(&self, op: &'static str, message: String) -> CollectiveError {
        CollectiveError {
            op,
            rank: self.rank,
            world: self.size,
            message,
        }
    }

    /// MPI counts are C ints: a buffer past 2^31 values needs splitting, which nothing here sends.
    fn count(&self, op: &'static str, n: usize) -> Result<i32> {
        i32::try_from(n).map_err(|_| self.error(op, format!("{n} values exceed an MPI count")))
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.size
    }
    fn engine(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.count("all_reduce", buf.len())?;
        // rsmpi has no MPI_IN_PLACE: one copy to send from.
        let send = buf.to_vec();
        self.call(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.count("all_reduce", buf.len())?;
        let send = buf.to_vec();
        self.call(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        let total: usize = counts.iter().sum();
        if counts.len() != self.size || counts[self.rank] != send.len() || recv.len() != total {
            return Err(self.error(
                "all_gather",
                format!(
                    "{} values sent, counts {counts:?}, room for {}",
                    send.len(),
                    recv.len()
                ),
            ));
        }
        self.count("all_gather", total)?;
        let counts: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |at, &c| {
                *at += c;
                Some(*at - c)
            })
            .collect();
        self.call(|w| {
            let mut partition = PartitionMut::new(recv, counts, displs);
            w.all_gather_varcount_into(send, &mut partition)
        });
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let mut out = vec![0u64; self.size];
        self.call(|w| w.all_gather_into(&value, &mut out[..]));
        Ok(out)
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(self.error("broadcast", format!("root {root} is not a rank")));
        }
        self.count("broadcast", buf.len())?;
        self.call(|w| w.process_at_rank(root as i32).broadcast_into(buf));
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.call(|w| w.barrier());
        Ok(())
    }
}
