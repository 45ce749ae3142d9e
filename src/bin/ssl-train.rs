//! `ssl-train`: pretrain a backbone + small projector with the efficient multi-view loss.
//!
//! ```text
//! ssl-train                                   # built-in default: shapes, conv4, a few minutes on CPU
//! ssl-train --config configs/cifar10-cpu.toml --data target/packed/cifar10 --set views=4x32
//! ssl-train --resume runs/cifar10-cpu --set epochs=20
//! ssl-train --nproc 2 --config configs/cifar10-cpu.toml --data target/packed/cifar10  # 2 ranks
//! mpirun -np 8 ssl-train --config ...                                 # ranks from a launcher
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use sslfast::collective::Group;
use sslfast::dist;
use sslfast::eval::monitor::train_with_knn_replicated;
use sslfast::train::run::settle_run_dir;
use sslfast::train::{Replicas, Run, RunArgs};

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
    /// Train data-parallel as N local ranks (started under mpirun; needs the `mpi` feature).
    /// `batch_size` is per rank: the global batch is N x batch_size. Ranks started by mpirun,
    /// mpiexec or srun are recognised without it.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    nproc: u64,
    /// Seconds a rank waits in one collective before it decides another rank died or hangs,
    /// and ends the job.
    #[arg(long, value_name = "SECS", default_value_t = dist::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    dist_timeout: u64,
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    sslfast::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Err(err) = settle_run_dir(cli.nproc as usize, run_args(&cli), &mut args) {
        eprintln!("ssl-train: {}", sslfast::cli::error_message(&err.into()));
        return ExitCode::from(2);
    }
    let timeout = Duration::from_secs(cli.dist_timeout);
    let group = match dist::start(cli.nproc as usize, timeout, &args) {
        Ok(group) => group,
        Err(err) => {
            eprintln!("ssl-train: {err}");
            return ExitCode::from(2);
        }
    };
    match run(cli, &group) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = sslfast::cli::error_message(&err);
            eprintln!("ssl-train: {}{message}", dist::rank_label(&group));
            dist::exit(&group, 2)
        }
    }
}

fn run_args(cli: &Cli) -> RunArgs {
    RunArgs {
        config: cli.config.clone(),
        data: cli.data.clone(),
        out: cli.out.clone(),
        resume: cli.resume.clone(),
        sets: cli.sets.clone(),
    }
}

fn run(cli: Cli, group: &Group) -> Result<()> {
    let primary = group.rank() == 0;
    // Lossy: the record of the command must not stop a run whose arguments are not UTF-8.
    let command: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if primary {
        println!("{}", command.join(" "));
    }
    let run = Run::resolve(run_args(&cli))?;
    if let Some(dir) = &cli.dump_batches {
        let n = sslfast::train::dump::dump_batches(&run, dir, cli.dump_epochs)
            .context("dumping batches failed")?;
        println!(
            "wrote {n} batches and the initial weights to {}",
            dir.display()
        );
        return Ok(());
    }
    let replicas = Replicas::new(group.clone());
    let summary = train_with_knn_replicated(&run, &command, replicas).context("training failed")?;
    if !primary {
        return Ok(());
    }
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
