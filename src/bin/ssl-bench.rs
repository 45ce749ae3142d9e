//! `ssl-bench`: throughput of every stage.
//!
//! ```text
//! ssl-bench pack SRC [--encoding raw] [--max-side 256] [--container parquet] [--repeats 2]
//! ssl-bench loader --data DIR [--split train] --views SPEC --batch 256 --threads N --batches M
//! ssl-bench loss --k 2,4,8,16 --batch 256 --pdim 256,8192
//! ssl-bench step --backbone resnet18 --width 64 --batch 64 --size 32 --views 2 --steps 5
//! ssl-bench dist --data DIR --nproc 1,2 --set batch_size=128   # needs the `mpi` feature
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sslfast::bench::{dist, loader, loss, pack, step};

#[derive(Parser)]
#[command(
    name = "ssl-bench",
    version,
    about = "Measure the throughput of each stage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Also write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Forward + backward time of the efficient vs the naive multi-view loss.
    Loss(loss::LossArgs),
    /// images/s of the K-view loader, per stage, against a single-threaded inline baseline.
    Loader(loader::LoaderArgs),
    /// Seconds per training step (backbone + projector + Barlow Twins + AdamW) on random views.
    Step {
        #[command(flatten)]
        spec: step::StepSpec,
        /// Worker threads (0: all cores); sets RAYON_NUM_THREADS, which candle also reads.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// images/s of `ssl-pack write` on SRC (written to a temporary directory).
    Pack(pack::PackArgs),
    /// Scaling of a training step from 1 to N ranks (`ssl-train --nproc N`, same per-rank batch):
    /// images/s, seconds per step and in communication.
    Dist(dist::DistArgs),
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-bench: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = match cli.command {
        Command::Loss(args) => {
            println!("{}", loss::TABLE_HEADER);
            let rows = loss::bench_loss(&args, |row| println!("{row}"))?;
            serde_json::to_string_pretty(&rows)?
        }
        Command::Loader(args) => report(&loader::bench_loader(&args)?)?,
        Command::Step { spec, threads } => {
            if threads > 0 {
                // Before the first parallel op, so rayon's global pool and candle agree.
                std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            }
            report(&step::bench_step(&spec)?)?
        }
        Command::Pack(args) => report(&pack::run(&args)?)?,
        Command::Dist(args) => {
            // The ssl-train built beside this program.
            let ssl_train = std::env::current_exe()?.with_file_name("ssl-train");
            report(&dist::bench_dist(&ssl_train, &args)?)?
        }
    };
    if let Some(path) = cli.json {
        sslfast::atomic_file::write(&path, json)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Prints `r` and returns it as JSON.
fn report<R: std::fmt::Display + serde::Serialize>(r: &R) -> Result<String> {
    println!("{r}");
    Ok(serde_json::to_string_pretty(r)?)
}
