//! `ssl-export`: a trained backbone for other frameworks.
//!
//! ```text
//! ssl-export --to torchvision runs/cifar10-cpu resnet18.pth          # torch.load(weights_only=True)
//! ssl-export --to torchvision runs/cifar10-cpu resnet18.safetensors  # safetensors.torch.load_file
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use sslfast::eval::export::{export, open_checkpoint, ExportTarget};

#[derive(Parser)]
#[command(
    name = "ssl-export",
    version,
    about = "Export a run's backbone: a state dict that torchvision's ResNets load strictly"
)]
struct Cli {
    /// The framework to load it in.
    #[arg(long, value_enum)]
    to: ExportTarget,
    /// A run directory written by ssl-train (or its checkpoint/ directory).
    run: PathBuf,
    /// Output file: `.safetensors` for safetensors, any other name (`.pth`) for torch.save's zip.
    out: PathBuf,
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-export: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.to {
        ExportTarget::Torchvision => {
            let report = export(&open_checkpoint(&cli.run, &[])?, &cli.out)?;
            println!("{report}");
        }
    }
    Ok(())
}
