//! `ssl-pack verify`: re-check every shard's size and checksum, then read and decode every image.
//! Faults are collected rather than stopping at the first, so one run lists everything wrong.

use std::path::Path;

use rayon::prelude::*;

use super::codec::decode_stored;
use super::manifest::{check_checksum, shard_path, Manifest, ShardInfo};
use super::reader::Shard;
use super::ShardError;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub dir: std::path::PathBuf,
    pub shards: usize,
    pub rows: u64,
    /// One line per fault, each naming the file (and row).
    pub faults: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.faults.is_empty()
    }
}

impl std::fmt::Display for VerifyReport {
    /// One `FAULT` line per fault, then the totals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for fault in &self.faults {
            writeln!(f, "FAULT {fault}")?;
        }
        write!(
            f,
            "{}: {} shards, {} rows checked, {} faults",
            self.dir.display(),
            self.shards,
            self.rows,
            self.faults.len()
        )
    }
}

/// Verifies the dataset in `dir`. `Err` only when there is no readable manifest at all.
pub fn verify(dir: &Path) -> Result<VerifyReport, ShardError> {
    let manifest = Manifest::load(dir)?;
    let classes = manifest.classes.len();
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        shards: manifest.splits.values().map(|s| s.shards.len()).sum(),
        ..Default::default()
    };
    for (name, split) in &manifest.splits {
        let results: Vec<ShardCheck> = split
            .shards
            .par_iter()
            .map(|info| verify_shard(dir, &manifest, info, classes))
            .collect();
        // Labels counted from the data, against what the manifest claims for the split.
        let mut per_class = vec![0u64; classes];
        let mut unlabeled = 0u64;
        // Counts of a split with an unreadable row say nothing new: that fault is reported.
        let readable = results.iter().all(|c| c.faults.is_empty());
        for check in results {
            report.rows += check.rows;
            report.faults.extend(check.faults);
            per_class
                .iter_mut()
                .zip(&check.per_class)
                .for_each(|(a, b)| *a += b);
            unlabeled += check.unlabeled;
        }
        // Name the shards: either the manifest or one of them is wrong.
        let files: Vec<&str> = split.shards.iter().map(|s| s.file.as_str()).collect();
        let files = files.join(", ");
        if readable && classes > 0 && !split.per_class.is_empty() && per_class != split.per_class {
            report.faults.push(format!(
                "manifest: split {name} counts {:?} rows per class, the data ({files}) holds \
                 {per_class:?}",
                split.per_class
            ));
        }
        if readable && unlabeled != split.unlabeled {
            report.faults.push(format!(
                "manifest: split {name} says {} unlabeled rows, the data ({files}) holds \
                 {unlabeled}",
                split.unlabeled
            ));
        }
        report.faults.extend(unlisted_files(dir, name, split));
    }
    Ok(report)
}

/// Files in a split's folder that its manifest entry does not list: a shard added after
/// packing would never be read, so it is a fault rather than silently ignored.
fn unlisted_files(dir: &Path, name: &str, split: &super::manifest::SplitInfo) -> Vec<String> {
    let listed: std::collections::BTreeSet<&str> =
        split.shards.iter().map(|s| s.file.as_str()).collect();
    let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
        return vec![format!("{name}/: the split's folder cannot be read")];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let file = format!("{name}/{}", e.file_name().to_string_lossy());
            (!listed.contains(file.as_str()))
                .then(|| format!("{file}: in the split's folder but not in the manifest"))
        })
        .collect()
}

/// What one shard holds, as read.
struct ShardCheck {
    rows: u64,
    per_class: Vec<u64>,
    unlabeled: u64,
    faults: Vec<String>,
}

fn verify_shard(dir: &Path, manifest: &Manifest, info: &ShardInfo, classes: usize) -> ShardCheck {
    let path = shard_path(dir, info);
    let mut faults = Vec::new();
    let mut per_class = vec![0u64; classes];
    let mut unlabeled = 0u64;
    let checked = (|| -> Result<(), ShardError> {
        let meta = std::fs::metadata(&path)
            .map_err(|_| ShardError::MissingShard { file: path.clone() })?;
        if meta.len() != info.bytes {
            return Err(ShardError::Size {
                file: path.clone(),
                expected: info.bytes,
                found: meta.len(),
            });
        }
        check_checksum(&path, &info.sha256)
    })();
    let failed = |fault: String| ShardCheck {
        rows: 0,
        per_class: vec![0; classes],
        unlabeled: 0,
        faults: vec![fault],
    };
    if let Err(e) = checked {
        return failed(e.to_string());
    }
    let shard = match Shard::open(&path, info, manifest.container) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let mut rows = 0u64;
    for (g, &expected_rows) in info.row_groups.iter().enumerate() {
        let group = match shard.read_group(g) {
            Ok(group) => group,
            Err(e) => {
                faults.push(e.to_string());
                continue;
            }
        };
        if group.len() != expected_rows as usize {
            faults.push(format!(
                "{}: row group {g} has {} rows, the manifest says {expected_rows}",
                info.file,
                group.len()
            ));
        }
        for i in 0..group.len() {
            let row_no = rows as usize + i;
            let fault = match group.row(i, &info.file) {
                Err(e) => Some(e.to_string()),
                Ok(row) if row.label < -1 || row.label >= classes as i32 && classes > 0 => {
                    Some(format!(
                        "label {} out of range -1..{}",
                        row.label,
                        classes.saturating_sub(1)
                    ))
                }
                Ok(row) => {
                    match usize::try_from(row.label) {
                        Ok(label) => {
                            if let Some(count) = per_class.get_mut(label) {
                                *count += 1;
                            }
                        }
                        Err(_) => unlabeled += 1,
                    }
                    decode_stored(row.image, row.encoding, row.width, row.height)
                        .err()
                        .map(|e| e.to_string())
                }
            };
            if let Some(problem) = fault {
                faults.push(format!("{}: row {row_no}: {problem}", info.file));
            }
        }
        rows += group.len() as u64;
    }
    if rows != info.rows {
        faults.push(format!(
            "{}: has {rows} rows, the manifest says {}",
            info.file, info.rows
        ));
    }
    ShardCheck {
        rows,
        per_class,
        unlabeled,
        faults,
    }
}
