//! Points another sweep already trained. The shipped sweeps overlap by design (the views sweep's
//! 2, 4 and 8 view runs are the fraction sweep's 100% points, hours of CPU each), and a run is
//! fixed by its resolved config: a point whose config equals a finished run's in everything but
//! `out` would retrain the same weights step for step. `ssl-sweep run --reuse DIR` copies such a
//! run into the point's directory instead; the sweep then probes the copy as its own.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{io, SweepError};
use crate::eval::EVAL_FILE;
use crate::train::{checkpoint, TrainConfig, CONFIG_FILE, SUMMARY_FILE};

/// Written into a reused point: where its training came from.
pub const REUSED_FILE: &str = "reused.json";

/// The first finished run under `sources` (sweep directories or directories of run directories)
/// trained with `cfg` but for `out`, in name order, that can still be probed or has been.
pub fn find(cfg: &TrainConfig, sources: &[PathBuf]) -> Result<Option<PathBuf>, SweepError> {
    let wanted = comparable(cfg);
    for source in sources {
        let runs = match source.join(super::RUNS_DIR) {
            runs if runs.is_dir() => runs,
            _ => source.clone(),
        };
        let mut candidates = std::fs::read_dir(&runs)
            .map_err(io(&runs))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|run| run.join(SUMMARY_FILE).is_file())
            .filter(|run| checkpoint::checkpoint_dir(run).exists() || run.join(EVAL_FILE).is_file())
            .collect::<Vec<_>>();
        candidates.sort();
        for run in candidates {
            if trained_config(&run).is_some_and(|saved| comparable(&saved) == wanted) {
                return Ok(Some(run));
            }
        }
    }
    Ok(None)
}

/// The config as TOML with `out` cleared: what decides the training.
fn comparable(cfg: &TrainConfig) -> String {
    let mut cfg = cfg.clone();
    cfg.out = PathBuf::new();
    toml::to_string(&cfg).expect("config serialises")
}

/// A run's resolved config, read with today's defaults for keys it predates; `None` when it
/// no longer parses (a run of an older version is then simply not a match).
fn trained_config(run: &Path) -> Option<TrainConfig> {
    let path = run.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    crate::config::from_toml(&text, &path.display().to_string()).ok()
}

/// Copies the run `from` into `to` (a temporary name, then a rename), with `cfg` as its
/// `config.toml`. Its `eval.json` is dropped, so that the point's own probe names its directory,
/// unless `from` has no checkpoint to probe (a point carried through git by
/// tools/sweep-carry.sh): that evaluation of the same weights under the same config stays.
pub fn copy_run(from: &Path, to: &Path, cfg: &TrainConfig) -> Result<(), SweepError> {
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let partial = to.with_file_name(format!(".{name}.reuse-partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    copy_tree(from, &partial)?;
    let eval = partial.join(EVAL_FILE);
    if eval.exists() && checkpoint::checkpoint_dir(from).exists() {
        std::fs::remove_file(&eval).map_err(io(&eval))?;
    }
    let config = partial.join(CONFIG_FILE);
    let text = toml::to_string_pretty(cfg).expect("config serialises");
    std::fs::write(&config, text).map_err(io(&config))?;
    let note = partial.join(REUSED_FILE);
    let record = json!({ "from": from, "because": "same resolved ssl-train config but for out" });
    std::fs::write(&note, format!("{record:#}\n")).map_err(io(&note))?;
    if to.exists() {
        // A point stopped before its first checkpoint: nothing in it to keep.
        std::fs::remove_dir_all(to).map_err(io(to))?;
    }
    std::fs::rename(&partial, to).map_err(io(to))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), SweepError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let path = entry.map_err(io(from))?.path();
        let name = path.file_name().unwrap_or_default();
        if name.to_string_lossy().ends_with(".partial") {
            // A temporary file a killed write left behind (see atomic_file): not the run's.
            continue;
        }
        let dest = to.join(name);
        match path.is_dir() {
            true => copy_tree(&path, &dest)?,
            false => {
                std::fs::copy(&path, &dest).map_err(io(&path))?;
            }
        }
    }
    Ok(())
}
