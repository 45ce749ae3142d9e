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
    let split_names = top.iter().all(|(name, _)| is_split_name(name));
    let mut only_folders = true;
    for (_, dir) in top {
        match first_image_beside_folders(dir)? {
            // Split names over folders of classes, with an image among them: one stray file
            // must not turn every split into a class.
            Some(stray) if split_names => {
                return Err(PackError::source(
                    root,
                    format!(
                        "ambiguous layout: its folders are named as splits ({}) and hold class \
                         folders, but {} is an image beside them; move it into a class folder, \
                         or pass --layout flat to read the top folders as classes",
                        top.iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        stray.display()
                    ),
                ))
            }
            Some(_) => only_folders = false,
            None => only_folders &= has_subdir(dir)?,
        }
    }
    if !only_folders {
        return Ok(FolderLayout::Flat);
    }
    if split_names {
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

/// Whether a folder's name is one `--layout auto` (and the Parquet reader) takes for a split.
pub(super) fn is_split_name(name: &str) -> bool {
    SPLIT_NAMES.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// A name as UTF-8, or an error naming the path: class and split names become labels' names, and
/// two names that differ only in bytes that are not UTF-8 must not merge into one class.
fn utf8_name(entry: &fs::DirEntry) -> Result<String, PackError> {
    entry.file_name().into_string().map_err(|_| {
        PackError::source(
            entry.path(),
            "folder name is not valid UTF-8, so it cannot name a class or split; rename it",
        )
    })
}

/// What an entry is once symlinks are followed; `None` for a dangling link.
fn kind(path: &Path) -> Option<fs::FileType> {
    fs::metadata(path).ok().map(|m| m.file_type())
}

/// Sub-directories of `dir` (hidden ones left out), sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, PackError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let entry = entry.map_err(PackError::io(dir))?;
        let path = entry.path();
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        if kind(&path).is_some_and(|k| k.is_dir()) {
            out.push((utf8_name(&entry)?, path));
        }
    }
    out.sort();
    Ok(out)
}

/// An image file directly in `dir`, if any (a split directory holds none).
fn first_image_beside_folders(dir: &Path) -> Result<Option<PathBuf>, PackError> {
    let mut images: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let path = entry.map_err(PackError::io(dir))?.path();
        if is_image(&path) && kind(&path).is_some_and(|k| k.is_file()) {
            images.push(path);
        }
    }
    images.sort();
    Ok(images.into_iter().next())
}

fn has_subdir(dir: &Path) -> Result<bool, PackError> {
    Ok(!subdirs(dir)?.is_empty())
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Images under `dir`, recursively, as torchvision walks class folders (symlinks followed); other
/// files are counted. Only regular files are read (a FIFO named `x.jpg` would block the reader
/// forever), and a link back to a folder being walked is refused, not followed round in a loop.
fn list_images(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    not_images: &mut NotImages,
) -> Result<(), PackError> {
    let mut walking = Vec::new();
    walk_images(dir, out, not_images, &mut walking)
}

fn walk_images(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    not_images: &mut NotImages,
    walking: &mut Vec<PathBuf>,
) -> Result<(), PackError> {
    let real = fs::canonicalize(dir).map_err(PackError::io(dir))?;
    if walking.contains(&real) {
        return Err(PackError::source(
            dir,
            format!(
                "a symlink loop: this folder is {}, which is already being read; remove the link",
                real.display()
            ),
        ));
    }
    walking.push(real);
    for entry in fs::read_dir(dir).map_err(PackError::io(dir))? {
        let entry = entry.map_err(PackError::io(dir))?;
        let path = entry.path();
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        let kind = kind(&path);
        let key = match kind {
            Some(k) if k.is_dir() => {
                if !hidden {
                    walk_images(&path, out, not_images, walking)?;
                }
                continue;
            }
            Some(k) if k.is_file() && is_image(&path) && !hidden => {
                out.push(path);
                continue;
            }
            // Hidden files (`._x.jpg` from macOS, `.DS_Store`) are never images worth packing.
            _ if hidden => "(hidden)".to_string(),
            Some(k) if !k.is_file() => "(not a regular file)".to_string(),
            None => "(broken link)".to_string(),
            _ => path
                .extension()
                .map_or(String::new(), |e| e.to_string_lossy().to_lowercase()),
        };
        *not_images.entry(key).or_default() += 1;
    }
    walking.pop();
    Ok(())
}
