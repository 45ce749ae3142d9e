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

/// The per-view augmentations. Defaults are fastssl's CIFAR recipe (the paper's): DESIGN.md's
/// list with hue 0 and OpenCV's INTER_AREA crop resize, as FFCV-SSL does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Horizontal flip probability (0.5).
    pub flip_p: f32,
    /// Probability of applying colour jitter (0.8).
    pub jitter_p: f32,
    /// Jitter strengths: factors in [1-x, 1+x] (0.4 each); hue shift in [-h, h] (0: fastssl's).
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
    /// RandomResizedCrop aspect-ratio range (3/4 - 4/3).
    pub ratio: (f32, f32),
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.0,
            grayscale_p: 0.2,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
            solarize_threshold: 128.0,
            interpolation: Interpolation::Area,
            ratio: crate::loader::augment::rrc::DEFAULT_RATIO,
        }
    }
}

impl AugmentConfig {
    /// The default without grayscale: crop, flip, brightness/contrast/saturation (p 0.8), the
    /// set the loader benchmark compares with FFCV's own CIFAR pipeline.
    pub fn ffcv() -> Self {
        Self {
            grayscale_p: 0.0,
            ..Self::default()
        }
    }

    /// Evaluation views: no randomness; with scale 1-1 this is the largest centred square.
    pub fn centre() -> Self {
        Self {
            flip_p: 0.0,
            jitter_p: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            solarize_p: 0.0,
            ratio: (1.0, 1.0),
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
    /// Check each shard's checksum before its first row is used (true). Streamed shards are
    /// then read once more per process, the first time a worker touches them.
    pub verify_checksums: bool,
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
            verify_checksums: true,
            augment: AugmentConfig::default(),
        }
    }
}

pub use crate::loss::{LossForm, LossKind};
pub use crate::model::{BackboneKind, Stem};

/// The paper's optimiser settings: Adam, lr 1e-3, coupled L2 weight decay 1e-6, no schedule.
pub const DEFAULT_LR: f64 = 1e-3;
pub const DEFAULT_WEIGHT_DECAY: f64 = 1e-6;
pub const DEFAULT_PDIM: usize = 256;
pub const DEFAULT_EPOCHS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with coupled L2 weight decay (the gradient gets `wd * p`), as the paper.
    #[default]
    Adam,
    /// AdamW: decoupled weight decay.
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant learning rate after any warm-up (the paper's).
    #[default]
    Constant,
    /// Cosine decay to 0 over the run, after any warm-up.
    Cosine,
}

/// Everything `ssl-train` needs. Keys are flat so `--set key=value` names them directly
/// (`--set views=4x16 --set backbone=conv4`); augmentations nest under `augment.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset written by `ssl-pack`; empty means the built-in shapes, packed on first use.
    pub data: PathBuf,
    /// Split to pretrain on.
    pub split: String,
    /// Labelled split for kNN monitoring ("" turns it off); the kNN bank is `split`.
    pub eval_split: String,
    /// View spec, e.g. `2x32:0.14-1,6x16:0.05-0.14`.
    pub views: String,
    pub batch_size: usize,
    pub epochs: u64,
    /// Stop each epoch after this many steps (0: the whole epoch); for quick runs.
    pub max_steps_per_epoch: usize,
    /// Drop each epoch's last short batch (false: fastssl keeps it). A last batch of a single
    /// image is skipped either way: the loss's standard deviations are undefined on it.
    pub drop_last: bool,
    /// Loader worker threads (0: all cores).
    pub threads: usize,
    pub prefetch: usize,
    /// Seeded, class-balanced fraction of the training split (the paper's 25%/50% runs).
    pub fraction: f64,
    pub backbone: BackboneKind,
    /// Width multiplier: 64 is the standard ResNet; 16 or 32 make CPU runs feasible.
    pub width: usize,
    pub stem: Stem,
    /// Projector output dimension D.
    pub pdim: usize,
    /// Linear layers in the projector (2: Linear-BN-ReLU-Linear).
    pub projector_depth: usize,
    pub loss: LossKind,
    pub loss_form: LossForm,
    /// Barlow Twins redundancy weight λ; absent means 1/pdim.
    pub lambda: Option<f64>,
    pub vicreg_invariance: f64,
    pub vicreg_variance: f64,
    pub vicreg_covariance: f64,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Linear warm-up from 0, in epochs (may be fractional).
    pub warmup_epochs: f64,
    pub seed: u64,
    /// `cpu` or `cuda:N` (needs the `cuda` cargo feature).
    pub device: String,
    /// Run directory: resolved config, metrics.jsonl, checkpoint/, summary.json.
    pub out: PathBuf,
    /// Write a checkpoint every this many epochs (and always at the end).
    pub checkpoint_every: u64,
    /// kNN accuracy every this many epochs (0: only before and after training).
    pub knn_every: u64,
    pub knn_k: usize,
    pub knn_temperature: f32,
    /// Side of the clean images that kNN monitoring and `ssl-eval` compute features on; 0 (the
    /// default, as fastssl): the dataset's own size when all its images share one, else the
    /// largest view's.
    pub eval_size: u32,
    /// Per-channel mean and std (of 0..1 pixels) used to normalise inputs on the device.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub augment: AugmentConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            split: "train".into(),
            eval_split: "test".into(),
            views: DEFAULT_VIEWS.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            epochs: DEFAULT_EPOCHS,
            max_steps_per_epoch: 0,
            drop_last: false,
            threads: 0,
            prefetch: DEFAULT_PREFETCH,
            fraction: 1.0,
            backbone: BackboneKind::Resnet18,
            width: 64,
            stem: Stem::Auto,
            pdim: DEFAULT_PDIM,
            projector_depth: 2,
            loss: LossKind::BarlowTwins,
            loss_form: LossForm::Efficient,
            lambda: None,
            vicreg_invariance: crate::loss::vicreg::DEFAULT_INVARIANCE,
            vicreg_variance: crate::loss::vicreg::DEFAULT_VARIANCE,
            vicreg_covariance: crate::loss::vicreg::DEFAULT_COVARIANCE,
            optimizer: OptimizerKind::Adam,
            lr: DEFAULT_LR,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            seed: 0,
            device: "cpu".into(),
            out: PathBuf::from("runs/default"),
            checkpoint_every: 1,
            knn_every: 1,
            knn_k: 200,
            knn_temperature: 0.1,
            eval_size: 0,
            mean: crate::loader::CIFAR10_MEAN,
            std: crate::loader::CIFAR10_STD,
            augment: AugmentConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The no-argument run of `ssl-train`: the built-in shapes (packed on first use), 32px views,
    /// `conv4` of width 16, about 5 minutes on a 2-core CPU.
    pub fn builtin() -> Self {
        Self {
            // Views keep at least 30% of the image, so most contain the shape; colours are
            // per-image noise in this dataset, so colour augmentation is stronger than the
            // default (hue 0.5, saturation 0.8, grayscale 0.5): it turns colour into a nuisance
            // and leaves shape as what views of an image share (kNN 18% after 3 epochs against
            // 14.7% with the default augmentations). 20 epochs take 2.5 minutes on 2 cores and
            // reach kNN 20.8% (random init 10.9%), rising still; 6 epochs stopped near 18%.
            views: "2x32:0.3-1".into(),
            batch_size: 128,
            epochs: 20,
            backbone: BackboneKind::Conv4,
            width: 16,
            pdim: 128,
            lr: 2e-3,
            // Its images are 64 px and its views 32: features at the views' size.
            eval_size: 32,
            // 5,000 images leave a last batch of 8, whose loss (76 against 40) and BatchNorm
            // statistics are noise. (kNN 16.1% with it, 20.5% without; but this small run moves
            // as much with any change to its draws: 20.4% with it and bilinear crops.)
            drop_last: true,
            out: PathBuf::from("runs/builtin"),
            mean: [0.5; 3],
            std: [0.25; 3],
            augment: AugmentConfig {
                hue: 0.5,
                saturation: 0.8,
                grayscale_p: 0.5,
                ..AugmentConfig::default()
            },
            ..Self::default()
        }
    }

    /// Loader worker threads: `threads`, or every core when it is 0.
    pub fn loader_threads(&self) -> usize {
        if self.threads == 0 {
            LoaderConfig::default().threads
        } else {
            self.threads
        }
    }

    /// The architecture this config names.
    pub fn model_spec(&self) -> crate::model::ModelSpec {
        crate::model::ModelSpec {
            backbone: self.backbone,
            width: self.width,
            stem: self.stem,
            pdim: self.pdim,
            projector_depth: self.projector_depth,
        }
    }

    /// λ for Barlow Twins: the configured one or 1/pdim.
    pub fn lambda(&self) -> f64 {
        self.lambda.unwrap_or(1.0 / self.pdim as f64)
    }
}

/// A config file or override that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("--set {0}: expected key=value, e.g. --set views=4x16")]
    BadSet(String),
}

/// Applies `key=value` overrides to an existing config (see [`load_train_config`]).
pub fn apply_sets(cfg: TrainConfig, sets: &[String]) -> Result<TrainConfig, ConfigError> {
    let table = toml::Table::try_from(&cfg).expect("configs serialise to a table");
    apply_to_table(table, "built-in default".into(), sets)
}

/// Reads a TOML config (or starts from the defaults), then applies `key=value` overrides whose
/// keys are the TOML names (dotted for nested tables: `augment.hue=0`). Values parse as TOML
/// (`4`, `0.5`, `true`, `[0.1, 2.0]`) and fall back to strings (`views=4x16`).
pub fn load_train_config(
    path: Option<&std::path::Path>,
    sets: &[String],
) -> Result<TrainConfig, ConfigError> {
    let (table, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: p.display().to_string(),
                message: e.to_string(),
            })?;
            (table, p.display().to_string())
        }
        None => (toml::Table::new(), "defaults".to_string()),
    };
    apply_to_table(table, origin, sets)
}

fn apply_to_table(
    mut table: toml::Table,
    origin: String,
    sets: &[String],
) -> Result<TrainConfig, ConfigError> {
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut parts: Vec<&str> = key.trim().split('.').collect();
        let last = parts
            .pop()
            .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        let mut node = &mut table;
        for part in parts {
            node = node
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        }
        node.insert(last.to_string(), value);
    }
    let origin = if sets.is_empty() {
        origin
    } else {
        format!("{origin} with --set {}", sets.join(" --set "))
    };
    TrainConfig::deserialize(table).map_err(|e| ConfigError::Invalid {
        origin,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_override_flat_and_nested_keys_and_typos_are_named() {
        let sets = [
            "views=4x16",
            "backbone=conv4",
            "lr=0.002",
            "augment.hue=0.2",
            "lambda=0.01",
        ]
        .map(String::from);
        let cfg = load_train_config(None, &sets).unwrap();
        assert_eq!(cfg.views, "4x16");
        assert_eq!(cfg.backbone, BackboneKind::Conv4);
        assert_eq!(cfg.lr, 0.002);
        assert_eq!(cfg.augment.hue, 0.2);
        assert_eq!(cfg.lambda(), 0.01);
        let err = load_train_config(None, &["bakbone=conv4".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bakbone`"), "{err}");
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<TrainConfig>(&text).unwrap(),
            cfg,
            "the resolved config round-trips"
        );
    }
}
