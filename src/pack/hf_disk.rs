//! Folders written by Hugging Face `Dataset.save_to_disk` / `DatasetDict.save_to_disk`: Arrow IPC
//! stream files (`data-00000-of-00001.arrow`) beside `dataset_info.json` (the features, so the
//! `ClassLabel` names) and `state.json` (the split name and the file order). A `DatasetDict`
//! folder holds `dataset_dict.json` and one such folder per split. Columns follow the same rules
//! as Hugging Face Parquet (`hf_parquet.rs`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_ipc::reader::StreamReader;

use super::config::SourceFormat;
use super::hf_parquet::{class_names_in, find_columns, Batches, Rows};
use super::{PackError, Source, SourceSplit};

const INFO_FILE: &str = "dataset_info.json";
const STATE_FILE: &str = "state.json";
const DICT_FILE: &str = "dataset_dict.json";

/// `path` is a `save_to_disk` folder: a dataset or a dataset dict.
pub fn is_save_to_disk(path: &Path) -> bool {
    path.join(DICT_FILE).is_file()
        || (path.join(INFO_FILE).is_file() && !arrow_files(path).is_empty())
}

pub fn open(
    path: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
) -> Result<Source, PackError> {
    let parts: Vec<(String, PathBuf)> = if path.join(DICT_FILE).is_file() {
        let dict = read_json(&path.join(DICT_FILE))?;
        let names = dict["splits"].as_array().ok_or_else(|| {
            PackError::source(path.join(DICT_FILE), "no `splits` list of split names")
        })?;
        names
            .iter()
            .map(|n| {
                let name = n.as_str().unwrap_or_default().to_string();
                (name.clone(), path.join(name))
            })
            .collect()
    } else {
        let state = read_json(&path.join(STATE_FILE)).ok();
        let name = state
            .as_ref()
            .and_then(|s| s["_split"].as_str())
            .unwrap_or("train");
        vec![(name.to_string(), path.to_path_buf())]
    };
    let mut classes = None;
    let mut splits = Vec::new();
    for (name, dir) in parts {
        let files = data_files(&dir)?;
        let first = files.first().ok_or_else(|| {
            PackError::source(&dir, format!("split `{name}` has no .arrow files"))
        })?;
        let schema = stream(first)?.schema();
        let columns = find_columns(first, &schema, image_column, label_column)?;
        if classes.is_none() {
            let info = read_json(&dir.join(INFO_FILE))?;
            classes = class_names_in(&info, columns.label.as_deref());
        }
        let mut len = 0;
        for file in &files {
            for batch in stream(file)? {
                len += batch.map_err(|e| read_failed(file, e))?.num_rows();
            }
        }
        let n_classes = classes.as_ref().map(Vec::len);
        splits.push(SourceSplit {
            name,
            len,
            records: Box::new(Rows::new(files, batches, columns, n_classes)),
            not_images: Default::default(),
        });
    }
    Ok(Source {
        format: SourceFormat::HfDisk,
        classes,
        splits,
    })
}

/// The split's Arrow files in `state.json`'s order, else sorted by name.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    if let Ok(state) = read_json(&dir.join(STATE_FILE)) {
        if let Some(listed) = state["_data_files"].as_array() {
            return listed
                .iter()
                .map(|f| match f["filename"].as_str() {
                    Some(name) => Ok(dir.join(name)),
                    None => Err(PackError::source(
                        dir.join(STATE_FILE),
                        "a `_data_files` entry has no `filename`",
                    )),
                })
                .collect();
        }
    }
    Ok(arrow_files(dir))
}

fn arrow_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    files.sort();
    files
}

fn stream(path: &Path) -> Result<StreamReader<BufReader<File>>, PackError> {
    let file = File::open(path).map_err(PackError::io(path))?;
    StreamReader::try_new(BufReader::new(file), None).map_err(|e| {
        PackError::source(
            path,
            format!("not an Arrow IPC stream as save_to_disk writes: {e}"),
        )
    })
}

fn batches(path: &Path) -> Result<Batches, PackError> {
    Ok(Box::new(stream(path)?))
}

fn read_failed(path: &Path, e: arrow_schema::ArrowError) -> PackError {
    PackError::source(path, format!("read failed: {e}"))
}

fn read_json(path: &Path) -> Result<serde_json::Value, PackError> {
    let text = std::fs::read_to_string(path).map_err(PackError::io(path))?;
    serde_json::from_str(&text).map_err(|e| PackError::source(path, format!("bad JSON: {e}")))
}
