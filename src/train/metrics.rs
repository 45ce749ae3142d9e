//! `metrics.jsonl`: one JSON object per line: a `start` record (command line, resolved config
//! and the machine), one `step` record per optimiser step, one `epoch` record per epoch (also
//! printed).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::TrainError;

pub const METRICS_FILE: &str = "metrics.jsonl";

pub struct Metrics {
    path: PathBuf,
    /// `None` on the ranks of a data-parallel run other than rank 0, which writes for all.
    out: Option<BufWriter<File>>,
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
            out: Some(BufWriter::new(file)),
        })
    }

    /// Metrics that go nowhere: another rank writes the run's.
    pub fn discard() -> Self {
        Self {
            path: PathBuf::new(),
            out: None,
        }
    }

    /// Opens `run/metrics.jsonl` to continue a run from a checkpoint at optimiser step `step`
    /// with `epochs_done` whole epochs: records the killed run wrote after that checkpoint (its
    /// later steps, an epoch whose checkpoint it did not reach) are dropped, through a
    /// temporary file renamed into place, so the resumed run does not write them twice.
    pub fn resume(run: &Path, step: u64, epochs_done: u64) -> Result<Self, TrainError> {
        let path = run.join(METRICS_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| TrainError::Io { path, error }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let keep = |line: &&str| match serde_json::from_str::<Value>(line) {
            Ok(record) => match record["kind"].as_str() {
                Some("step") => record["step"].as_u64().is_some_and(|s| s <= step),
                Some("epoch") => record["epoch"].as_u64().is_some_and(|e| e <= epochs_done),
                _ => true,
            },
            // A line cut short by the kill.
            Err(_) => false,
        };
        let kept: String = text
            .lines()
            .filter(keep)
            .map(|l| format!("{l}\n"))
            .collect();
        crate::atomic_file::write(&path, kept).map_err(io(&path))?;
        Self::open(run, true)
    }

    pub fn write(&mut self, record: &Value) -> Result<(), TrainError> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        let line = serde_json::to_string(record).expect("json values serialise");
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|error| TrainError::Io {
                path: self.path.clone(),
                error,
            })
    }
}

/// Reads every record of a metrics file (for reports, tests and tools). A last line without
/// its newline that does not parse is a record a kill cut short (as resume drops it): left out,
/// so a report can still be drawn from an interrupted run. Any other bad line is an error.
pub fn read(run: &Path) -> Result<Vec<Value>, TrainError> {
    let path = run.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|error| TrainError::Io {
        path: path.clone(),
        error,
    })?;
    let mut lines: Vec<&str> = text.lines().collect();
    let torn = |l: &&str| serde_json::from_str::<Value>(l).is_err();
    if !text.ends_with('\n') && lines.last().is_some_and(torn) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                message: format!("unreadable metrics line: {e}"),
            })
        })
        .collect()
}

/// The machine a run, or the part of it after a resume, trained on: its training seconds compare
/// only on one CPU, and a sweep that spans working sessions may span machines.
pub fn host() -> Value {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({ "cpu": cpu_model(), "cores": cores })
}

/// The CPU's model name as Linux reports it; none elsewhere.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_host_names_the_cpu_lscpu_names() {
        let host = host();
        let cpu = host["cpu"].as_str().expect("a CPU model on Linux");
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        assert!(!cpu.is_empty() && cpuinfo.contains(cpu), "{cpu}");
        assert!(host["cores"].as_u64().unwrap() >= 1);
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_and_any_other_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(METRICS_FILE);
        std::fs::write(&file, "{\"epoch\":1}\n{\"epoch\":2}\n{\"epo").unwrap();
        assert_eq!(read(dir.path()).unwrap().len(), 2);
        // A bad line followed by a newline was written whole: the file is damaged.
        std::fs::write(&file, "{\"epoch\":1}\n{\"epo\n").unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("metrics.jsonl"), "{error}");
        std::fs::write(&file, "{\"epo\n{\"epoch\":2}\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
