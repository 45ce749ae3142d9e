//! Fixed-size-record binary files (the CIFAR and STL-10 releases): size checks up front, then
//! records streamed in order.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::PackError;

/// A file of `count` records of `record_size` bytes each.
#[derive(Debug, Clone)]
pub struct RecordFile {
    pub path: PathBuf,
    pub record_size: usize,
    pub count: usize,
}

impl RecordFile {
    /// Checks that `path` exists and its size is a non-zero multiple of `record_size`;
    /// `what` describes a record for the error message (e.g. "1 label + 3072 pixel bytes").
    pub fn open(path: &Path, record_size: usize, what: &str) -> Result<Self, PackError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PackError::source(path, "missing file")
            } else {
                PackError::Io {
                    path: path.to_path_buf(),
                    error: e,
                }
            }
        })?;
        let size = meta.len();
        if size == 0 || size % record_size as u64 != 0 {
            return Err(PackError::source(
                path,
                format!(
                    "size {size} bytes is not a multiple of the {record_size}-byte record ({what}); the file is truncated or not this format"
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            record_size,
            count: (size / record_size as u64) as usize,
        })
    }

    /// Streams `(record number, bytes)` in file order.
    pub fn records(self) -> impl Iterator<Item = Result<(usize, Vec<u8>), PackError>> + Send {
        let mut reader: Option<BufReader<File>> = None;
        let mut next = 0usize;
        std::iter::from_fn(move || {
            if next >= self.count {
                return None;
            }
            if reader.is_none() {
                match File::open(&self.path) {
                    Ok(f) => reader = Some(BufReader::with_capacity(1 << 20, f)),
                    Err(e) => {
                        next = self.count;
                        return Some(Err(PackError::Io {
                            path: self.path.clone(),
                            error: e,
                        }));
                    }
                }
            }
            let mut buf = vec![0u8; self.record_size];
            let result = reader.as_mut().expect("opened above").read_exact(&mut buf);
            let i = next;
            next += 1;
            Some(match result {
                Ok(()) => Ok((i, buf)),
                Err(e) => {
                    next = self.count;
                    Err(PackError::source(
                        &self.path,
                        format!("record {i}: read failed: {e}"),
                    ))
                }
            })
        })
    }
}

/// Planar (CHW) RGB bytes to an HWC image; `column_major` for STL-10's transposed planes.
pub fn planar_to_rgb(planes: &[u8], side: u32, column_major: bool) -> RgbImage {
    let n = (side * side) as usize;
    RgbImage::from_fn(side, side, |x, y| {
        let p = if column_major {
            x * side + y
        } else {
            y * side + x
        } as usize;
        image::Rgb([planes[p], planes[n + p], planes[2 * n + p]])
    })
}

/// Reads a class-name file: one name per line, blank lines ignored.
pub fn read_names(path: &Path) -> Result<Vec<String>, PackError> {
    let text = std::fs::read_to_string(path).map_err(PackError::io(path))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}
