//! `ssl-pack export --to hf`: a packed dataset as the Parquet files of a Hugging Face Hub dataset
//! repository, so `datasets.load_dataset(OUT)`, `load_dataset("parquet", data_dir=OUT)` and
//! `pandas.read_parquet("OUT/data")` read it with no loading script and no reshaping:
//!
//! ```text
//! OUT/data/<split>-00000-of-0000N.parquet     # the Hub's file-name convention names the splits
//! ```
//!
//! `OUT/data` holds nothing else (no manifest), which is what lets pandas and pyarrow read the
//! folder as one table. Columns are the storage of `datasets`' features `image: Image()`,
//! `label: ClassLabel(names)` (`Value("int64")` when the manifest names no classes) and
//! `index: Value("int64")`, the row's position in its source split. JPEG and PNG rows keep their
//! bytes; raw rows become lossless PNG, since `Image` must be a file format. The features go in
//! the `huggingface` key-value metadata exactly as `datasets` writes it: that is what restores
//! them on load.
//!
//! Every shard's checksum is checked before its rows are copied, so a corrupt shard is never
//! published, and OUT is written under a temporary name and renamed into place at the end.

mod writer;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::codec::{decode_stored, sniff, Encoding};
use super::manifest::{check_checksum, shard_path, SplitInfo};
use super::staging::Staging;
use super::{RowRef, ShardError, ShardReader};
use writer::{encode_png, features_json, HfRow, HfWriter};

/// The folder of OUT that holds the Parquet files, as on the Hub.
pub const DATA_DIR: &str = "data";
/// The Parquet key-value metadata key `datasets` reads its features from.
pub const HF_METADATA_KEY: &str = "huggingface";
/// A new file starts once this many bytes are written: the size of our own shards. The Hub's
/// `push_to_hub` goes up to 500 MB; smaller files let `load_dataset(num_proc=...)` and streaming
/// start sooner, and CIFAR-sized datasets still fit one file per split.
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;

/// The layouts `ssl-pack export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Hugging Face Hub Parquet: `OUT/data/<split>-NNNNN-of-NNNNN.parquet` with `datasets` features.
    Hf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Replace OUT when it holds a previous export (only `data/` and `README.md`).
    pub overwrite: bool,
    /// Start a new file after about this many bytes (a row group may overshoot it).
    pub shard_bytes: u64,
    /// At most this many rows per file.
    pub shard_rows: Option<u64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            shard_bytes: DEFAULT_SHARD_BYTES,
            shard_rows: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{out} already exists; pass --overwrite to replace it")]
    Exists { out: PathBuf },
    #[error("{out}: {problem}")]
    BadOutput { out: PathBuf, problem: String },
    #[error("split `{split}` cannot be a Hugging Face split name (letters, digits and `_`, in parts joined by `.`)")]
    SplitName { split: String },
    #[error("{file}: row {row}: {problem}")]
    Row {
        file: String,
        row: usize,
        problem: String,
    },
    #[error("writing {path}: {problem}")]
    Write { path: PathBuf, problem: String },
    #[error("invalid option: {0}")]
    Config(String),
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl ExportError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io { path, error }
    }
}

/// What one split became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitExport {
    pub name: String,
    pub rows: u64,
    /// Paths relative to OUT, in row order.
    pub files: Vec<String>,
    pub bytes: u64,
    /// Raw rows encoded to PNG (the others kept their bytes).
    pub png_encoded: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub splits: Vec<SplitExport>,
    pub seconds: f64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: u64 = self.splits.iter().map(|s| s.rows).sum();
        let files: usize = self.splits.iter().map(|s| s.files.len()).sum();
        let bytes = self
            .splits
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.bytes));
        writeln!(
            f,
            "exported {rows} rows in {:.2}s ({:.0} rows/s): {files} files, {:.1} MB -> {}",
            self.seconds,
            rows as f64 / self.seconds.max(1e-9),
            bytes as f64 / 1e6,
            self.out.display()
        )?;
        for s in &self.splits {
            writeln!(
                f,
                "  {:<12} {:>9} rows {:>4} files {:>10.1} MB {:>9} encoded to PNG",
                s.name,
                s.rows,
                s.files.len(),
                s.bytes as f64 / 1e6,
                s.png_encoded
            )?;
        }
        write!(
            f,
            "load with: datasets.load_dataset(\"parquet\", data_dir=\"{}\")",
            self.out.display()
        )
    }
}

/// Writes the packed dataset `dir` into a new directory `out` in the layout `format` names.
pub fn export(
    dir: &Path,
    out: &Path,
    format: ExportFormat,
    opts: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    match format {
        ExportFormat::Hf => export_hf(dir, out, opts),
    }
}

/// Writes `dir` as Hugging Face Hub Parquet into `out`; see the module doc.
pub fn export_hf(
    dir: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    if opts.shard_bytes == 0 || opts.shard_rows == Some(0) {
        return Err(ExportError::Config(
            "--shard-bytes and --shard-rows must be positive".into(),
        ));
    }
    let start = Instant::now();
    let reader = ShardReader::open(dir)?;
    let manifest = reader.manifest();
    if let Some(split) = manifest.splits.keys().find(|s| !is_split_name(s)) {
        return Err(ExportError::SplitName {
            split: split.clone(),
        });
    }
    check_output(dir, out, opts.overwrite)?;
    let staging = Staging::create(out).map_err(|(p, e)| ExportError::io(&p)(e))?;
    let data = staging.path().join(DATA_DIR);
    fs::create_dir(&data).map_err(ExportError::io(&data))?;
    let features = features_json(&manifest.classes);
    let mut splits = Vec::new();
    for (name, info) in &manifest.splits {
        let mut writer = HfWriter::new(&data, name, &features, opts);
        copy_split(&reader, name, info, manifest.classes.len(), &mut writer)?;
        splits.push(writer.finish()?);
    }
    staging
        .commit(out)
        .map_err(|(p, e)| ExportError::io(&p)(e))?;
    Ok(ExportSummary {
        out: out.to_path_buf(),
        splits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `datasets`' rule for split names (`^\w+(\.\w+)*$`); a `-` would also break the file names.
fn is_split_name(name: &str) -> bool {
    name.split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// Copies a split's rows in storage order, converting each source row group in parallel.
fn copy_split(
    reader: &ShardReader,
    split: &str,
    info: &SplitInfo,
    classes: usize,
    writer: &mut HfWriter,
) -> Result<(), ExportError> {
    let progress = ProgressBar::new(info.rows).with_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    progress.set_prefix(split.to_string());
    for (i, shard_info) in info.shards.iter().enumerate() {
        check_checksum(&shard_path(reader.dir(), shard_info), &shard_info.sha256)?;
        let shard = reader.shard(split, i)?;
        let file = shard.name();
        let mut first_row = 0;
        for g in 0..shard.num_groups() {
            let group = shard.read_group(g)?;
            let rows: Vec<HfRow> = (0..group.len())
                .into_par_iter()
                .map(|r| {
                    convert(group.row(r, file)?, classes).map_err(|problem| ExportError::Row {
                        file: file.to_string(),
                        row: first_row + r,
                        problem,
                    })
                })
                .collect::<Result<_, ExportError>>()?;
            for row in rows {
                writer.push(row)?;
            }
            first_row += group.len();
            progress.inc(group.len() as u64);
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// A stored row as the Hub stores it; the caller names the row in the error.
fn convert(row: RowRef<'_>, classes: usize) -> Result<HfRow, String> {
    // -1 (unlabelled) is ClassLabel's "no label" too.
    if row.label < -1 || usize::try_from(row.label).is_ok_and(|l| classes > 0 && l >= classes) {
        return Err(format!(
            "label {} is not -1 or one of the manifest's {classes} classes",
            row.label
        ));
    }
    let index =
        i64::try_from(row.index).map_err(|_| format!("index {} exceeds int64", row.index))?;
    let (image, png_encoded) = match row.encoding {
        Encoding::Raw => {
            let pixels = decode_stored(row.image, row.encoding, row.width, row.height)
                .map_err(|e| e.to_string())?;
            (encode_png(&pixels)?, true)
        }
        Encoding::Gray => {
            let grey =
                image::GrayImage::from_raw(row.width.into(), row.height.into(), row.image.to_vec())
                    .ok_or_else(|| {
                        format!(
                            "grey row has {} bytes, expected {}x{}",
                            row.image.len(),
                            row.width,
                            row.height
                        )
                    })?;
            (encode_png(&grey)?, true)
        }
        // Checked because these bytes are published as they are, undecoded.
        stored if sniff(row.image) == Some(stored) => (row.image.to_vec(), false),
        stored => {
            return Err(format!(
                "encoding says {} but the bytes are not",
                stored.name()
            ))
        }
    };
    Ok(HfRow {
        image,
        label: i64::from(row.label),
        index,
        png_encoded,
    })
}

/// OUT must be new, or with `overwrite` a previous export (only `data/` and `README.md`) that
/// does not contain the dataset being read.
fn check_output(dir: &Path, out: &Path, overwrite: bool) -> Result<(), ExportError> {
    if !out.exists() {
        return Ok(());
    }
    let bad = |problem: String| ExportError::BadOutput {
        out: out.to_path_buf(),
        problem,
    };
    if !out.is_dir() {
        return Err(bad("exists and is not a directory".into()));
    }
    if !overwrite {
        return Err(ExportError::Exists {
            out: out.to_path_buf(),
        });
    }
    let canonical = |p: &Path| fs::canonicalize(p).map_err(ExportError::io(p));
    if canonical(dir)?.starts_with(canonical(out)?) {
        return Err(bad(format!(
            "holds the dataset being exported ({}); choose another directory",
            dir.display()
        )));
    }
    for entry in fs::read_dir(out).map_err(ExportError::io(out))? {
        let name = entry.map_err(ExportError::io(out))?.file_name();
        if name != DATA_DIR && name != "README.md" {
            return Err(bad(format!(
                "holds `{}`, so it is not a previous export; --overwrite replaces only those (data/, README.md)",
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}
