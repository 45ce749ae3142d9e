//! `ssl-pack`: turn a dataset into checksummed Parquet/Arrow shards, inspect them, verify them.
//!
//! ```text
//! ssl-pack                                  # pack the built-in shapes sample and show it
//! ssl-pack write [--format F] SRC OUT       # SRC: CIFAR/STL binaries, image folder, HF Parquet, builtin-shapes
//! ssl-pack inspect DIR
//! ssl-pack verify DIR
//! ```

#[global_allocator]
static ALLOCATOR: sslfast::allocator::Allocator = sslfast::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use sslfast::pack::{PackConfig, SourceFormat, WriteArgs};
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
}

fn main() -> ExitCode {
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
