//! The K-view streaming loader: a sampler picks positions, workers decode each image once and
//! crop it into K views at mixed resolutions, and batches arrive in order through bounded
//! channels.
//!
//! ```no_run
//! use sslfast::loader::Loader;
//! let loader = Loader::builder("target/packed/cifar10")
//!     .with_views("2x32:0.14-1,6x16:0.05-0.14")
//!     .with_batch_size(256)
//!     .with_seed(0)
//!     .build()?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.groups[1].data.len(), 6 * 256 * 3 * 16 * 16);
//! }
//! # Ok::<(), sslfast::loader::LoaderError>(())
//! ```

pub mod augment;
pub mod batch;
pub mod config;
pub mod dataset;
pub mod decode;
pub mod pipeline;
pub mod sampler;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

pub use augment::AugmentConfig;
pub use batch::{Batch, StageTimes, ViewBatch, CIFAR10_MEAN, CIFAR10_STD};
pub use config::{
    CachePolicy, LoaderConfig, DEFAULT_BATCH_SIZE, DEFAULT_DECODED_CACHE_BYTES, DEFAULT_PREFETCH,
    DEFAULT_VIEWS,
};
pub use pipeline::Batches;
pub use sampler::{Cursor, Order, Sampler};
pub use views::{ViewGroup, ViewSpec, ViewSpecError};

use crate::shard::codec::CodecError;
use crate::shard::{ShardError, ShardReader};
use augment::{ViewPipeline, ViewScratch};
use dataset::{Dataset, WorkerCache};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{file}: row {row}: {error}")]
    Decode {
        file: String,
        row: usize,
        error: CodecError,
    },
    #[error(transparent)]
    Views(#[from] ViewSpecError),
    #[error("invalid loader option: {0}")]
    Config(String),
    #[error("a loader worker thread panicked (a bug; please report it)")]
    WorkerPanicked,
}

/// `threads`, or when it is 0 the compute pool's size: every core, or this rank's share of
/// them in a data-parallel run (`RAYON_NUM_THREADS`).
pub fn worker_threads(threads: usize) -> usize {
    match threads {
        0 => rayon::current_num_threads(),
        n => n,
    }
}

/// A configured loader over one split. Cheap to iterate many times; see [`Loader::epoch`].
pub struct Loader {
    dataset: Arc<Dataset>,
    sampler: Sampler,
    spec: ViewSpec,
    pipelines: Arc<Vec<(usize, ViewPipeline)>>,
    seed: u64,
    threads: usize,
    prefetch: usize,
}

impl Loader {
    /// Starts a builder over the dataset directory `dir` with the defaults of [`LoaderConfig`].
    pub fn builder(dir: impl Into<PathBuf>) -> LoaderBuilder {
        LoaderBuilder {
            config: LoaderConfig {
                data: dir.into(),
                ..LoaderConfig::default()
            },
        }
    }

    pub fn from_config(config: &LoaderConfig) -> Result<Self, LoaderError> {
        LoaderBuilder {
            config: config.clone(),
        }
        .build()
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    pub fn views(&self) -> &ViewSpec {
        &self.spec
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.sampler.batches_per_epoch()
    }

    /// Every batch of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Batches {
        Batches::spawn(self.plan(epoch), 0, self.threads, self.prefetch)
    }

    /// The rest of `cursor.epoch` after `cursor.batches_done` batches: resuming there yields
    /// exactly the batches an uninterrupted run would have. A cursor past the end of the epoch
    /// (saved with another batch size, fraction or dataset) is an error.
    pub fn iter_from(&self, cursor: Cursor) -> Result<Batches, LoaderError> {
        let plan = self.plan(cursor.epoch);
        if cursor.batches_done > plan.batches.len() {
            return Err(LoaderError::Config(format!(
                "resume cursor is at batch {} of epoch {}, but this loader's epoch has {} batches \
                 (was the run saved with another batch size, fraction or dataset?)",
                cursor.batches_done,
                cursor.epoch,
                plan.batches.len()
            )));
        }
        Ok(Batches::spawn(
            plan,
            cursor.batches_done,
            self.threads,
            self.prefetch,
        ))
    }

    fn plan(&self, epoch: u64) -> pipeline::Plan {
        pipeline::Plan {
            dataset: self.dataset.clone(),
            pipelines: self.pipelines.clone(),
            seed: self.seed,
            epoch,
            batches: self.sampler.batches(epoch),
        }
    }

    /// Builds every batch of `epoch` on the calling thread, with no pipeline: the single-threaded
    /// reference that the benchmark compares against, and a way to regenerate any batch.
    pub fn epoch_inline(
        &self,
        epoch: u64,
    ) -> impl Iterator<Item = Result<Batch, LoaderError>> + '_ {
        let batches = self.sampler.batches(epoch);
        let mut cache = WorkerCache::default();
        let mut scratch = ViewScratch::default();
        batches
            .into_iter()
            .enumerate()
            .map(move |(number, positions)| {
                batch::assemble(
                    &self.dataset,
                    &self.pipelines,
                    self.seed,
                    epoch,
                    number,
                    &positions,
                    &mut cache,
                    &mut scratch,
                )
            })
    }
}

/// Builds a [`Loader`]; each `with_*` sets one [`LoaderConfig`] field.
#[derive(Debug, Clone)]
pub struct LoaderBuilder {
    config: LoaderConfig,
}

impl LoaderBuilder {
    pub fn with_split(mut self, split: &str) -> Self {
        self.config.split = split.to_string();
        self
    }
    pub fn with_views(mut self, spec: &str) -> Self {
        self.config.views = spec.to_string();
        self
    }
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.config.threads = threads;
        self
    }
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.config.prefetch = prefetch;
        self
    }
    pub fn with_order(mut self, order: Order) -> Self {
        self.config.order = order;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
    pub fn with_fraction(mut self, fraction: f64) -> Self {
        self.config.fraction = fraction;
        self
    }
    pub fn with_rank(mut self, rank: usize, world: usize) -> Self {
        self.config.rank = rank;
        self.config.world = world;
        self
    }
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.config.drop_last = drop_last;
        self
    }
    /// Whether shard checksums are checked before use (the default); see
    /// [`LoaderConfig::verify_checksums`].
    pub fn with_checksums(mut self, verify: bool) -> Self {
        self.config.verify_checksums = verify;
        self
    }
    pub fn with_cache(mut self, cache: CachePolicy) -> Self {
        self.config.cache = cache;
        self
    }
    pub fn with_augment(mut self, augment: AugmentConfig) -> Self {
        self.config.augment = augment;
        self
    }

    /// Opens the dataset (decoding it when it is cached) and checks every option.
    pub fn build(self) -> Result<Loader, LoaderError> {
        self.config.check()?;
        let LoaderConfig {
            data,
            split,
            views,
            batch_size,
            threads,
            prefetch,
            order,
            seed,
            fraction,
            rank,
            world,
            drop_last,
            shuffle_buffer,
            cache,
            decoded_cache_bytes,
            verify_checksums,
            augment,
        } = self.config;
        let bad = |m: String| Err(LoaderError::Config(m));
        let spec: ViewSpec = views.parse()?;
        let reader = ShardReader::open(&data)?;
        let dataset = Dataset::open(
            &reader,
            &split,
            cache,
            decoded_cache_bytes,
            verify_checksums,
        )?;
        let sampler = Sampler::new(
            &dataset.labels,
            dataset.group_starts.clone(),
            order,
            seed,
            batch_size,
            drop_last,
            fraction,
            rank,
            world,
            shuffle_buffer,
        );
        if sampler.batches_per_epoch() == 0 {
            return bad(format!(
                "{} samples make no batch of {} with drop_last; lower the batch size",
                sampler.subset().len(),
                sampler.global_batch_size()
            ));
        }
        let pipelines = spec
            .groups
            .iter()
            .map(|g| (g.count, ViewPipeline::new(g.size, g.scale, &augment)))
            .collect();
        Ok(Loader {
            dataset: Arc::new(dataset),
            sampler,
            spec,
            pipelines: Arc::new(pipelines),
            seed,
            threads: worker_threads(threads),
            prefetch: prefetch.max(1),
        })
    }
}
