//! `ssl-bench dist`: how a training step scales from 1 to N ranks on this machine. Each rank
//! count is a real `ssl-train --nproc N` run (the engine, launcher and loader included) with the
//! same per-rank batch, as DDP users scale (weak scaling: the global batch grows with N); its
//! step records give images/s, seconds per step and the time and bytes in collectives.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// What to run; also `ssl-bench dist`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DistArgs {
    /// A dataset written by ssl-pack.
    #[arg(long)]
    pub data: PathBuf,
    /// Rank counts to measure, e.g. 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub nproc: Vec<usize>,
    /// Steps per run; the first `warmup` are left out of the figures.
    #[arg(long, default_value_t = 12)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// A TOML config for the runs (else ssl-train's defaults for a named dataset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `key=value` overrides, as ssl-train takes them (batch_size is per rank).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistRow {
    pub ranks: usize,
    pub global_batch: u64,
    pub images_per_s: f64,
    pub step_seconds: f64,
    /// Seconds per step in the gather of embeddings and the gradient all-reduce.
    pub comm_seconds: f64,
    /// Bytes each rank sent per step in those collectives.
    pub comm_bytes: u64,
    /// images/s over the first row's.
    pub speedup: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistReport {
    pub stage: &'static str,
    pub cores: usize,
    pub rows: Vec<DistRow>,
}

impl std::fmt::Display for DistReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ranks global_batch images/s step_s comm_s comm_MB speedup   ({} cores)",
            self.cores
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>5} {:>12} {:>8.1} {:>6.3} {:>6.3} {:>7.2} {:>7.2}",
                r.ranks,
                r.global_batch,
                r.images_per_s,
                r.step_seconds,
                r.comm_seconds,
                r.comm_bytes as f64 / 1e6,
                r.speedup
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DistBenchError {
    #[error("{program}: {error}")]
    Spawn {
        program: PathBuf,
        error: std::io::Error,
    },
    #[error("ssl-train --nproc {nproc} failed: {stderr}")]
    Run { nproc: usize, stderr: String },
    #[error("{0}")]
    Metrics(String),
}

/// Runs `ssl_train` (the binary) once per rank count in `args.nproc` and reports each.
pub fn bench_dist(ssl_train: &Path, args: &DistArgs) -> Result<DistReport, DistBenchError> {
    let scratch = tempfile_dir();
    let mut rows: Vec<DistRow> = Vec::new();
    for &n in &args.nproc {
        let out = scratch.join(format!("ranks-{n}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = Command::new(ssl_train);
        cmd.arg("--nproc").arg(n.to_string());
        cmd.arg("--data").arg(&args.data).arg("--out").arg(&out);
        if let Some(config) = &args.config {
            cmd.arg("--config").arg(config);
        }
        let fixed = [
            "epochs=1".to_string(),
            format!("max_steps_per_epoch={}", args.steps + args.warmup),
            "eval_split=\"\"".into(),
        ];
        for set in fixed.iter().chain(&args.sets) {
            cmd.arg("--set").arg(set);
        }
        let output = cmd.output().map_err(|error| DistBenchError::Spawn {
            program: ssl_train.to_path_buf(),
            error,
        })?;
        if !output.status.success() {
            return Err(DistBenchError::Run {
                nproc: n,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let mut row = measure(&out, n, args.warmup)?;
        row.speedup = rows
            .first()
            .map_or(1.0, |first| row.images_per_s / first.images_per_s);
        rows.push(row);
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(DistReport {
        stage: "dist",
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
    })
}

/// Means over the step records of `run` after the first `warmup`.
fn measure(run: &Path, ranks: usize, warmup: usize) -> Result<DistRow, DistBenchError> {
    let records =
        crate::train::metrics::read(run).map_err(|e| DistBenchError::Metrics(e.to_string()))?;
    let start = records.iter().find(|r| r["kind"] == "start");
    let per_rank = start.and_then(|r| r["config"]["batch_size"].as_u64());
    let steps: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "step")
        .skip(warmup)
        .collect();
    if steps.is_empty() {
        return Err(DistBenchError::Metrics(format!(
            "{}: no steps after the {warmup} of warm-up",
            run.display()
        )));
    }
    // `+ 0.0`: an empty sum (one rank has no communication) is -0.0.
    let mean = |key: &str| {
        steps.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / steps.len() as f64 + 0.0
    };
    let global_batch = per_rank.unwrap_or(0) * ranks as u64;
    // Each record's rate is its batch over its step's seconds: the mean step from them.
    let step_seconds = steps
        .iter()
        .filter_map(|r| r["images_per_s"].as_f64())
        .map(|rate| global_batch as f64 / rate)
        .sum::<f64>()
        / steps.len() as f64;
    Ok(DistRow {
        ranks,
        global_batch,
        images_per_s: global_batch as f64 / step_seconds,
        step_seconds,
        comm_seconds: mean("comm_seconds"),
        comm_bytes: mean("comm_bytes") as u64,
        speedup: 1.0,
    })
}

fn tempfile_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ssl-bench-dist-{}", std::process::id()))
}
