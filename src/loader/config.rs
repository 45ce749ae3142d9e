//! What a [`Loader`](super::Loader) is built from: [`LoaderConfig`] and [`CachePolicy`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use super::sampler::{Order, DEFAULT_SHUFFLE_BUFFER};
use super::{LoaderError, ViewSpec};
use crate::config::{check, ConfigError};

/// The paper's CIFAR views: two 32px views over the torchvision scale range.
pub const DEFAULT_VIEWS: &str = "2x32:0.08-1";
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Batches in flight ahead of the consumer (FFCV's `batches_ahead`).
pub const DEFAULT_PREFETCH: usize = 4;
/// Datasets whose decoded pixels fit in this many bytes are decoded once and held in memory.
pub const DEFAULT_DECODED_CACHE_BYTES: u64 = 2 << 30;

/// How the loader holds a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Decoded in memory when the pixels fit in `decoded_cache_bytes`, streamed otherwise.
    #[default]
    Auto,
    /// Decode everything once up front and keep the pixels.
    Decoded,
    /// Read row groups on demand (a few cached per worker) and decode per sample.
    Stream,
}

/// Everything the K-view loader needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// A dataset directory written by `ssl-pack`.
    pub data: PathBuf,
    /// Split to read ("train").
    pub split: String,
    /// View spec, e.g. `2x32:0.14-1,6x16:0.05-0.14`.
    pub views: String,
    /// Images per batch (256).
    pub batch_size: usize,
    /// Worker threads (0, the default: all cores).
    pub threads: usize,
    /// Batches prepared ahead of the consumer (4).
    pub prefetch: usize,
    pub order: Order,
    /// Seeds the order and every view's randomness (in `ssl-train`, also the initial weights).
    pub seed: u64,
    /// Seeded, class-balanced fraction of the split to use, in (0, 1] (1).
    pub fraction: f64,
    /// This process's part of `world` disjoint parts (0 of 1).
    pub rank: usize,
    pub world: usize,
    /// Drop the last incomplete batch (true, as SSL training does).
    pub drop_last: bool,
    /// Rows in the `quasi` order's shuffle buffer.
    pub shuffle_buffer: usize,
    pub cache: CachePolicy,
    /// Decoded-pixel budget for `cache = auto`, in bytes (2 GiB).
    pub decoded_cache_bytes: u64,
    /// Check each shard's checksum before its first row is used (true). Streamed shards are
    /// then read once more per process, the first time a worker touches them.
    pub verify_checksums: bool,
    pub augment: AugmentConfig,
}

impl LoaderConfig {
    /// Every value in range, each error naming its key (the views are checked as they parse).
    pub fn check(&self) -> Result<(), LoaderError> {
        let check = || -> Result<(), ConfigError> {
            check::at_least("batch_size", self.batch_size as u64, 1)?;
            check::at_least("prefetch", self.prefetch as u64, 1)?;
            check::at_least("world", self.world as u64, 1)?;
            if !(self.fraction > 0.0 && self.fraction <= 1.0) {
                return Err(ConfigError::OutOfRange {
                    key: "fraction".into(),
                    value: self.fraction.to_string(),
                    allowed: "must be in (0, 1]".into(),
                });
            }
            if self.rank >= self.world {
                return Err(ConfigError::OutOfRange {
                    key: "rank".into(),
                    value: self.rank.to_string(),
                    allowed: format!("must be below world ({})", self.world),
                });
            }
            self.augment.check()
        };
        check().map_err(|e| LoaderError::Config(e.to_string()))?;
        self.views.parse::<ViewSpec>()?;
        Ok(())
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            split: "train".into(),
            views: DEFAULT_VIEWS.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            threads: 0,
            prefetch: DEFAULT_PREFETCH,
            order: Order::Random,
            seed: 0,
            fraction: 1.0,
            rank: 0,
            world: 1,
            drop_last: true,
            shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
            cache: CachePolicy::Auto,
            decoded_cache_bytes: DEFAULT_DECODED_CACHE_BYTES,
            verify_checksums: true,
            augment: AugmentConfig::default(),
        }
    }
}
