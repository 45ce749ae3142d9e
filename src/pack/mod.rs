//! `ssl-pack write`: dataset readers (one file per input format) and the shard writer.
//!
//! A reader turns its input into a [`Source`]: class names plus, per split, a stream of
//! [`Record`]s in source order. [`write_dataset`] encodes records in parallel chunks (bounded
//! memory), writes them into a staging directory next to the output, writes the manifest last and
//! renames the staging directory into place, so a failure never leaves a half-written dataset.

pub mod binary;
pub mod cifar;
pub mod config;
mod encode;
pub mod folder;
pub mod hf_disk;
pub mod hf_parquet;
pub mod idx;
pub mod shapes;
pub mod stl;
mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::shard::codec::CodecError;
use crate::shard::manifest::{EncodingInfo, Skipped, SourceInfo, FORMAT_VERSION, MANIFEST_FILE};
use crate::shard::staging::Staging;
use crate::shard::{Manifest, ShardError, SplitInfo};
pub use config::{
    Cifar100Label, Compression, EncodingMode, FolderLayout, OnError, PackConfig, SourceFormat,
    WriteArgs, DEFAULT_AUTO_RAW_MAX_BYTES, DEFAULT_GROUP_BYTES, DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY, DEFAULT_SHARD_BYTES,
};

/// Records encoded per parallel chunk: bounds memory to a few chunks of images.
const CHUNK: usize = 512;
/// The resolved `PackConfig` of the run that wrote a dataset.
pub const PACK_CONFIG_FILE: &str = "ssl-pack.toml";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input is malformed as a whole (wrong size, bad label, missing file).
    #[error("{path}: {problem}")]
    Source { path: PathBuf, problem: String },
    /// One image cannot be used; `--on-error skip` leaves it out.
    #[error("{origin}: {error}")]
    Image { origin: String, error: CodecError },
    #[error("invalid option: {0}")]
    Config(String),
    #[error("{dir} already holds a dataset; pass --overwrite to replace it")]
    Exists { dir: PathBuf },
    #[error("{dir} is not empty and holds no dataset; choose a new or empty directory")]
    NotEmpty { dir: PathBuf },
    #[error("writing {path}: {problem}")]
    Write { path: PathBuf, problem: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl PackError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io { path, error }
    }

    pub(crate) fn source(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self::Source {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// One image of a source split, before encoding.
pub struct Record {
    /// Position in the source split.
    pub index: u64,
    /// Class id, -1 when unlabeled.
    pub label: i32,
    /// File (and record) the image came from, for error messages and the skip list.
    pub origin: String,
    pub payload: Payload,
}

pub enum Payload {
    /// Already decoded (binary formats).
    Pixels(RgbImage),
    /// Single-channel pixels (IDX), stored grey.
    Grey(image::GrayImage),
    /// Pixels made on the encoding worker (generated data), so generation runs in parallel.
    Render(Box<dyn FnOnce() -> RgbImage + Send>),
    /// Encoded JPEG/PNG bytes held in memory (Parquet inputs).
    Bytes(Vec<u8>),
    /// An image file, read by the encoding worker so reads run in parallel too.
    File(PathBuf),
}

pub type Records = Box<dyn Iterator<Item = Result<Record, PackError>> + Send>;

pub struct SourceSplit {
    pub name: String,
    pub len: usize,
    pub records: Records,
    /// Files the reader left out as not images, by extension (image folders).
    pub not_images: BTreeMap<String, u64>,
}

/// A dataset opened by one of the readers.
pub struct Source {
    pub format: SourceFormat,
    /// Class names, or `None` when the input does not name them (numbered from the labels seen).
    pub classes: Option<Vec<String>>,
    pub splits: Vec<SourceSplit>,
}

/// What a finished `write_dataset` reports.
#[derive(Debug, Clone)]
pub struct PackSummary {
    pub out: PathBuf,
    pub images: u64,
    pub skipped: usize,
    /// Files left out as not images (image folders), by extension over all splits.
    pub not_images: BTreeMap<String, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub seconds: f64,
    pub per_split: Vec<(String, u64)>,
}

impl std::fmt::Display for PackSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let splits: Vec<String> = self
            .per_split
            .iter()
            .map(|(n, r)| format!("{n} {r}"))
            .collect();
        write!(
            f,
            "packed {} images ({}) in {:.2}s: {:.0} images/s, {:.1} MB in, {:.1} MB out, {} skipped -> {}",
            self.images,
            splits.join(", "),
            self.seconds,
            self.images as f64 / self.seconds.max(1e-9),
            self.bytes_in as f64 / 1e6,
            self.bytes_out as f64 / 1e6,
            self.skipped,
            self.out.display()
        )?;
        if !self.not_images.is_empty() {
            let kinds: Vec<String> = self
                .not_images
                .iter()
                .map(|(ext, n)| match ext.as_str() {
                    "" => format!("{n} without extension"),
                    ext => format!("{n} {ext}"),
                })
                .collect();
            let total: u64 = self.not_images.values().sum();
            write!(
                f,
                "\n{total} files that are not images left out: {}",
                kinds.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Opens `cfg.source` with the reader for its (given or detected) format.
pub fn open_source(cfg: &PackConfig) -> Result<Source, PackError> {
    let format = match cfg.format {
        Some(f) => f,
        None => detect_format(&cfg.source)?,
    };
    let src = &cfg.source;
    match format {
        SourceFormat::Cifar10Bin => cifar::open_cifar10(src),
        SourceFormat::Cifar100Bin => cifar::open_cifar100(src, cfg.cifar100_label),
        SourceFormat::Stl10Bin => stl::open(src),
        SourceFormat::ImageFolder => folder::open(src, cfg.layout),
        SourceFormat::HfParquet => hf_parquet::open(
            src,
            cfg.image_column.as_deref(),
            cfg.label_column.as_deref(),
        ),
        SourceFormat::HfDisk => hf_disk::open(
            src,
            cfg.image_column.as_deref(),
            cfg.label_column.as_deref(),
        ),
        SourceFormat::Idx => idx::open(src),
        SourceFormat::BuiltinShapes => Ok(shapes::source(cfg.seed, cfg.shapes_per_class)),
    }
}

/// A dataset this tool packed is not a source: read as Parquet files it would merge its splits
/// into one and lose its class names.
fn refuse_packed_source(source: &Path) -> Result<(), PackError> {
    let manifest = source.join(crate::shard::manifest::MANIFEST_FILE);
    let ours = std::fs::read_to_string(&manifest).is_ok_and(|text| {
        serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v.get("format_version").is_some() && v.get("splits").is_some())
    });
    match ours {
        false => Ok(()),
        true => Err(PackError::source(
            source,
            "is already a dataset packed by ssl-pack (it has manifest.json): train on it \
             directly (--data DIR); to store it another way, `ssl-pack export --to hf DIR OUT` \
             and pack OUT",
        )),
    }
}

/// Guesses the input format from what `path` holds.
pub fn detect_format(path: &Path) -> Result<SourceFormat, PackError> {
    if path.as_os_str() == "builtin-shapes" && !path.exists() {
        return Ok(SourceFormat::BuiltinShapes);
    }
    if !path.exists() {
        return Err(PackError::source(path, "no such file or directory"));
    }
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => Ok(SourceFormat::HfParquet),
            _ => Err(PackError::source(
                path,
                "cannot tell the format of this file; pass --format",
            )),
        };
    }
    if cifar::find_cifar10_dir(path).is_some() {
        return Ok(SourceFormat::Cifar10Bin);
    }
    if cifar::find_cifar100_dir(path).is_some() {
        return Ok(SourceFormat::Cifar100Bin);
    }
    if stl::find_dir(path).is_some() {
        return Ok(SourceFormat::Stl10Bin);
    }
    if idx::is_idx_dir(path) {
        return Ok(SourceFormat::Idx);
    }
    if hf_disk::is_save_to_disk(path) {
        return Ok(SourceFormat::HfDisk);
    }
    if !hf_parquet::list_parquet_files(path).is_empty() {
        return Ok(SourceFormat::HfParquet);
    }
    Ok(SourceFormat::ImageFolder)
}

/// Packs `cfg.source` into `cfg.out`. See the module doc for the write protocol.
pub fn write_dataset(cfg: &PackConfig) -> Result<PackSummary, PackError> {
    validate(cfg)?;
    refuse_packed_source(&cfg.source)?;
    check_output(&cfg.out, cfg.overwrite)?;
    let mut source = open_source(cfg)?;
    select_splits(&mut source, &cfg.splits)?;
    let staging = Staging::create(&cfg.out).map_err(|(p, e)| PackError::io(&p)(e))?;
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut splits = std::collections::BTreeMap::new();
    let mut max_label = -1i32;
    for split in source.splits.drain(..) {
        let name = split.name.clone();
        let info = pack_split(cfg, split, staging.path(), &mut totals, &mut max_label)?;
        if info.rows == 0 {
            // An empty split would pass as a dataset and fail (or mislead) later, far from here.
            let skipped = match info.skipped.first() {
                Some(first) => format!(
                    "; all {} images were skipped as unreadable, the first {}: {}",
                    info.skipped.len(),
                    first.file,
                    first.error
                ),
                None => String::new(),
            };
            return Err(PackError::source(
                &cfg.source,
                format!("split `{name}` has no images to pack{skipped}"),
            ));
        }
        splits.insert(name, info);
    }
    let classes = source
        .classes
        .take()
        .unwrap_or_else(|| (0..=max_label).map(|l| l.to_string()).collect());
    for info in splits.values_mut() {
        info.per_class.resize(classes.len(), 0);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tool: format!("ssl-pack {}", env!("CARGO_PKG_VERSION")),
        source: SourceInfo {
            format: source.format.name().to_string(),
            path: cfg.source.display().to_string(),
        },
        container: cfg.container,
        encoding: EncodingInfo {
            mode: format!("{:?}", cfg.encoding).to_lowercase(),
            quality: cfg.quality,
            max_side: cfg.max_side,
            compression: format!("{:?}", cfg.compression).to_lowercase(),
        },
        classes,
        splits,
    };
    write_resolved_config(cfg, staging.path())?;
    manifest.write_atomic(staging.path())?;
    staging
        .commit(&cfg.out)
        .map_err(|(p, e)| PackError::io(&p)(e))?;
    Ok(PackSummary {
        out: cfg.out.clone(),
        images: totals.images,
        skipped: totals.skipped,
        not_images: totals.not_images,
        bytes_in: totals.bytes_in,
        bytes_out: manifest
            .splits
            .values()
            .flat_map(|s| &s.shards)
            .map(|s| s.bytes)
            .sum(),
        seconds: start.elapsed().as_secs_f64(),
        per_split: manifest
            .splits
            .iter()
            .map(|(n, s)| (n.clone(), s.rows))
            .collect(),
    })
}

/// The settings of this run, as TOML next to the shards (every run records its resolved config).
fn write_resolved_config(cfg: &PackConfig, dir: &Path) -> Result<(), PackError> {
    let path = dir.join(PACK_CONFIG_FILE);
    let text = toml::to_string_pretty(cfg).map_err(|e| PackError::Write {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    crate::atomic_file::write(&path, text).map_err(PackError::io(&path))
}

fn validate(cfg: &PackConfig) -> Result<(), PackError> {
    // The resolved settings (ssl-pack.toml) and the manifest record both paths as text; found
    // out only after packing, a path that is not UTF-8 would waste the whole run.
    for (what, path) in [("source", &cfg.source), ("output", &cfg.out)] {
        if path.to_str().is_none() {
            return Err(PackError::source(
                path,
                format!("the {what} path is not valid UTF-8, which the dataset's records cannot hold; rename it or pass a symlink"),
            ));
        }
    }
    if !(1..=100).contains(&cfg.quality) {
        return Err(PackError::Config(format!(
            "--quality must be 1..100, is {}",
            cfg.quality
        )));
    }
    if cfg.encoding == EncodingMode::Keep && cfg.max_side.is_some() {
        return Err(PackError::Config(
            "--encoding keep stores source bytes untouched and cannot apply --max-side; use --encoding jpeg or auto".into(),
        ));
    }
    if cfg.max_side == Some(0) || cfg.rows_per_group == Some(0) || cfg.shard_bytes == 0 {
        return Err(PackError::Config(
            "--max-side, --rows-per-group and --shard-bytes must be positive".into(),
        ));
    }
    if cfg.out.as_os_str().is_empty() {
        return Err(PackError::Config("no output directory given".into()));
    }
    Ok(())
}

/// Refuses to pack into a directory that holds a dataset (unless `overwrite`) or anything else.
fn check_output(out: &Path, overwrite: bool) -> Result<(), PackError> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(PackError::source(out, "exists and is not a directory"));
    }
    if out.join(MANIFEST_FILE).exists() {
        return if overwrite {
            Ok(())
        } else {
            Err(PackError::Exists {
                dir: out.to_path_buf(),
            })
        };
    }
    let mut entries = fs::read_dir(out).map_err(PackError::io(out))?;
    if entries.next().is_some() {
        return Err(PackError::NotEmpty {
            dir: out.to_path_buf(),
        });
    }
    Ok(())
}

fn select_splits(source: &mut Source, wanted: &[String]) -> Result<(), PackError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let available: Vec<String> = source.splits.iter().map(|s| s.name.clone()).collect();
    for name in wanted {
        if !available.contains(name) {
            return Err(PackError::Config(format!(
                "--split {name}: the source has splits {}",
                available.join(", ")
            )));
        }
    }
    source.splits.retain(|s| wanted.contains(&s.name));
    Ok(())
}

#[derive(Default)]
struct Totals {
    images: u64,
    skipped: usize,
    not_images: BTreeMap<String, u64>,
    bytes_in: u64,
}

fn pack_split(
    cfg: &PackConfig,
    split: SourceSplit,
    staging: &Path,
    totals: &mut Totals,
    max_label: &mut i32,
) -> Result<SplitInfo, PackError> {
    let dir = staging.join(&split.name);
    fs::create_dir_all(&dir).map_err(PackError::io(&dir))?;
    let mut writer = writer::SplitWriter::new(staging, &split.name, cfg);
    let options = encode::EncodeOptions::from(cfg);
    let progress = progress_bar(&split.name, split.len);
    let mut info = SplitInfo {
        rows: 0,
        per_class: Vec::new(),
        unlabeled: 0,
        shards: Vec::new(),
        skipped: Vec::new(),
        not_images: split.not_images.clone(),
    };
    let mut records = split.records;
    loop {
        let chunk: Vec<Result<Record, PackError>> = records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let encoded: Vec<_> = chunk
            .into_par_iter()
            .map(|r| match r {
                Ok(record) => encode::encode(record, &options),
                Err(error) => Err(Failure::from_source(error)),
            })
            .collect();
        for result in encoded {
            match result {
                Ok((row, bytes_in)) => {
                    count_label(&mut info, row.label, max_label);
                    totals.bytes_in += bytes_in;
                    writer.push(row)?;
                }
                Err(failure) if cfg.on_error == OnError::Skip && failure.is_per_image() => {
                    info.skipped.push(failure.into_skipped());
                }
                Err(failure) => return Err(*failure.error),
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    info.shards = writer.finish()?;
    info.rows = info.shards.iter().map(|s| s.rows).sum();
    totals.images += info.rows;
    totals.skipped += info.skipped.len();
    for (ext, n) in &info.not_images {
        *totals.not_images.entry(ext.clone()).or_default() += n;
    }
    Ok(info)
}

fn count_label(info: &mut SplitInfo, label: i32, max_label: &mut i32) {
    if label < 0 {
        info.unlabeled += 1;
        return;
    }
    let l = label as usize;
    if info.per_class.len() <= l {
        info.per_class.resize(l + 1, 0);
    }
    info.per_class[l] += 1;
    *max_label = (*max_label).max(label);
}

fn progress_bar(split: &str, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(split.to_string());
    bar
}

/// A record that could not be encoded, with its origin kept for the skip list.
pub(crate) struct Failure {
    origin: String,
    error: Box<PackError>,
}

impl Failure {
    /// A reader's error: structural ones stop the pack whatever `--on-error` says.
    fn from_source(error: PackError) -> Self {
        let origin = match &error {
            PackError::Image { origin, .. } => origin.clone(),
            PackError::Io { path, .. } | PackError::Source { path, .. } => {
                path.display().to_string()
            }
            _ => String::new(),
        };
        Self {
            origin,
            error: Box::new(error),
        }
    }

    fn is_per_image(&self) -> bool {
        matches!(*self.error, PackError::Image { .. })
    }

    fn into_skipped(self) -> Skipped {
        let error = match &*self.error {
            PackError::Image { error, .. } => error.to_string(),
            other => other.to_string(),
        };
        Skipped {
            file: self.origin,
            error,
        }
    }
}
