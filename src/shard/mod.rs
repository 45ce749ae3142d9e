//! Packed datasets on disk: the column schema, image codecs, the manifest, checksums and the
//! shard reader shared by `ssl-pack verify`, the loader and the evaluator.

pub mod codec;
pub mod contain;
pub mod export;
pub mod manifest;
pub mod page_headers;
pub mod reader;
pub mod schema;
pub mod staging;
pub mod verify;

use std::path::PathBuf;

pub use codec::Encoding;
pub use manifest::{Container, Manifest, ShardInfo, SplitInfo};
pub use reader::ShardReader;
pub use schema::{Row, RowGroup, RowRef};

/// Everything that can go wrong reading a packed dataset. Messages name the file and, where
/// there is one, the row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no manifest.json in {dir}; a directory without a manifest is not a dataset (run `ssl-pack write` first)")]
    NoManifest { dir: PathBuf },
    #[error("{path}: bad manifest: {problem}")]
    BadManifest { path: PathBuf, problem: String },
    #[error("{file}: {problem}")]
    Schema { file: String, problem: String },
    #[error("{file}: row {row}: {problem}")]
    Row {
        file: String,
        row: usize,
        problem: String,
    },
    #[error("{file}: shard named in the manifest is missing")]
    MissingShard { file: PathBuf },
    #[error("{file}: checksum mismatch: manifest says sha256 {expected}, file has {found} (the shard is corrupt; re-pack it)")]
    Checksum {
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{file}: size mismatch: manifest says {expected} bytes, file has {found}")]
    Size {
        file: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{file}: {error}")]
    Parquet {
        file: PathBuf,
        error: parquet::errors::ParquetError,
    },
    #[error("{file}: {error}")]
    Arrow {
        file: PathBuf,
        error: arrow_schema::ArrowError,
    },
    #[error("unknown split `{split}`; the dataset has {available}")]
    UnknownSplit { split: String, available: String },
}

impl ShardError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io { path, error }
    }
}
