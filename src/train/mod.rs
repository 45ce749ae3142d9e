//! `ssl-train`: pretrain a backbone + projector on K-view batches with the efficient multi-view
//! loss. The loop streams batches from the loader, writes `metrics.jsonl`, checkpoints every
//! `checkpoint_every` epochs (atomically; `--resume` continues with the same batches and loss
//! sequence), monitors kNN accuracy, and stops on a non-finite loss keeping the last good
//! checkpoint.

pub mod checkpoint;
pub mod config;
pub mod curves;
pub mod dump;
pub mod metrics;
pub mod optim;
pub mod replicas;
pub mod run;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::Digest;

use crate::config::ConfigError;
use crate::loader::{Cursor, Loader, LoaderError};
use crate::model::SslModel;
use crate::pack::PackError;
use checkpoint::TrainState;
pub use config::{OptimizerKind, Schedule, TrainConfig};
use metrics::Metrics;
use optim::{learning_rate, Optimizer};
pub use replicas::Replicas;
pub use run::{Run, RunArgs};

pub const CONFIG_FILE: &str = "config.toml";
pub const SUMMARY_FILE: &str = "summary.json";

/// Why a monitor could not measure; the monitor names what failed.
pub type MonitorError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("model: {0}")]
    Candle(candle_core::Error),
    #[error("device `{name}`: {error}")]
    Device {
        name: String,
        error: Box<candle_core::Error>,
    },
    #[error(
        "loss is {value} at epoch {epoch}, step {step}; training stopped. {kept} (try a lower lr)"
    )]
    NonFinite {
        value: f32,
        epoch: u64,
        step: u64,
        kept: String,
    },
    #[error("{0} already holds a run; continue it with --resume {0}, or choose another --out", .dir.display())]
    RunExists { dir: PathBuf },
    #[error("cannot resume {}: the checkpoint was trained with other settings ({changes}); start a new run instead", .run.display())]
    NotResumable { run: PathBuf, changes: String },
    #[error("the loader ended at batch {batch} of epoch {epoch}, before the epoch's {expected}")]
    LoaderEnded {
        epoch: u64,
        batch: usize,
        expected: usize,
    },
    #[error(transparent)]
    Plot(Box<crate::plot::PlotError>),
    #[error("{metric} monitor: {error}")]
    Monitor {
        metric: &'static str,
        error: MonitorError,
    },
}

impl From<candle_core::Error> for TrainError {
    fn from(error: candle_core::Error) -> Self {
        Self::Candle(error)
    }
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
    /// Wall time of the whole run, evaluation included.
    pub seconds: f64,
    /// Time in training steps alone (waiting for data included, evaluation and checkpoints not).
    pub train_seconds: f64,
    /// Training speed: images over `train_seconds`.
    pub images_per_s: f64,
}

impl std::fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "done: {} epochs, {} steps in {:.0}s ({:.0}s training at {:.0} images/s, the rest \
             evaluation and checkpoints), last loss {:.4}; run in {}",
            self.epochs,
            self.steps,
            self.seconds,
            self.train_seconds,
            self.images_per_s,
            self.last_loss,
            self.run.display()
        )
    }
}

/// Measures the encoder between epochs; `eval`'s kNN monitor is one. The loop decides when
/// (before the first step, every `knn_every` epochs, after the last), the monitor how.
pub trait Monitor {
    /// The metric's name in `metrics.jsonl`, e.g. `knn_top1`.
    fn metric(&self) -> &'static str;
    fn measure(&mut self, model: &SslModel, device: &Device) -> Result<f64, MonitorError>;
}

/// Everything built from the config that the loop uses.
struct Setup {
    loader: Loader,
    device: Device,
    varmap: VarMap,
    model: SslModel,
    k: usize,
}

fn setup(run: &Run, replicas: &Replicas) -> Result<Setup, TrainError> {
    let cfg = &run.config;
    let loader = Loader::from_config(&crate::loader::LoaderConfig {
        data: run.data.clone(),
        rank: replicas.rank(),
        world: replicas.world(),
        ..cfg.loader.clone()
    })?;
    let k = loader.views().views();
    let device = crate::model::device(&cfg.device).map_err(|error| TrainError::Device {
        name: cfg.device.clone(),
        error: Box::new(error),
    })?;
    let side = loader.views().largest_side();
    let (varmap, model) = SslModel::seeded(&cfg.model, side, cfg.loader.seed, &device)?;
    Ok(Setup {
        loader,
        device,
        varmap,
        model,
        k,
    })
}

/// Batches an epoch trains on: all of them, or `max_steps_per_epoch` when set.
fn steps_per_epoch(cfg: &TrainConfig, loader: &Loader) -> usize {
    match cfg.max_steps_per_epoch {
        0 => loader.batches_per_epoch(),
        n => n.min(loader.batches_per_epoch()),
    }
}

fn measure(monitor: &mut dyn Monitor, s: &Setup) -> Result<f64, TrainError> {
    monitor
        .measure(&s.model, &s.device)
        .map_err(|error| TrainError::Monitor {
            metric: monitor.metric(),
            error,
        })
}

/// Trains `run` in its directory; with `run.resume`, continues from the checkpoint there.
/// `monitor` (e.g. `eval::KnnMonitor`) measures the encoder before the first step and between
/// epochs; training itself knows nothing of how.
pub fn train(
    run: &Run,
    command: &[String],
    monitor: Option<&mut dyn Monitor>,
) -> Result<TrainSummary, TrainError> {
    train_replicated(run, command, monitor, Replicas::default())
}

/// [`train`] as one rank of a data-parallel group (see [`replicas`]): every rank calls it with
/// the same run; rank 0 writes the run's files and measures with `monitor`.
pub fn train_replicated(
    run: &Run,
    command: &[String],
    mut monitor: Option<&mut dyn Monitor>,
    replicas: Replicas,
) -> Result<TrainSummary, TrainError> {
    if !replicas.primary() {
        monitor = None;
    }
    let mut trainer = Trainer::start(run, command, replicas)?;
    let mut knn_random_init = None;
    if !run.resume {
        if let Some(m) = monitor.as_deref_mut() {
            let value = measure(m, &trainer.s)?;
            knn_random_init = Some(value);
            let record =
                json!({ "kind": "epoch", "epoch": 0, m.metric(): value, "note": "random init" });
            println!("{record}");
            trainer.metrics.write(&record)?;
        }
        trainer.replicas.barrier()?;
    }
    let start = Instant::now();
    let mut knn_final = None;
    for epoch in trainer.state.cursor.epoch..run.config.epochs {
        // A reborrow per epoch (the cast shortens the trait object's lifetime to this call).
        let measured = trainer.epoch(
            epoch,
            monitor.as_mut().map(|m| &mut **m as &mut dyn Monitor),
        )?;
        knn_final = measured.or(knn_final);
    }
    let seconds = start.elapsed().as_secs_f64();
    let summary = TrainSummary {
        run: run.dir().to_path_buf(),
        epochs: run.config.epochs,
        steps: trainer.state.step,
        last_loss: trainer.last_loss,
        knn_random_init,
        knn_final,
        seconds,
        train_seconds: trainer.train_seconds,
        images_per_s: trainer.images as f64 / trainer.train_seconds.max(1e-9),
    };
    if trainer.replicas.primary() {
        let path = run.dir().join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
        crate::atomic_file::write(&path, text).map_err(io(&path))?;
    }
    trainer.replicas.barrier()?;
    Ok(summary)
}

/// An `io::Error` on `path` as a [`TrainError`].
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |error| TrainError::Io { path, error }
}

/// The loop's state between steps.
struct Trainer<'a> {
    run: &'a Run,
    s: Setup,
    replicas: Replicas,
    optimizer: Optimizer,
    state: TrainState,
    metrics: Metrics,
    config_text: String,
    steps_per_epoch: usize,
    warmup: u64,
    images: usize,
    train_seconds: f64,
    last_loss: f32,
}

impl<'a> Trainer<'a> {
    /// Checks the run directory (and a resume's checkpoint), builds the model, loader and
    /// optimiser, and writes the resolved config and the metrics' start record.
    fn start(run: &'a Run, command: &[String], mut replicas: Replicas) -> Result<Self, TrainError> {
        let (cfg, dir) = (&run.config, run.dir());
        let primary = replicas.primary();
        if primary {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        if !run.resume && checkpoint::checkpoint_dir(dir).exists() {
            return Err(TrainError::RunExists {
                dir: dir.to_path_buf(),
            });
        }
        if run.resume {
            run::check_resumable(cfg, dir)?;
        }
        crate::model::sync_batch_norm(cfg.sync_bn.then(|| replicas.group().clone()));
        let mut s = setup(run, &replicas)?;
        let mut optimizer = Optimizer::new(&s.varmap, cfg.optimizer, cfg.weight_decay)?;
        let manifest = run.data.join(crate::shard::manifest::MANIFEST_FILE);
        let data_sha256 = std::fs::read(&manifest)
            .map(|bytes| hex::encode(sha2::Sha256::digest(bytes)))
            .map_err(io(&manifest))?;
        let mut state = TrainState {
            cursor: Cursor::default(),
            step: 0,
            seed: cfg.loader.seed,
            data_manifest_sha256: Some(data_sha256.clone()),
            world: replicas.world(),
        };
        if run.resume {
            state = checkpoint::load_state(dir)?;
            if state.world != replicas.world() {
                return Err(TrainError::NotResumable {
                    run: dir.to_path_buf(),
                    changes: format!(
                        "world size {} -> {} (batch_size is per rank, so the batches would \
                         differ); resume with --nproc {}",
                        state.world,
                        replicas.world(),
                        state.world
                    ),
                });
            }
            if state
                .data_manifest_sha256
                .as_ref()
                .is_some_and(|d| *d != data_sha256)
            {
                return Err(TrainError::NotResumable {
                    run: dir.to_path_buf(),
                    changes: format!(
                        "data: {} is not the dataset the checkpoint was trained on (its \
                         manifest changed)",
                        run.data.display()
                    ),
                });
            }
            checkpoint::load_weights(dir, &mut s.varmap, Some((&mut optimizer, state.step)))?;
        }
        replicas.broadcast_weights(&s.varmap)?;
        let config_text = toml::to_string_pretty(cfg).expect("config serialises");
        // A resume writes its config with its first checkpoint, so one that fails before
        // then leaves the run's config as it was.
        if !run.resume && primary {
            let config_path = dir.join(CONFIG_FILE);
            crate::atomic_file::write(&config_path, &config_text).map_err(io(&config_path))?;
        }
        let mut metrics = match (primary, run.resume) {
            (false, _) => Metrics::discard(),
            (true, true) => Metrics::resume(dir, state.step, state.cursor.epoch)?,
            (true, false) => Metrics::open(dir, false)?,
        };
        metrics.write(&json!({
            "kind": "start", "command": command, "resume": run.resume, "config": cfg,
            "world": replicas.world(), "engine": replicas.group().engine(),
            "host": metrics::host(),
        }))?;
        let steps_per_epoch = steps_per_epoch(cfg, &s.loader);
        Ok(Self {
            run,
            replicas,
            optimizer,
            state,
            metrics,
            config_text,
            steps_per_epoch,
            warmup: (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64,
            images: 0,
            train_seconds: 0.0,
            last_loss: f32::NAN,
            s,
        })
    }

    /// Trains one epoch (the rest of it after a resume), measures with `monitor` when due,
    /// records the epoch and checkpoints when due; returns the measurement, if one was taken.
    fn epoch(
        &mut self,
        epoch: u64,
        monitor: Option<&mut dyn Monitor>,
    ) -> Result<Option<f64>, TrainError> {
        let cfg = &self.run.config;
        let epoch_start = Instant::now();
        let first = match epoch == self.state.cursor.epoch {
            true => self.state.cursor.batches_done,
            false => 0,
        };
        let progress = match self.replicas.primary() {
            true => progress_bar(epoch, cfg.epochs, self.steps_per_epoch, first),
            false => ProgressBar::hidden(),
        };
        let mut batches = self.s.loader.iter_from(Cursor {
            epoch,
            batches_done: first,
        })?;
        let (mut loss_sum, mut n) = (0f64, 0usize);
        for number in first..self.steps_per_epoch {
            let step_start = Instant::now();
            let batch = batches.next().ok_or(TrainError::LoaderEnded {
                epoch,
                batch: number,
                expected: self.steps_per_epoch,
            })??;
            let waited = step_start.elapsed().as_secs_f64();
            if let Some(value) = self.step(&batch, epoch, number, waited, &progress)? {
                (loss_sum, n) = (loss_sum + f64::from(value), n + 1);
            }
            self.state.cursor = Cursor {
                epoch,
                batches_done: number + 1,
            };
            progress.inc(1);
        }
        drop(batches);
        progress.finish_and_clear();
        self.state.cursor = Cursor {
            epoch: epoch + 1,
            batches_done: 0,
        };
        let last = epoch + 1 == cfg.epochs;
        let mut record = json!({
            "kind": "epoch", "epoch": epoch + 1, "seconds": epoch_start.elapsed().as_secs_f64(),
            "loss": loss_sum / n.max(1) as f64, "steps": self.state.step,
        });
        let due = last || (cfg.knn_every > 0 && (epoch + 1).is_multiple_of(cfg.knn_every));
        let mut measured = None;
        if let (Some(m), true) = (monitor, due) {
            let value = measure(m, &self.s)?;
            record[m.metric()] = json!(value);
            measured = Some(value);
        }
        if !self.replicas.primary() {
            return Ok(measured);
        }
        println!("{record}");
        self.metrics.write(&record)?;
        // A picture that cannot be drawn is no reason to stop training.
        if let Err(e) = curves::draw(self.run.dir()) {
            eprintln!("warning: {}: {e}", curves::CURVES_FILE);
        }
        if last || (epoch + 1).is_multiple_of(cfg.checkpoint_every.max(1)) {
            let (dir, s) = (self.run.dir(), &self.s);
            checkpoint::save(
                dir,
                &s.varmap,
                &self.optimizer,
                &self.state,
                &self.config_text,
            )?;
            if self.run.resume {
                let path = dir.join(CONFIG_FILE);
                crate::atomic_file::write(&path, &self.config_text).map_err(io(&path))?;
            }
        }
        Ok(measured)
    }

    /// One optimiser step on `batch`; returns its loss, or `None` for a skipped lone image.
    fn step(
        &mut self,
        batch: &crate::loader::Batch,
        epoch: u64,
        number: usize,
        waited: f64,
        progress: &ProgressBar,
    ) -> Result<Option<f32>, TrainError> {
        let cfg = &self.run.config;
        let step_start = Instant::now();
        self.replicas.start_step();
        let counts = self.replicas.counts(batch.len())?;
        let images: usize = counts.iter().sum();
        if images < 2 || counts.contains(&0) {
            // A lone image: every standard deviation of the loss divides by zero. (A rank
            // without a share of a tiny last batch would have nothing to normalise either.)
            let record =
                json!({ "kind": "skip", "epoch": epoch, "batch": number, "images": images });
            self.metrics.write(&record)?;
            return Ok(None);
        }
        let inputs = batch.to_tensors(&self.s.device, cfg.mean, cfg.std)?;
        let local = self.s.model.embed(&inputs, true)?;
        let z = self.replicas.gather_embeddings(&local, self.s.k, &counts)?;
        let parts = cfg.loss.compute(&z, self.s.k)?;
        let value = parts.total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(self.non_finite(value, epoch));
        }
        let mut grads = parts.total.backward()?;
        self.replicas
            .reduce_gradients(&mut grads, self.optimizer.parameters())?;
        let total_steps = self.steps_per_epoch as u64 * cfg.epochs;
        let cosine = cfg.schedule == Schedule::Cosine;
        let lr = learning_rate(cfg.lr, self.state.step, self.warmup, total_steps, cosine);
        self.optimizer.step(&grads, lr)?;
        self.state.step += 1;
        // The step's time includes the wait for its batch, as a user's wall clock does.
        let seconds = step_start.elapsed().as_secs_f64() + waited;
        self.images += images;
        self.train_seconds += seconds;
        self.last_loss = value;
        let mut record = json!({
            "kind": "step", "epoch": epoch, "step": self.state.step, "loss": value, "lr": lr,
            "images_per_s": images as f64 / seconds, "data_wait": waited / seconds,
        });
        if self.replicas.world() > 1 {
            record["comm_seconds"] = json!(self.replicas.comm_seconds);
            record["comm_bytes"] = json!(self.replicas.comm_bytes);
        }
        for (name, t) in &parts.terms {
            record[*name] = json!(t.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        }
        self.metrics.write(&record)?;
        let rate = images as f64 / seconds;
        progress.set_message(format!("loss {value:.4} {rate:.0} img/s"));
        Ok(Some(value))
    }

    fn non_finite(&self, value: f32, epoch: u64) -> TrainError {
        let dir = checkpoint::checkpoint_dir(self.run.dir());
        let kept = match dir.exists() {
            true => format!("The last good checkpoint is {}", dir.display()),
            false => "No checkpoint had been written yet".to_string(),
        };
        TrainError::NonFinite {
            value,
            epoch,
            step: self.state.step + 1,
            kept,
        }
    }
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
