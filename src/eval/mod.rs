//! `ssl-eval`: how good a pretrained backbone's features are. Linear probe (the paper's protocol
//! or a fast one), weighted kNN, and the spectrum of the features (RankMe, power-law α), for a
//! checkpoint or a randomly initialised network of the same architecture. Also used by
//! `ssl-train` for kNN monitoring.

pub mod export;
pub mod features;
pub mod features_out;
pub mod knn;
pub mod monitor;
pub mod probe;
pub mod spectrum;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::loader::{LoaderError, ViewSpec};
use crate::model::SslModel;
use crate::train::TrainConfig;
use features::FeatureSpec;
use knn::{knn_top1, FeatureSet};
use probe::{linear_probe, ProbeConfig};

/// What [`evaluate`] writes into its output directory.
pub const EVAL_FILE: &str = "eval.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// 16-view averaged features, 200-epoch probe: the paper's numbers.
    Paper,
    /// One centre view, 20-epoch probe: for monitoring.
    #[default]
    Fast,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("model: {0}")]
    Candle(candle_core::Error),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("device `{name}`: {error}")]
    Device {
        name: String,
        error: candle_core::Error,
    },
    /// The checkpoint's weights could not be read.
    #[error(transparent)]
    Checkpoint(Box<crate::train::TrainError>),
}

impl From<crate::train::TrainError> for EvalError {
    fn from(error: crate::train::TrainError) -> Self {
        Self::Checkpoint(Box::new(error))
    }
}

impl From<candle_core::Error> for EvalError {
    fn from(error: candle_core::Error) -> Self {
        Self::Candle(error)
    }
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// A run directory of ssl-train, or `None` for a random-init network.
    pub checkpoint: Option<PathBuf>,
    /// The run's config, or the architecture for a random network.
    pub config: TrainConfig,
    pub train: PathBuf,
    pub test: PathBuf,
    pub train_split: String,
    pub test_split: String,
    pub protocol: Protocol,
    pub probe_epochs: Option<usize>,
    /// Where `eval.json` goes (the run directory for a checkpoint).
    pub out: PathBuf,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub checkpoint: String,
    pub protocol: Protocol,
    pub train: String,
    pub test: String,
    pub feature_dim: usize,
    pub probe_epochs: usize,
    pub linear_top1: f64,
    pub linear_top5: f64,
    pub knn_top1: f64,
    pub knn_k: usize,
    /// Images in the kNN bank (`knn_bank` limits it).
    pub knn_bank: usize,
    pub rankme: f64,
    pub alpha: f64,
    pub alpha_range: (usize, usize),
    pub feature_seconds: f64,
    pub probe_seconds: f64,
    pub knn_seconds: f64,
    pub features_cached: bool,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<22} {}", "checkpoint", self.checkpoint)?;
        writeln!(
            f,
            "{:<22} {:?} (train {}, test {})",
            "protocol", self.protocol, self.train, self.test
        )?;
        writeln!(f, "{:<22} {}", "feature dim", self.feature_dim)?;
        writeln!(f, "{:<22} {:.2}%", "linear top-1", self.linear_top1 * 100.0)?;
        writeln!(f, "{:<22} {:.2}%", "linear top-5", self.linear_top5 * 100.0)?;
        writeln!(
            f,
            "{:<22} {:.2}%",
            format!("kNN top-1 (k={})", self.knn_k),
            self.knn_top1 * 100.0
        )?;
        writeln!(f, "{:<22} {} images", "kNN bank", self.knn_bank)?;
        writeln!(f, "{:<22} {:.2}", "RankMe", self.rankme)?;
        writeln!(
            f,
            "{:<22} {:.3} (eigenvalues {}..{})",
            "alpha", self.alpha, self.alpha_range.0, self.alpha_range.1
        )?;
        write!(
            f,
            "{:<22} features {:.1}s{}, probe {:.1}s ({} epochs), kNN {:.1}s",
            "time",
            self.feature_seconds,
            if self.features_cached {
                " (cached)"
            } else {
                ""
            },
            self.probe_seconds,
            self.probe_epochs,
            self.knn_seconds
        )
    }
}

/// Builds the backbone of `cfg` with a checkpoint's weights, or seeded random ones.
fn model(
    cfg: &TrainConfig,
    checkpoint: Option<&Path>,
    side: u32,
    device: &Device,
) -> Result<SslModel, EvalError> {
    let (mut varmap, model) = SslModel::seeded(&cfg.model, side, cfg.loader.seed, device)?;
    if let Some(run) = checkpoint {
        crate::train::checkpoint::load_weights(run, &mut varmap, None)?;
    }
    Ok(model)
}

/// Refuses splits that would give a number without meaning: a split that is missing or has
/// unlabelled rows (label -1 would be scored as a class), or train and test datasets whose
/// labels name different classes (label 3 must mean the same class on both sides).
fn check_scorable(req: &EvalRequest) -> Result<(), EvalError> {
    let load = |data: &Path| crate::shard::Manifest::load(data).map_err(LoaderError::from);
    let (train, test) = (load(&req.train)?, load(&req.test)?);
    for (data, manifest, split) in [
        (&req.train, &train, &req.train_split),
        (&req.test, &test, &req.test_split),
    ] {
        let refuse = |problem: String| {
            Err(EvalError::Loader(LoaderError::Config(format!(
                "{}: {problem}",
                data.display()
            ))))
        };
        match manifest.splits.get(split.as_str()) {
            None => {
                let splits: Vec<_> = manifest.splits.keys().cloned().collect();
                return refuse(format!(
                    "has no split `{split}` (it has {})",
                    splits.join(", ")
                ));
            }
            Some(s) if s.unlabeled > 0 => {
                return refuse(format!(
                    "split `{split}` has {} unlabelled rows of {}; kNN and the probe need a \
                     labelled split",
                    s.unlabeled, s.rows
                ))
            }
            Some(_) => {}
        }
    }
    if train.classes != test.classes {
        let show = |c: &[String]| match c.len() {
            0..=12 => c.join(", "),
            n => format!("{}, ... ({n} classes)", c[..12].join(", ")),
        };
        return Err(EvalError::Loader(LoaderError::Config(format!(
            "{} and {} name different classes ({} against {}): their labels cannot be compared",
            req.train.display(),
            req.test.display(),
            show(&train.classes),
            show(&test.classes)
        ))));
    }
    Ok(())
}

/// Runs the evaluation and writes `eval.json` into `req.out`.
pub fn evaluate(req: &EvalRequest) -> Result<EvalReport, EvalError> {
    check_scorable(req)?;
    let cfg = &req.config;
    let device = crate::model::device(&cfg.device).map_err(|error| EvalError::Device {
        name: cfg.device.clone(),
        error,
    })?;
    let spec: ViewSpec = cfg.loader.views.parse().map_err(LoaderError::from)?;
    let side = spec.largest_side();
    let scale = spec.groups.first().map_or((0.08, 1.0), |g| g.scale);
    let model = model(cfg, req.checkpoint.as_deref(), side, &device)?;
    // `eval_size`, or clean images at the datasets' own size where they have one, as fastssl
    // evaluates; else at the largest training view's.
    let eval_side = match cfg.eval_size {
        0 => {
            features::evaluation_side((&req.train, &req.train_split), (&req.test, &req.test_split))?
                .unwrap_or(side)
        }
        n => n,
    };
    let feature_spec = |data: &Path, split: &str| FeatureSpec {
        data: data.to_path_buf(),
        split: split.to_string(),
        side: eval_side,
        protocol: req.protocol,
        augment: cfg.loader.augment.clone(),
        scale,
        mean: cfg.mean,
        std: cfg.std,
        threads: req.threads,
        seed: cfg.loader.seed,
    };
    let start = Instant::now();
    let mut cached = true;
    let mut get = |data: &Path, split: &str| -> Result<FeatureSet, EvalError> {
        let spec = feature_spec(data, split);
        let Some(run) = &req.checkpoint else {
            cached = false;
            return features::features(&model.backbone, &spec, &device);
        };
        let weights = crate::train::checkpoint::checkpoint_dir(run)
            .join(crate::train::checkpoint::MODEL_FILE);
        let key = features::cache_key(&weights, &spec)?;
        let dir = run.join("features").join(
            data.file_name()
                .map_or("data".into(), |n| n.to_string_lossy().into_owned()),
        );
        let path = features::cache_path(&dir, &spec);
        if let Some(set) = features::load_cache(&path, &key) {
            return Ok(set);
        }
        cached = false;
        let set = features::features(&model.backbone, &spec, &device)?;
        features::save_cache(&path, &key, &set)?;
        Ok(set)
    };
    let (train, test) = (
        get(&req.train, &req.train_split)?,
        get(&req.test, &req.test_split)?,
    );
    let feature_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut probe_cfg = match req.protocol {
        Protocol::Paper => ProbeConfig::paper(),
        Protocol::Fast => ProbeConfig::fast(),
    };
    if let Some(epochs) = req.probe_epochs {
        probe_cfg.epochs = epochs;
    }
    probe_cfg.seed = cfg.loader.seed;
    let probe = linear_probe(&train, &test, &probe_cfg)?;
    let probe_seconds = start.elapsed().as_secs_f64();
    let spectrum = spectrum::spectrum(&train, None);
    let start = Instant::now();
    let (mut bank, mut queries) = (train.limited(cfg.knn_bank), test);
    bank.normalise();
    queries.normalise();
    let knn_top1 = knn_top1(&bank, &queries, cfg.knn_k, cfg.knn_temperature);
    let knn_seconds = start.elapsed().as_secs_f64();
    let report = EvalReport {
        checkpoint: req
            .checkpoint
            .as_ref()
            .map_or("random".into(), |p| p.display().to_string()),
        protocol: req.protocol,
        train: format!("{}:{}", req.train.display(), req.train_split),
        test: format!("{}:{}", req.test.display(), req.test_split),
        feature_dim: bank.dim,
        probe_epochs: probe_cfg.epochs,
        linear_top1: probe.top1,
        linear_top5: probe.top5,
        knn_top1,
        knn_k: cfg.knn_k,
        knn_bank: bank.len(),
        rankme: spectrum.rankme,
        alpha: spectrum.alpha,
        alpha_range: spectrum.alpha_range,
        feature_seconds,
        probe_seconds,
        knn_seconds,
        features_cached: cached,
    };
    std::fs::create_dir_all(&req.out).map_err(|error| EvalError::Io {
        path: req.out.clone(),
        error,
    })?;
    let path = req.out.join(EVAL_FILE);
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    crate::atomic_file::write(&path, text).map_err(|error| EvalError::Io { path, error })?;
    Ok(report)
}
