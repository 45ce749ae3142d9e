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
    let shards: Vec<(&ShardInfo, usize)> = manifest
        .splits
        .values()
        .flat_map(|split| split.shards.iter().map(|s| (s, manifest.classes.len())))
        .collect();
    let results: Vec<(u64, Vec<String>)> = shards
        .par_iter()
        .map(|(info, classes)| verify_shard(dir, &manifest, info, *classes))
        .collect();
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        shards: shards.len(),
        ..Default::default()
    };
    for (rows, faults) in results {
        report.rows += rows;
        report.faults.extend(faults);
    }
    for (name, split) in &manifest.splits {
        let sum: u64 = split.shards.iter().map(|s| s.rows).sum();
        if sum != split.rows {
            report.faults.push(format!(
                "manifest: split {name} says {} rows but its shards list {sum}",
                split.rows
            ));
        }
    }
    Ok(report)
}

fn verify_shard(
    dir: &Path,
    manifest: &Manifest,
    info: &ShardInfo,
    classes: usize,
) -> (u64, Vec<String>) {
    let path = shard_path(dir, info);
    let mut faults = Vec::new();
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
    if let Err(e) = checked {
        faults.push(e.to_string());
        return (0, faults);
    }
    let shard = match Shard::open(&path, info, manifest.container) {
        Ok(s) => s,
        Err(e) => return (0, vec![e.to_string()]),
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
                Ok(row) => decode_stored(row.image, row.encoding, row.width, row.height)
                    .err()
                    .map(|e| e.to_string()),
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
    (rows, faults)
}
