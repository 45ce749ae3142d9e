//! `ssl-eval`: linear probe, kNN and spectrum metrics of a pretrained backbone; `ssl-eval
//! features` writes the features of chosen images to Parquet.
//!
//! ```text
//! ssl-eval --checkpoint runs/cifar10-cpu --train target/packed/cifar10 --test target/packed/cifar10
//! ssl-eval --checkpoint random --set backbone=conv4 --set width=16 --train D --test D
//! ssl-eval features --checkpoint runs/cifar10-cpu --data D --split test --indices 0,5,7 --out f.parquet
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sslfast::config::{apply_sets, load};
use sslfast::eval::features_out::{write_features, FeaturesArgs};
use sslfast::eval::{evaluate, EvalRequest, Protocol};
use sslfast::train::TrainConfig;

#[derive(Parser)]
#[command(
    name = "ssl-eval",
    version,
    about = "Probe a pretrained backbone: linear, kNN, spectrum",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A run directory written by ssl-train, or `random` for a randomly initialised network.
    #[arg(long, required = true)]
    checkpoint: Option<String>,
    /// Dataset (written by ssl-pack) whose split trains the probe and fills the kNN bank.
    #[arg(long, required = true)]
    train: Option<PathBuf>,
    /// Dataset whose split is scored (another dataset than the pretraining one: transfer).
    #[arg(long, required = true)]
    test: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    train_split: String,
    #[arg(long, default_value = "test")]
    test_split: String,
    /// `paper`: 16-view averaged features, 200-epoch probe; `fast`: centre view, 20 epochs.
    #[arg(long, value_enum, default_value_t = Protocol::Fast)]
    protocol: Protocol,
    /// Override the probe's epochs.
    #[arg(long)]
    probe_epochs: Option<usize>,
    /// Where eval.json goes [default: the run directory; runs/random-<backbone>-<width> for random].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Loader threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Override a config field (architecture of `random`, views, mean/std, knn_k...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Pooled features (centre view) of a split's images to Parquet: index, label, features.
    Features(FeaturesArgs),
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-eval: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Command::Features(args)) = &cli.command {
        println!("{}", write_features(args)?);
        return Ok(());
    }
    let (Some(cli_checkpoint), Some(train), Some(test)) = (cli.checkpoint, cli.train, cli.test)
    else {
        anyhow::bail!("--checkpoint, --train and --test are required without a subcommand");
    };
    let (checkpoint, config) = if cli_checkpoint == "random" {
        (None, apply_sets(&TrainConfig::default(), &cli.sets)?)
    } else {
        let run = PathBuf::from(&cli_checkpoint);
        let path = run.join(sslfast::train::CONFIG_FILE);
        let config: TrainConfig = load(Some(&path), &cli.sets)
            .with_context(|| format!("{} is not an ssl-train run", run.display()))?;
        (Some(run), config)
    };
    let out = cli.out.unwrap_or_else(|| match &checkpoint {
        Some(run) => run.clone(),
        None => PathBuf::from(
            format!(
                "runs/random-{:?}-{}",
                config.model.backbone, config.model.width
            )
            .to_lowercase(),
        ),
    });
    let report = evaluate(&EvalRequest {
        checkpoint,
        config,
        train,
        test,
        train_split: cli.train_split,
        test_split: cli.test_split,
        protocol: cli.protocol,
        probe_epochs: cli.probe_epochs,
        out: out.clone(),
        threads: cli.threads,
    })?;
    println!("{report}");
    println!("{:<22} {}", "written", out.join("eval.json").display());
    Ok(())
}
