//! `ssl-sweep`: run the paper's experiments as grids of `ssl-train` runs, and report them.
//!
//! ```text
//! ssl-sweep run sweeps/cpu/pdim-lambda.toml            # resumable: run it again to continue
//! ssl-sweep run sweeps/cpu/views.toml --set epochs=2   # override a key of the sweep's base
//! ssl-sweep run sweeps/cpu/views.toml --dry-run        # each point and whether it is done
//! ssl-sweep run sweeps/cpu/fraction.toml --reuse runs/sweeps/views   # copy runs trained there
//! ssl-sweep report runs/sweeps/pdim-lambda             # redraw the tables and figures
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sslfast::sweep::{self, SweepConfig};

#[derive(Parser)]
#[command(
    name = "ssl-sweep",
    version,
    about = "Run a grid of ssl-train runs (resumable) and draw the paper's figures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume) every point of SWEEP that is not done, then report.
    Run {
        /// A sweep file (see sweeps/).
        sweep: PathBuf,
        /// The sweep directory [default: runs/sweeps/<file name without .toml>].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Override a key of the sweep's base config, e.g. --set epochs=2.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// List every point and where it stands (new, interrupted, trained, done); train nothing.
        #[arg(long)]
        dry_run: bool,
        /// Another sweep directory: a new point whose resolved config equals a finished run's
        /// there (but for `out`) is copied from it and only probed, not retrained. Repeatable.
        #[arg(long, value_name = "DIR")]
        reuse: Vec<PathBuf>,
    },
    /// Write results.csv, curves.csv, summary.csv and the figures from DIR's run directories.
    Report { dir: PathBuf },
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-sweep: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let (dir, results) = match cli.command {
        Command::Run {
            sweep,
            dir,
            sets,
            dry_run,
            reuse,
        } => {
            let config = SweepConfig::load(&sweep, &sets)?;
            let dir = dir.unwrap_or_else(|| {
                let stem = sweep.file_stem().unwrap_or_default();
                PathBuf::from("runs/sweeps").join(stem)
            });
            if dry_run {
                print!("{}", sweep::plan(&dir, &config, &reuse)?);
                return Ok(());
            }
            let results = sweep::run(&dir, &config, &reuse).context("sweep stopped")?;
            (dir, results)
        }
        Command::Report { dir } => {
            let results = sweep::report(&dir)?;
            (dir, results)
        }
    };
    print!("{results}");
    println!("results, curves and figures in {}", dir.display());
    Ok(())
}
