//! `ssl-bench pack`: images/s of `ssl-pack write` on a given source, into a temporary directory.

use std::path::PathBuf;

use serde::Serialize;

use crate::pack::{write_dataset, EncodingMode, PackConfig, PackError, PackSummary, SourceFormat};
use crate::shard::Container;

/// What to pack; also `ssl-bench pack`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PackArgs {
    pub src: PathBuf,
    #[arg(long)]
    pub format: Option<SourceFormat>,
    #[arg(long, value_enum, default_value_t = EncodingMode::Auto)]
    pub encoding: EncodingMode,
    #[arg(long)]
    pub max_side: Option<u32>,
    #[arg(long, value_enum, default_value_t = Container::Parquet)]
    pub container: Container,
    /// Runs; the fastest is reported (the first warms the page cache).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
}

impl PackArgs {
    /// Every field named: a new PackConfig field fails to compile here until it is mapped.
    pub fn config(&self) -> PackConfig {
        let d = PackConfig::default();
        PackConfig {
            source: self.src.clone(),
            out: d.out,
            format: self.format,
            splits: d.splits,
            container: self.container,
            encoding: self.encoding,
            quality: d.quality,
            max_side: self.max_side,
            rows_per_group: d.rows_per_group,
            shard_bytes: d.shard_bytes,
            compression: d.compression,
            on_error: d.on_error,
            max_pixels: d.max_pixels,
            overwrite: d.overwrite,
            layout: d.layout,
            cifar100_label: d.cifar100_label,
            image_column: d.image_column,
            label_column: d.label_column,
            seed: d.seed,
            shapes_per_class: d.shapes_per_class,
        }
    }
}

/// The fastest of the runs.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub stage: &'static str,
    pub source: PathBuf,
    pub images: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub encoding: EncodingMode,
    pub max_side: Option<u32>,
    pub threads: usize,
}

impl std::fmt::Display for PackReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pack {}: images={} seconds={:.3} images/s={:.0} MB/s_in={:.1} MB_out={:.1} threads={}",
            self.source.display(),
            self.images,
            self.seconds,
            self.images_per_s,
            self.bytes_in as f64 / 1e6 / self.seconds,
            self.bytes_out as f64 / 1e6,
            self.threads
        )
    }
}

/// Runs [`bench_pack`] as `args` say.
pub fn run(args: &PackArgs) -> Result<PackReport, PackError> {
    let cfg = args.config();
    let s = bench_pack(&cfg, args.repeats)?;
    Ok(PackReport {
        stage: "pack",
        source: cfg.source,
        images: s.images,
        seconds: s.seconds,
        images_per_s: s.images as f64 / s.seconds,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        encoding: args.encoding,
        max_side: args.max_side,
        threads: rayon::current_num_threads(),
    })
}

/// Packs `cfg.source` `repeats` times into fresh temporary directories and returns the summary
/// of the fastest run (the others warm the page cache).
pub fn bench_pack(cfg: &PackConfig, repeats: usize) -> Result<PackSummary, PackError> {
    let mut best: Option<PackSummary> = None;
    for _ in 0..repeats.max(1) {
        let tmp = tempdir()?;
        let mut run = cfg.clone();
        run.out = tmp.join("out");
        run.overwrite = false;
        let summary = write_dataset(&run);
        let _ = std::fs::remove_dir_all(&tmp);
        let summary = summary?;
        if best.as_ref().is_none_or(|b| summary.seconds < b.seconds) {
            best = Some(summary);
        }
    }
    Ok(best.expect("at least one run"))
}

fn tempdir() -> Result<std::path::PathBuf, PackError> {
    let dir = std::env::temp_dir().join(format!("ssl-bench-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(PackError::io(&dir))?;
    Ok(dir)
}
