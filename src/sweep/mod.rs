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

use crate::atomic_file;
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

/// Runs every point of `sweep` in `dir` that is not done yet, then writes the report. A new
/// point that a finished run under `reuse` (other sweep directories) trained with the same
/// config is copied from there and only probed.
pub fn run(dir: &Path, sweep: &SweepConfig, reuse: &[PathBuf]) -> Result<SweepResults, SweepError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file = dir.join(SWEEP_FILE);
    let text = toml::to_string_pretty(sweep).expect("a sweep serialises");
    match std::fs::read_to_string(&file) {
        Ok(existing) if existing == text => {}
        Ok(existing) if grows(&existing, sweep, dir) => {
            atomic_file::write(&file, &text).map_err(io(&file))?
        }
        Ok(_) => {
            return Err(SweepError::Invalid {
                path: file,
                problem: "this directory holds another sweep (its base differs, or this grid \
                          leaves out a point that has a run directory); choose another --dir \
                          (or remove it)"
                    .into(),
            })
        }
        Err(_) => atomic_file::write(&file, &text).map_err(io(&file))?,
    }
    let planned = plan(dir, sweep, reuse)?.points;
    let left_after = |i: usize| -> Vec<&Point> {
        let fresh = planned[i..]
            .iter()
            .filter(|(_, s, from)| *s == PointState::New && from.is_none());
        fresh.map(|(point, _, _)| point).collect()
    };
    let mut pace = Pace::default();
    for (point, state, _) in &planned {
        if *state == PointState::Done {
            pace.add(point, recorded_seconds(sweep, dir, point));
        }
    }
    for (i, (point, state, from)) in planned.iter().enumerate() {
        let run_dir = run_dir(dir, point);
        let (found, started) = (*state, Instant::now());
        let mut state = found;
        if let Some(from) = from {
            reuse::copy_run(from, &run_dir, &sweep.point_config(point, dir)?)?;
            state = point_state(sweep, &run_dir);
        }
        if state != PointState::Done {
            run_point(dir, sweep, point, state)?;
        }
        if found != PointState::Done {
            let seconds = match (found, from) {
                (PointState::New, None) => Some(started.elapsed().as_secs_f64()),
                _ => recorded_seconds(sweep, dir, point),
            };
            pace.add(point, seconds);
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
            pace.time_left(&left_after(i + 1))
        );
    }
    report(dir)
}

/// The training seconds a finished point's metrics record (evaluation excluded): what a point
/// trained in an earlier session, or resumed, or copied, cost; none if they cannot be read.
fn recorded_seconds(sweep: &SweepConfig, dir: &Path, point: &Point) -> Option<f64> {
    let result = report::read_point(sweep, dir, point.clone()).ok()?;
    (result.state == PointState::Done).then(|| result.train_seconds())
}

/// The time a sweep has left. Points of one grid differ in cost tenfold (pdim 8192 against
/// 64), so a point still to train is expected to take as long as the finished points that share
/// the most values of the axes other than `seed` with it (the same setting at another seed, else
/// the same pdim or λ, ...), the same seed breaking a tie.
/// Points finished here count their wall time; those found finished, their recorded training
/// time. A point being resumed, reused or only probed is not counted as one left.
#[derive(Default)]
struct Pace {
    took: Vec<(Point, f64)>,
}

impl Pace {
    fn add(&mut self, point: &Point, seconds: Option<f64>) {
        if let Some(seconds) = seconds {
            self.took.push((point.clone(), seconds));
        }
    }

    fn expected_seconds(&self, point: &Point) -> Option<f64> {
        // The setting first, the seed only to break a tie: a seed does not change a point's
        // cost, so the same seed at another pdim must not count as much as the same pdim.
        let shared = |other: &Point| {
            let same = other.values.iter().filter(|(k, v)| point.get(k) == Some(v));
            let (seed, setting): (Vec<_>, Vec<_>) = same.partition(|(k, _)| k == "seed");
            (setting.len(), seed.len())
        };
        let most = self.took.iter().map(|(p, _)| shared(p)).max()?;
        let nearest: Vec<f64> = (self.took.iter())
            .filter(|(p, _)| shared(p) == most)
            .map(|(_, seconds)| *seconds)
            .collect();
        Some(nearest.iter().sum::<f64>() / nearest.len() as f64)
    }

    /// `, about M min left` for the points `left` to train; nothing before the first estimate.
    fn time_left(&self, left: &[&Point]) -> String {
        let seconds: Option<f64> = left.iter().map(|p| self.expected_seconds(p)).sum();
        match seconds {
            Some(seconds) if !left.is_empty() => {
                format!(", about {:.0} min left", seconds / 60.0)
            }
            _ => String::new(),
        }
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
    fn time_left_expects_each_point_to_cost_what_its_nearest_finished_points_did() {
        let point = |seed: i64, pdim: i64, lambda: f64| Point {
            values: vec![
                ("seed".into(), toml::Value::Integer(seed)),
                ("pdim".into(), toml::Value::Integer(pdim)),
                ("lambda".into(), toml::Value::Float(lambda)),
            ],
        };
        let mut pace = Pace::default();
        let later = [point(1, 64, 0.1), point(0, 8192, 0.4), point(1, 256, 0.4)];
        let later: Vec<&Point> = later.iter().collect();
        assert_eq!(
            pace.time_left(&later),
            "",
            "no estimate before a point finishes"
        );
        pace.add(&point(0, 64, 0.1), Some(600.0));
        pace.add(&point(0, 8192, 0.1), Some(3000.0));
        pace.add(&point(0, 8192, 0.4), None);
        // 600 s (the same setting at seed 0) + 3000 s (pdim 8192 and seed 0 in common) + 1800 s
        // (nothing in common: the mean of all).
        assert_eq!(pace.time_left(&later), ", about 90 min left");
        assert_eq!(pace.time_left(&[]), "");
        // Seed 1's pdim 64 shares as many values with seed 1's pdim 8192 (seed and λ) as seed 0's
        // pdim 8192 does (pdim and λ), but only the latter shares its cost.
        pace.add(&point(1, 64, 0.1), Some(600.0));
        assert_eq!(
            pace.time_left(&[&point(1, 8192, 0.1)]),
            ", about 50 min left"
        );
    }
}
