//! What `ssl-train` reads from a TOML file and `--set`: [`TrainConfig`] and its choices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::loader::{AugmentConfig, LoaderConfig};
use crate::loss::LossConfig;
use crate::model::{BackboneKind, ModelSpec};

/// The paper's optimiser settings: Adam, lr 1e-3, coupled L2 weight decay 1e-6, no schedule.
pub const DEFAULT_LR: f64 = 1e-3;
pub const DEFAULT_WEIGHT_DECAY: f64 = 1e-6;
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

/// Everything `ssl-train` needs: the loader's, the model's and the loss's configs, flattened
/// so that `--set key=value` names any field directly (`--set views=4x16 --set backbone=conv4
/// --set lambda=0.01 --set order=quasi`); augmentations nest under `augment.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Data, views and batches. `data` empty means the built-in shapes, packed on first use;
    /// `seed` also draws the initial weights; `drop_last` is false (fastssl keeps the last
    /// short batch; a last batch of one image is skipped, its standard deviations undefined).
    #[serde(flatten)]
    pub loader: LoaderConfig,
    #[serde(flatten)]
    pub model: ModelSpec,
    #[serde(flatten)]
    pub loss: LossConfig,
    pub epochs: u64,
    /// Stop each epoch after this many steps (0: the whole epoch); for quick runs.
    pub max_steps_per_epoch: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Linear warm-up from 0, in epochs (may be fractional).
    pub warmup_epochs: f64,
    /// `cpu` or `cuda:N` (needs the `cuda` cargo feature).
    pub device: String,
    /// In a data-parallel run, BatchNorm statistics over the whole global batch instead of each
    /// rank's share (PyTorch's `SyncBatchNorm`): the result then does not depend on how the
    /// global batch is split. Off by default, as in DDP.
    pub sync_bn: bool,
    /// Run directory: resolved config, metrics.jsonl, checkpoint/, summary.json.
    pub out: PathBuf,
    /// Write a checkpoint every this many epochs (and always at the end).
    pub checkpoint_every: u64,
    /// Labelled split for the kNN monitor ("" turns it off); the kNN bank is `split`.
    pub eval_split: String,
    /// kNN accuracy every this many epochs (0: only before and after training).
    pub knn_every: u64,
    pub knn_k: usize,
    pub knn_temperature: f32,
    /// At most this many images of `split` in the kNN bank (0: all of it): a seeded,
    /// class-balanced subset, the same for the monitor and `ssl-eval`. kNN costs bank x queries.
    pub knn_bank: usize,
    /// Side of the clean images that kNN monitoring and `ssl-eval` compute features on; 0 (the
    /// default, as fastssl): the dataset's own size when all its images share one, else the
    /// largest view's.
    pub eval_size: u32,
    /// Per-channel mean and std (of 0..1 pixels) used to normalise inputs on the device.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            loader: LoaderConfig {
                drop_last: false,
                ..LoaderConfig::default()
            },
            model: ModelSpec::default(),
            loss: LossConfig::default(),
            epochs: DEFAULT_EPOCHS,
            max_steps_per_epoch: 0,
            optimizer: OptimizerKind::Adam,
            lr: DEFAULT_LR,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            device: "cpu".into(),
            sync_bn: false,
            out: PathBuf::from("runs/default"),
            checkpoint_every: 1,
            eval_split: "test".into(),
            knn_every: 1,
            knn_k: 200,
            knn_temperature: 0.1,
            knn_bank: 0,
            eval_size: 0,
            mean: crate::loader::CIFAR10_MEAN,
            std: crate::loader::CIFAR10_STD,
        }
    }
}

impl TrainConfig {
    /// Every value in range, each error naming its key: run once where a run's config is
    /// resolved, before anything is written.
    pub fn check(&self) -> Result<(), super::TrainError> {
        use crate::config::check;
        self.loader.check()?;
        let train = || -> Result<(), crate::config::ConfigError> {
            // The run records its config as TOML text, which cannot hold such a path.
            for (key, path) in [("data", &self.loader.data), ("out", &self.out)] {
                if path.to_str().is_none() {
                    return Err(crate::config::ConfigError::OutOfRange {
                        key: key.into(),
                        value: path.display().to_string(),
                        allowed: "must be a path in valid UTF-8".into(),
                    });
                }
            }
            self.loss.check()?;
            check::at_least("width", self.model.width as u64, 1)?;
            check::at_least("pdim", self.model.pdim as u64, 1)?;
            check::at_least("epochs", self.epochs, 1)?;
            check::at_least("checkpoint_every", self.checkpoint_every, 1)?;
            check::at_least("knn_k", self.knn_k as u64, 1)?;
            check::positive("lr", self.lr)?;
            check::non_negative("weight_decay", self.weight_decay)?;
            check::non_negative("warmup_epochs", self.warmup_epochs)?;
            check::positive("knn_temperature", check::wide(self.knn_temperature))?;
            for c in 0..3 {
                check::within(&format!("mean[{c}]"), check::wide(self.mean[c]), 0.0, 1.0)?;
                check::positive(&format!("std[{c}]"), check::wide(self.std[c]))?;
            }
            Ok(())
        };
        Ok(train()?)
    }

    /// The no-argument run of `ssl-train`: the built-in shapes (packed on first use), 32px views,
    /// `conv4` of width 16, about 5 minutes on a 2-core CPU.
    pub fn builtin() -> Self {
        let default = Self::default();
        Self {
            loader: LoaderConfig {
                // Views keep at least 30% of the image, so most contain the shape; colours are
                // per-image noise in this dataset, so colour augmentation is stronger than the
                // default (hue 0.5, saturation 0.8, grayscale 0.5): it turns colour into a
                // nuisance and leaves shape as what views of an image share (kNN 18% after 3
                // epochs against 14.7% with the default augmentations). 20 epochs take 2.5
                // minutes on 2 cores and reach kNN 20.8% (random init 10.9%), rising still; 6
                // epochs stopped near 18%.
                views: "2x32:0.3-1".into(),
                batch_size: 128,
                // 5,000 images leave a last batch of 8, whose loss (76 against 40) and BatchNorm
                // statistics are noise. (kNN 16.1% with it, 20.5% without; but this small run
                // moves as much with any change to its draws: 20.4% with it and bilinear crops.)
                drop_last: true,
                augment: AugmentConfig {
                    hue: 0.5,
                    saturation: 0.8,
                    grayscale_p: 0.5,
                    ..AugmentConfig::default()
                },
                ..default.loader.clone()
            },
            model: ModelSpec {
                backbone: BackboneKind::Conv4,
                width: 16,
                pdim: 128,
                ..ModelSpec::default()
            },
            epochs: 20,
            lr: 2e-3,
            // Its images are 64 px and its views 32: features at the views' size.
            eval_size: 32,
            out: PathBuf::from("runs/builtin"),
            mean: [0.5; 3],
            std: [0.25; 3],
            ..default
        }
    }

    /// λ for Barlow Twins: the configured one or 1/pdim.
    pub fn lambda(&self) -> f64 {
        self.loss.lambda(self.model.pdim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let cfg: TrainConfig = crate::config::load(Some(&path), &[]).unwrap();
            let text = toml::to_string_pretty(&cfg).unwrap();
            let again: TrainConfig = crate::config::from_toml(&text, "resolved").unwrap();
            assert_eq!(again, cfg, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 6, "configs/ holds {seen} files");
    }

    #[test]
    fn flat_keys_reach_the_nested_configs() {
        let sets = [
            "views=4x16",
            "order=quasi",
            "backbone=conv4",
            "pdim=64",
            "lambda=0.01",
            "loss_form=naive",
            "augment.hue=0.2",
            "seed=3",
        ]
        .map(String::from);
        let cfg: TrainConfig = crate::config::apply_sets(&TrainConfig::default(), &sets).unwrap();
        assert_eq!(cfg.loader.views, "4x16");
        assert_eq!(cfg.loader.order, crate::loader::Order::Quasi);
        assert_eq!(cfg.model.backbone, BackboneKind::Conv4);
        assert_eq!(cfg.lambda(), 0.01);
        assert_eq!(cfg.loss.form, crate::loss::LossForm::Naive);
        assert_eq!(cfg.loader.augment.hue, 0.2);
        assert_eq!(cfg.loader.seed, 3);
        let err = crate::config::apply_sets(&cfg, &["bakbone=conv4".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown field `bakbone`"), "{err}");
    }
}
