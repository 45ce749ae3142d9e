//! The Parquet side of `ssl-pack export --to hf`: the `datasets` features, the file schema and
//! properties, and the writer that cuts files and names them as the Hub does.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding as ParquetEncoding};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::Serialize;

use super::{ExportError, ExportOptions, SplitExport, DATA_DIR, HF_METADATA_KEY};
use crate::shard::schema::{INDEX, LABEL};

/// Row groups close at this many rows or [`GROUP_BYTES`] of images, whichever comes first:
/// reading one row reads its whole group, so groups stay small enough for the Hub's viewer and
/// random access, and large enough that Parquet's per-group overhead stays negligible.
const GROUP_ROWS: usize = 1000;
const GROUP_BYTES: usize = 64 << 20;

/// The `huggingface` metadata: `{"info": {"features": ...}}` as `datasets`' ArrowWriter writes
/// it. Structs, not a JSON map, because the key order is the column order `datasets` restores.
pub(super) fn features_json(classes: &[String]) -> String {
    #[derive(Serialize)]
    struct Meta<'a> {
        info: Info<'a>,
    }
    #[derive(Serialize)]
    struct Info<'a> {
        features: Features<'a>,
    }
    #[derive(Serialize)]
    struct Features<'a> {
        image: Feature<'a>,
        label: Feature<'a>,
        index: Feature<'a>,
    }
    #[derive(Serialize, Clone, Copy)]
    struct Feature<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        names: Option<&'a [String]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dtype: Option<&'static str>,
        #[serde(rename = "_type")]
        kind: &'static str,
    }
    let int64 = Feature {
        names: None,
        dtype: Some("int64"),
        kind: "Value",
    };
    let label = if classes.is_empty() {
        int64
    } else {
        Feature {
            names: Some(classes),
            dtype: None,
            kind: "ClassLabel",
        }
    };
    let image = Feature {
        names: None,
        dtype: None,
        kind: "Image",
    };
    let features = Features {
        image,
        label,
        index: int64,
    };
    serde_json::to_string(&Meta {
        info: Info { features },
    })
    .expect("plain structs serialise")
}

/// One exported row.
pub(super) struct HfRow {
    pub image: Vec<u8>,
    pub label: i64,
    pub index: i64,
    pub png_encoded: bool,
}

/// Lossless PNG at the `png` crate's balanced level: on CIFAR-10 1.6% smaller than Pillow's
/// default (what `datasets` writes when it encodes arrays), so nothing is gained by going slower.
/// Grey images stay one channel (PIL mode "L", as torchvision's MNIST gives them).
pub(super) fn encode_png<P>(image: &image::ImageBuffer<P, Vec<u8>>) -> Result<Vec<u8>, String>
where
    P: image::Pixel<Subpixel = u8> + image::PixelWithColorType,
{
    let mut out = Vec::with_capacity(image.as_raw().len() / 2 + 128);
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive);
    image
        .write_with_encoder(encoder)
        .map_err(|e| format!("cannot encode as PNG: {e}"))?;
    Ok(out)
}

type Sink = ArrowWriter<BufWriter<File>>;

/// Writes one split's files under temporary names and, once their count is known, renames them to
/// the Hub's `<split>-NNNNN-of-NNNNN.parquet`.
pub(super) struct HfWriter {
    dir: PathBuf,
    split: String,
    image_fields: Fields,
    schema: SchemaRef,
    props: WriterProperties,
    shard_bytes: u64,
    shard_rows: Option<u64>,
    pending: Vec<HfRow>,
    pending_bytes: usize,
    current: Option<(Sink, PathBuf, u64)>,
    done: Vec<PathBuf>,
    rows: u64,
    png_encoded: u64,
}

impl HfWriter {
    pub(super) fn new(dir: &Path, split: &str, features: &str, opts: &ExportOptions) -> Self {
        let image_fields = Fields::from(vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]);
        // Nullable, as pyarrow infers them from `datasets`' features.
        let schema = Schema::new(vec![
            Field::new("image", DataType::Struct(image_fields.clone()), true),
            Field::new(LABEL, DataType::Int64, true),
            Field::new(INDEX, DataType::Int64, true),
        ])
        .with_metadata(HashMap::from([(
            HF_METADATA_KEY.to_string(),
            features.to_string(),
        )]));
        // Image leaves as `datasets` writes them: plain, uncompressed, no dictionary or
        // statistics (the bytes are already compressed and unique); the integers get snappy.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                HF_METADATA_KEY.to_string(),
                features.to_string(),
            )]))
            .set_created_by(format!("ssl-pack {}", env!("CARGO_PKG_VERSION")));
        for leaf in ["bytes", "path"] {
            let path = ColumnPath::new(vec!["image".into(), leaf.into()]);
            props = props
                .set_column_compression(path.clone(), Compression::UNCOMPRESSED)
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path.clone(), ParquetEncoding::PLAIN)
                .set_column_statistics_enabled(path, EnabledStatistics::None);
        }
        Self {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            image_fields,
            schema: Arc::new(schema),
            props: props.build(),
            shard_bytes: opts.shard_bytes,
            shard_rows: opts.shard_rows,
            pending: Vec::new(),
            pending_bytes: 0,
            current: None,
            done: Vec::new(),
            rows: 0,
            png_encoded: 0,
        }
    }

    pub(super) fn push(&mut self, row: HfRow) -> Result<(), ExportError> {
        self.pending_bytes += row.image.len();
        self.pending.push(row);
        let in_file = self.current.as_ref().map_or(0, |c| c.2) + self.pending.len() as u64;
        let file_full = self.shard_rows.is_some_and(|n| in_file >= n);
        if file_full || self.pending.len() >= GROUP_ROWS || self.pending_bytes >= GROUP_BYTES {
            self.write_group(file_full)?;
        }
        Ok(())
    }

    fn write_group(&mut self, close_file: bool) -> Result<(), ExportError> {
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let (sink, partial, rows) = self.current.as_mut().expect("opened above");
        let rows_here = self.pending.len();
        let image = StructArray::new(
            self.image_fields.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values(
                    self.pending.iter().map(|r| r.image.as_slice()),
                )) as ArrayRef,
                Arc::new(StringArray::new_null(rows_here)),
            ],
            None,
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(image),
            Arc::new(Int64Array::from_iter_values(
                self.pending.iter().map(|r| r.label),
            )),
            Arc::new(Int64Array::from_iter_values(
                self.pending.iter().map(|r| r.index),
            )),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .expect("columns are built to match the schema");
        let failed = |e: parquet::errors::ParquetError| ExportError::Write {
            path: partial.clone(),
            problem: e.to_string(),
        };
        sink.write(&batch).map_err(failed)?;
        sink.flush().map_err(failed)?;
        *rows += rows_here as u64;
        self.rows += rows_here as u64;
        self.png_encoded += self.pending.iter().filter(|r| r.png_encoded).count() as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        if close_file || sink.bytes_written() as u64 >= self.shard_bytes {
            self.close()?;
        }
        Ok(())
    }

    fn open(&self) -> Result<(Sink, PathBuf, u64), ExportError> {
        let partial = self
            .dir
            .join(format!("{}-{:05}.partial", self.split, self.done.len()));
        let file = File::create(&partial).map_err(ExportError::io(&partial))?;
        let sink = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            self.schema.clone(),
            Some(self.props.clone()),
        )
        .map_err(|e| ExportError::Write {
            path: partial.clone(),
            problem: e.to_string(),
        })?;
        Ok((sink, partial, 0))
    }

    fn close(&mut self) -> Result<(), ExportError> {
        let Some((sink, partial, _)) = self.current.take() else {
            return Ok(());
        };
        let failed = |problem: String| ExportError::Write {
            path: partial.clone(),
            problem,
        };
        let buffered = sink.into_inner().map_err(|e| failed(e.to_string()))?;
        let file = buffered
            .into_inner()
            .map_err(|e| failed(e.error().to_string()))?;
        file.sync_all().map_err(|e| failed(e.to_string()))?;
        self.done.push(partial);
        Ok(())
    }

    /// Flushes the last rows and names the files; an empty split still gets one (empty) file,
    /// so the split exists for `datasets`.
    pub(super) fn finish(mut self) -> Result<SplitExport, ExportError> {
        if !self.pending.is_empty() {
            self.write_group(false)?;
        }
        if self.done.is_empty() && self.current.is_none() {
            self.current = Some(self.open()?);
        }
        self.close()?;
        let n = self.done.len();
        let mut files = Vec::with_capacity(n);
        let mut bytes = 0;
        for (k, partial) in self.done.iter().enumerate() {
            let name = format!("{}-{k:05}-of-{n:05}.parquet", self.split);
            let path = self.dir.join(&name);
            fs::rename(partial, &path).map_err(ExportError::io(&path))?;
            bytes += fs::metadata(&path).map_err(ExportError::io(&path))?.len();
            files.push(format!("{DATA_DIR}/{name}"));
        }
        Ok(SplitExport {
            name: self.split,
            rows: self.rows,
            files,
            bytes,
            png_encoded: self.png_encoded,
        })
    }
}
