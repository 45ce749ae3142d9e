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
use sslfast::eval::monitor::train_with_knn;
use sslfast::train::{Run, RunArgs};

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
    sslfast::cli::quiet_on_closed_pipe();
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
    // Lossy: the record of the command must not stop a run whose arguments are not UTF-8.
    let command: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("{}", command.join(" "));
    let run = Run::resolve(RunArgs {
        config: cli.config,
        data: cli.data,
        out: cli.out,
        resume: cli.resume,
        sets: cli.sets,
    })?;
    if let Some(dir) = &cli.dump_batches {
        let n = sslfast::train::dump::dump_batches(&run, dir, cli.dump_epochs)
            .context("dumping batches failed")?;
        println!(
            "wrote {n} batches and the initial weights to {}",
            dir.display()
        );
        return Ok(());
    }
    let summary = train_with_knn(&run, &command).context("training failed")?;
    println!("{summary}");
    if let (Some(before), Some(after)) = (summary.knn_random_init, summary.knn_final) {
        println!(
            "kNN top-1 on {}: {:.1}% (random init: {:.1}%)",
            run.config.eval_split,
            after * 100.0,
            before * 100.0
        );
    }
    Ok(())
}
