//! The threaded pipeline: `threads` workers build whole batches (worker t builds batches t,
//! t + T, ...), each into its own bounded crossbeam channel, and the consumer takes them round
//! robin, so batches arrive in order and at most about `prefetch` are in flight. Dropping the
//! iterator disconnects the channels and joins every worker; a worker's error or panic reaches
//! the consumer as an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};

use super::augment::{ViewPipeline, ViewScratch};
use super::batch::{assemble, Batch};
use super::dataset::{Dataset, WorkerCache};
use super::LoaderError;

/// What every worker of one iteration shares.
pub(crate) struct Plan {
    pub dataset: Arc<Dataset>,
    pub pipelines: Arc<Vec<(usize, ViewPipeline)>>,
    pub seed: u64,
    pub epoch: u64,
    pub batches: Vec<Vec<u32>>,
}

/// The batches of one epoch from a starting batch on: `Iterator<Item = Result<Batch>>`.
pub struct Batches {
    receivers: Vec<Receiver<Result<Batch, LoaderError>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    start: usize,
    end: usize,
    done: bool,
}

impl Batches {
    pub(crate) fn spawn(plan: Plan, start: usize, threads: usize, prefetch: usize) -> Self {
        let end = plan.batches.len();
        let threads = threads.clamp(1, end.saturating_sub(start).max(1));
        let capacity = prefetch.div_ceil(threads).max(1);
        let plan = Arc::new(plan);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = bounded(capacity);
            let (plan, stop) = (plan.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("ssl-loader-{t}"))
                .spawn(move || {
                    let mut cache = WorkerCache::default();
                    let mut scratch = ViewScratch::default();
                    for number in (start + t..end).step_by(threads) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let batch = assemble(
                            &plan.dataset,
                            &plan.pipelines,
                            plan.seed,
                            plan.epoch,
                            number,
                            &plan.batches[number],
                            &mut cache,
                            &mut scratch,
                        );
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                    }
                })
                .expect("spawning a loader thread");
            receivers.push(rx);
            handles.push(handle);
        }
        Self {
            receivers,
            handles,
            stop,
            next: start,
            start,
            end,
            done: false,
        }
    }

    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        if self.done {
            0
        } else {
            self.end - self.next
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.end {
            return None;
        }
        let worker = (self.next - self.start) % self.receivers.len();
        let item = match self.receivers[worker].recv() {
            Ok(item) => item,
            // The worker is gone before sending its batch: it panicked.
            Err(_) => Err(LoaderError::WorkerPanicked),
        };
        self.next += 1;
        self.done = item.is_err();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnecting unblocks workers waiting to send; then each finishes at most one batch.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
