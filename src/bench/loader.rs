//! `ssl-bench loader`: images/s, views/s and MB/s of the K-view loader, the time per stage, the
//! time to the first batch and peak memory; plus, in the same process, the same batches built on
//! one thread with no pipeline (`Loader::epoch_inline`) as a baseline.

use std::time::{Duration, Instant};

use serde::Serialize;

use std::path::PathBuf;

use crate::loader::augment::rrc::Interpolation;
use crate::loader::{
    AugmentConfig, CachePolicy, Loader, LoaderConfig, LoaderError, Order, StageTimes,
};

/// Which augmentations the benchmark applies.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AugmentSet {
    /// Our defaults (fastssl's recipe): crop, flip, jitter (p 0.8), grayscale (p 0.2).
    Full,
    /// The defaults without grayscale: crop, flip, brightness/contrast/saturation (p 0.8).
    Ffcv,
    /// Crop and flip only.
    Crop,
}

/// What to time; also `ssl-bench loader`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LoaderArgs {
    /// A dataset directory written by `ssl-pack`.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    #[arg(long, default_value = crate::loader::DEFAULT_VIEWS)]
    pub views: String,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Batches to time after the first.
    #[arg(long, default_value_t = 100)]
    pub batches: usize,
    /// Batches for the single-threaded baseline.
    #[arg(long, default_value_t = 10)]
    pub baseline_batches: usize,
    #[arg(long, value_enum, default_value_t = AugmentSet::Full)]
    pub augment: AugmentSet,
    /// The crop's resize filter (default: area, FFCV's INTER_AREA).
    #[arg(long, value_enum)]
    pub interpolation: Option<Interpolation>,
    #[arg(long, value_enum, default_value_t = Order::Random)]
    pub order: Order,
    #[arg(long, value_enum, default_value_t = CachePolicy::Auto)]
    pub cache: CachePolicy,
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
}

impl LoaderArgs {
    pub fn config(&self) -> LoaderConfig {
        let mut augment = match self.augment {
            AugmentSet::Full => AugmentConfig::default(),
            AugmentSet::Ffcv => AugmentConfig::ffcv(),
            AugmentSet::Crop => AugmentConfig::crop_only(),
        };
        if let Some(interpolation) = self.interpolation {
            augment.interpolation = interpolation;
        }
        // Every field named: a new LoaderConfig field fails to compile here until it is mapped.
        let default = LoaderConfig::default();
        LoaderConfig {
            data: self.data.clone(),
            split: self.split.clone(),
            views: self.views.clone(),
            batch_size: self.batch,
            threads: self.threads,
            prefetch: self.prefetch,
            order: self.order,
            seed: default.seed,
            fraction: default.fraction,
            rank: default.rank,
            world: default.world,
            drop_last: default.drop_last,
            shuffle_buffer: default.shuffle_buffer,
            cache: self.cache,
            decoded_cache_bytes: default.decoded_cache_bytes,
            verify_checksums: default.verify_checksums,
            augment,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoaderReport {
    pub views: String,
    pub batch_size: usize,
    pub threads: usize,
    pub batches: usize,
    pub images_per_s: f64,
    pub views_per_s: f64,
    pub mb_per_s: f64,
    /// From opening the dataset (including any up-front decode) to the first batch in hand.
    pub first_batch_s: f64,
    /// Mean milliseconds per batch spent in each stage, summed over workers.
    pub stage_ms: StageMs,
    pub baseline_images_per_s: f64,
    pub speedup_over_baseline: f64,
    pub peak_rss_mb: f64,
    pub decoded_in_memory: bool,
}

impl std::fmt::Display for LoaderReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "loader {} batch={} threads={}: images/s={:.0} views/s={:.0} MB/s={:.1} first_batch_s={:.3} peak_rss_mb={:.0}",
            r.views, r.batch_size, r.threads, r.images_per_s, r.views_per_s, r.mb_per_s, r.first_batch_s, r.peak_rss_mb
        )?;
        let s = &r.stage_ms;
        writeln!(
            f,
            "stage ms/batch (summed over workers): read={:.2} decode={:.2} augment={:.2} assemble={:.2}",
            s.read, s.decode, s.augment, s.assemble
        )?;
        write!(
            f,
            "baseline (1 thread, inline): images/s={:.0}; pipeline/baseline={:.2}x",
            r.baseline_images_per_s, r.speedup_over_baseline
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageMs {
    pub read: f64,
    pub decode: f64,
    pub augment: f64,
    pub assemble: f64,
}

/// Runs the pipeline for `batches` batches (after the first) and the baseline for
/// `baseline_batches`.
pub fn bench_loader(args: &LoaderArgs) -> Result<LoaderReport, LoaderError> {
    let (cfg, batches, baseline_batches) = (&args.config(), args.batches, args.baseline_batches);
    let open = Instant::now();
    let loader = Loader::from_config(cfg)?;
    let mut epoch = 0;
    let mut iter = loader.epoch(epoch);
    let first = iter.next().expect("build() guarantees a batch")?;
    let first_batch_s = open.elapsed().as_secs_f64();
    let per_image_bytes: usize =
        first.groups.iter().map(|g| g.data.len()).sum::<usize>() / first.len();

    let (mut images, mut times, mut done) = (0usize, StageTimes::default(), 0usize);
    let start = Instant::now();
    while done < batches {
        let batch = match iter.next() {
            Some(b) => b?,
            None => {
                epoch += 1;
                iter = loader.epoch(epoch);
                continue;
            }
        };
        images += batch.len();
        times += batch.times;
        done += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(iter);

    let start = Instant::now();
    let mut baseline_images = 0;
    for batch in loader.epoch_inline(0).take(baseline_batches.max(1)) {
        baseline_images += batch?.len();
    }
    let baseline_images_per_s = baseline_images as f64 / start.elapsed().as_secs_f64();

    let images_per_s = images as f64 / elapsed;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / done.max(1) as f64;
    Ok(LoaderReport {
        views: loader.views().to_string(),
        batch_size: cfg.batch_size,
        threads: crate::loader::worker_threads(cfg.threads),
        batches: done,
        images_per_s,
        views_per_s: images_per_s * loader.views().views() as f64,
        mb_per_s: images_per_s * per_image_bytes as f64 / 1e6,
        first_batch_s,
        stage_ms: StageMs {
            read: ms(times.read),
            decode: ms(times.decode),
            augment: ms(times.augment),
            assemble: ms(times.assemble),
        },
        baseline_images_per_s,
        speedup_over_baseline: images_per_s / baseline_images_per_s,
        peak_rss_mb: peak_rss_mb(),
        decoded_in_memory: loader.dataset().is_decoded(),
    })
}

/// Peak resident memory of this process (VmHWM), in MB; 0 where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
