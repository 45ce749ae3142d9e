//! Hugging Face datasets as users export them pack exactly: `Dataset.to_parquet` after
//! `load_dataset("imagefolder")` (image structs with a path and no bytes), and `save_to_disk`
//! folders (Arrow IPC streams beside `dataset_info.json` and `state.json`, a `DatasetDict` with
//! `dataset_dict.json`), written here in the layout `datasets` 5 writes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use common::*;
use image::RgbImage;
use sslfast::shard::Manifest;

const CLASSES: [&str; 10] = [
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

/// A batch as `datasets` stores an `Image` + `ClassLabel` dataset: `image` a struct of
/// `bytes` and `path`, `label` int64.
fn hf_batch(bytes: &[Option<Vec<u8>>], paths: &[Option<String>], labels: &[i64]) -> RecordBatch {
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let image = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(BinaryArray::from_iter(bytes.iter().map(|b| b.as_deref()))) as ArrayRef,
            Arc::new(StringArray::from_iter(paths.iter().cloned())),
        ],
        None,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(fields), true),
        Field::new("label", DataType::Int64, true),
    ]));
    let labels = Int64Array::from_iter_values(labels.iter().copied());
    RecordBatch::try_new(schema, vec![Arc::new(image), Arc::new(labels)]).unwrap()
}

fn labels_of(images: &[(u8, PathBuf, RgbImage)]) -> Vec<i64> {
    images.iter().map(|(l, _, _)| i64::from(*l)).collect()
}

/// Stored rows (packed with `--encoding keep`) hold each source file's bytes untouched.
fn assert_rows_are_the_files(out: &Path, split: &str, images: &[(u8, PathBuf, RgbImage)]) {
    let rows = read_split(out, split);
    for (row, (label, path, _)) in zip_exact(&rows, images, split) {
        assert_eq!(row.label, i32::from(*label));
        assert!(
            row.bytes == std::fs::read(path).unwrap(),
            "row {} is not {}",
            row.index,
            path.display()
        );
    }
}

#[test]
fn path_only_images_are_read_from_their_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    let images = cifar_images("train", 2);
    // Half the paths relative to the Parquet file's folder, half absolute, as users have both.
    let mut paths = Vec::new();
    for (i, (label, file, _)) in images.iter().enumerate() {
        let relative = format!(
            "images/{label}/{}",
            file.file_name().unwrap().to_str().unwrap()
        );
        std::fs::create_dir_all(export.join(&relative).parent().unwrap()).unwrap();
        std::fs::copy(file, export.join(&relative)).unwrap();
        paths.push(Some(match i % 2 {
            0 => relative,
            _ => s(&export.join(&relative)).to_string(),
        }));
    }
    let batch = hf_batch(&vec![None; images.len()], &paths, &labels_of(&images));
    let file = export.join("train-00000-of-00001.parquet");
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let out = tmp.path().join("out");
    pack_ok(&["write", s(&file), s(&out), "--encoding", "keep"]);
    assert_rows_are_the_files(&out, "train", &images);
}

/// `save_to_disk`'s folder for one split: `data-0000N-of-0000M.arrow` streams, `state.json` naming
/// them and the split, `dataset_info.json` with the features.
fn save_to_disk(dir: &Path, split: &str, images: &[(u8, PathBuf, RgbImage)], files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let per_file = images.len().div_ceil(files);
    let mut listed = Vec::new();
    for (n, chunk) in images.chunks(per_file).enumerate() {
        let name = format!("data-{n:05}-of-{files:05}.arrow");
        let bytes: Vec<_> = chunk
            .iter()
            .map(|(_, p, _)| Some(std::fs::read(p).unwrap()))
            .collect();
        let batch = hf_batch(&bytes, &vec![None; chunk.len()], &labels_of(chunk));
        let out = std::fs::File::create(dir.join(&name)).unwrap();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(out, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        listed.push(serde_json::json!({ "filename": name }));
    }
    let state = serde_json::json!({
        "_data_files": listed, "_fingerprint": "0", "_format_columns": null,
        "_format_kwargs": {}, "_format_type": null, "_output_all_columns": false, "_split": split,
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    let info = serde_json::json!({
        "citation": "", "description": "",
        "features": {
            "image": { "_type": "Image" },
            "label": { "names": CLASSES, "_type": "ClassLabel" },
        },
        "homepage": "", "license": "",
    });
    std::fs::write(dir.join("dataset_info.json"), info.to_string()).unwrap();
}

#[test]
fn save_to_disk_folders_pack_with_their_splits_and_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (cifar_images("train", 3), cifar_images("test", 2));
    let dict = tmp.path().join("cifar_dict");
    save_to_disk(&dict.join("train"), "train", &train, 3);
    save_to_disk(&dict.join("test"), "test", &test, 1);
    std::fs::write(
        dict.join("dataset_dict.json"),
        r#"{"splits": ["train", "test"]}"#,
    )
    .unwrap();

    let out = tmp.path().join("out");
    pack_ok(&["write", s(&dict), s(&out), "--encoding", "keep"]);
    let manifest = Manifest::load(&out).unwrap();
    assert_eq!(
        manifest.source.format, "hf-disk",
        "detected, not an image folder"
    );
    assert_eq!(manifest.classes, CLASSES);
    assert_rows_are_the_files(&out, "train", &train);
    assert_rows_are_the_files(&out, "test", &test);

    // One split saved on its own (`ds["test"].save_to_disk(...)`): its name from state.json.
    let single = tmp.path().join("single");
    pack_ok(&[
        "write",
        s(&dict.join("test")),
        s(&single),
        "--encoding",
        "keep",
    ]);
    assert_rows_are_the_files(&single, "test", &test);
}
