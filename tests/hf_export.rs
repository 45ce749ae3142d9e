//! `ssl-pack export --to hf`: packed datasets as Hugging Face Hub Parquet. Read back with the
//! `parquet` crate (schema, `datasets` features, rows equal to the source, PNG pixels exact), by
//! our own `ssl-pack write` (round trip) and by pyarrow, which `.ci/run` installs: without it the
//! pyarrow test fails, it never skips. `tools/check_hf_export.py` does the `datasets` checks.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::Array;
use arrow_schema::DataType;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};
use sslfast::shard::Manifest;

/// One exported row: image bytes, label, index.
type HfRow = (Vec<u8>, i64, i64);

/// The files of `split` under OUT/data, checked to be named `<split>-k-of-n.parquet` for
/// k = 0..n, with their rows (in file order) and the `huggingface` metadata of each.
fn read_export(out: &Path, split: &str) -> (Vec<u64>, Vec<HfRow>, Vec<Value>) {
    let mut files: Vec<PathBuf> = fs::read_dir(out.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{split}-"))
        })
        .collect();
    files.sort();
    let n = files.len();
    assert!(n > 0, "no files for split {split}");
    let (mut per_file, mut rows, mut metas) = (Vec::new(), Vec::new(), Vec::new());
    for (k, path) in files.iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(name, format!("{split}-{k:05}-of-{n:05}.parquet"));
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["image", "label", "index"], "{name}");
        let DataType::Struct(image) = schema.field(0).data_type() else {
            panic!("{name}: image is {}", schema.field(0).data_type());
        };
        let image: Vec<_> = image
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect();
        assert_eq!(
            image,
            [("bytes", DataType::Binary), ("path", DataType::Utf8)]
        );
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
        assert_eq!(schema.field(2).data_type(), &DataType::Int64);
        let kv = builder.metadata().file_metadata().key_value_metadata();
        let hf = kv.unwrap().iter().find(|kv| kv.key == "huggingface");
        metas.push(serde_json::from_str(hf.unwrap().value.as_deref().unwrap()).unwrap());
        let before = rows.len();
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let image = batch.column(0).as_struct();
            let bytes = image.column(0).as_binary::<i32>();
            assert_eq!(
                image.column(1).null_count(),
                batch.num_rows(),
                "paths are null"
            );
            let label = batch.column(1).as_primitive::<Int64Type>();
            let index = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                rows.push((bytes.value(i).to_vec(), label.value(i), index.value(i)));
            }
        }
        per_file.push((rows.len() - before) as u64);
    }
    (per_file, rows, metas)
}

fn export_ok(dir: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", "--to", "hf", s(dir), s(out)];
    args.extend_from_slice(extra);
    pack_ok(&args)
}

fn export_err(dir: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", "--to", "hf", s(dir), s(out)];
    args.extend_from_slice(extra);
    let run = ssl_pack(&args);
    assert_eq!(run.status.code(), Some(2), "{}", stdout(&run));
    stderr(&run)
}

fn features(classes: &[String]) -> Value {
    json!({"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": classes, "_type": "ClassLabel"},
        "index": {"dtype": "int64", "_type": "Value"},
    }}})
}

/// Names under `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn raw_rows_become_png_with_the_exact_pixels() {
    let data = small_cifar(10, 5);
    let manifest = Manifest::load(&data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let summary = export_ok(&data, &out, &["--shard-rows", "30"]);
    assert!(summary.contains("exported 150 rows"), "{summary}");
    assert_eq!(listing(tmp.path()), ["hf"], "nothing staged is left");
    assert_eq!(listing(&out), ["data"]);
    assert!(listing(&out.join("data"))
        .iter()
        .all(|f| f.ends_with(".parquet")));
    for (split, want_files) in [("train", vec![30, 30, 30, 10]), ("test", vec![30, 20])] {
        let (per_file, rows, metas) = read_export(&out, split);
        assert_eq!(per_file, want_files, "{split}: rows per file");
        for meta in &metas {
            assert_eq!(meta, &features(&manifest.classes));
        }
        let source = read_split(&data, split);
        for (src, (bytes, label, index)) in zip_exact(&source, &rows, "source and export") {
            assert_eq!((i64::from(src.label), src.index as i64), (*label, *index));
            assert!(
                bytes.starts_with(b"\x89PNG"),
                "{split} row {index} is not PNG"
            );
            let png = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
                .unwrap()
                .to_rgb8();
            assert_eq!(png, src.image, "{split} row {index}: PNG pixels differ");
        }
    }
}

#[test]
fn jpeg_rows_from_arrow_shards_keep_their_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    class_folder(&root, &cifar_images("test", 3), "c");
    let data = tmp.path().join("packed");
    pack_ok(&[
        "write",
        s(&root),
        s(&data),
        "--encoding",
        "jpeg",
        "--quality",
        "80",
        "--container",
        "arrow",
    ]);
    let out = tmp.path().join("hf");
    let summary = export_ok(&data, &out, &[]);
    assert!(summary.contains("30 rows    1 files"), "{summary}");
    assert!(summary.contains(" 0 encoded to PNG"), "{summary}");
    let (per_file, rows, metas) = read_export(&out, "train");
    assert_eq!(per_file, [30]);
    assert_eq!(metas[0], features(&Manifest::load(&data).unwrap().classes));
    let source = read_split(&data, "train");
    for (src, (bytes, label, index)) in zip_exact(&source, &rows, "source and export") {
        assert_eq!((i64::from(src.label), src.index as i64), (*label, *index));
        assert_eq!(
            bytes, &src.bytes,
            "row {index}: JPEG bytes are copied untouched"
        );
    }
}

#[test]
fn round_trips_through_ssl_pack_write() {
    let data = small_cifar(10, 5);
    let before = Manifest::load(&data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    export_ok(&data, &out, &["--shard-rows", "40"]);
    let again = tmp.path().join("again");
    pack_ok(&["write", s(&out.join("data")), s(&again)]);
    let after = Manifest::load(&again).unwrap();
    assert_eq!(after.source.format, "hf-parquet");
    assert_eq!(after.classes, before.classes, "class names survive");
    for (name, split) in &before.splits {
        let back = after.split(name).unwrap();
        assert_eq!((back.rows, &back.per_class), (split.rows, &split.per_class));
        let (a, b) = (read_split(&data, name), read_split(&again, name));
        for (x, y) in zip_exact(&a, &b, "before and after") {
            assert_eq!(x.label, y.label);
            assert_eq!(x.image, y.image, "{name} row {}: pixels differ", x.index);
        }
    }
}

const PYARROW_READ: &str = r#"
import json, pathlib, sys, pyarrow.parquet as pq
out = pathlib.Path(sys.argv[1])
table = pq.read_table(out / "data")
per_split = {}
for f in sorted((out / "data").iterdir()):
    split = f.name.split("-")[0]
    per_split[split] = per_split.get(split, 0) + pq.ParquetFile(f).metadata.num_rows
print(json.dumps({
    "rows": table.num_rows,
    "whole_out": pq.read_table(out).num_rows,
    "types": [f"{f.name}: {f.type}" for f in table.schema],
    "huggingface": json.loads(table.schema.metadata[b"huggingface"]),
    "per_split": per_split,
    "labels": sorted(set(table.column("label").to_pylist())),
}))
"#;

#[test]
fn pyarrow_reads_the_data_folder_as_one_table() {
    let data = small_cifar(10, 5);
    let manifest = Manifest::load(&data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    export_ok(&data, &out, &["--shard-rows", "64"]);
    let run = Command::new("python3")
        .args(["-c", PYARROW_READ, s(&out)])
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "pyarrow failed (is it installed? `pip install pyarrow`): {}",
        stderr(&run)
    );
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(got["rows"], 150);
    assert_eq!(got["whole_out"], 150, "pq.read_table(OUT) reads it too");
    assert_eq!(
        got["types"],
        json!([
            "image: struct<bytes: binary, path: string>",
            "label: int64",
            "index: int64"
        ])
    );
    assert_eq!(got["huggingface"], features(&manifest.classes));
    assert_eq!(got["per_split"], json!({"train": 100, "test": 50}));
    assert_eq!(got["labels"], json!((0..10).collect::<Vec<_>>()));
}

/// A copy of the packed dataset `dir` whose manifest `edit` changes.
fn tampered(dir: &Path, to: &Path, edit: impl FnOnce(&mut Value)) {
    for entry in walk(dir) {
        let dest = to.join(entry.strip_prefix(dir).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&entry, dest).unwrap();
    }
    let path = to.join("manifest.json");
    let mut manifest: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(&path, manifest.to_string()).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn without_class_names_label_is_a_plain_int64_and_an_empty_split_gets_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("unnamed");
    tampered(&small_cifar(10, 5), &data, |m| {
        m["classes"] = json!([]);
        m["splits"]["test"]["rows"] = json!(0);
        m["splits"]["test"]["per_class"] = json!([]);
        m["splits"]["test"]["shards"] = json!([]);
    });
    let out = tmp.path().join("hf");
    let summary = export_ok(&data, &out, &[]);
    assert!(summary.contains("exported 100 rows"), "{summary}");
    let (per_file, _, metas) = read_export(&out, "test");
    assert_eq!(per_file, [0], "an empty split is one empty file");
    assert_eq!(
        metas[0]["info"]["features"]["label"],
        json!({"dtype": "int64", "_type": "Value"})
    );
    assert_eq!(read_export(&out, "train").1.len(), 100);
}

/// HF Parquet with ClassLabel names in which every third row is unlabelled (-1).
fn write_partly_labelled(path: &Path, rows: &[HfRow], classes: &[String]) {
    use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
    use arrow_schema::{Field, Fields, Schema};
    use std::sync::Arc;
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let image = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| &r.0))) as ArrayRef,
            Arc::new(StringArray::new_null(rows.len())),
        ],
        None,
    );
    let labels = rows
        .iter()
        .enumerate()
        .map(|(i, r)| if i % 3 == 0 { -1 } else { r.1 });
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(fields), true),
        Field::new("label", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(image),
        Arc::new(Int64Array::from_iter_values(labels)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let meta =
        parquet::file::metadata::KeyValue::new("huggingface".into(), features(classes).to_string());
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![meta]))
        .build();
    let file = File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn unlabelled_rows_keep_label_minus_one() {
    let data = small_cifar(10, 5);
    let classes = Manifest::load(&data).unwrap().classes;
    let tmp = tempfile::tempdir().unwrap();
    export_ok(&data, &tmp.path().join("first"), &[]);
    let (_, rows, _) = read_export(&tmp.path().join("first"), "test");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    write_partly_labelled(&src.join("test-00000-of-00001.parquet"), &rows, &classes);
    let packed = tmp.path().join("packed");
    pack_ok(&["write", s(&src), s(&packed), "--encoding", "keep"]);
    assert_eq!(
        Manifest::load(&packed)
            .unwrap()
            .split("test")
            .unwrap()
            .unlabeled,
        17
    );
    let out = tmp.path().join("hf");
    export_ok(&packed, &out, &[]);
    let (_, back, metas) = read_export(&out, "test");
    assert_eq!(metas[0], features(&classes));
    for (i, (a, b)) in zip_exact(&rows, &back, "rows").enumerate() {
        let label = if i % 3 == 0 { -1 } else { a.1 };
        assert_eq!((&a.0, label), (&b.0, b.1), "row {i}");
    }
}

#[test]
fn refuses_bad_outputs_split_names_and_corrupt_shards() {
    let data = small_cifar(10, 5);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    export_ok(&data, &out, &[]);
    let err = export_err(&data, &out, &[]);
    assert!(err.contains("hf already exists; pass --overwrite"), "{err}");
    export_ok(&data, &out, &["--overwrite"]);
    assert_eq!(listing(tmp.path()), ["hf"], "the replaced export is gone");

    let err = export_err(&data, &data, &["--overwrite"]);
    assert!(err.contains("holds the dataset being exported"), "{err}");
    assert!(data.join("manifest.json").is_file());
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes.txt"), "mine").unwrap();
    let err = export_err(&data, &other, &["--overwrite"]);
    assert!(
        err.contains("holds `notes.txt`, so it is not a previous export"),
        "{err}"
    );
    assert!(other.join("notes.txt").is_file());

    let dashed = tmp.path().join("dashed");
    tampered(&data, &dashed, |m| {
        let mut test = m["splits"]["test"].take();
        for shard in test["shards"].as_array_mut().unwrap() {
            let file = shard["file"]
                .as_str()
                .unwrap()
                .replacen("test/", "my-test/", 1);
            shard["file"] = file.into();
        }
        m["splits"].as_object_mut().unwrap().remove("test");
        m["splits"]["my-test"] = test;
    });
    std::fs::rename(dashed.join("test"), dashed.join("my-test")).unwrap();
    let err = export_err(&dashed, &tmp.path().join("x"), &[]);
    assert!(
        err.contains("split `my-test` cannot be a Hugging Face split name"),
        "{err}"
    );

    let corrupt = tmp.path().join("corrupt");
    tampered(&data, &corrupt, |_| {});
    let shard = corrupt.join("train/part-00000.parquet");
    let mut bytes = fs::read(&shard).unwrap();
    bytes[100] ^= 0xFF;
    fs::write(&shard, bytes).unwrap();
    let err = export_err(&corrupt, &tmp.path().join("y"), &[]);
    assert!(
        err.contains("part-00000.parquet: checksum mismatch"),
        "{err}"
    );
    let left = listing(tmp.path());
    assert_eq!(
        left,
        ["corrupt", "dashed", "hf", "other"],
        "no partial export is left"
    );
}
