//! `metrics.jsonl`: one JSON object per line: a `start` record (command line and resolved
//! config), one `step` record per optimiser step, one `epoch` record per epoch (also printed).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::TrainError;

pub const METRICS_FILE: &str = "metrics.jsonl";

pub struct Metrics {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Metrics {
    /// Opens `run/metrics.jsonl`, appending when resuming.
    pub fn open(run: &Path, append: bool) -> Result<Self, TrainError> {
        let path = run.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|error| TrainError::Io {
                path: path.clone(),
                error,
            })?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
        })
    }

    pub fn write(&mut self, record: &Value) -> Result<(), TrainError> {
        let line = serde_json::to_string(record).expect("json values serialise");
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|error| TrainError::Io {
                path: self.path.clone(),
                error,
            })
    }
}

/// Reads every record of a metrics file (for tests and tools).
pub fn read(run: &Path) -> Result<Vec<Value>, TrainError> {
    let path = run.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|error| TrainError::Io {
        path: path.clone(),
        error,
    })?;
    text.lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                message: format!("unreadable metrics line: {e}"),
            })
        })
        .collect()
}
