//! Image folders as torchvision's `ImageFolder` reads them: `root/<class>/**/*.{jpg,jpeg,png}`
//! (extensions in any case), or the same under a split level (`root/train/<class>/...`,
//! `root/val/<class>/...`). Classes are sorted by name; files are sorted within a class.
//!
//! A split level is recognised when every directory under `root` holds only directories (class
//! folders) and no images. Labels come from the sorted union of class names over all splits, so a
//! class missing from one split does not shift the labels of the others (torchvision numbers each
//! split on its own).

use std::fs;
use std::path::{Path, PathBuf};

use super::config::SourceFormat;
use super::{PackError, Payload, Record, Source, SourceSplit};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn open(root: &Path) -> Result<Source, PackError> {
    if !root.is_dir() {
        return Err(PackError::source(root, "no such directory"));
    }
    let top = subdirs(root)?;
    if top.is_empty() {
        return Err(PackError::source(
            root,
            "no class folders; expected ROOT/<class>/*.jpg (or ROOT/<split>/<class>/*.jpg)",
        ));
    }
    let split_level = top
        .iter()
        .all(|(_, dir)| is_split_dir(dir).unwrap_or(false));
    let splits: Vec<(String, PathBuf)> = if split_level {
        top
    } else {
        vec![("train".into(), root.to_path_buf())]
    };
    let mut listed = Vec::new();
    for (name, dir) in &splits {
        let classes = subdirs(dir)?;
        if classes.is_empty() {
            return Err(PackError::source(dir, "no class folders in this split"));
        }
        let mut per_class = Vec::new();
        for (class, class_dir) in classes {
            let mut files = Vec::new();
            list_images(&class_dir, &mut files)?;
            if files.is_empty() {
                return Err(PackError::source(
                    &class_dir,
                    format!("class folder `{class}` has no .jpg, .jpeg or .png images"),
                ));
            }
            files.sort();
            per_class.push((class, files));
        }
        listed.push((name.clone(), per_class));
    }
    let mut classes: Vec<String> = listed
        .iter()
        .flat_map(|(_, pc)| pc.iter().map(|(c, _)| c.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    let splits = listed
        .into_iter()
        .map(|(name, per_class)| {
            let files: Vec<(i32, PathBuf)> = per_class
                .into_iter()
                .flat_map(|(class, files)| {
                    let label = classes
                        .binary_search(&class)
                        .expect("class is in the union") as i32;
                    files.into_iter().map(move |f| (label, f))
                })
                .collect();
            let len = files.len();
            let records = files.into_iter().enumerate().map(|(index, (label, path))| {
                Ok(Record {
                    index: index as u64,
                    label,
                    origin: path.display().to_string(),
                    payload: Payload::File(path),
                })
            });
            SourceSplit {
                name,
                len,
                records: Box::new(records),
            }
        })
        .collect();
    Ok(Source {
        format: SourceFormat::ImageFolder,
        classes: Some(classes),
        splits,
    })
}

/// Sub-directories of `dir` (hidden ones left out), sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, PackError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let entry = entry.map_err(PackError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !name.starts_with('.') && path.is_dir() {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A split directory holds class directories and no images of its own.
fn is_split_dir(dir: &Path) -> Result<bool, PackError> {
    let mut has_subdir = false;
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let path = entry.map_err(PackError::io(dir))?.path();
        if path.is_dir() {
            has_subdir = true;
        } else if is_image(&path) {
            return Ok(false);
        }
    }
    Ok(has_subdir)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Images under `dir`, recursively, as torchvision walks class folders.
fn list_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PackError> {
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let entry = entry.map_err(PackError::io(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            list_images(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}
