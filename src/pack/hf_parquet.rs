//! Parquet files as Hugging Face `datasets` writes them: an image column that is a struct with a
//! `bytes` field (plus `path`), or plain binary; an integer label column. Files are grouped into
//! splits by name (`train-00000-of-00002.parquet` -> `train`); class names come from the
//! `huggingface` key-value metadata (the `ClassLabel` names) when present.
//!
//! An image struct with a `path` and no bytes (what `Dataset.to_parquet` writes after
//! `load_dataset("imagefolder")`) is read from that path, taken relative to the Parquet file's
//! folder unless absolute. [`Rows`] reads any stream of record batches, so `save_to_disk`
//! folders (`hf_disk.rs`) share the column rules.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::config::SourceFormat;
use super::{PackError, Payload, Record, Source, SourceSplit};
use crate::shard::codec::CodecError;

const LABEL_CANDIDATES: [&str; 4] = ["label", "labels", "fine_label", "class"];
pub(super) const BATCH_ROWS: usize = 256;
/// Largest label accepted when the file names no classes: per-class counts are a dense vector,
/// so a stray huge label must not size it.
const MAX_UNNAMED_CLASSES: i64 = 100_000;

/// Parquet files under `path` (itself, or up to three directory levels down), sorted.
pub fn list_parquet_files(path: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() && depth > 0 {
                walk(&p, depth - 1, out);
            } else if p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
    } else {
        walk(path, 3, &mut out);
    }
    out.sort();
    out
}

/// The split a file belongs to: the part of its name before `-NNNNN-of-NNNNN` or the first `-`
/// (`data/train-00000-of-00001.parquet`); for files named only by number (`0000.parquet`,
/// `part-0.parquet`, as in the Hub's `refs/convert/parquet` tree `default/train/0000.parquet`),
/// the folder that holds them when it has a split's name, else `train`.
fn split_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = stem.split('-').next().filter(|s| !s.is_empty());
    let numbered = prefix.is_none_or(|p| p == "part" || p.bytes().all(|b| b.is_ascii_digit()));
    if !numbered {
        return prefix.expect("not numbered").to_string();
    }
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| super::folder::is_split_name(n))
        .unwrap_or_else(|| "train".into())
}

#[derive(PartialEq)]
pub(super) struct Columns {
    pub image: String,
    pub label: Option<String>,
}

/// The record batches of one file.
pub(super) type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;
/// Opens a file of a split as record batches.
pub(super) type OpenBatches = fn(&Path) -> Result<Batches, PackError>;

fn parquet_batches(path: &Path) -> Result<Batches, PackError> {
    let reader = builder(path)?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| PackError::source(path, format!("read failed: {e}")))?;
    Ok(Box::new(reader))
}

pub fn open(
    path: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
) -> Result<Source, PackError> {
    let files = list_parquet_files(path);
    if files.is_empty() {
        return Err(PackError::source(path, "no .parquet files here"));
    }
    let mut by_split: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        by_split.entry(split_of(&f)).or_default().push(f);
    }
    let mut classes = None;
    let mut splits = Vec::new();
    for (name, files) in by_split {
        let mut len = 0usize;
        let mut columns = None;
        for f in &files {
            let builder = builder(f)?;
            let cols = find_columns(f, builder.schema(), image_column, label_column)?;
            if classes.is_none() {
                classes = class_names(
                    builder.metadata().file_metadata().key_value_metadata(),
                    cols.label.as_deref(),
                );
            }
            len += usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
            match &columns {
                None => columns = Some(cols),
                Some(first) if *first != cols => {
                    return Err(PackError::source(
                        f,
                        format!(
                            "columns differ from the split's first file: image `{}`, label {:?} here vs image `{}`, label {:?} there",
                            cols.image, cols.label, first.image, first.label
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let Some(columns) = columns else {
            return Err(PackError::source(
                path,
                format!("split `{name}` has no Parquet files"),
            ));
        };
        let n_classes = classes.as_ref().map(Vec::len);
        splits.push(SourceSplit {
            name,
            len,
            records: Box::new(Rows::new(files, parquet_batches, columns, n_classes)),
            not_images: Default::default(),
        });
    }
    Ok(Source {
        format: SourceFormat::HfParquet,
        classes,
        splits,
    })
}

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, PackError> {
    let file = File::open(path).map_err(PackError::io(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| PackError::source(path, format!("not a readable Parquet file: {e}")))
}

pub(super) fn find_columns(
    path: &Path,
    schema: &Schema,
    image: Option<&str>,
    label: Option<&str>,
) -> Result<Columns, PackError> {
    let is_image = |dt: &DataType| match dt {
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes"),
        DataType::Binary | DataType::LargeBinary => true,
        _ => false,
    };
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let image = match image {
        Some(name) => {
            let field = schema.field_with_name(name).map_err(|_| {
                PackError::source(path, format!("no image column `{name}`; columns are {}", names.join(", ")))
            })?;
            if !is_image(field.data_type()) {
                return Err(PackError::source(
                    path,
                    format!("column `{name}` is {}, expected a struct with `bytes` or binary", field.data_type()),
                ));
            }
            name.to_string()
        }
        None => schema
            .fields()
            .iter()
            .find(|f| is_image(f.data_type()))
            .map(|f| f.name().clone())
            .ok_or_else(|| {
                PackError::source(
                    path,
                    format!("no image column (a struct with `bytes`, or binary); columns are {}; pass --image-column", names.join(", ")),
                )
            })?,
    };
    let label = match label {
        Some(name) if schema.field_with_name(name).is_err() => {
            return Err(PackError::source(
                path,
                format!("no label column `{name}`; columns are {}", names.join(", ")),
            ))
        }
        Some(name) => Some(name.to_string()),
        None => LABEL_CANDIDATES
            .iter()
            .find(|c| names.contains(c))
            .map(|c| c.to_string()),
    };
    Ok(Columns { image, label })
}

/// `ClassLabel` names from the `huggingface` metadata entry: `info.features.<label>.names`.
fn class_names(
    kv: Option<&Vec<parquet::file::metadata::KeyValue>>,
    label: Option<&str>,
) -> Option<Vec<String>> {
    let entry = kv?.iter().find(|kv| kv.key == "huggingface")?;
    let json: serde_json::Value = serde_json::from_str(entry.value.as_deref()?).ok()?;
    class_names_in(&json, label)
}

/// `<label>.names` of the `features` in a `huggingface` metadata entry or `dataset_info.json`.
pub(super) fn class_names_in(json: &serde_json::Value, label: Option<&str>) -> Option<Vec<String>> {
    let features = json
        .get("info")
        .and_then(|i| i.get("features"))
        .or_else(|| json.get("features"))?;
    let names = features.get(label?)?.get("names")?.as_array()?;
    names.iter().map(|n| n.as_str().map(String::from)).collect()
}

/// Streams records from a split's files in order.
pub(super) struct Rows {
    files: std::vec::IntoIter<PathBuf>,
    open: OpenBatches,
    columns: Columns,
    classes: Option<usize>,
    current: Option<(PathBuf, Batches)>,
    batch: Option<(RecordBatch, usize)>,
    file_row: usize,
    index: u64,
    failed: bool,
}

impl Rows {
    pub(super) fn new(
        files: Vec<PathBuf>,
        open: OpenBatches,
        columns: Columns,
        classes: Option<usize>,
    ) -> Self {
        Self {
            files: files.into_iter(),
            open,
            columns,
            classes,
            current: None,
            batch: None,
            file_row: 0,
            index: 0,
            failed: false,
        }
    }

    fn next_batch(&mut self) -> Result<bool, PackError> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => {
                        self.batch = Some((batch, 0));
                        return Ok(true);
                    }
                    Some(Err(e)) => {
                        return Err(PackError::source(path.clone(), format!("read failed: {e}")))
                    }
                    None => self.current = None,
                }
            }
            let Some(path) = self.files.next() else {
                return Ok(false);
            };
            let batches = (self.open)(&path)?;
            self.current = Some((path, batches));
            self.file_row = 0;
        }
    }

    fn record(&mut self) -> Result<Record, PackError> {
        let (batch, i) = self.batch.as_mut().expect("a batch is loaded");
        let row = *i;
        *i += 1;
        let path = &self.current.as_ref().expect("a file is open").0;
        let file_row = self.file_row;
        self.file_row += 1;
        let origin = format!("{}: row {file_row}", path.display());
        let image = batch
            .column_by_name(&self.columns.image)
            .expect("checked at open");
        let cell = image_cell(image, row);
        let label = match &self.columns.label {
            Some(name) => label_value(batch.column_by_name(name).expect("checked at open"), row)
                .ok_or_else(|| {
                    PackError::source(
                        path,
                        format!("row {file_row}: label column `{name}` is null or not an integer"),
                    )
                })?,
            None => -1,
        };
        let limit = self.classes.map_or(MAX_UNNAMED_CLASSES, |n| n as i64);
        if label < -1 || label >= limit {
            return Err(PackError::source(
                path,
                format!(
                    "row {file_row}: label {label} out of range -1..{}",
                    limit - 1
                ),
            ));
        }
        let index = self.index;
        self.index += 1;
        // A missing image is a per-image fault, so `--on-error skip` can leave it out.
        let missing = |error| PackError::Image {
            origin: origin.clone(),
            error,
        };
        let payload = match cell {
            ImageCell::Bytes(bytes) => Payload::Bytes(bytes),
            ImageCell::Path(p) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(&p);
                if !file.is_file() {
                    return Err(missing(CodecError::PathOnly {
                        path: file.display().to_string(),
                    }));
                }
                Payload::File(file)
            }
            ImageCell::Null => return Err(missing(CodecError::NoBytes)),
        };
        Ok(Record {
            index,
            label: label as i32,
            origin,
            payload,
        })
    }
}

impl Iterator for Rows {
    type Item = Result<Record, PackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let exhausted = self.batch.as_ref().is_none_or(|(b, i)| *i >= b.num_rows());
        if exhausted {
            match self.next_batch() {
                Ok(true) => return self.next(),
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let result = self.record();
        self.failed = result
            .as_ref()
            .is_err_and(|e| !matches!(e, PackError::Image { .. }));
        Some(result)
    }
}

/// What an image cell holds: bytes, else a path (HF `Image` structs), else nothing.
enum ImageCell {
    Bytes(Vec<u8>),
    Path(String),
    Null,
}

fn image_cell(column: &ArrayRef, row: usize) -> ImageCell {
    if column.is_null(row) {
        return ImageCell::Null;
    }
    let Some(image) = column.as_struct_opt() else {
        return binary_value(column, row).map_or(ImageCell::Null, ImageCell::Bytes);
    };
    let bytes = image
        .column_by_name("bytes")
        .and_then(|b| binary_value(b, row));
    let path = image.column_by_name("path").and_then(|p| {
        let value = match p.data_type() {
            DataType::Utf8 => p.as_string::<i32>().value(row).to_string(),
            DataType::LargeUtf8 => p.as_string::<i64>().value(row).to_string(),
            _ => return None,
        };
        (!p.is_null(row) && !value.is_empty()).then_some(value)
    });
    match (bytes, path) {
        (Some(bytes), _) => ImageCell::Bytes(bytes),
        (None, Some(path)) => ImageCell::Path(path),
        (None, None) => ImageCell::Null,
    }
}

fn binary_value(column: &ArrayRef, row: usize) -> Option<Vec<u8>> {
    if column.is_null(row) {
        return None;
    }
    if let Some(a) = column.as_binary_opt::<i32>() {
        return Some(a.value(row).to_vec());
    }
    column.as_binary_opt::<i64>().map(|a| a.value(row).to_vec())
}

fn label_value(column: &ArrayRef, row: usize) -> Option<i64> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row),
        DataType::Int32 => i64::from(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int16 => i64::from(column.as_primitive::<Int16Type>().value(row)),
        DataType::Int8 => i64::from(column.as_primitive::<Int8Type>().value(row)),
        DataType::UInt16 => i64::from(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt8 => i64::from(column.as_primitive::<UInt8Type>().value(row)),
        _ => return None,
    })
}
