//! Reading packed shards: Parquet row groups on demand (metadata parsed once per shard) and
//! Arrow IPC files memory-mapped with zero-copy record batches.
//!
//! `ShardReader::open(dir)?` checks the manifest first; shards open lazily and are cached, so
//! many threads can share one reader.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::Block;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::manifest::{shard_path, Container, Manifest, ShardInfo};
use super::schema::{schema, RowGroup, RowMeta, IMAGE};
use super::ShardError;

/// A packed dataset opened for reading.
#[derive(Debug)]
pub struct ShardReader {
    dir: PathBuf,
    manifest: Manifest,
    open: Mutex<HashMap<PathBuf, Arc<Shard>>>,
}

impl ShardReader {
    /// Opens `dir`, reading and checking its manifest. Shards are opened when first used.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ShardError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::load(&dir)?;
        Ok(Self {
            dir,
            manifest,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The side of `split`'s images when every one is the same square size (CIFAR's 32, STL's
    /// 96), read from the size columns only; `None` for mixed sizes or an empty split.
    pub fn square_side(&self, split: &str) -> Result<Option<u32>, ShardError> {
        let mut side = None;
        for index in 0..self.manifest.split(split)?.shards.len() {
            let shard = self.shard(split, index)?;
            for group in 0..shard.num_groups() {
                let meta = shard.read_meta(group)?;
                for (h, w) in meta.height.values().iter().zip(meta.width.values()) {
                    if h != w || side.is_some_and(|s| s != *h) {
                        return Ok(None);
                    }
                    side = Some(*h);
                }
            }
        }
        Ok(side.map(u32::from))
    }

    /// The opened shard `index` of `split`, cached for later calls.
    pub fn shard(&self, split: &str, index: usize) -> Result<Arc<Shard>, ShardError> {
        let info = self
            .manifest
            .split(split)?
            .shards
            .get(index)
            .ok_or_else(|| ShardError::Schema {
                file: format!("{split} split"),
                problem: format!("no shard {index}"),
            })?;
        let path = shard_path(&self.dir, info);
        if let Some(shard) = self.open.lock().expect("no panics while locked").get(&path) {
            return Ok(shard.clone());
        }
        let shard = Arc::new(Shard::open(&path, info, self.manifest.container)?);
        self.open
            .lock()
            .expect("no panics while locked")
            .insert(path, shard.clone());
        Ok(shard)
    }
}

/// One open shard file.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    name: String,
    kind: ShardKind,
}

#[derive(Debug)]
enum ShardKind {
    Parquet {
        metadata: ArrowReaderMetadata,
        /// The file, mapped: page reads are slices of it, so a damaged length can only run to
        /// its end (through a `File`, one made the reader loop on syscalls for minutes).
        data: bytes::Bytes,
    },
    Arrow {
        buffer: Buffer,
        decoder: FileDecoder,
        blocks: Vec<Block>,
    },
}

impl Shard {
    /// Opens a shard file and checks its schema and group count against the manifest.
    pub fn open(path: &Path, info: &ShardInfo, container: Container) -> Result<Self, ShardError> {
        if !path.is_file() {
            return Err(ShardError::MissingShard {
                file: path.to_path_buf(),
            });
        }
        let kind = match container {
            Container::Parquet => open_parquet(path)?,
            Container::Arrow => open_arrow(path)?,
        };
        let shard = Self {
            path: path.to_path_buf(),
            name: info.file.clone(),
            kind,
        };
        if shard.num_groups() != info.row_groups.len() {
            return Err(ShardError::Schema {
                file: info.file.clone(),
                problem: format!(
                    "file has {} row groups, the manifest says {}",
                    shard.num_groups(),
                    info.row_groups.len()
                ),
            });
        }
        Ok(shard)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard's path relative to the dataset, as used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn num_groups(&self) -> usize {
        match &self.kind {
            ShardKind::Parquet { metadata, .. } => metadata.metadata().num_row_groups(),
            ShardKind::Arrow { blocks, .. } => blocks.len(),
        }
    }

    /// Reads row group (Parquet) or record batch (Arrow) `group`.
    pub fn read_group(&self, group: usize) -> Result<RowGroup, ShardError> {
        let batch = self.read_batch(group, true)?;
        RowGroup::try_from_batch(&batch, &self.name)
    }

    /// Reads every column but the images of `group` (Parquet skips their pages).
    pub fn read_meta(&self, group: usize) -> Result<RowMeta, ShardError> {
        let batch = self.read_batch(group, false)?;
        RowMeta::try_from_batch(&batch, &self.name)
    }

    /// A damaged file must not reach the row accessors: the readers' own panics are contained
    /// and every array is validated (offsets within buffers, lengths consistent) before use.
    fn read_batch(&self, group: usize, with_images: bool) -> Result<RecordBatch, ShardError> {
        let damaged = |problem: String| ShardError::Schema {
            file: self.name.clone(),
            problem: format!("row group {group}: {problem}"),
        };
        let batch = super::contain::contain(|| self.read_batch_unchecked(group, with_images))
            .map_err(damaged)??;
        for column in batch.columns() {
            column
                .to_data()
                .validate_full()
                .map_err(|e| damaged(format!("invalid data ({e})")))?;
        }
        Ok(batch)
    }

    fn read_batch_unchecked(
        &self,
        group: usize,
        with_images: bool,
    ) -> Result<RecordBatch, ShardError> {
        Ok(match &self.kind {
            ShardKind::Parquet { metadata, data } => {
                self.read_parquet_group(metadata, data, group, with_images)?
            }
            ShardKind::Arrow {
                buffer,
                decoder,
                blocks,
            } => {
                let block = blocks.get(group).ok_or_else(|| self.no_group(group))?;
                let len = block.bodyLength() as usize + block.metaDataLength() as usize;
                let start = usize::try_from(block.offset()).unwrap_or(usize::MAX);
                if start.checked_add(len).is_none_or(|end| end > buffer.len()) {
                    return Err(ShardError::Schema {
                        file: self.name.clone(),
                        problem: format!("record batch {group} lies past the end of the file"),
                    });
                }
                let data = buffer.slice_with_length(start, len);
                decoder
                    .read_record_batch(block, &data)
                    .map_err(|source| ShardError::Arrow {
                        file: self.path.clone(),
                        error: source,
                    })?
                    .ok_or_else(|| self.no_group(group))?
            }
        })
    }

    fn read_parquet_group(
        &self,
        metadata: &ArrowReaderMetadata,
        data: &bytes::Bytes,
        group: usize,
        with_images: bool,
    ) -> Result<RecordBatch, ShardError> {
        let group_meta = metadata
            .metadata()
            .row_groups()
            .get(group)
            .ok_or_else(|| self.no_group(group))?;
        super::page_headers::check(data, group_meta).map_err(|problem| ShardError::Schema {
            file: self.name.clone(),
            problem: format!("row group {group}: {problem}"),
        })?;
        let rows = group_meta.num_rows();
        let parquet_err = |source| ShardError::Parquet {
            file: self.path.clone(),
            error: source,
        };
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(data.clone(), metadata.clone());
        if !with_images {
            let keep = metadata
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() != IMAGE)
                .map(|(i, _)| i);
            let mask = ProjectionMask::roots(metadata.parquet_schema(), keep);
            builder = builder.with_projection(mask);
        }
        let reader = builder
            .with_row_groups(vec![group])
            .with_batch_size(usize::try_from(rows).unwrap_or(1).max(1))
            .build()
            .map_err(parquet_err)?;
        let mut batches = Vec::with_capacity(1);
        for batch in reader {
            batches.push(batch.map_err(|source| ShardError::Arrow {
                file: self.path.clone(),
                error: source,
            })?);
        }
        match batches.len() {
            1 => Ok(batches.pop().expect("one batch")),
            0 => Ok(RecordBatch::new_empty(if with_images {
                schema()
            } else {
                metadata.schema().clone()
            })),
            n => Err(ShardError::Schema {
                file: self.name.clone(),
                problem: format!("row group {group} decoded as {n} batches, expected 1"),
            }),
        }
    }

    fn no_group(&self, group: usize) -> ShardError {
        ShardError::Schema {
            file: self.name.clone(),
            problem: format!("no row group {group} (the file has {})", self.num_groups()),
        }
    }
}

fn open_parquet(path: &Path) -> Result<ShardKind, ShardError> {
    let file = File::open(path).map_err(ShardError::io(path))?;
    // SAFETY: as for Arrow shards below: written once, never modified in place.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(ShardError::io(path))?;
    let data = bytes::Bytes::from_owner(mmap);
    let metadata =
        ArrowReaderMetadata::load(&data, ArrowReaderOptions::new()).map_err(|source| {
            ShardError::Parquet {
                file: path.to_path_buf(),
                error: source,
            }
        })?;
    check_schema(path, metadata.schema())?;
    Ok(ShardKind::Parquet { metadata, data })
}

fn open_arrow(path: &Path) -> Result<ShardKind, ShardError> {
    let file = File::open(path).map_err(ShardError::io(path))?;
    // SAFETY: shards are written once through a temporary name and never modified in place;
    // a file truncated under us would fault, which is the documented mmap contract.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(ShardError::io(path))?;
    let buffer = Buffer::from(bytes::Bytes::from_owner(mmap));
    let bad = |problem: String| ShardError::Schema {
        file: path.display().to_string(),
        problem,
    };
    if buffer.len() < 16 || &buffer[..6] != b"ARROW1" || &buffer[buffer.len() - 6..] != b"ARROW1" {
        return Err(bad("not an Arrow IPC file (missing ARROW1 magic)".into()));
    }
    let trailer_start = buffer.len() - 10;
    let footer_len = read_footer_length(buffer[trailer_start..].try_into().expect("10 bytes"))
        .map_err(|source| ShardError::Arrow {
            file: path.to_path_buf(),
            error: source,
        })?;
    let footer_start = trailer_start
        .checked_sub(footer_len)
        .ok_or_else(|| bad(format!("footer length {footer_len} exceeds the file")))?;
    let footer = arrow_ipc::root_as_footer(&buffer[footer_start..trailer_start])
        .map_err(|e| bad(format!("unreadable footer: {e}")))?;
    let fb_schema = footer
        .schema()
        .ok_or_else(|| bad("footer has no schema".into()))?;
    let file_schema =
        arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(|source| ShardError::Arrow {
            file: path.to_path_buf(),
            error: source,
        })?;
    check_schema(path, &Arc::new(file_schema))?;
    let blocks: Vec<Block> = footer
        .recordBatches()
        .map(|b| b.iter().copied().collect())
        .unwrap_or_default();
    let decoder = FileDecoder::new(schema(), footer.version());
    Ok(ShardKind::Arrow {
        buffer,
        decoder,
        blocks,
    })
}

fn check_schema(path: &Path, found: &arrow_schema::SchemaRef) -> Result<(), ShardError> {
    let expected = schema();
    for field in expected.fields() {
        match found.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(ShardError::Schema {
                    file: path.display().to_string(),
                    problem: format!(
                        "column `{}` has type {}, expected {}",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    ),
                })
            }
            Err(_) => {
                return Err(ShardError::Schema {
                    file: path.display().to_string(),
                    problem: format!(
                        "missing column `{}`; not a shard written by ssl-pack",
                        field.name()
                    ),
                })
            }
        }
    }
    Ok(())
}
