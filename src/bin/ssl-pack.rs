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
use clap::{Args, Parser, Subcommand};
use sslfast::pack::{
    Cifar100Label, Compression, EncodingMode, OnError, PackConfig, SourceFormat,
    DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, DEFAULT_SHARD_BYTES,
};
use sslfast::shard::Container;
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

#[derive(Args)]
struct WriteArgs {
    /// Dataset to read: a directory, a .parquet file, or `builtin-shapes`.
    src: PathBuf,
    /// Output directory (must be new or empty, or hold a dataset with --overwrite).
    out: PathBuf,
    /// Input format [default: detected from SRC].
    #[arg(long)]
    format: Option<SourceFormat>,
    /// Splits to pack, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "SPLIT")]
    split: Vec<String>,
    #[arg(long, value_enum, default_value_t = Container::Parquet)]
    container: Container,
    #[arg(long, value_enum, default_value_t = EncodingMode::Auto)]
    encoding: EncodingMode,
    /// JPEG quality, 1-100.
    #[arg(long, default_value_t = DEFAULT_QUALITY)]
    quality: u8,
    /// Downscale so the longer side is at most N pixels (area filter; never upscales).
    #[arg(long, value_name = "N")]
    max_side: Option<u32>,
    /// Rows per row group [default: a group closes at about 1 MiB of images].
    #[arg(long, value_name = "N")]
    rows_per_group: Option<usize>,
    /// Start a new shard file after this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SHARD_BYTES)]
    shard_bytes: u64,
    /// Parquet page compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// On an undecodable image: fail naming the file, or skip it and list it in the manifest.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    on_error: OnError,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, value_name = "PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Replace an existing dataset in OUT.
    #[arg(long)]
    overwrite: bool,
    /// CIFAR-100: which label to store.
    #[arg(long, value_enum, default_value_t = Cifar100Label::Fine)]
    cifar100_label: Cifar100Label,
    /// Hugging Face Parquet: image column [default: first struct column with `bytes`].
    #[arg(long)]
    image_column: Option<String>,
    /// Hugging Face Parquet: label column [default: label, labels, fine_label or class].
    #[arg(long)]
    label_column: Option<String>,
    /// builtin-shapes: generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// builtin-shapes: images per class in the train split (test gets a fifth of it).
    #[arg(long, default_value_t = sslfast::pack::shapes::DEFAULT_PER_CLASS)]
    shapes_per_class: usize,
}

impl WriteArgs {
    fn into_config(self) -> PackConfig {
        PackConfig {
            source: self.src,
            out: self.out,
            format: self.format,
            splits: self.split,
            container: self.container,
            encoding: self.encoding,
            quality: self.quality,
            max_side: self.max_side,
            rows_per_group: self.rows_per_group,
            shard_bytes: self.shard_bytes,
            compression: self.compression,
            on_error: self.on_error,
            max_pixels: self.max_pixels,
            overwrite: self.overwrite,
            cifar100_label: self.cifar100_label,
            image_column: self.image_column,
            label_column: self.label_column,
            seed: self.seed,
            // No `..Default`: a new PackConfig field fails to compile here until it has a flag.
            shapes_per_class: self.shapes_per_class,
        }
    }
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
            let summary = sslfast::pack::write_dataset(&args.into_config())?;
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
