//! Image folders as torchvision's `ImageFolder` reads them: `root/<class>/**/*.<ext>` for every
//! extension torchvision accepts (jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp, in any case),
//! or the same under a split level (`root/train/<class>/...`, `root/val/<class>/...`). Classes
//! are sorted by name; files are sorted within a class. Other files are left out and counted by
//! extension, so the summary and manifest say what was not packed.
//!
//! `--layout auto` takes a split level when every folder under `root` holds only folders and
//! their names are all split names (train, val, test, ...); when they hold only folders under
//! other names (`train/<wnid>/images/*.JPEG`, Tiny-ImageNet's training tree) either reading is
//! plausible, so it refuses and asks for `--layout flat` or `--layout splits`. Labels come from
//! the sorted union of class names over all splits, so a class missing from one split does not
//! shift the labels of the others (torchvision numbers each split on its own).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::config::{FolderLayout, SourceFormat};
use super::{PackError, Payload, Record, Source, SourceSplit};

/// torchvision's `IMG_EXTENSIONS`.
const EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];
/// Folder names `--layout auto` reads as splits.
const SPLIT_NAMES: [&str; 12] = [
    "train",
    "training",
    "val",
    "valid",
    "validation",
    "test",
    "testing",
    "eval",
    "dev",
    "unlabeled",
    "unlabelled",
    "extra",
];

/// Files under a split that are not images: count per lower-case extension ("" for none).
type NotImages = BTreeMap<String, u64>;

pub fn open(root: &Path, layout: FolderLayout) -> Result<Source, PackError> {
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
    let splits: Vec<(String, PathBuf)> = match resolve_layout(root, &top, layout)? {
        FolderLayout::Splits => top,
        _ => vec![("train".into(), root.to_path_buf())],
    };
    let mut listed = Vec::new();
    for (name, dir) in &splits {
        let classes = subdirs(dir)?;
        if classes.is_empty() {
            return Err(PackError::source(dir, "no class folders in this split"));
        }
        let mut per_class = Vec::new();
        let mut not_images = NotImages::new();
        for (class, class_dir) in classes {
            let mut files = Vec::new();
            list_images(&class_dir, &mut files, &mut not_images)?;
            if files.is_empty() {
                return Err(PackError::source(
                    &class_dir,
                    format!(
                        "class folder `{class}` has no images ({})",
                        EXTENSIONS.join(", ")
                    ),
                ));
            }
            files.sort();
            per_class.push((class, files));
        }
        listed.push((name.clone(), per_class, not_images));
    }
    let mut classes: Vec<String> = listed
        .iter()
        .flat_map(|(_, pc, _)| pc.iter().map(|(c, _)| c.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    let splits = listed
        .into_iter()
        .map(|(name, per_class, not_images)| {
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
                not_images,
            }
        })
        .collect();
    Ok(Source {
        format: SourceFormat::ImageFolder,
        classes: Some(classes),
        splits,
    })
}

/// Flat or splits: as asked, or as `auto` can tell without guessing.
fn resolve_layout(
    root: &Path,
    top: &[(String, PathBuf)],
    layout: FolderLayout,
) -> Result<FolderLayout, PackError> {
    if layout != FolderLayout::Auto {
        return Ok(layout);
    }
    let mut only_folders = true;
    for (_, dir) in top {
        only_folders &= is_split_dir(dir)?;
    }
    if !only_folders {
        return Ok(FolderLayout::Flat);
    }
    let is_split_name = |n: &str| SPLIT_NAMES.iter().any(|s| n.eq_ignore_ascii_case(s));
    if top.iter().all(|(name, _)| is_split_name(name)) {
        return Ok(FolderLayout::Splits);
    }
    let names: Vec<&str> = top.iter().take(3).map(|(n, _)| n.as_str()).collect();
    Err(PackError::source(
        root,
        format!(
            "ambiguous layout: its {} folders ({}{}) hold only folders, so they are either splits \
             holding class folders or classes whose images sit in subfolders (as in \
             `train/<wnid>/images/`); pass --layout splits or --layout flat",
            top.len(),
            names.join(", "),
            if top.len() > 3 { ", ..." } else { "" }
        ),
    ))
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

/// Images under `dir`, recursively, as torchvision walks class folders; other files are counted.
fn list_images(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    not_images: &mut NotImages,
) -> Result<(), PackError> {
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let entry = entry.map_err(PackError::io(dir))?;
        let path = entry.path();
        if path.is_dir() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                list_images(&path, out, not_images)?;
            }
        } else if is_image(&path) && !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(path);
        } else {
            // Hidden files (`._x.jpg` from macOS, `.DS_Store`) are never images worth packing.
            let key = match entry.file_name().to_string_lossy().starts_with('.') {
                true => "(hidden)".to_string(),
                false => path
                    .extension()
                    .map_or(String::new(), |e| e.to_string_lossy().to_lowercase()),
            };
            *not_images.entry(key).or_default() += 1;
        }
    }
    Ok(())
}
