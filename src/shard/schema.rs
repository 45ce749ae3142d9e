//! The one definition of a shard's columns, shared by the writer (`pack`) and every reader.
//!
//! | column   | type   | meaning                                             |
//! |----------|--------|-----------------------------------------------------|
//! | index    | UInt64 | position of the image in its source split           |
//! | label    | Int32  | class id, -1 when unlabeled                         |
//! | image    | Binary | pixels, as `encoding` says                          |
//! | height   | UInt16 | rows of the decoded image                           |
//! | width    | UInt16 | columns of the decoded image                        |
//! | encoding | UInt8  | 0 raw RGB8 HWC, 1 JPEG, 2 PNG ([`Encoding`])        |

use std::sync::{Arc, OnceLock};

use arrow_array::{
    Array, BinaryArray, Int32Array, RecordBatch, UInt16Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::codec::Encoding;
use super::ShardError;

pub const INDEX: &str = "index";
pub const LABEL: &str = "label";
pub const IMAGE: &str = "image";
pub const HEIGHT: &str = "height";
pub const WIDTH: &str = "width";
pub const ENCODING: &str = "encoding";

/// The Arrow schema of every shard.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(INDEX, DataType::UInt64, false),
                Field::new(LABEL, DataType::Int32, false),
                Field::new(IMAGE, DataType::Binary, false),
                Field::new(HEIGHT, DataType::UInt16, false),
                Field::new(WIDTH, DataType::UInt16, false),
                Field::new(ENCODING, DataType::UInt8, false),
            ]))
        })
        .clone()
}

/// One image as stored in a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub index: u64,
    pub label: i32,
    pub image: Vec<u8>,
    pub height: u16,
    pub width: u16,
    pub encoding: Encoding,
}

/// Builds a record batch from rows (the writer's side of the schema).
pub fn rows_to_batch(rows: &[Row]) -> RecordBatch {
    let columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.index))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.label))),
        Arc::new(BinaryArray::from_iter_values(
            rows.iter().map(|r| r.image.as_slice()),
        )),
        Arc::new(UInt16Array::from_iter_values(rows.iter().map(|r| r.height))),
        Arc::new(UInt16Array::from_iter_values(rows.iter().map(|r| r.width))),
        Arc::new(UInt8Array::from_iter_values(
            rows.iter().map(|r| r.encoding as u8),
        )),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns are built to match the schema")
}

/// Typed, zero-copy view of a record batch read from a shard (the reader's side).
#[derive(Debug, Clone)]
pub struct RowGroup {
    pub index: UInt64Array,
    pub label: Int32Array,
    pub image: BinaryArray,
    pub height: UInt16Array,
    pub width: UInt16Array,
    pub encoding: UInt8Array,
}

/// A borrowed row of a [`RowGroup`].
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    pub index: u64,
    pub label: i32,
    pub image: &'a [u8],
    pub height: u16,
    pub width: u16,
    pub encoding: Encoding,
}

/// The columns of a row group without its images: what a loader needs to plan.
#[derive(Debug, Clone)]
pub struct RowMeta {
    pub index: UInt64Array,
    pub label: Int32Array,
    pub height: UInt16Array,
    pub width: UInt16Array,
}

impl RowMeta {
    pub fn try_from_batch(batch: &RecordBatch, origin: &str) -> Result<Self, ShardError> {
        Ok(Self {
            index: column(batch, INDEX, origin)?,
            label: column(batch, LABEL, origin)?,
            height: column(batch, HEIGHT, origin)?,
            width: column(batch, WIDTH, origin)?,
        })
    }
}

fn column<T: Array + Clone + 'static>(
    batch: &RecordBatch,
    name: &str,
    origin: &str,
) -> Result<T, ShardError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| ShardError::Schema {
            file: origin.to_string(),
            problem: format!("missing column `{name}`"),
        })?;
    if col.null_count() > 0 {
        return Err(ShardError::Schema {
            file: origin.to_string(),
            problem: format!("column `{name}` has nulls"),
        });
    }
    col.as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| ShardError::Schema {
            file: origin.to_string(),
            problem: format!(
                "column `{name}` has type {}, expected {}",
                col.data_type(),
                schema()
                    .field_with_name(name)
                    .map(|f| f.data_type().to_string())
                    .unwrap_or_default()
            ),
        })
}

impl RowGroup {
    /// Checks a batch against the schema; `origin` names the shard in errors.
    pub fn try_from_batch(batch: &RecordBatch, origin: &str) -> Result<Self, ShardError> {
        Ok(Self {
            index: column(batch, INDEX, origin)?,
            label: column(batch, LABEL, origin)?,
            image: column(batch, IMAGE, origin)?,
            height: column(batch, HEIGHT, origin)?,
            width: column(batch, WIDTH, origin)?,
            encoding: column(batch, ENCODING, origin)?,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`; an unknown encoding byte is an error naming the row.
    pub fn row(&self, i: usize, origin: &str) -> Result<RowRef<'_>, ShardError> {
        let code = self.encoding.value(i);
        let encoding = Encoding::from_code(code).ok_or_else(|| ShardError::Row {
            file: origin.to_string(),
            row: i,
            problem: format!(
                "unknown encoding {code}, expected 0 (raw), 1 (jpeg), 2 (png) or 3 (gray)"
            ),
        })?;
        Ok(RowRef {
            index: self.index.value(i),
            label: self.label.value(i),
            image: self.image.value(i),
            height: self.height.value(i),
            width: self.width.value(i),
            encoding,
        })
    }
}
