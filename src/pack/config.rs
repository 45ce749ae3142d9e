//! What `ssl-pack write` reads from its flags or a TOML file: [`PackConfig`] and its choices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::shard::Container;

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
    /// root/<class>/**/*.{jpg,png,webp,bmp,tif,...} (torchvision's extensions), optionally under a
    /// split level (root/train/<class>/...).
    ImageFolder,
    /// Parquet files as Hugging Face `datasets` writes them (image struct with `bytes`, label).
    HfParquet,
    /// A Hugging Face `save_to_disk` folder: Arrow files beside `dataset_info.json` (or a
    /// `DatasetDict` folder with `dataset_dict.json` and a folder per split).
    HfDisk,
    /// IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST; `.gz` or not), stored single-channel.
    Idx,
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
            Self::HfDisk => "hf-disk",
            Self::Idx => "idx",
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

/// How an image folder's levels are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FolderLayout {
    /// Splits when the top folders are all split names (train, val, test, ...) holding only
    /// folders, flat when they hold images; refused as ambiguous otherwise.
    #[default]
    Auto,
    /// ROOT/<class>/**/images: one `train` split.
    Flat,
    /// ROOT/<split>/<class>/**/images.
    Splits,
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
    /// Image folders: flat, splits, or auto (refuses when it cannot tell).
    pub layout: FolderLayout,
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
            layout: FolderLayout::default(),
            cifar100_label: Cifar100Label::default(),
            image_column: None,
            label_column: None,
            seed: 0,
            shapes_per_class: super::shapes::DEFAULT_PER_CLASS,
        }
    }
}

/// `ssl-pack write`'s arguments: every [`PackConfig`] field has a flag, and [`WriteArgs::config`]
/// names each field, so a new one fails to compile until it is mapped.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    /// Dataset to read: a directory, a .parquet file, or `builtin-shapes`.
    pub src: PathBuf,
    /// Output directory (must be new or empty, or hold a dataset with --overwrite).
    pub out: PathBuf,
    /// Input format [default: detected from SRC].
    #[arg(long)]
    pub format: Option<SourceFormat>,
    /// Splits to pack, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "SPLIT")]
    pub split: Vec<String>,
    #[arg(long, value_enum, default_value_t = Container::Parquet)]
    pub container: Container,
    #[arg(long, value_enum, default_value_t = EncodingMode::Auto)]
    pub encoding: EncodingMode,
    /// JPEG quality, 1-100.
    #[arg(long, default_value_t = DEFAULT_QUALITY)]
    pub quality: u8,
    /// Downscale so the longer side is at most N pixels (area filter; never upscales).
    #[arg(long, value_name = "N")]
    pub max_side: Option<u32>,
    /// Rows per row group [default: a group closes at about 1 MiB of images].
    #[arg(long, value_name = "N")]
    pub rows_per_group: Option<usize>,
    /// Start a new shard file after this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SHARD_BYTES)]
    pub shard_bytes: u64,
    /// Parquet page compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// On an undecodable image: fail naming the file, or skip it and list it in the manifest.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, value_name = "PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Replace an existing dataset in OUT.
    #[arg(long)]
    pub overwrite: bool,
    /// Image folders: ROOT/<class>/ (flat) or ROOT/<split>/<class>/ (splits) [default: auto,
    /// which refuses when the folder names do not tell].
    #[arg(long, value_enum, default_value_t = FolderLayout::Auto)]
    pub layout: FolderLayout,
    /// CIFAR-100: which label to store.
    #[arg(long, value_enum, default_value_t = Cifar100Label::Fine)]
    pub cifar100_label: Cifar100Label,
    /// Hugging Face Parquet: image column [default: first struct column with `bytes`].
    #[arg(long)]
    pub image_column: Option<String>,
    /// Hugging Face Parquet: label column [default: label, labels, fine_label or class].
    #[arg(long)]
    pub label_column: Option<String>,
    /// builtin-shapes: generator seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// builtin-shapes: images per class in the train split (test gets a fifth of it).
    #[arg(long, default_value_t = super::shapes::DEFAULT_PER_CLASS)]
    pub shapes_per_class: usize,
}

impl WriteArgs {
    pub fn config(self) -> PackConfig {
        PackConfig {
            source: self.src,
            out: self.out,
            format: self.format,
            splits: self.split,
            container: self.container,
            encoding: self.encoding,
            quality: self.quality,
            max_side: self.max_side,
            rows_per_group: self.rows_per_group,
            shard_bytes: self.shard_bytes,
            compression: self.compression,
            on_error: self.on_error,
            max_pixels: self.max_pixels,
            overwrite: self.overwrite,
            layout: self.layout,
            cifar100_label: self.cifar100_label,
            image_column: self.image_column,
            label_column: self.label_column,
            seed: self.seed,
            // No `..Default`: a new PackConfig field fails to compile here until it has a flag.
            shapes_per_class: self.shapes_per_class,
        }
    }
}
