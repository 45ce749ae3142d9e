//! `ssl-train`: pretrain a backbone + small projector with the efficient multi-view loss.
//!
//! ```text
//! ssl-train                                   # built-in default: shapes, conv4, a few minutes on CPU
//! ssl-train --config configs/cifar10-cpu.toml --data target/packed/cifar10 --set views=4x32
//! ssl-train --resume runs/cifar10-cpu --set epochs=20
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use sslfast::config::{load_train_config, TrainConfig};

#[derive(Parser)]
#[command(
    name = "ssl-train",
    version,
    about = "Pretrain an encoder with the efficient multi-view SSL loss"
)]
struct Cli {
    /// TOML config (see configs/); without one, the built-in default (or the resumed run's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset written by ssl-pack (same as --set data=DIR).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory (same as --set out=DIR).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (its config.toml, then --set on top).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Override a config field by its TOML name, e.g. --set views=4x16 --set backbone=conv4.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write the batches this run would train on (NumPy files) and its initial weights into
    /// DIR, then stop without training: for tools/reference_torch.py --batches-from DIR.
    #[arg(long, value_name = "DIR")]
    dump_batches: Option<PathBuf>,
    /// Epochs of batches that --dump-batches writes.
    #[arg(long, default_value_t = 1, requires = "dump_batches")]
    dump_epochs: u64,
}

fn main() -> ExitCode {
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-train: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    println!("{}", command.join(" "));
    let mut sets = cli.sets;
    if let Some(data) = &cli.data {
        sets.push(format!("data={}", toml_string(data)));
    }
    if let Some(out) = cli.resume.as_ref().or(cli.out.as_ref()) {
        sets.push(format!("out={}", toml_string(out)));
    }
    let base = match (&cli.config, &cli.resume) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(run)) => Some(run.join(sslfast::train::CONFIG_FILE)),
        (None, None) => None,
    };
    // Without a config file, the built-in shapes run is the base unless a dataset is named;
    // then the defaults are the paper's (ResNet-18, pdim 256, Adam 1e-3).
    let names_data = sets.iter().any(|s| s.starts_with("data="));
    let mut cfg = match &base {
        Some(path) => load_train_config(Some(path), &sets)?,
        None if names_data => sslfast::config::apply_sets(TrainConfig::default(), &sets)?,
        None => sslfast::config::apply_sets(TrainConfig::builtin(), &sets)?,
    };
    if base.is_none() && !sets.iter().any(|s| s.starts_with("out=")) {
        cfg.out = fresh_run_dir(&cfg.out);
    }
    if let Some(dir) = &cli.dump_batches {
        let n = sslfast::train::dump::dump_batches(&cfg, dir, cli.dump_epochs)
            .context("dumping batches failed")?;
        println!(
            "wrote {n} batches and the initial weights to {}",
            dir.display()
        );
        return Ok(());
    }
    let summary =
        sslfast::train::train(&cfg, &command, cli.resume.is_some()).context("training failed")?;
    println!(
        "done: {} epochs, {} steps in {:.0}s ({:.0} images/s), last loss {:.4}; run in {}",
        summary.epochs,
        summary.steps,
        summary.seconds,
        summary.images_per_s,
        summary.last_loss,
        summary.run.display()
    );
    if let (Some(before), Some(after)) = (summary.knn_random_init, summary.knn_final) {
        println!(
            "kNN top-1 on {}: {:.1}% (random init: {:.1}%)",
            cfg.eval_split,
            after * 100.0,
            before * 100.0
        );
    }
    Ok(())
}

/// `dir`, or `dir-2`, `dir-3`, ... whichever does not exist yet: running the built-in default
/// again starts a new run instead of refusing to touch the previous one.
fn fresh_run_dir(dir: &std::path::Path) -> PathBuf {
    let mut candidate = dir.to_path_buf();
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{}-{n}", dir.display()));
    }
    candidate
}

/// A path as a TOML string literal.
fn toml_string(path: &std::path::Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
