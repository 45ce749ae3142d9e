//! `ssl-sweep`: the paper's experiments as grids of ordinary `ssl-train` runs. A sweep file
//! ([`grid`]) names a base config (any `ssl-train` keys) and axes (a key and its values); every
//! point of their product is a run directory under `DIR/runs/`, trained with the kNN monitor and
//! then probed linearly. `[[exclude]]` entries leave out the points matching all their axis
//! values (as a GitHub Actions matrix does), for a grid that is not a full product. A finished
//! point is skipped, an interrupted one resumed from its checkpoint, so a sweep may span several
//! sessions. A new point that another sweep already trained with the same config is copied from
//! there ([`reuse`]) rather than retrained. A grid that only gains points, or drops points that
//! never started, keeps its directory. [`report()`] turns the run directories into
//! `results.csv`, `curves.csv`, `summary.csv` ([`summary`]) and the figures.
//!
//! ```toml
//! title = "projector dimension against λ"
//! [base]
//! data = "target/packed/cifar10"
//! backbone = "conv4"
//! epochs = 10
//! [[axes]]
//! key = "pdim"
//! values = [64, 256, 1024]
//! [[axes]]
//! key = "seed"
//! values = [0, 1]
//! [[exclude]]
//! pdim = 1024
//! seed = 1
//! ```

pub mod figures;
pub mod grid;
pub mod report;
pub mod reuse;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::eval::{evaluate, monitor::train_with_knn, EvalError, EvalRequest, Protocol, EVAL_FILE};
use crate::train::{checkpoint, Run, TrainError, SUMMARY_FILE};

pub use grid::{value_text, Axis, Point, SweepConfig};
pub use report::{report, SweepResults};

/// The sweep file as written into the sweep directory.
pub const SWEEP_FILE: &str = "sweep.toml";
pub const RUNS_DIR: &str = "runs";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("point {point}: {error}")]
    Train {
        point: String,
        error: Box<TrainError>,
    },
    #[error("point {point}: linear probe: {error}")]
    Eval {
        point: String,
        error: Box<EvalError>,
    },
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError {
    let path = path.to_path_buf();
    move |error| SweepError::Io { path, error }
}

pub fn run_dir(dir: &Path, point: &Point) -> PathBuf {
    dir.join(RUNS_DIR).join(point.name())
}

/// Where a point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointState {
    New,
    /// A checkpoint but no summary: stopped mid-run.
    Interrupted,
    /// Trained, not yet probed.
    Trained,
    Done,
}

pub fn point_state(sweep: &SweepConfig, run: &Path) -> PointState {
    let trained = run.join(SUMMARY_FILE).is_file();
    match (trained, run.join(EVAL_FILE).is_file() || !sweep.probe) {
        (true, true) => PointState::Done,
        (true, false) => PointState::Trained,
        (false, _) if checkpoint::checkpoint_dir(run).exists() => PointState::Interrupted,
        (false, _) => PointState::New,
    }
}

/// Every point of a sweep with where it stands: what `ssl-sweep run --dry-run` prints.
pub struct Plan {
    pub dir: PathBuf,
    /// Each point, its state and, for a new one, the finished run it would be copied from.
    pub points: Vec<(Point, PointState, Option<PathBuf>)>,
}

/// Where each point of `sweep` in `dir` stands; every point's config is checked, nothing written.
pub fn plan(dir: &Path, sweep: &SweepConfig, reuse: &[PathBuf]) -> Result<Plan, SweepError> {
    let points = sweep
        .points()
        .into_iter()
        .map(|point| {
            let cfg = sweep.point_config(&point, dir)?;
            let state = point_state(sweep, &run_dir(dir, &point));
            let from = match state {
                PointState::New => reuse::find(&cfg, reuse)?,
                _ => None,
            };
            Ok((point, state, from))
        })
        .collect::<Result<_, SweepError>>()?;
    Ok(Plan {
        dir: dir.to_path_buf(),
        points,
    })
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.points.len();
        for (i, (point, state, from)) in self.points.iter().enumerate() {
            write!(f, "point {}/{n} {}: {state:?}", i + 1, point.name())?;
            match from {
                Some(from) => writeln!(f, " (would reuse {})", from.display())?,
                None => writeln!(f)?,
            }
        }
        let done = self
            .points
            .iter()
            .filter(|(_, s, _)| *s == PointState::Done)
            .count();
        writeln!(f, "{done} of {n} points done in {}", self.dir.display())
    }
}

/// Whether `sweep` in `dir` only reshapes the sweep stored as `existing`: same base and probe,
/// every stored point that has a run directory still in the grid. Widening an axis after seeing
/// the optimum at its edge, or excluding points not yet started, then keeps the finished runs
/// instead of asking for a new directory; a started run is never hidden from the report.
fn grows(existing: &str, sweep: &SweepConfig, dir: &Path) -> bool {
    let Ok(old) = toml::from_str::<SweepConfig>(existing) else {
        return false;
    };
    let new_points = sweep.points();
    let kept = |p: &Point| new_points.contains(p) || !run_dir(dir, p).exists();
    old.base == sweep.base && old.probe == sweep.probe && old.points().iter().all(kept)
}

fn write_atomic(file: &Path, text: &str) -> Result<(), SweepError> {
    let partial = file.with_extension("toml.partial");
    std::fs::write(&partial, text).map_err(io(&partial))?;
    std::fs::rename(&partial, file).map_err(io(file))
}

/// Runs every point of `sweep` in `dir` that is not done yet, then writes the report. A new
/// point that a finished run under `reuse` (other sweep directories) trained with the same
/// config is copied from there and only probed.
pub fn run(dir: &Path, sweep: &SweepConfig, reuse: &[PathBuf]) -> Result<SweepResults, SweepError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file = dir.join(SWEEP_FILE);
    let text = toml::to_string_pretty(sweep).expect("a sweep serialises");
    match std::fs::read_to_string(&file) {
        Ok(existing) if existing == text => {}
        Ok(existing) if grows(&existing, sweep, dir) => write_atomic(&file, &text)?,
        Ok(_) => {
            return Err(SweepError::Invalid {
                path: file,
                problem: "this directory holds another sweep (its base differs, or this grid \
                          leaves out a point that has a run directory); choose another --dir \
                          (or remove it)"
                    .into(),
            })
        }
        Err(_) => write_atomic(&file, &text)?,
    }
    let planned = plan(dir, sweep, reuse)?.points;
    let fresh_after = |i: usize| {
        let fresh = planned[i..]
            .iter()
            .filter(|(_, s, from)| *s == PointState::New && from.is_none());
        fresh.count()
    };
    let mut pace = Pace::default();
    for (i, (point, state, from)) in planned.iter().enumerate() {
        let run_dir = run_dir(dir, point);
        let mut state = *state;
        if let Some(from) = from {
            reuse::copy_run(from, &run_dir, &sweep.point_config(point, dir)?)?;
            state = point_state(sweep, &run_dir);
        }
        if state != PointState::Done {
            let started = Instant::now();
            run_point(dir, sweep, point, state)?;
            if from.is_none() && state == PointState::New {
                pace.add(started.elapsed());
            }
        }
        let what = match (from, state) {
            (Some(from), _) => format!("reused {}", from.display()),
            (None, PointState::Done) => "already done".into(),
            (None, _) => "done".into(),
        };
        println!(
            "point {}/{} {}: {what}{}",
            i + 1,
            planned.len(),
            point.name(),
            pace.time_left(fresh_after(i + 1))
        );
    }
    report(dir)
}

/// The time a sweep has left: the mean time of the points this invocation trained from the
/// start, times the points still to train from the start. A resumed, reused or only-probed point
/// costs a fraction of one, so it neither sets the pace nor counts as one left.
#[derive(Default)]
struct Pace {
    seconds: f64,
    points: u32,
}

impl Pace {
    fn add(&mut self, took: std::time::Duration) {
        self.seconds += took.as_secs_f64();
        self.points += 1;
    }

    /// `, about M min left` for `left` points to train; nothing before the first estimate.
    fn time_left(&self, left: usize) -> String {
        if self.points == 0 || left == 0 {
            return String::new();
        }
        let minutes = self.seconds / f64::from(self.points) * left as f64 / 60.0;
        format!(", about {minutes:.0} min left")
    }
}

fn run_point(
    dir: &Path,
    sweep: &SweepConfig,
    point: &Point,
    state: PointState,
) -> Result<(), SweepError> {
    let name = point.name();
    let cfg = sweep.point_config(point, dir)?;
    let train_err = |error: TrainError| SweepError::Train {
        point: name.clone(),
        error: Box::new(error),
    };
    let run = Run::new(cfg, state == PointState::Interrupted).map_err(train_err)?;
    if matches!(state, PointState::New | PointState::Interrupted) {
        if state == PointState::New && run.dir().exists() {
            // Stopped before its first checkpoint: nothing to keep.
            std::fs::remove_dir_all(run.dir()).map_err(io(run.dir()))?;
        }
        let command = vec!["ssl-sweep".to_string(), format!("point {name}")];
        train_with_knn(&run, &command).map_err(train_err)?;
    }
    if sweep.probe {
        let cfg = &run.config;
        let request = EvalRequest {
            checkpoint: Some(run.dir().to_path_buf()),
            config: cfg.clone(),
            train: run.data.clone(),
            test: run.data.clone(),
            train_split: cfg.loader.split.clone(),
            test_split: cfg.eval_split.clone(),
            protocol: Protocol::Fast,
            probe_epochs: None,
            out: run.dir().to_path_buf(),
            threads: cfg.loader.threads,
        };
        evaluate(&request).map_err(|error| SweepError::Eval {
            point: name.clone(),
            error: Box::new(error),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_averages_only_points_trained_from_the_start() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.time_left(5),
            "",
            "no estimate before a fresh point finishes"
        );
        pace.add(std::time::Duration::from_secs(300));
        pace.add(std::time::Duration::from_secs(900));
        assert_eq!(pace.time_left(3), ", about 30 min left");
        assert_eq!(pace.time_left(0), "");
    }
}
