//! A rank stuck in a collective (a peer hung, or died where the launcher did not notice) ends
//! itself after a timeout instead of waiting forever: the job then stops with a message that
//! says which collective never returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::collective::{Collective, Group, Result};

pub struct Watched {
    inner: Group,
    state: Arc<State>,
}

struct State {
    origin: Instant,
    /// Milliseconds since `origin` when the current collective started, plus one; 0 when idle.
    since: AtomicU64,
    op: Mutex<&'static str>,
}

impl Watched {
    pub fn new(inner: Group, timeout: Duration) -> Self {
        let state = Arc::new(State {
            origin: Instant::now(),
            since: AtomicU64::new(0),
            op: Mutex::new(""),
        });
        let watched = state.clone();
        let (rank, world) = (inner.rank(), inner.world());
        std::thread::Builder::new()
            .name("ssl-dist-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500).min(timeout));
                let since = watched.since.load(Ordering::Acquire);
                if since == 0 {
                    continue;
                }
                let waited = watched.origin.elapsed().as_millis() as u64 - (since - 1);
                if waited >= timeout.as_millis() as u64 {
                    let op = *watched.op.lock().unwrap_or_else(|p| p.into_inner());
                    eprintln!(
                        "ssl-train: rank {rank} of {world}: collective `{op}` has not returned \
                         after {:.0} s (--dist-timeout): another rank died or hangs; stopping",
                        waited as f64 / 1000.0
                    );
                    std::process::exit(124);
                }
            })
            .expect("spawning the collective watchdog");
        Self { inner, state }
    }

    fn watch<T>(&self, op: &'static str, f: impl FnOnce(&dyn Collective) -> T) -> T {
        *self.state.op.lock().unwrap_or_else(|p| p.into_inner()) = op;
        let now = self.state.origin.elapsed().as_millis() as u64 + 1;
        self.state.since.store(now, Ordering::Release);
        let out = f(&*self.inner);
        self.state.since.store(0, Ordering::Release);
        out
    }
}

impl Collective for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.watch("all_reduce", |g| g.all_reduce_sum_f32(buf))
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.watch("all_reduce", |g| g.all_reduce_sum_f64(buf))
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        self.watch("all_gather", |g| g.all_gather_f32(send, counts, recv))
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        self.watch("all_gather", |g| g.all_gather_u64(value))
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.watch("broadcast", |g| g.broadcast_f32(buf, root))
    }
    fn barrier(&self) -> Result<()> {
        self.watch("barrier", |g| g.barrier())
    }
}
