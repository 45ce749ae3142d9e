//! The kNN monitor `ssl-train` runs between epochs: the training split (or `knn_bank` images of
//! it) as the bank, the run's
//! `eval_split` as queries, clean centre views, k-NN top-1 with the run's `knn_k` and
//! `knn_temperature`. It is handed to [`crate::train::train`] as a [`Monitor`] hook.

use candle_core::Device;

use super::features::{centre_view_loader, evaluation_side, extract};
use super::knn::{bank_fraction, knn_top1};
use crate::loader::{Loader, LoaderError};
use crate::model::SslModel;
use crate::train::{
    train_replicated, Monitor, MonitorError, Replicas, Run, TrainConfig, TrainError, TrainSummary,
};

pub struct KnnMonitor {
    bank: Loader,
    queries: Loader,
    cfg: TrainConfig,
}

impl KnnMonitor {
    /// The monitor for `run`, or `None` when its `eval_split` is off or has no labels.
    pub fn for_run(run: &Run) -> Result<Option<Self>, LoaderError> {
        let cfg = &run.config;
        if cfg.eval_split.is_empty() {
            return Ok(None);
        }
        let data = &run.data;
        let manifest = crate::shard::Manifest::load(data)?;
        let problem = match manifest.splits.get(&cfg.eval_split) {
            None => Some(format!(
                "has no split `{}` (it has {})",
                cfg.eval_split,
                manifest
                    .splits
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(s) if s.unlabeled >= s.rows => {
                Some(format!("split `{}` has no labels", cfg.eval_split))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let message = format!(
                "{}: {problem}, so the kNN monitor cannot score it; name a labelled split with \
                 --set eval_split=NAME, or turn the monitor off with --set eval_split=\"\"",
                data.display()
            );
            // The default names `test`; a dataset without one (an image folder of classes
            // only) still trains, with a word. A split the user named must exist.
            if cfg.eval_split == TrainConfig::default().eval_split {
                eprintln!("ssl-train: kNN monitor off: {message}");
                return Ok(None);
            }
            return Err(LoaderError::Config(message));
        }
        let split = &cfg.loader.split;
        let side = match cfg.eval_size {
            0 => match evaluation_side((data, split), (data, &cfg.eval_split))? {
                Some(side) => side,
                None => run.largest_view()?,
            },
            n => n,
        };
        let threads = cfg.loader.threads;
        let bank_rows = manifest.splits.get(split).map_or(0, |s| s.rows as usize);
        let bank_fraction = bank_fraction(bank_rows, cfg.knn_bank);
        Ok(Some(Self {
            bank: centre_view_loader(data, split, side, threads, bank_fraction)?,
            queries: centre_view_loader(data, &cfg.eval_split, side, threads, 1.0)?,
            cfg: cfg.clone(),
        }))
    }
}

impl Monitor for KnnMonitor {
    fn metric(&self) -> &'static str {
        "knn_top1"
    }

    fn measure(&mut self, model: &SslModel, device: &Device) -> Result<f64, MonitorError> {
        let (mean, std) = (self.cfg.mean, self.cfg.std);
        let mut bank = extract(&model.backbone, &self.bank, device, mean, std)?;
        let mut queries = extract(&model.backbone, &self.queries, device, mean, std)?;
        bank.normalise();
        queries.normalise();
        Ok(knn_top1(
            &bank,
            &queries,
            self.cfg.knn_k,
            self.cfg.knn_temperature,
        ))
    }
}

/// Trains `run` with the kNN monitor, as `ssl-train` does.
pub fn train_with_knn(run: &Run, command: &[String]) -> Result<TrainSummary, TrainError> {
    train_with_knn_replicated(run, command, Replicas::default())
}

/// [`train_with_knn`] as one rank of a data-parallel group: rank 0 monitors.
pub fn train_with_knn_replicated(
    run: &Run,
    command: &[String],
    replicas: Replicas,
) -> Result<TrainSummary, TrainError> {
    let mut monitor = match replicas.primary() {
        true => KnnMonitor::for_run(run)?,
        false => None,
    };
    train_replicated(
        run,
        command,
        monitor.as_mut().map(|m| m as &mut dyn Monitor),
        replicas,
    )
}
