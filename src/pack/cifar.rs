//! CIFAR-10 and CIFAR-100 binary releases.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1..5.bin` (train) and `test_batch.bin`, each a
//! sequence of 3073-byte records: 1 label byte (0-9), then 1024 R, 1024 G, 1024 B bytes of a 32x32
//! image, row-major. Class names in `batches.meta.txt`.
//! CIFAR-100 (`cifar-100-binary/`): `train.bin`, `test.bin`, 3074-byte records: coarse label
//! (0-19), fine label (0-99), then the same 3072 pixel bytes. Names in `{fine,coarse}_label_names.txt`.

use std::path::{Path, PathBuf};

use super::binary::{planar_to_rgb, read_names, RecordFile};
use super::config::{Cifar100Label, SourceFormat};
use super::{PackError, Payload, Record, Source, SourceSplit};

const PIXELS: usize = 3072;
const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The directory holding `data_batch_1.bin`: `path` itself or `path/cifar-10-batches-bin`.
pub fn find_cifar10_dir(path: &Path) -> Option<PathBuf> {
    [path.to_path_buf(), path.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| d.join("data_batch_1.bin").is_file() || d.join("test_batch.bin").is_file())
}

/// The directory holding `train.bin`/`test.bin` of CIFAR-100.
pub fn find_cifar100_dir(path: &Path) -> Option<PathBuf> {
    [path.to_path_buf(), path.join("cifar-100-binary")]
        .into_iter()
        .find(|d| d.join("train.bin").is_file() && d.join("test.bin").is_file())
        .filter(|d| {
            std::fs::metadata(d.join("test.bin")).is_ok_and(|m| m.len() % (PIXELS as u64 + 2) == 0)
        })
}

pub fn open_cifar10(path: &Path) -> Result<Source, PackError> {
    let dir = find_cifar10_dir(path).ok_or_else(|| {
        PackError::source(
            path,
            "no data_batch_1.bin or test_batch.bin here or in cifar-10-batches-bin/",
        )
    })?;
    let train: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let test = vec![dir.join("test_batch.bin")];
    let meta = dir.join("batches.meta.txt");
    let classes = if meta.is_file() {
        read_names(&meta)?
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    };
    if classes.len() != 10 {
        return Err(PackError::source(
            &meta,
            format!("lists {} class names, expected 10", classes.len()),
        ));
    }
    let what = "1 label + 3072 pixel bytes";
    Ok(Source {
        format: SourceFormat::Cifar10Bin,
        classes: Some(classes),
        // A split none of whose files is here is left out (a download of the test batch
        // alone packs with `--split test`); one with some of its files is an error.
        splits: [("train", &train), ("test", &test)]
            .into_iter()
            .filter(|(_, files)| files.iter().any(|f| f.exists()))
            .map(|(name, files)| split(name, files, PIXELS + 1, what, |rec| rec[0], 10))
            .collect::<Result<_, _>>()?,
    })
}

pub fn open_cifar100(path: &Path, label: Cifar100Label) -> Result<Source, PackError> {
    let dir = [path.to_path_buf(), path.join("cifar-100-binary")]
        .into_iter()
        .find(|d| d.join("train.bin").is_file() || d.join("test.bin").is_file())
        .ok_or_else(|| {
            PackError::source(
                path,
                "no train.bin or test.bin here or in cifar-100-binary/",
            )
        })?;
    let (names_file, count, pick): (_, usize, fn(&[u8]) -> u8) = match label {
        Cifar100Label::Fine => ("fine_label_names.txt", 100, |rec| rec[1]),
        Cifar100Label::Coarse => ("coarse_label_names.txt", 20, |rec| rec[0]),
    };
    let names_path = dir.join(names_file);
    let classes = if names_path.is_file() {
        read_names(&names_path)?
    } else {
        (0..count).map(|i| format!("class_{i:03}")).collect()
    };
    if classes.len() != count {
        return Err(PackError::source(
            &names_path,
            format!("lists {} class names, expected {count}", classes.len()),
        ));
    }
    let what = "2 label + 3072 pixel bytes";
    let record = PIXELS + 2;
    Ok(Source {
        format: SourceFormat::Cifar100Bin,
        classes: Some(classes),
        splits: vec![
            split("train", &[dir.join("train.bin")], record, what, pick, count)?,
            split("test", &[dir.join("test.bin")], record, what, pick, count)?,
        ],
    })
}

/// One split made of record files read back to back; labels checked against `classes`.
fn split(
    name: &str,
    files: &[PathBuf],
    record_size: usize,
    what: &str,
    label_of: fn(&[u8]) -> u8,
    classes: usize,
) -> Result<SourceSplit, PackError> {
    let files: Vec<RecordFile> = files
        .iter()
        .map(|f| RecordFile::open(f, record_size, what))
        .collect::<Result<_, _>>()?;
    let len = files.iter().map(|f| f.count).sum();
    let records = files.into_iter().flat_map(move |file| {
        let path = file.path.clone();
        file.records().map(move |r| (path.clone(), r))
    });
    let records = records.enumerate().map(move |(index, (path, result))| {
        let (i, rec) = result?;
        let label = label_of(&rec);
        if usize::from(label) >= classes {
            return Err(PackError::source(
                &path,
                format!(
                    "record {i}: label byte {label} out of range 0..{}",
                    classes - 1
                ),
            ));
        }
        let pixels = &rec[record_size - PIXELS..];
        Ok(Record {
            index: index as u64,
            label: i32::from(label),
            origin: format!("{}: record {i}", path.display()),
            payload: Payload::Pixels(planar_to_rgb(pixels, 32, false)),
        })
    });
    Ok(SourceSplit {
        name: name.to_string(),
        len,
        records: Box::new(records),
        not_images: Default::default(),
    })
}
