//! `manifest.json`: what a packed dataset holds (splits, classes, counts, shards with checksums)
//! and how it was made. It is written last, atomically, so its presence marks a complete dataset.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ShardError;

pub const MANIFEST_FILE: &str = "manifest.json";
/// Bumped whenever a reader of the previous version could misread a new dataset.
pub const FORMAT_VERSION: u32 = 1;

/// The file format of the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// Parquet: compact, readable by every data tool; row groups are read on demand.
    #[default]
    Parquet,
    /// Arrow IPC file, uncompressed: memory-mapped with zero-copy random access.
    Arrow,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Arrow => "arrow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// `ssl-pack <version>` that wrote the dataset.
    pub tool: String,
    pub source: SourceInfo,
    pub container: Container,
    pub encoding: EncodingInfo,
    /// Class names; a row's label indexes this list.
    pub classes: Vec<String>,
    pub splits: BTreeMap<String, SplitInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub format: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingInfo {
    /// `raw`, `jpeg`, `keep` or `auto`, as asked for; rows say what each one got.
    pub mode: String,
    pub quality: u8,
    pub max_side: Option<u32>,
    pub compression: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub rows: u64,
    /// Rows per class, indexed by label.
    pub per_class: Vec<u64>,
    /// Rows with label -1.
    pub unlabeled: u64,
    pub shards: Vec<ShardInfo>,
    /// Source files left out under `--on-error skip`, with the reason.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Files in the source left out as not images (image folders), by lower-case extension.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_images: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the dataset directory, e.g. `train/part-00000.parquet`.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Rows in each row group (Parquet) or record batch (Arrow), in order.
    pub row_groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub error: String,
}

/// The sum of counts read from a manifest, `None` when it overflows (only a lie can).
fn total(mut counts: impl Iterator<Item = u64>) -> Option<u64> {
    counts.try_fold(0u64, u64::checked_add)
}

fn show(count: Option<u64>) -> String {
    count.map_or("more than 2^64".into(), |c| c.to_string())
}

impl Manifest {
    /// Reads `dir/manifest.json`, refusing a directory without one.
    pub fn load(dir: &Path) -> Result<Self, ShardError> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(ShardError::NoManifest {
                dir: dir.to_path_buf(),
            });
        }
        let text = fs::read_to_string(&path).map_err(ShardError::io(&path))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| ShardError::BadManifest {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ShardError::BadManifest {
                path,
                problem: format!(
                    "format version {} is not the {FORMAT_VERSION} this build reads; re-pack with this ssl-pack",
                    manifest.format_version
                ),
            });
        }
        manifest
            .validate()
            .map_err(|problem| ShardError::BadManifest {
                path: path.clone(),
                problem,
            })?;
        Ok(manifest)
    }

    /// The manifest's own arithmetic and names, checked before any value is used: counts that
    /// add up, rows no more than a shard's bytes (so no count can ask for an absurd
    /// allocation), checksums of 64 hex digits, shard files inside their split's folder, class
    /// names distinct. `verify` checks the counts against the data itself.
    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        if let Some(c) = self.classes.iter().find(|c| !names.insert(c.as_str())) {
            return Err(format!("class `{c}` is listed twice"));
        }
        for (name, split) in &self.splits {
            let bad = |problem: String| Err(format!("split `{name}`: {problem}"));
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return bad("is not a folder name".into());
            }
            let shard_rows = total(split.shards.iter().map(|s| s.rows));
            if shard_rows != Some(split.rows) {
                return bad(format!(
                    "says {} rows, its shards {}",
                    split.rows,
                    show(shard_rows)
                ));
            }
            // Labels without names (no `classes`) are allowed; names must cover every count.
            let named = !self.classes.is_empty();
            if named && !split.per_class.is_empty() && split.per_class.len() != self.classes.len() {
                return bad(format!(
                    "counts {} classes, the dataset names {}",
                    split.per_class.len(),
                    self.classes.len()
                ));
            }
            let labelled = total(split.per_class.iter().copied());
            if labelled.and_then(|l| l.checked_add(split.unlabeled)) != Some(split.rows) {
                return bad(format!(
                    "per-class counts ({}) and unlabeled ({}) do not add up to its {} rows",
                    show(labelled),
                    split.unlabeled,
                    split.rows
                ));
            }
            for shard in &split.shards {
                let bad = |problem: String| Err(format!("shard `{}`: {problem}", shard.file));
                let inside = Path::new(&shard.file).strip_prefix(name).is_ok_and(|rest| {
                    rest.components().count() == 1
                        && rest
                            .components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                });
                if !inside {
                    return bad(format!("is not a file of the folder `{name}/`"));
                }
                if shard.sha256.len() != 64 || !shard.sha256.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return bad("sha256 is not 64 hexadecimal digits".into());
                }
                let grouped = total(shard.row_groups.iter().map(|&g| u64::from(g)));
                if grouped != Some(shard.rows) {
                    return bad(format!(
                        "{} rows, its row groups {}",
                        shard.rows,
                        show(grouped)
                    ));
                }
                if shard.rows > shard.bytes {
                    return bad(format!(
                        "{} rows cannot fit in {} bytes",
                        shard.rows, shard.bytes
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes `dir/manifest.json` through a temporary name, so a crash never leaves half a manifest.
    pub fn write_atomic(&self, dir: &Path) -> Result<(), ShardError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        crate::atomic_file::write(&path, text).map_err(|error| ShardError::Io { path, error })
    }

    pub fn split(&self, name: &str) -> Result<&SplitInfo, ShardError> {
        self.splits
            .get(name)
            .ok_or_else(|| ShardError::UnknownSplit {
                split: name.to_string(),
                available: self.split_names(),
            })
    }

    pub fn split_names(&self) -> String {
        let names: Vec<&str> = self.splits.keys().map(String::as_str).collect();
        if names.is_empty() {
            "no splits".to_string()
        } else {
            format!("splits {}", names.join(", "))
        }
    }

    /// The manifest as a human-readable table (what `ssl-pack inspect` prints).
    pub fn table(&self, dir: &Path) -> String {
        let mut out = String::new();
        let mb = |b: u64| b as f64 / 1e6;
        out += &format!("dataset   {}\n", dir.display());
        out += &format!("source    {} ({})\n", self.source.format, self.source.path);
        out += &format!(
            "storage   {} shards, encoding {} (quality {}, max side {}), compression {}\n",
            self.container.extension(),
            self.encoding.mode,
            self.encoding.quality,
            self.encoding
                .max_side
                .map_or("none".to_string(), |s| s.to_string()),
            self.encoding.compression
        );
        out += &format!(
            "classes   {}: {}\n",
            self.classes.len(),
            abbreviate(&self.classes, 12)
        );
        out += &format!(
            "\n{:<12} {:>9} {:>10} {:>7} {:>11} {:>8}\n",
            "split", "rows", "unlabeled", "shards", "MB", "skipped"
        );
        for (name, split) in &self.splits {
            let bytes = split
                .shards
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.bytes));
            out += &format!(
                "{:<12} {:>9} {:>10} {:>7} {:>11.1} {:>8}\n",
                name,
                split.rows,
                split.unlabeled,
                split.shards.len(),
                mb(bytes),
                split.skipped.len()
            );
        }
        if !self.classes.is_empty() {
            out += &format!("\n{:<20}", "rows per class");
            for name in self.splits.keys() {
                out += &format!(" {name:>10}");
            }
            out += "\n";
            for (label, class) in self.classes.iter().enumerate() {
                out += &format!("{:<20}", format!("{label:>3} {class}"));
                for split in self.splits.values() {
                    out += &format!(" {:>10}", split.per_class.get(label).copied().unwrap_or(0));
                }
                out += "\n";
            }
        }
        out += &format!(
            "\n{:<32} {:>8} {:>7} {:>10}  sha256\n",
            "shard", "rows", "groups", "MB"
        );
        for split in self.splits.values() {
            for shard in &split.shards {
                out += &format!(
                    "{:<32} {:>8} {:>7} {:>10.1}  {}\n",
                    shard.file,
                    shard.rows,
                    shard.row_groups.len(),
                    mb(shard.bytes),
                    &shard.sha256[..16.min(shard.sha256.len())]
                );
            }
        }
        out
    }
}

fn abbreviate(names: &[String], keep: usize) -> String {
    if names.len() <= keep {
        names.join(", ")
    } else {
        format!(
            "{}, ... ({} more)",
            names[..keep].join(", "),
            names.len() - keep
        )
    }
}

/// SHA-256 of a whole file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ShardError> {
    let mut file = fs::File::open(path).map_err(ShardError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ShardError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes the shard at `path` and checks it against the manifest's `expected` checksum.
pub fn check_checksum(path: &Path, expected: &str) -> Result<(), ShardError> {
    expect_checksum(path, expected, &sha256_file(path)?)
}

/// `Ok` when `found`, the hash of the shard at `path`, is the manifest's `expected` checksum;
/// for callers that hash once and check many times.
pub fn expect_checksum(path: &Path, expected: &str, found: &str) -> Result<(), ShardError> {
    if found == expected {
        return Ok(());
    }
    Err(ShardError::Checksum {
        file: path.to_path_buf(),
        expected: expected.to_string(),
        found: found.to_string(),
    })
}

/// A writer that hashes everything written through it, so shards are checksummed in one pass.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Path of a shard file inside a dataset directory.
pub fn shard_path(dir: &Path, shard: &ShardInfo) -> PathBuf {
    dir.join(&shard.file)
}
