//! STL-10 binary release (`stl10_binary/`): `{train,test}_X.bin` hold 96x96x3 images as three
//! column-major planes (27,648 bytes each), `{train,test}_y.bin` one label byte per image, 1..10,
//! written here as 0..9; `unlabeled_X.bin` holds 100,000 images that get label -1.

use std::path::{Path, PathBuf};

use super::binary::{planar_to_rgb, read_names, RecordFile};
use super::config::SourceFormat;
use super::{PackError, Payload, Record, Source, SourceSplit};

const SIDE: u32 = 96;
const RECORD: usize = 96 * 96 * 3;
const CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

/// The directory holding the STL-10 files: `path` itself or `path/stl10_binary`.
pub fn find_dir(path: &Path) -> Option<PathBuf> {
    [path.to_path_buf(), path.join("stl10_binary")]
        .into_iter()
        .find(|d| {
            ["train_X.bin", "test_X.bin", "unlabeled_X.bin"]
                .iter()
                .any(|f| d.join(f).is_file())
        })
}

pub fn open(path: &Path) -> Result<Source, PackError> {
    let dir = find_dir(path).ok_or_else(|| {
        PackError::source(
            path,
            "no train_X.bin, test_X.bin or unlabeled_X.bin here or in stl10_binary/",
        )
    })?;
    let names = dir.join("class_names.txt");
    let classes = if names.is_file() {
        read_names(&names)?
    } else {
        CLASSES.iter().map(|s| s.to_string()).collect()
    };
    let mut splits = Vec::new();
    for name in ["train", "test", "unlabeled"] {
        let x = dir.join(format!("{name}_X.bin"));
        if !x.is_file() {
            continue;
        }
        let labels = if name == "unlabeled" {
            None
        } else {
            Some(read_labels(
                &dir.join(format!("{name}_y.bin")),
                classes.len(),
            )?)
        };
        splits.push(split(name, &x, labels)?);
    }
    Ok(Source {
        format: SourceFormat::Stl10Bin,
        classes: Some(classes),
        splits,
    })
}

/// Reads a label file, mapping 1..=classes to 0-based labels.
fn read_labels(path: &Path, classes: usize) -> Result<Vec<i32>, PackError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PackError::source(path, "missing label file"),
        _ => PackError::Io {
            path: path.to_path_buf(),
            error: e,
        },
    })?;
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if b == 0 || usize::from(b) > classes {
                Err(PackError::source(
                    path,
                    format!("record {i}: label byte {b} out of range 1..{classes}"),
                ))
            } else {
                Ok(i32::from(b) - 1)
            }
        })
        .collect()
}

fn split(name: &str, x: &Path, labels: Option<Vec<i32>>) -> Result<SourceSplit, PackError> {
    let file = RecordFile::open(x, RECORD, "96x96x3 column-major pixels")?;
    if let Some(labels) = &labels {
        if labels.len() != file.count {
            return Err(PackError::source(
                x,
                format!(
                    "holds {} images but {name}_y.bin has {} labels; one file is truncated",
                    file.count,
                    labels.len()
                ),
            ));
        }
    }
    let len = file.count;
    let path = x.to_path_buf();
    let records = file.records().map(move |result| {
        let (i, rec) = result?;
        Ok(Record {
            index: i as u64,
            label: labels.as_ref().map_or(-1, |l| l[i]),
            origin: format!("{}: record {i}", path.display()),
            payload: Payload::Pixels(planar_to_rgb(&rec, SIDE, true)),
        })
    });
    Ok(SourceSplit {
        name: name.to_string(),
        len,
        records: Box::new(records),
        not_images: Default::default(),
    })
}
