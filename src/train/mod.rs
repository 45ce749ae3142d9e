//! `ssl-train`: pretrain a backbone + projector on K-view batches with the efficient multi-view
//! loss. The loop streams batches from the loader, writes `metrics.jsonl`, checkpoints every
//! `checkpoint_every` epochs (atomically; `--resume` continues with the same batches and loss
//! sequence), monitors kNN accuracy, and stops on a non-finite loss keeping the last good
//! checkpoint.

pub mod checkpoint;
pub mod dump;
pub mod metrics;
pub mod optim;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::{ConfigError, LoaderConfig, PackConfig, Schedule, SourceFormat, TrainConfig};
use crate::eval::features::{centre_view_loader, evaluation_side, extract};
use crate::eval::knn::knn_top1;
use crate::loader::{Cursor, Loader, LoaderError};
use crate::loss::{barlow_twins, vicreg, LossKind, LossParts};
use crate::model::SslModel;
use crate::pack::PackError;
use checkpoint::TrainState;
use metrics::Metrics;
use optim::{learning_rate, Optimizer};

pub const CONFIG_FILE: &str = "config.toml";
pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(
        "loss is {value} at epoch {epoch}, step {step}; training stopped. {kept} (try a lower lr)"
    )]
    NonFinite {
        value: f32,
        epoch: u64,
        step: u64,
        kept: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// What a finished run reports (also written to `summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub run: PathBuf,
    pub epochs: u64,
    pub steps: u64,
    pub last_loss: f32,
    /// kNN top-1 of the randomly initialised network (before any step), when labels exist.
    pub knn_random_init: Option<f64>,
    pub knn_final: Option<f64>,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// The device named by `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<Device, TrainError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(Device::new_cuda(n)?),
            None => Err(TrainError::Setup(format!(
                "device `{other}`: expected cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// The dataset to train on: `cfg.data`, or the built-in shapes packed once into a temp dir.
pub fn resolve_data(cfg: &TrainConfig) -> Result<PathBuf, TrainError> {
    if !cfg.data.as_os_str().is_empty() {
        return Ok(cfg.data.clone());
    }
    let dir = std::env::temp_dir().join(format!("ssl-train-builtin-shapes-{}", cfg.seed));
    if !dir.join(crate::shard::manifest::MANIFEST_FILE).is_file() {
        let pack = PackConfig {
            source: "builtin-shapes".into(),
            out: dir.clone(),
            format: Some(SourceFormat::BuiltinShapes),
            overwrite: true,
            seed: cfg.seed,
            ..PackConfig::default()
        };
        crate::pack::write_dataset(&pack)?;
    }
    Ok(dir)
}

/// Everything built from the config that the loop uses.
struct Setup {
    loader: Loader,
    device: Device,
    varmap: VarMap,
    model: SslModel,
    k: usize,
    side: u32,
    data: PathBuf,
}

fn setup(cfg: &TrainConfig) -> Result<Setup, TrainError> {
    let data = resolve_data(cfg)?;
    let threads = cfg.loader_threads();
    let loader = Loader::from_config(&LoaderConfig {
        data: data.clone(),
        split: cfg.split.clone(),
        views: cfg.views.clone(),
        batch_size: cfg.batch_size,
        threads,
        prefetch: cfg.prefetch,
        seed: cfg.seed,
        fraction: cfg.fraction,
        drop_last: cfg.drop_last,
        augment: cfg.augment.clone(),
        ..LoaderConfig::default()
    })?;
    let k = loader.views().views();
    let side = loader
        .views()
        .groups
        .iter()
        .map(|g| g.size)
        .max()
        .unwrap_or(32);
    let device = device(&cfg.device)?;
    let (varmap, model) = SslModel::seeded(&cfg.model_spec(), side, cfg.seed, &device)?;
    Ok(Setup {
        loader,
        device,
        varmap,
        model,
        k,
        side,
        data,
    })
}

/// Batches an epoch trains on: all of them, or `max_steps_per_epoch` when set.
fn steps_per_epoch(cfg: &TrainConfig, loader: &Loader) -> usize {
    match cfg.max_steps_per_epoch {
        0 => loader.batches_per_epoch(),
        n => n.min(loader.batches_per_epoch()),
    }
}

fn loss(cfg: &TrainConfig, z: &candle_core::Tensor, k: usize) -> candle_core::Result<LossParts> {
    match cfg.loss {
        LossKind::BarlowTwins => barlow_twins::loss(z, k, cfg.lambda(), cfg.loss_form),
        LossKind::Vicreg => vicreg::loss(
            z,
            k,
            vicreg::Weights {
                invariance: cfg.vicreg_invariance,
                variance: cfg.vicreg_variance,
                covariance: cfg.vicreg_covariance,
            },
            cfg.loss_form,
        ),
    }
}

/// kNN monitor: the training split as the bank, `eval_split` as queries, centre views.
struct Monitor {
    bank: Loader,
    queries: Loader,
}

impl Monitor {
    fn new(cfg: &TrainConfig, data: &Path, side: u32) -> Result<Option<Self>, TrainError> {
        if cfg.eval_split.is_empty() {
            return Ok(None);
        }
        let manifest = crate::shard::Manifest::load(data).map_err(LoaderError::from)?;
        let labelled = manifest
            .splits
            .get(&cfg.eval_split)
            .is_some_and(|s| s.unlabeled < s.rows);
        if !labelled {
            return Ok(None);
        }
        let threads = cfg.loader_threads();
        let side = match cfg.eval_size {
            0 => evaluation_side((data, &cfg.split), (data, &cfg.eval_split))?.unwrap_or(side),
            n => n,
        };
        Ok(Some(Self {
            bank: centre_view_loader(data, &cfg.split, side, threads)?,
            queries: centre_view_loader(data, &cfg.eval_split, side, threads)?,
        }))
    }

    fn knn(&self, cfg: &TrainConfig, s: &Setup) -> Result<f64, TrainError> {
        let run = |loader: &Loader| {
            extract(&s.model.backbone, loader, &s.device, cfg.mean, cfg.std)
                .map_err(|e| TrainError::Setup(format!("kNN features: {e}")))
        };
        let (mut bank, mut queries) = (run(&self.bank)?, run(&self.queries)?);
        bank.normalise();
        queries.normalise();
        Ok(knn_top1(&bank, &queries, cfg.knn_k, cfg.knn_temperature))
    }
}

/// Trains as `cfg` says, in `cfg.out`; with `resume`, continues from the checkpoint there.
pub fn train(
    cfg: &TrainConfig,
    command: &[String],
    resume: bool,
) -> Result<TrainSummary, TrainError> {
    let run = cfg.out.clone();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(&run).map_err(io(&run))?;
    if !resume && checkpoint::checkpoint_dir(&run).exists() {
        return Err(TrainError::Setup(format!(
            "{} already holds a run; continue it with --resume {0}, or choose another --out",
            run.display()
        )));
    }
    let config_text = toml::to_string_pretty(cfg).expect("config serialises");
    if resume {
        check_resumable(cfg, &checkpoint::load_config_text(&run)?, &run)?;
    }
    let mut s = setup(cfg)?;
    let mut optimizer = Optimizer::new(&s.varmap, cfg.optimizer, cfg.weight_decay)?;
    let mut state = TrainState {
        cursor: Cursor::default(),
        step: 0,
        seed: cfg.seed,
    };
    if resume {
        state = checkpoint::load_state(&run)?;
        checkpoint::load_weights(&run, &mut s.varmap, Some((&mut optimizer, state.step)))?;
    }
    // Only now, so a resume that fails leaves the run's config as it was.
    let config_path = run.join(CONFIG_FILE);
    std::fs::write(&config_path, &config_text).map_err(io(&config_path))?;
    let mut metrics = Metrics::open(&run, resume)?;
    metrics
        .write(&json!({ "kind": "start", "command": command, "resume": resume, "config": cfg }))?;
    let monitor = Monitor::new(cfg, &s.data, s.side)?;
    let mut knn_random_init = None;
    if let (Some(m), false) = (&monitor, resume) {
        let acc = m.knn(cfg, &s)?;
        knn_random_init = Some(acc);
        let record = json!({ "kind": "epoch", "epoch": 0, "knn_top1": acc, "note": "random init" });
        println!("{record}");
        metrics.write(&record)?;
    }

    let steps_per_epoch = steps_per_epoch(cfg, &s.loader);
    let total_steps = steps_per_epoch as u64 * cfg.epochs;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let start = Instant::now();
    let (mut images, mut last_loss, mut knn_final) = (0usize, f32::NAN, None);
    for epoch in state.cursor.epoch..cfg.epochs {
        let epoch_start = Instant::now();
        let first = if epoch == state.cursor.epoch {
            state.cursor.batches_done
        } else {
            0
        };
        let progress = progress_bar(epoch, cfg.epochs, steps_per_epoch, first);
        let mut batches = s.loader.iter_from(Cursor {
            epoch,
            batches_done: first,
        })?;
        let (mut loss_sum, mut n) = (0f64, 0usize);
        for number in first..steps_per_epoch {
            let step_start = Instant::now();
            let batch = batches
                .next()
                .ok_or_else(|| TrainError::Setup("loader ended early".into()))??;
            let waited = step_start.elapsed();
            if batch.len() < 2 {
                // A lone image: every standard deviation of the loss divides by zero.
                metrics.write(&json!({ "kind": "skip", "epoch": epoch, "batch": number, "images": batch.len() }))?;
                state.cursor = Cursor {
                    epoch,
                    batches_done: number + 1,
                };
                progress.inc(1);
                continue;
            }
            let inputs = batch.to_tensors(&s.device, cfg.mean, cfg.std)?;
            let parts = loss(cfg, &s.model.embed(&inputs, true)?, s.k)?;
            let value = parts.total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                let kept = if checkpoint::checkpoint_dir(&run).exists() {
                    format!(
                        "The last good checkpoint is {}",
                        checkpoint::checkpoint_dir(&run).display()
                    )
                } else {
                    "No checkpoint had been written yet".to_string()
                };
                return Err(TrainError::NonFinite {
                    value,
                    epoch,
                    step: state.step + 1,
                    kept,
                });
            }
            let grads = parts.total.backward()?;
            let lr = learning_rate(
                cfg.lr,
                state.step,
                warmup,
                total_steps,
                cfg.schedule == Schedule::Cosine,
            );
            optimizer.step(&grads, lr)?;
            state.step += 1;
            state.cursor = Cursor {
                epoch,
                batches_done: number + 1,
            };
            let seconds = step_start.elapsed().as_secs_f64();
            images += batch.len();
            (loss_sum, n, last_loss) = (loss_sum + f64::from(value), n + 1, value);
            let mut record = json!({
                "kind": "step", "epoch": epoch, "step": state.step, "loss": value, "lr": lr,
                "images_per_s": batch.len() as f64 / seconds, "data_wait": waited.as_secs_f64() / seconds,
            });
            for (name, t) in &parts.terms {
                record[*name] = json!(t.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            }
            metrics.write(&record)?;
            progress.set_message(format!(
                "loss {value:.4} {:.0} img/s",
                batch.len() as f64 / seconds
            ));
            progress.inc(1);
        }
        drop(batches);
        progress.finish_and_clear();
        state.cursor = Cursor {
            epoch: epoch + 1,
            batches_done: 0,
        };
        let last = epoch + 1 == cfg.epochs;
        let mut record = json!({
            "kind": "epoch", "epoch": epoch + 1, "seconds": epoch_start.elapsed().as_secs_f64(),
            "loss": loss_sum / n.max(1) as f64, "steps": state.step,
        });
        if let Some(m) = &monitor {
            if last || (cfg.knn_every > 0 && (epoch + 1) % cfg.knn_every == 0) {
                let acc = m.knn(cfg, &s)?;
                record["knn_top1"] = json!(acc);
                knn_final = Some(acc);
            }
        }
        println!("{record}");
        metrics.write(&record)?;
        if last || (epoch + 1) % cfg.checkpoint_every.max(1) == 0 {
            checkpoint::save(&run, &s.varmap, &optimizer, &state, &config_text)?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let summary = TrainSummary {
        run: run.clone(),
        epochs: cfg.epochs,
        steps: state.step,
        last_loss,
        knn_random_init,
        knn_final,
        seconds,
        images_per_s: images as f64 / seconds.max(1e-9),
    };
    let path = run.join(SUMMARY_FILE);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).expect("summary serialises"),
    )
    .map_err(io(&path))?;
    Ok(summary)
}

/// Fields that fix the batch sequence and the model: a resumed run that changed one of them
/// would not continue the checkpoint's run, so it is refused rather than silently diverging.
fn check_resumable(cfg: &TrainConfig, saved: &str, run: &Path) -> Result<(), TrainError> {
    let saved: TrainConfig = toml::from_str(saved).map_err(|e| TrainError::Checkpoint {
        path: checkpoint::checkpoint_dir(run).join(CONFIG_FILE),
        message: format!("unreadable config: {e}"),
    })?;
    let pairs = [
        ("seed", saved.seed.to_string(), cfg.seed.to_string()),
        ("views", saved.views.clone(), cfg.views.clone()),
        (
            "batch_size",
            saved.batch_size.to_string(),
            cfg.batch_size.to_string(),
        ),
        (
            "fraction",
            saved.fraction.to_string(),
            cfg.fraction.to_string(),
        ),
        ("split", saved.split.clone(), cfg.split.clone()),
        (
            "drop_last",
            saved.drop_last.to_string(),
            cfg.drop_last.to_string(),
        ),
        (
            "backbone",
            format!("{:?}", saved.backbone),
            format!("{:?}", cfg.backbone),
        ),
        ("width", saved.width.to_string(), cfg.width.to_string()),
        ("pdim", saved.pdim.to_string(), cfg.pdim.to_string()),
    ];
    let changed: Vec<String> = pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} {a} -> {b}"))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(TrainError::Setup(format!(
        "cannot resume {}: the checkpoint was trained with other settings ({}); start a new run instead",
        run.display(),
        changed.join(", ")
    )))
}

fn progress_bar(epoch: u64, epochs: u64, steps: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar.set_position(done as u64);
    bar
}
