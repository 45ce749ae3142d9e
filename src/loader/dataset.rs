//! A split of a packed dataset as the loader sees it: labels, sizes and row locations for every
//! position, and the pixels, either decoded once into one buffer (small datasets such as CIFAR)
//! or streamed: row groups read on demand into a small per-worker cache and decoded per sample.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::config::CachePolicy;
use super::decode::decode_into;
use super::{LoaderError, StageTimes};
use crate::shard::manifest::{check_checksum, expect_checksum};
use crate::shard::reader::Shard;
use crate::shard::{RowGroup, ShardReader};

/// Row groups each worker keeps in streaming mode.
const WORKER_CACHED_GROUPS: usize = 8;

/// One row group of the split: its shard, its index in the shard, its first row in the shard.
#[derive(Debug, Clone, Copy)]
struct GroupLoc {
    shard: usize,
    group: usize,
    shard_row: usize,
}

#[derive(Debug)]
enum Pixels {
    /// All images decoded, back to back; `offsets[p]` is where position p starts.
    Decoded {
        data: Vec<u8>,
        offsets: Vec<usize>,
    },
    Stream,
}

#[derive(Debug)]
pub struct Dataset {
    pub labels: Vec<i32>,
    /// The `index` column: position in the source split.
    pub indices: Vec<u64>,
    /// (width, height) of each position.
    pub sizes: Vec<(u16, u16)>,
    /// First position of each row group.
    pub group_starts: Vec<u32>,
    groups: Vec<GroupLoc>,
    shards: Vec<Arc<Shard>>,
    pixels: Pixels,
    /// Per shard, when streaming with checksums on: its path and manifest sha256, and the
    /// outcome of the check, made once by the first worker that needs the shard.
    checks: Vec<ShardCheck>,
}

#[derive(Debug)]
struct ShardCheck {
    path: std::path::PathBuf,
    expected: String,
    found: std::sync::OnceLock<Result<String, String>>,
}

/// A worker's scratch: decode buffer and, when streaming, its cache of row groups.
#[derive(Default)]
pub struct WorkerCache {
    groups: VecDeque<(usize, Arc<RowGroup>)>,
    buf: Vec<u8>,
}

impl Dataset {
    /// Reads the split's metadata (no images) and, when the policy says so, decodes every image.
    pub fn open(
        reader: &ShardReader,
        split: &str,
        cache: CachePolicy,
        budget: u64,
        verify: bool,
    ) -> Result<Self, LoaderError> {
        let info = reader.manifest().split(split)?.clone();
        let mut ds = Dataset {
            labels: Vec::with_capacity(info.rows as usize),
            indices: Vec::with_capacity(info.rows as usize),
            sizes: Vec::with_capacity(info.rows as usize),
            group_starts: Vec::new(),
            groups: Vec::new(),
            shards: Vec::new(),
            pixels: Pixels::Stream,
            checks: Vec::new(),
        };
        for s in 0..info.shards.len() {
            let shard = reader.shard(split, s)?;
            let mut shard_row = 0;
            for g in 0..shard.num_groups() {
                let meta = shard.read_meta(g)?;
                ds.group_starts.push(ds.labels.len() as u32);
                ds.groups.push(GroupLoc {
                    shard: s,
                    group: g,
                    shard_row,
                });
                ds.labels.extend(meta.label.values().iter());
                ds.indices.extend(meta.index.values().iter());
                ds.sizes.extend(
                    meta.width
                        .values()
                        .iter()
                        .zip(meta.height.values())
                        .map(|(w, h)| (*w, *h)),
                );
                shard_row += meta.index.len();
            }
            ds.shards.push(shard);
        }
        if ds.labels.is_empty() {
            return Err(LoaderError::Config(format!(
                "split `{split}` of {} has no rows",
                reader.dir().display()
            )));
        }
        let decoded: u64 = ds
            .sizes
            .iter()
            .map(|&(w, h)| u64::from(w) * u64::from(h) * 3)
            .sum();
        if cache == CachePolicy::Decoded || (cache == CachePolicy::Auto && decoded <= budget) {
            if verify {
                verify_checksums(reader, &info)?;
            }
            ds.decode_all()?;
        } else if verify {
            ds.checks = info
                .shards
                .iter()
                .map(|shard| ShardCheck {
                    path: crate::shard::manifest::shard_path(reader.dir(), shard),
                    expected: shard.sha256.clone(),
                    found: std::sync::OnceLock::new(),
                })
                .collect();
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether pixels are held decoded in memory.
    pub fn is_decoded(&self) -> bool {
        matches!(self.pixels, Pixels::Decoded { .. })
    }

    fn decode_all(&mut self) -> Result<(), LoaderError> {
        let mut offsets = Vec::with_capacity(self.len() + 1);
        let mut total = 0usize;
        for &(w, h) in &self.sizes {
            offsets.push(total);
            total += usize::from(w) * usize::from(h) * 3;
        }
        offsets.push(total);
        let mut data = vec![0u8; total];
        // Split the buffer into one disjoint slice per row group, then decode groups in parallel.
        let mut slices = Vec::with_capacity(self.groups.len());
        let mut rest = data.as_mut_slice();
        for (g, &start) in self.group_starts.iter().enumerate() {
            let end = self
                .group_starts
                .get(g + 1)
                .map_or(self.len(), |&e| e as usize);
            let (head, tail) = rest.split_at_mut(offsets[end] - offsets[start as usize]);
            slices.push((g, head));
            rest = tail;
        }
        slices
            .into_par_iter()
            .try_for_each(|(g, out)| -> Result<(), LoaderError> {
                let group = self.load_group(g)?;
                let mut buf = Vec::new();
                let mut at = 0;
                for i in 0..group.len() {
                    self.decode_row(&group, g, i, &mut buf)?;
                    out[at..at + buf.len()].copy_from_slice(&buf);
                    at += buf.len();
                }
                Ok(())
            })?;
        self.pixels = Pixels::Decoded { data, offsets };
        Ok(())
    }

    fn load_group(&self, g: usize) -> Result<RowGroup, LoaderError> {
        let loc = self.groups[g];
        if let Some(check) = self.checks.get(loc.shard) {
            check.result()?;
        }
        Ok(self.shards[loc.shard].read_group(loc.group)?)
    }

    fn decode_row(
        &self,
        group: &RowGroup,
        g: usize,
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), LoaderError> {
        let loc = self.groups[g];
        let file = self.shards[loc.shard].name();
        let row = group.row(i, file)?;
        decode_into(row.image, row.encoding, row.width, row.height, out).map_err(|source| {
            LoaderError::Decode {
                file: file.to_string(),
                row: loc.shard_row + i,
                error: source,
            }
        })
    }

    /// The RGB8 pixels of position `pos` as (bytes, width, height).
    pub fn image<'a>(
        &'a self,
        pos: u32,
        cache: &'a mut WorkerCache,
        times: &mut StageTimes,
    ) -> Result<(&'a [u8], u32, u32), LoaderError> {
        let p = pos as usize;
        let (w, h) = self.sizes[p];
        if let Pixels::Decoded { data, offsets } = &self.pixels {
            return Ok((
                &data[offsets[p]..offsets[p + 1]],
                u32::from(w),
                u32::from(h),
            ));
        }
        let start = Instant::now();
        let g = self.group_starts.partition_point(|&s| s <= pos) - 1;
        let group = match cache.groups.iter().find(|(id, _)| *id == g) {
            Some((_, group)) => group.clone(),
            None => {
                let group = Arc::new(self.load_group(g)?);
                if cache.groups.len() == WORKER_CACHED_GROUPS {
                    cache.groups.pop_front();
                }
                cache.groups.push_back((g, group.clone()));
                group
            }
        };
        times.read += start.elapsed();
        let start = Instant::now();
        self.decode_row(&group, g, p - self.group_starts[g] as usize, &mut cache.buf)?;
        times.decode += start.elapsed();
        Ok((&cache.buf, u32::from(w), u32::from(h)))
    }
}

impl ShardCheck {
    /// Hashes the shard the first time; every later call, from any worker, reuses the outcome.
    fn result(&self) -> Result<(), LoaderError> {
        let found = self.found.get_or_init(|| {
            crate::shard::manifest::sha256_file(&self.path).map_err(|e| match e {
                crate::shard::ShardError::Io { error, .. } => error.to_string(),
                other => other.to_string(),
            })
        });
        match found {
            Ok(found) => Ok(expect_checksum(&self.path, &self.expected, found)?),
            Err(message) => Err(LoaderError::Shard(crate::shard::ShardError::Io {
                path: self.path.clone(),
                error: std::io::Error::other(message.clone()),
            })),
        }
    }
}

/// Checks every shard of a split against its manifest checksum, in parallel, before the whole
/// split is decoded into memory, so a corrupt shard is never trained on silently. Streamed
/// shards are checked one by one as workers first need them (see [`ShardCheck`]).
fn verify_checksums(
    reader: &ShardReader,
    info: &crate::shard::SplitInfo,
) -> Result<(), LoaderError> {
    info.shards.par_iter().try_for_each(|shard| {
        let path = crate::shard::manifest::shard_path(reader.dir(), shard);
        Ok(check_checksum(&path, &shard.sha256)?)
    })
}
