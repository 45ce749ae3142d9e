//! `ssl-sweep report DIR`: everything about a sweep from its run directories alone, so it can be
//! redrawn at any time, mid-sweep included: `results.csv` (a row per point), `curves.csv` (a row
//! per point and epoch), `summary.csv` (a row per setting, over its seeds: [`super::summary`])
//! and the figures of [`super::figures`].

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{
    io, point_state, run_dir, value_text, Point, PointState, SweepConfig, SweepError, SWEEP_FILE,
};
use crate::eval::EVAL_FILE;
use crate::train::{curves, metrics};

pub const RESULTS_FILE: &str = "results.csv";
pub const CURVES_FILE: &str = "curves.csv";
pub const SUMMARY_CSV: &str = "summary.csv";

/// One epoch of a point: training seconds so far (evaluation excluded), kNN top-1, mean loss.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochResult {
    pub epoch: u64,
    pub train_seconds: f64,
    pub knn: Option<f64>,
    pub loss: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct PointResult {
    pub point: Point,
    pub state: PointState,
    pub knn_random_init: Option<f64>,
    pub epochs: Vec<EpochResult>,
    pub linear_top1: Option<f64>,
}

impl PointResult {
    pub fn knn_final(&self) -> Option<f64> {
        self.epochs.iter().rev().find_map(|e| e.knn)
    }

    pub fn knn_best(&self) -> Option<f64> {
        self.epochs.iter().filter_map(|e| e.knn).reduce(f64::max)
    }

    pub fn train_seconds(&self) -> f64 {
        self.epochs.last().map_or(0.0, |e| e.train_seconds)
    }
}

/// A sweep and what its points measured so far.
#[derive(Debug, Clone)]
pub struct SweepResults {
    pub sweep: SweepConfig,
    pub points: Vec<PointResult>,
}

/// Reads the sweep in `dir`, writes `results.csv`, `curves.csv`, `summary.csv` and the figures.
pub fn report(dir: &Path) -> Result<SweepResults, SweepError> {
    let file = dir.join(SWEEP_FILE);
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let sweep: SweepConfig = toml::from_str(&text).map_err(|e| SweepError::Invalid {
        path: file.clone(),
        problem: e.to_string(),
    })?;
    let points = sweep
        .points()
        .into_iter()
        .map(|point| read_point(&sweep, dir, point))
        .collect::<Result<Vec<_>, _>>()?;
    let results = SweepResults { sweep, points };
    for (name, text) in [
        (RESULTS_FILE, results.results_csv()),
        (CURVES_FILE, results.curves_csv()),
        (SUMMARY_CSV, results.summary_csv()),
    ] {
        let path = dir.join(name);
        crate::atomic_file::write(&path, text).map_err(io(&path))?;
    }
    super::figures::draw_all(dir, &results)?;
    Ok(results)
}

pub(super) fn read_point(
    sweep: &SweepConfig,
    dir: &Path,
    point: Point,
) -> Result<PointResult, SweepError> {
    let run = run_dir(dir, &point);
    let state = point_state(sweep, &run);
    let records = match run.join(metrics::METRICS_FILE).is_file() {
        true => metrics::read(&run).map_err(|e| SweepError::Train {
            point: point.name(),
            error: Box::new(e),
        })?,
        false => Vec::new(),
    };
    let mut wall = 0.0;
    let mut knn_random_init = None;
    let mut epochs = Vec::new();
    for (epoch, record) in curves::epochs(&records) {
        wall += record.seconds.unwrap_or(0.0);
        match epoch {
            0 => knn_random_init = record.knn_top1,
            _ => epochs.push(EpochResult {
                epoch,
                train_seconds: wall,
                knn: record.knn_top1,
                loss: record.loss,
            }),
        }
    }
    let linear_top1 = read_json(&run.join(EVAL_FILE)).and_then(|v| v["linear_top1"].as_f64());
    Ok(PointResult {
        point,
        state,
        knn_random_init,
        epochs,
        linear_top1,
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
pub(super) fn field(s: &str) -> String {
    match s.contains([',', '"', '\n']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

pub(super) fn number(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

impl SweepResults {
    fn axis_columns(&self) -> String {
        let keys: Vec<String> = self.sweep.axes.iter().map(|a| field(&a.key)).collect();
        keys.join(",")
    }

    fn axis_values(&self, p: &PointResult) -> String {
        let values: Vec<String> = p
            .point
            .values
            .iter()
            .map(|(_, v)| field(&value_text(v)))
            .collect();
        values.join(",")
    }

    pub fn results_csv(&self) -> String {
        let mut out = format!(
            "point,{},state,epochs,train_seconds,knn_random_init,knn_final,knn_best,linear_top1\n",
            self.axis_columns()
        );
        for p in &self.points {
            let _ = writeln!(
                out,
                "{},{},{:?},{},{:.1},{},{},{},{}",
                p.point.name(),
                self.axis_values(p),
                p.state,
                p.epochs.len(),
                p.train_seconds(),
                number(p.knn_random_init),
                number(p.knn_final()),
                number(p.knn_best()),
                number(p.linear_top1),
            );
        }
        out
    }

    pub fn curves_csv(&self) -> String {
        let mut out = format!(
            "point,{},epoch,train_seconds,knn_top1,loss\n",
            self.axis_columns()
        );
        for p in &self.points {
            for e in &p.epochs {
                let _ = writeln!(
                    out,
                    "{},{},{},{:.1},{},{}",
                    p.point.name(),
                    self.axis_values(p),
                    e.epoch,
                    e.train_seconds,
                    number(e.knn),
                    number(e.loss)
                );
            }
        }
        out
    }
}

impl std::fmt::Display for SweepResults {
    /// A table: one line per point, kNN and linear top-1 in percent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
        writeln!(
            f,
            "{:<48} {:>11} {:>6} {:>9} {:>9} {:>8}",
            "point", "state", "epochs", "kNN last", "kNN best", "linear"
        )?;
        for p in &self.points {
            writeln!(
                f,
                "{:<48} {:>11} {:>6} {:>9} {:>9} {:>8}",
                p.point.name(),
                format!("{:?}", p.state),
                p.epochs.len(),
                pct(p.knn_final()),
                pct(p.knn_best()),
                pct(p.linear_top1)
            )?;
        }
        if self.sweep.axes.iter().any(|a| a.key == "seed") {
            writeln!(f)?;
            self.write_summary(f)?;
        }
        Ok(())
    }
}
