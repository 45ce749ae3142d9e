//! `ssl-bench`: throughput of every stage.
//!
//! ```text
//! ssl-bench pack SRC [--encoding raw] [--max-side 256] [--container parquet] [--repeats 2]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sslfast::config::{Container, EncodingMode, PackConfig, SourceFormat};

#[derive(Parser)]
#[command(
    name = "ssl-bench",
    version,
    about = "Measure the throughput of each stage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// images/s of `ssl-pack write` on SRC (written to a temporary directory).
    Pack {
        src: PathBuf,
        #[arg(long)]
        format: Option<SourceFormat>,
        #[arg(long, value_enum, default_value_t = EncodingMode::Auto)]
        encoding: EncodingMode,
        #[arg(long)]
        max_side: Option<u32>,
        #[arg(long, value_enum, default_value_t = Container::Parquet)]
        container: Container,
        /// Runs; the fastest is reported (the first warms the page cache).
        #[arg(long, default_value_t = 2)]
        repeats: usize,
        /// Also write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssl-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pack {
            src,
            format,
            encoding,
            max_side,
            container,
            repeats,
            json,
        } => {
            let cfg = PackConfig {
                source: src,
                format,
                encoding,
                max_side,
                container,
                ..PackConfig::default()
            };
            let s = sslfast::bench::pack::bench_pack(&cfg, repeats)?;
            let images_per_s = s.images as f64 / s.seconds;
            println!(
                "pack {}: images={} seconds={:.3} images/s={:.0} MB/s_in={:.1} MB_out={:.1} threads={}",
                cfg.source.display(),
                s.images,
                s.seconds,
                images_per_s,
                s.bytes_in as f64 / 1e6 / s.seconds,
                s.bytes_out as f64 / 1e6,
                rayon::current_num_threads()
            );
            if let Some(path) = json {
                let value = serde_json::json!({
                    "stage": "pack", "source": cfg.source, "images": s.images, "seconds": s.seconds,
                    "images_per_s": images_per_s, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                    "encoding": format!("{encoding:?}").to_lowercase(), "max_side": max_side,
                    "threads": rayon::current_num_threads(),
                });
                std::fs::write(&path, serde_json::to_string_pretty(&value)?)?;
            }
            Ok(())
        }
    }
}
