//! Checkpoints: `<run>/checkpoint/` holds `model.safetensors` (every VarMap entry, BatchNorm
//! running statistics included), `optimizer.safetensors` (Adam moments) and `state.json` (where
//! to resume: the sampler cursor, the optimiser step, the seed). A new checkpoint is written to
//! `checkpoint.partial/` and renamed over the old one only when complete, so a crash mid-write
//! keeps the last good one. `SHA256SUMS` (as `sha256sum` writes it) covers the other files and is
//! checked before a checkpoint is read, so a damaged or altered file is named instead of resumed.

use std::fs;
use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::optim::Optimizer;
use super::{TrainError, CONFIG_FILE};
use crate::loader::Cursor;

pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The weights file inside the checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";
const SUMS_FILE: &str = "SHA256SUMS";

/// Where training stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// The next batch to train on.
    pub cursor: Cursor,
    /// Optimiser steps taken so far.
    pub step: u64,
    pub seed: u64,
    /// SHA-256 of the dataset's `manifest.json` (shard checksums, counts, classes): a resume on
    /// another dataset at the same path is refused. Absent in checkpoints of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_manifest_sha256: Option<String>,
    /// Ranks that trained it (1 in checkpoints of older versions): `batch_size` is per rank, so
    /// another world size would train on other batches.
    #[serde(default = "one")]
    pub world: usize,
}

fn one() -> usize {
    1
}

pub fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join(CHECKPOINT_DIR)
}

fn old_dir(run: &Path) -> PathBuf {
    run.join(format!("{CHECKPOINT_DIR}.old"))
}

/// Writes a checkpoint of `varmap` and `optimizer` at `state`, with the run's resolved config
/// (`config_toml`), into `run/checkpoint/`. Weights that are not all finite are refused, so the
/// last good checkpoint is never replaced by a diverged one.
pub fn save(
    run: &Path,
    varmap: &VarMap,
    optimizer: &Optimizer,
    state: &TrainState,
    config_toml: &str,
) -> Result<(), TrainError> {
    let dir = checkpoint_dir(run);
    let partial = run.join(format!("{CHECKPOINT_DIR}.partial"));
    let old = old_dir(run);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| TrainError::Io { path, error }
    };
    if let Some(name) = first_non_finite(varmap)? {
        return Err(TrainError::Checkpoint {
            path: dir,
            message: format!(
                "not written at step {}: `{name}` holds NaN or inf; the last good checkpoint is kept",
                state.step
            ),
        });
    }
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    let candle = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Checkpoint {
            path,
            message: format!("{source}"),
        }
    };
    varmap
        .save(partial.join(MODEL_FILE))
        .map_err(candle(&partial.join(MODEL_FILE)))?;
    optimizer
        .save(&partial.join(OPTIMIZER_FILE))
        .map_err(candle(&partial.join(OPTIMIZER_FILE)))?;
    let state_path = partial.join(STATE_FILE);
    fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(io(&state_path))?;
    let config_path = partial.join(CONFIG_FILE);
    fs::write(&config_path, config_toml).map_err(io(&config_path))?;
    let mut sums = String::new();
    for f in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE] {
        fs::File::open(partial.join(f))
            .and_then(|f| f.sync_all())
            .map_err(io(&partial.join(f)))?;
        sums.push_str(&format!("{}  {f}\n", sha256_file(&partial.join(f))?));
    }
    let sums_path = partial.join(SUMS_FILE);
    fs::write(&sums_path, sums)
        .and_then(|()| fs::File::open(&sums_path)?.sync_all())
        .map_err(io(&sums_path))?;
    if dir.exists() {
        let _ = fs::remove_dir_all(&old);
        fs::rename(&dir, &old).map_err(io(&dir))?;
    }
    fs::rename(&partial, &dir).map_err(io(&dir))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, TrainError> {
    use sha2::{Digest, Sha256};
    let mut file = fs::File::open(path).map_err(|error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).map_err(|error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(hex::encode(hash.finalize()))
}

/// Checks every file of `run/checkpoint/` against its `SHA256SUMS` (checkpoints written before
/// sums were recorded have none and are read as they are).
pub fn verify(run: &Path) -> Result<(), TrainError> {
    recover(run)?;
    let dir = checkpoint_dir(run);
    let sums_path = dir.join(SUMS_FILE);
    let Ok(sums) = fs::read_to_string(&sums_path) else {
        return Ok(());
    };
    for line in sums.lines() {
        let Some((want, name)) = line.split_once("  ") else {
            return Err(TrainError::Checkpoint {
                path: sums_path,
                message: format!("unreadable line `{line}`"),
            });
        };
        if name.contains('/') || name.contains("..") {
            return Err(TrainError::Checkpoint {
                path: sums_path,
                message: format!("names `{name}`, which is not a file of the checkpoint"),
            });
        }
        let path = dir.join(name);
        let got = sha256_file(&path)?;
        if got != want {
            return Err(TrainError::Checkpoint {
                path,
                message: format!(
                    "sha256 {got}, but {SUMS_FILE} recorded {want}: the file changed after it \
                     was written (damaged or edited); the checkpoint cannot be trusted"
                ),
            });
        }
    }
    Ok(())
}

/// The name of a variable of `varmap` with a NaN or infinite value, if any.
fn first_non_finite(varmap: &VarMap) -> Result<Option<String>, TrainError> {
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter() {
        let sum = var
            .as_tensor()
            .abs()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        if !sum.is_finite() {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// A crash between the two renames of [`save`] leaves only `checkpoint.old/`, complete: move it
/// back before reading.
fn recover(run: &Path) -> Result<(), TrainError> {
    let (dir, old) = (checkpoint_dir(run), old_dir(run));
    if !dir.exists() && old.join(STATE_FILE).is_file() {
        fs::rename(&old, &dir).map_err(|error| TrainError::Io { path: old, error })?;
    }
    Ok(())
}

/// The resolved config the checkpoint was trained with (`run/checkpoint/config.toml`).
pub fn load_config_text(run: &Path) -> Result<String, TrainError> {
    recover(run)?;
    let path = checkpoint_dir(run).join(CONFIG_FILE);
    fs::read_to_string(&path).map_err(|error| TrainError::Io { path, error })
}

/// Reads `run/checkpoint/state.json`.
pub fn load_state(run: &Path) -> Result<TrainState, TrainError> {
    verify(run)?;
    let path = checkpoint_dir(run).join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|_| TrainError::Checkpoint {
        path: path.clone(),
        message: "no checkpoint here (expected checkpoint/state.json); is this a run directory of ssl-train?".into(),
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        message: e.to_string(),
    })
}

/// Loads weights and optimiser moments of `run/checkpoint/` into an already built model.
pub fn load_weights(
    run: &Path,
    varmap: &mut VarMap,
    optimizer: Option<(&mut Optimizer, u64)>,
) -> Result<(), TrainError> {
    verify(run)?;
    let dir = checkpoint_dir(run);
    let model = dir.join(MODEL_FILE);
    varmap.load(&model).map_err(|e| TrainError::Checkpoint {
        path: model.clone(),
        message: format!("{e} (was it trained with the same backbone, width and pdim?)"),
    })?;
    if let Some((opt, step)) = optimizer {
        let path = dir.join(OPTIMIZER_FILE);
        opt.load(&path, step).map_err(|e| TrainError::Checkpoint {
            path,
            message: e.to_string(),
        })?;
    }
    Ok(())
}
