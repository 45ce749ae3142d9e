//! Writes one split's rows into shard files: row groups of about 1 MiB of images (or a fixed row
//! count), a new shard every `shard_bytes`. Each shard is written to `*.partial`, checksummed as
//! it is written, synced and renamed; the manifest entry is made only then.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_ipc::writer::FileWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as ParquetCompression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::config::{Compression, PackConfig, DEFAULT_GROUP_BYTES};
use super::PackError;
use crate::shard::manifest::HashingWriter;
use crate::shard::schema::{rows_to_batch, schema, IMAGE};
use crate::shard::{Container, Row, ShardInfo};

type Sink = HashingWriter<BufWriter<File>>;

enum Format {
    Parquet(ArrowWriter<Sink>),
    Arrow(FileWriter<Sink>),
}

struct OpenShard {
    format: Format,
    partial: PathBuf,
    file: String,
    rows: u64,
    row_groups: Vec<u32>,
}

pub(crate) struct SplitWriter {
    root: PathBuf,
    split: String,
    container: Container,
    compression: Compression,
    rows_per_group: Option<usize>,
    shard_bytes: u64,
    pending: Vec<Row>,
    pending_bytes: usize,
    current: Option<OpenShard>,
    done: Vec<ShardInfo>,
}

impl SplitWriter {
    pub(crate) fn new(root: &Path, split: &str, cfg: &PackConfig) -> Self {
        Self {
            root: root.to_path_buf(),
            split: split.to_string(),
            container: cfg.container,
            compression: cfg.compression,
            rows_per_group: cfg.rows_per_group,
            shard_bytes: cfg.shard_bytes,
            pending: Vec::new(),
            pending_bytes: 0,
            current: None,
            done: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Row) -> Result<(), PackError> {
        self.pending_bytes += row.image.len();
        self.pending.push(row);
        let full = match self.rows_per_group {
            Some(rows) => self.pending.len() >= rows,
            None => self.pending_bytes >= DEFAULT_GROUP_BYTES,
        };
        if full {
            self.write_group()?;
        }
        Ok(())
    }

    /// Flushes what is pending and closes the last shard; returns every shard written.
    pub(crate) fn finish(mut self) -> Result<Vec<ShardInfo>, PackError> {
        if !self.pending.is_empty() {
            self.write_group()?;
        }
        if let Some(shard) = self.current.take() {
            self.done.push(close(shard, &self.root)?);
        }
        Ok(self.done)
    }

    fn write_group(&mut self) -> Result<(), PackError> {
        if self.current.is_none() {
            self.current = Some(self.open_shard()?);
        }
        let shard = self.current.as_mut().expect("opened above");
        let batch = rows_to_batch(&self.pending);
        let failed = |problem: String| PackError::Write {
            path: shard.partial.clone(),
            problem,
        };
        let written = match &mut shard.format {
            Format::Parquet(w) => {
                w.write(&batch).map_err(|e| failed(e.to_string()))?;
                w.flush().map_err(|e| failed(e.to_string()))?;
                w.bytes_written() as u64
            }
            Format::Arrow(w) => {
                w.write(&batch).map_err(|e| failed(e.to_string()))?;
                w.get_mut().bytes()
            }
        };
        shard.rows += self.pending.len() as u64;
        shard.row_groups.push(self.pending.len() as u32);
        self.pending.clear();
        self.pending_bytes = 0;
        if written >= self.shard_bytes {
            let shard = self.current.take().expect("present");
            self.done.push(close(shard, &self.root)?);
        }
        Ok(())
    }

    fn open_shard(&self) -> Result<OpenShard, PackError> {
        let file = format!(
            "{}/part-{:05}.{}",
            self.split,
            self.done.len(),
            self.container.extension()
        );
        let partial = self.root.join(format!("{file}.partial"));
        let sink = HashingWriter::new(BufWriter::with_capacity(
            1 << 20,
            File::create(&partial).map_err(PackError::io(&partial))?,
        ));
        let failed = |problem: String| PackError::Write {
            path: partial.clone(),
            problem,
        };
        let format = match self.container {
            Container::Parquet => Format::Parquet(
                ArrowWriter::try_new(sink, schema(), Some(self.parquet_properties()))
                    .map_err(|e| failed(e.to_string()))?,
            ),
            Container::Arrow => Format::Arrow(
                FileWriter::try_new(sink, &schema()).map_err(|e| failed(e.to_string()))?,
            ),
        };
        Ok(OpenShard {
            format,
            partial,
            file,
            rows: 0,
            row_groups: Vec::new(),
        })
    }

    fn parquet_properties(&self) -> WriterProperties {
        let image = ColumnPath::from(IMAGE);
        WriterProperties::builder()
            .set_compression(match self.compression {
                Compression::None => ParquetCompression::UNCOMPRESSED,
                Compression::Snappy => ParquetCompression::SNAPPY,
            })
            // Row groups are cut by `write_group`, never by the writer.
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            // Image blobs are unique and opaque: dictionaries and min/max statistics only cost.
            .set_column_dictionary_enabled(image.clone(), false)
            .set_column_statistics_enabled(image, EnabledStatistics::None)
            .set_created_by(format!("ssl-pack {}", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// Finishes a shard file, syncs it and renames it from `.partial` to its final name.
fn close(shard: OpenShard, root: &Path) -> Result<ShardInfo, PackError> {
    let failed = |problem: String| PackError::Write {
        path: shard.partial.clone(),
        problem,
    };
    let sink = match shard.format {
        Format::Parquet(w) => w.into_inner().map_err(|e| failed(e.to_string()))?,
        Format::Arrow(w) => w.into_inner().map_err(|e| failed(e.to_string()))?,
    };
    let (buffered, sha256, bytes) = sink.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| failed(e.error().to_string()))?;
    file.sync_all().map_err(|e| failed(e.to_string()))?;
    let final_path = root.join(&shard.file);
    fs::rename(&shard.partial, &final_path).map_err(PackError::io(&final_path))?;
    Ok(ShardInfo {
        file: shard.file,
        rows: shard.rows,
        bytes,
        sha256,
        row_groups: shard.row_groups,
    })
}
