//! IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST (as in torchvision's `raw/`
//! folders and the Debian packages), gzipped or not: a magic of two zero bytes, the element type
//! (0x08, unsigned byte) and the number of dimensions, then each dimension as a big-endian u32,
//! then the data. Images are `[n, rows, cols]` grey bytes, labels `[n]`.
//!
//! Files pair by name, `<prefix>-images-idx3-ubyte[.gz]` with `<prefix>-labels-idx1-ubyte[.gz]`
//! (also `<prefix>-images.idx3-ubyte`); the split is the prefix, `t10k` read as `test`, with a
//! prefix all files share (`emnist-`) dropped. Images stay single-channel: the packer stores them
//! as grey rows (a third of RGB's size) and the loader expands them to RGB. Class names are
//! Fashion-MNIST's when a folder on the path says "fashion", else the labels' numbers.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::GrayImage;

use super::config::SourceFormat;
use super::{PackError, Payload, Record, Source, SourceSplit};

const UNSIGNED_BYTE: u8 = 0x08;
const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Image files under `dir` (or `dir/raw`, torchvision's layout) with their label files.
fn pairs(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let dir = match dir.join("raw").is_dir() {
        true => dir.join("raw"),
        false => dir.to_path_buf(),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((prefix, rest)) = name
            .split_once("-images-idx3-ubyte")
            .or_else(|| name.split_once("-images.idx3-ubyte"))
        else {
            continue;
        };
        let labels = ["-labels-idx1-ubyte", "-labels.idx1-ubyte"]
            .iter()
            .map(|middle| dir.join(format!("{prefix}{middle}{rest}")))
            .find(|p| p.is_file());
        if let Some(labels) = labels {
            out.push((prefix.to_string(), entry.path(), labels));
        }
    }
    out.sort();
    out
}

pub fn is_idx_dir(path: &Path) -> bool {
    path.is_dir() && !pairs(path).is_empty()
}

pub fn open(path: &Path) -> Result<Source, PackError> {
    let found = pairs(path);
    if found.is_empty() {
        return Err(PackError::source(
            path,
            "no IDX image files with labels (train-images-idx3-ubyte[.gz] beside \
             train-labels-idx1-ubyte[.gz]) here or in raw/",
        ));
    }
    let names = split_names(found.iter().map(|(p, _, _)| p.as_str()).collect());
    let mut splits = Vec::new();
    let mut max_label = 0u8;
    for ((_, images, labels), name) in found.into_iter().zip(names) {
        let (rows, cols, pixels) = read_images(&images)?;
        let labels_bytes = read_labels(&labels)?;
        let n = labels_bytes.len();
        if pixels.len() / (rows * cols).max(1) != n {
            return Err(PackError::source(
                &labels,
                format!(
                    "{n} labels for {} images in {}",
                    pixels.len() / (rows * cols).max(1),
                    images.display()
                ),
            ));
        }
        max_label = labels_bytes.iter().copied().fold(max_label, u8::max);
        splits.push(SourceSplit {
            name,
            len: n,
            records: records(images, pixels, labels_bytes, rows, cols),
            not_images: BTreeMap::new(),
        });
    }
    let fashion = path.components().any(|c| {
        c.as_os_str()
            .to_string_lossy()
            .to_lowercase()
            .contains("fashion")
    });
    let classes = (fashion && max_label < 10)
        .then(|| FASHION_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok(Source {
        format: SourceFormat::Idx,
        classes,
        splits,
    })
}

fn records(
    file: PathBuf,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
) -> super::Records {
    let size = rows * cols;
    let pixels = std::sync::Arc::new(pixels);
    Box::new(labels.into_iter().enumerate().map(move |(i, label)| {
        let image = GrayImage::from_raw(
            cols as u32,
            rows as u32,
            pixels[i * size..(i + 1) * size].to_vec(),
        )
        .expect("the slice is rows * cols bytes");
        Ok(Record {
            index: i as u64,
            label: i32::from(label),
            origin: format!("{}: image {i}", file.display()),
            payload: Payload::Grey(image),
        })
    }))
}

/// Split names from file prefixes: `t10k` is `test`, and a prefix every file shares is dropped.
fn split_names(prefixes: Vec<&str>) -> Vec<String> {
    let shared = match prefixes.as_slice() {
        [first, rest @ ..] if !rest.is_empty() => {
            let mut len = first.rfind('-').map_or(0, |i| i + 1);
            while !rest.iter().all(|p| p.starts_with(&first[..len])) {
                len = first[..len.saturating_sub(1)]
                    .rfind('-')
                    .map_or(0, |i| i + 1);
            }
            len
        }
        _ => 0,
    };
    prefixes
        .iter()
        .map(|p| p[shared..].replace("t10k", "test"))
        .collect()
}

/// The file's bytes, gunzipped when its name ends in `.gz`.
fn read_bytes(path: &Path) -> Result<Vec<u8>, PackError> {
    let raw = std::fs::read(path).map_err(PackError::io(path))?;
    if path.extension().is_none_or(|e| e != "gz") {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| PackError::source(path, format!("not a readable gzip file: {e}")))?;
    Ok(out)
}

/// The dimensions and data of an IDX file of unsigned bytes with `dims` dimensions.
fn read_idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>), PackError> {
    let bytes = read_bytes(path)?;
    let bad = |problem: String| PackError::source(path, problem);
    let header = 4 + 4 * dims;
    if bytes.len() < header || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            "not an IDX file (it must start with two zero bytes)".into()
        ));
    }
    if bytes[2] != UNSIGNED_BYTE || usize::from(bytes[3]) != dims {
        return Err(bad(format!(
            "IDX type 0x{:02x} with {} dimensions; expected unsigned bytes (0x08) with {dims}",
            bytes[2], bytes[3]
        )));
    }
    let shape: Vec<usize> = bytes[4..header]
        .chunks(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let data = bytes[header..].to_vec();
    if expected != Some(data.len()) {
        return Err(bad(format!(
            "header says {shape:?} ({} bytes) but {} bytes follow it (truncated or corrupt)",
            expected.map_or("too many".into(), |e| e.to_string()),
            data.len()
        )));
    }
    Ok((shape, data))
}

fn read_images(path: &Path) -> Result<(usize, usize, Vec<u8>), PackError> {
    let (shape, data) = read_idx(path, 3)?;
    let (rows, cols) = (shape[1], shape[2]);
    if rows == 0 || cols == 0 || rows > usize::from(u16::MAX) || cols > usize::from(u16::MAX) {
        return Err(PackError::source(
            path,
            format!("images are {rows}x{cols}; a side is zero or above 65535"),
        ));
    }
    Ok((rows, cols, data))
}

fn read_labels(path: &Path) -> Result<Vec<u8>, PackError> {
    Ok(read_idx(path, 1)?.1)
}

#[cfg(test)]
mod tests {
    use super::split_names;

    #[test]
    fn splits_are_named_from_the_file_prefixes() {
        assert_eq!(split_names(vec!["t10k", "train"]), ["test", "train"]);
        assert_eq!(
            split_names(vec![
                "emnist-balanced-test",
                "emnist-balanced-train",
                "emnist-digits-test"
            ]),
            ["balanced-test", "balanced-train", "digits-test"]
        );
        assert_eq!(
            split_names(vec!["emnist-letters-test", "emnist-letters-train"]),
            ["test", "train"]
        );
        assert_eq!(split_names(vec!["train"]), ["train"]);
    }
}
