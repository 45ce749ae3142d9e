//! `ssl-pack`: turn a dataset into checksummed Parquet/Arrow shards, inspect them, verify them.
//!
//! ```text
//! ssl-pack                                  # pack the built-in shapes sample and show it
//! ssl-pack write [--format F] SRC OUT       # SRC: CIFAR/STL binaries, image folder, HF Parquet, builtin-shapes
//! ssl-pack inspect DIR
//! ssl-pack verify DIR
//! ssl-pack export --to hf DIR OUT           # Hugging Face Hub Parquet: OUT/data/<split>-NNNNN-of-NNNNN.parquet
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use sslfast::pack::{PackConfig, SourceFormat, WriteArgs};
use sslfast::shard::export::{ExportFormat, ExportOptions, DEFAULT_SHARD_BYTES};
use sslfast::shard::{verify::verify, Manifest};

#[derive(Parser)]
#[command(
    name = "ssl-pack",
    version,
    about = "Pack image datasets into checksummed Parquet/Arrow shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Pack SRC into a new dataset directory OUT.
    Write(WriteArgs),
    /// Print a dataset's manifest as a table.
    Inspect { dir: PathBuf },
    /// Re-check every checksum and decode every image; exit 1 on any fault.
    Verify { dir: PathBuf },
    /// Write dataset DIR into a new directory OUT for other tools (Hugging Face `datasets`, pandas).
    Export {
        /// Packed dataset (a directory with manifest.json).
        dir: PathBuf,
        /// New directory to write.
        out: PathBuf,
        /// Layout to write.
        #[arg(long, value_enum)]
        to: ExportFormat,
        /// Replace OUT if it holds a previous export.
        #[arg(long)]
        overwrite: bool,
        /// Start a new file after about this many bytes (256 MiB by default).
        #[arg(long, default_value_t = DEFAULT_SHARD_BYTES)]
        shard_bytes: u64,
        /// At most this many rows per file.
        #[arg(long)]
        shard_rows: Option<u64>,
    },
}

fn main() -> ExitCode {
    sslfast::cli::quiet_on_closed_pipe();
    sslfast::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ssl-pack: {}", sslfast::cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => demo(),
        Some(Command::Write(args)) => {
            let summary = sslfast::pack::write_dataset(&args.config())?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Inspect { dir }) => {
            print!("{}", Manifest::load(&dir)?.table(&dir));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Verify { dir }) => {
            let report = verify(&dir)?;
            println!("{report}");
            Ok(ExitCode::from(u8::from(!report.is_ok())))
        }
        Some(Command::Export {
            dir,
            out,
            to,
            overwrite,
            shard_bytes,
            shard_rows,
        }) => {
            let opts = ExportOptions {
                overwrite,
                shard_bytes,
                shard_rows,
            };
            println!("{}", sslfast::shard::export::export(&dir, &out, to, &opts)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The no-argument run: pack the built-in sample into a temporary directory and show it.
fn demo() -> Result<ExitCode> {
    let out = std::env::temp_dir()
        .join("ssl-pack-demo")
        .join("builtin-shapes");
    let cfg = PackConfig {
        source: "builtin-shapes".into(),
        out: out.clone(),
        format: Some(SourceFormat::BuiltinShapes),
        overwrite: true,
        ..PackConfig::default()
    };
    println!(
        "ssl-pack: no command given; packing the built-in shapes sample (try `ssl-pack --help`)"
    );
    let summary = sslfast::pack::write_dataset(&cfg)?;
    println!("{summary}\n");
    print!("{}", Manifest::load(&out)?.table(&out));
    let report = verify(&out)?;
    if !report.is_ok() {
        bail!(
            "verify found {} faults in {}",
            report.faults.len(),
            out.display()
        );
    }
    println!(
        "\nverify: {} shards, {} rows, all checksums and images good",
        report.shards, report.rows
    );
    Ok(ExitCode::SUCCESS)
}
