//! Typed configuration shared by the binaries. Each struct has serde (TOML) support and a
//! `Default` whose values are the `DEFAULT_*` constants; binaries map their flags onto these.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::shard::Container;

/// Target bytes of image data per row group: small enough for random access.
pub const DEFAULT_GROUP_BYTES: usize = 1 << 20;
/// Target size of one shard file.
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;
/// JPEG quality for `--encoding jpeg` and for large images under `auto`.
pub const DEFAULT_QUALITY: u8 = 90;
/// Under `--encoding auto`, images whose raw RGB8 size is at most this are stored raw
/// (96x96x3: STL-10 and smaller decode for free; larger ones are JPEG, as FFCV's smart mode).
pub const DEFAULT_AUTO_RAW_MAX_BYTES: usize = 96 * 96 * 3;
pub const DEFAULT_MAX_PIXELS: u64 = crate::shard::codec::DEFAULT_MAX_PIXELS;

/// The input formats `ssl-pack write` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// CIFAR-10 binary release: data_batch_1..5.bin, test_batch.bin (1 + 3072-byte records).
    Cifar10Bin,
    /// CIFAR-100 binary release: train.bin, test.bin (2 + 3072-byte records).
    Cifar100Bin,
    /// STL-10 binary release: {train,test}_{X,y}.bin and unlabeled_X.bin (96x96, column-major).
    Stl10Bin,
    /// root/<class>/*.{jpg,jpeg,png}, optionally under a split level (root/train/<class>/...).
    ImageFolder,
    /// Parquet files as Hugging Face `datasets` writes them (image struct with `bytes`, label).
    HfParquet,
    /// Procedural textured shapes, 10 classes, 64x64, generated from a seed: no download needed.
    BuiltinShapes,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cifar10Bin => "cifar10-bin",
            Self::Cifar100Bin => "cifar100-bin",
            Self::Stl10Bin => "stl10-bin",
            Self::ImageFolder => "image-folder",
            Self::HfParquet => "hf-parquet",
            Self::BuiltinShapes => "builtin-shapes",
        }
    }
}

/// How images are stored in the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EncodingMode {
    /// Decoded RGB8 pixels: fastest to load, largest on disk.
    Raw,
    /// Re-encoded as JPEG at `quality`.
    Jpeg,
    /// The source file's JPEG/PNG bytes untouched (binary sources, which have none, are stored raw).
    Keep,
    /// Raw when the image is small (at most 96x96x3 bytes), JPEG otherwise (FFCV's smart mode).
    #[default]
    Auto,
}

/// Parquet page compression (Arrow IPC shards are always uncompressed, for mmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Images are already JPEG or need no CPU to read raw: compression buys little.
    #[default]
    None,
    Snappy,
}

/// What to do with an image file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop and name the file; nothing is written.
    #[default]
    Fail,
    /// Leave the file out and list it, with the reason, in the manifest.
    Skip,
}

/// Which CIFAR-100 label becomes the `label` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Cifar100Label {
    /// The 100 fine classes.
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// Everything `ssl-pack write` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackConfig {
    /// Dataset to read: a file or directory, or `builtin-shapes`.
    pub source: PathBuf,
    /// Output directory (created; must be empty or absent unless `overwrite`).
    pub out: PathBuf,
    /// Input format; detected from the source when absent.
    pub format: Option<SourceFormat>,
    /// Splits to pack; all when empty.
    pub splits: Vec<String>,
    pub container: Container,
    pub encoding: EncodingMode,
    /// JPEG quality, 1-100 (default 90).
    pub quality: u8,
    /// Downscale so the longer side is at most this many pixels (area filter); never upscales.
    pub max_side: Option<u32>,
    /// Rows per row group; by default a group closes at about 1 MiB of images.
    pub rows_per_group: Option<usize>,
    /// Start a new shard file after this many bytes (default 256 MiB).
    pub shard_bytes: u64,
    pub compression: Compression,
    pub on_error: OnError,
    /// Refuse (or skip) images with more pixels than this (default 89,478,485, Pillow's limit).
    pub max_pixels: u64,
    /// Replace an existing dataset in `out`.
    pub overwrite: bool,
    /// CIFAR-100 only: fine or coarse labels.
    pub cifar100_label: Cifar100Label,
    /// Hugging Face Parquet: the image column (default: the first struct column with `bytes`).
    pub image_column: Option<String>,
    /// Hugging Face Parquet: the label column (default: `label`, `labels`, `fine_label` or none).
    pub label_column: Option<String>,
    /// builtin-shapes: generator seed.
    pub seed: u64,
    /// builtin-shapes: images per class in the train split (test gets a fifth of it).
    pub shapes_per_class: usize,
}

impl Default for PackConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::new(),
            out: PathBuf::new(),
            format: None,
            splits: Vec::new(),
            container: Container::default(),
            encoding: EncodingMode::default(),
            quality: DEFAULT_QUALITY,
            max_side: None,
            rows_per_group: None,
            shard_bytes: DEFAULT_SHARD_BYTES,
            compression: Compression::default(),
            on_error: OnError::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
            overwrite: false,
            cifar100_label: Cifar100Label::default(),
            image_column: None,
            label_column: None,
            seed: 0,
            shapes_per_class: crate::pack::shapes::DEFAULT_PER_CLASS,
        }
    }
}

pub use crate::loader::augment::rrc::Interpolation;
pub use crate::loader::sampler::{Order, DEFAULT_SHUFFLE_BUFFER};

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

/// The per-view augmentations (DESIGN.md defaults; fastssl's CIFAR recipe uses `hue = 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Horizontal flip probability (0.5).
    pub flip_p: f32,
    /// Probability of applying colour jitter (0.8).
    pub jitter_p: f32,
    /// Jitter strengths: factors in [1-x, 1+x] (0.4 each); hue shift in [-h, h] (0.1).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    /// Grayscale probability (0.2).
    pub grayscale_p: f32,
    /// Gaussian blur probability (0: off for CIFAR-sized images) and sigma range (0.1-2.0).
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    /// Solarization probability (0) and threshold on 0..255 (128).
    pub solarize_p: f32,
    pub solarize_threshold: f32,
    pub interpolation: Interpolation,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
            solarize_threshold: 128.0,
            interpolation: Interpolation::Bilinear,
        }
    }
}

impl AugmentConfig {
    /// What FFCV-SSL's CIFAR pipeline does: crop, flip, brightness/contrast/saturation (p 0.8),
    /// no hue, grayscale, blur or solarization. For like-for-like benchmarks.
    pub fn ffcv() -> Self {
        Self {
            hue: 0.0,
            grayscale_p: 0.0,
            ..Self::default()
        }
    }

    /// Crop and flip only.
    pub fn crop_only() -> Self {
        Self {
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..Self::default()
        }
    }
}

/// Everything the K-view loader needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// A dataset directory written by `ssl-pack`.
    pub data: PathBuf,
    /// Split to read ("train").
    pub split: String,
    /// View spec, e.g. `2x32:0.14-1,6x16:0.05-0.14`.
    pub views: String,
    /// Images per batch (256).
    pub batch_size: usize,
    /// Worker threads (default: all cores).
    pub threads: usize,
    /// Batches prepared ahead of the consumer (4).
    pub prefetch: usize,
    pub order: Order,
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
    pub augment: AugmentConfig,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            split: "train".into(),
            views: DEFAULT_VIEWS.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
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
            augment: AugmentConfig::default(),
        }
    }
}
