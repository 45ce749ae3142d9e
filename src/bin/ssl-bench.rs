//! `ssl-bench`: throughput of every stage.
//!
//! ```text
//! ssl-bench pack SRC [--encoding raw] [--max-side 256] [--container parquet] [--repeats 2]
//! ssl-bench loader --data DIR [--split train] --views SPEC --batch 256 --threads N --batches M
//! ssl-bench loss --k 2,4,8,16 --batch 256 --pdim 256,8192
//! ssl-bench step --backbone resnet18 --width 64 --batch 64 --size 32 --views 2 --steps 5
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sslfast::config::{
    AugmentConfig, CachePolicy, Container, EncodingMode, Interpolation, LoaderConfig, Order,
    PackConfig, SourceFormat,
};

#[derive(Parser)]
#[command(
    name = "ssl-bench",
    version,
    about = "Measure the throughput of each stage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AugmentSet {
    /// Our defaults (fastssl's recipe): crop, flip, jitter (p 0.8), grayscale (p 0.2).
    Full,
    /// The defaults without grayscale: crop, flip, brightness/contrast/saturation (p 0.8).
    Ffcv,
    /// Crop and flip only.
    Crop,
}

#[derive(Subcommand)]
enum Command {
    /// Forward + backward time of the efficient vs the naive multi-view loss.
    Loss {
        #[arg(long, value_delimiter = ',', default_values_t = [2, 4, 8, 16])]
        k: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_delimiter = ',', default_values_t = [256, 8192])]
        pdim: Vec<usize>,
        #[arg(long, value_enum, default_value_t = sslfast::loss::LossKind::BarlowTwins)]
        loss: sslfast::loss::LossKind,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Skip the naive form where it would hold more than this many GB for backward.
        #[arg(long, default_value_t = 8.0)]
        max_gb: f64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// images/s of the K-view loader, per stage, against a single-threaded inline baseline.
    Loader {
        /// A dataset directory written by `ssl-pack`.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        #[arg(long, default_value = sslfast::config::DEFAULT_VIEWS)]
        views: String,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Batches to time after the first.
        #[arg(long, default_value_t = 100)]
        batches: usize,
        /// Batches for the single-threaded baseline.
        #[arg(long, default_value_t = 10)]
        baseline_batches: usize,
        #[arg(long, value_enum, default_value_t = AugmentSet::Full)]
        augment: AugmentSet,
        /// The crop's resize filter (default: area, FFCV's INTER_AREA).
        #[arg(long, value_enum)]
        interpolation: Option<Interpolation>,
        #[arg(long, value_enum, default_value_t = Order::Random)]
        order: Order,
        #[arg(long, value_enum, default_value_t = CachePolicy::Auto)]
        cache: CachePolicy,
        #[arg(long, default_value_t = 4)]
        prefetch: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Seconds per training step (backbone + projector + Barlow Twins + AdamW) on random views.
    Step {
        #[command(flatten)]
        spec: sslfast::bench::step::StepSpec,
        /// Worker threads (0: all cores); sets RAYON_NUM_THREADS, which candle also reads.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// images/s of `ssl-pack write` on SRC (written to a temporary directory).
    Pack {
        src: PathBuf,
        #[arg(long)]
        format: Option<SourceFormat>,
        #[arg(long, value_enum, default_value_t = EncodingMode::Auto)]
        encoding: EncodingMode,
        #[arg(long)]
        max_side: Option<u32>,
        #[arg(long, value_enum, default_value_t = Container::Parquet)]
        container: Container,
        /// Runs; the fastest is reported (the first warms the page cache).
        #[arg(long, default_value_t = 2)]
        repeats: usize,
        /// Also write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-bench: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Loss {
            k,
            batch,
            pdim,
            loss,
            reps,
            max_gb,
            json,
        } => {
            println!(
                "{:>4} {:>6} {:>6} {:>14} {:>10} {:>8}",
                "K", "batch", "pdim", "efficient_ms", "naive_ms", "speedup"
            );
            let budget = (max_gb * 1e9) as u64;
            let rows = sslfast::bench::loss::bench_loss(
                loss,
                &k,
                batch,
                &pdim,
                reps,
                budget,
                |r| {
                    if r.naive_ms.is_nan() {
                        let gb = sslfast::bench::loss::naive_bytes(r.k, r.pdim) as f64 / 1e9;
                        println!("{:>4} {:>6} {:>6} {:>14.2}   naive skipped: needs ~{gb:.0} GB (--max-gb {max_gb})", r.k, r.batch, r.pdim, r.efficient_ms);
                    } else {
                        println!(
                            "{:>4} {:>6} {:>6} {:>14.2} {:>10.2} {:>7.2}x",
                            r.k, r.batch, r.pdim, r.efficient_ms, r.naive_ms, r.speedup
                        );
                    }
                },
            )?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
            }
            Ok(())
        }
        Command::Loader {
            data,
            split,
            views,
            batch,
            threads,
            batches,
            baseline_batches,
            augment,
            interpolation,
            order,
            cache,
            prefetch,
            json,
        } => {
            let mut augment = match augment {
                AugmentSet::Full => AugmentConfig::default(),
                AugmentSet::Ffcv => AugmentConfig::ffcv(),
                AugmentSet::Crop => AugmentConfig::crop_only(),
            };
            if let Some(interpolation) = interpolation {
                augment.interpolation = interpolation;
            }
            let cfg = LoaderConfig {
                data,
                split,
                views,
                batch_size: batch,
                threads,
                order,
                cache,
                prefetch,
                augment,
                ..LoaderConfig::default()
            };
            let r = sslfast::bench::loader::bench_loader(&cfg, batches, baseline_batches)?;
            println!(
                "loader {} batch={} threads={}: images/s={:.0} views/s={:.0} MB/s={:.1} first_batch_s={:.3} peak_rss_mb={:.0}",
                r.views, r.batch_size, r.threads, r.images_per_s, r.views_per_s, r.mb_per_s, r.first_batch_s, r.peak_rss_mb
            );
            println!(
                "stage ms/batch (summed over workers): read={:.2} decode={:.2} augment={:.2} assemble={:.2}",
                r.stage_ms.read, r.stage_ms.decode, r.stage_ms.augment, r.stage_ms.assemble
            );
            println!(
                "baseline (1 thread, inline): images/s={:.0}; pipeline/baseline={:.2}x",
                r.baseline_images_per_s, r.speedup_over_baseline
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            }
            Ok(())
        }
        Command::Step {
            spec,
            threads,
            json,
        } => {
            if threads > 0 {
                // Before the first parallel op, so rayon's global pool and candle agree.
                std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            }
            let r = sslfast::bench::step::bench_step(&spec)?;
            println!(
                "step {:?}({}) batch={} size={} views={} ops={} threads={}: sec/step={:.4} images/s={:.1} forward_s={:.4} backward_s={:.4} optimizer_s={:.4} peak_rss_mb={:.0} loss={:.4}",
                spec.backbone, spec.width, spec.batch, spec.size, spec.views,
                if spec.candle_ops { "candle" } else { "ours" },
                r.threads, r.sec_per_step, r.images_per_s, r.forward_s, r.backward_s, r.optimizer_s, r.peak_rss_mb, r.final_loss
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            }
            Ok(())
        }
        Command::Pack {
            src,
            format,
            encoding,
            max_side,
            container,
            repeats,
            json,
        } => {
            let cfg = PackConfig {
                source: src,
                format,
                encoding,
                max_side,
                container,
                ..PackConfig::default()
            };
            let s = sslfast::bench::pack::bench_pack(&cfg, repeats)?;
            let images_per_s = s.images as f64 / s.seconds;
            println!(
                "pack {}: images={} seconds={:.3} images/s={:.0} MB/s_in={:.1} MB_out={:.1} threads={}",
                cfg.source.display(),
                s.images,
                s.seconds,
                images_per_s,
                s.bytes_in as f64 / 1e6 / s.seconds,
                s.bytes_out as f64 / 1e6,
                rayon::current_num_threads()
            );
            if let Some(path) = json {
                let value = serde_json::json!({
                    "stage": "pack", "source": cfg.source, "images": s.images, "seconds": s.seconds,
                    "images_per_s": images_per_s, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                    "encoding": format!("{encoding:?}").to_lowercase(), "max_side": max_side,
                    "threads": rayon::current_num_threads(),
                });
                std::fs::write(&path, serde_json::to_string_pretty(&value)?)?;
            }
            Ok(())
        }
    }
}
