//! Interop with the Python data stack: pyarrow reads our shards (pixels and labels match), and
//! Parquet written the way Hugging Face `datasets` writes it (by pyarrow and by arrow-rs) packs.
//! `.ci/run` installs pyarrow; without it these tests fail, they never skip.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use common::*;
use sha2::{Digest, Sha256};
use sslfast::shard::Manifest;

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed (is pyarrow installed? `pip install pyarrow`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const READ_SHARDS: &str = r#"
import hashlib, json, sys, pyarrow.dataset as ds
rows = ds.dataset(sys.argv[1], format=sys.argv[2]).to_table().sort_by("index").to_pylist()
print(json.dumps([[r["index"], r["label"], r["height"], r["width"], r["encoding"],
                   hashlib.sha256(r["image"]).hexdigest()] for r in rows]))
"#;

#[test]
fn pyarrow_reads_our_parquet_and_arrow_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    class_folder(&root, &cifar_images("train", 8), "c");
    for (container, format) in [("parquet", "parquet"), ("arrow", "ipc")] {
        let out = tmp.path().join(container);
        pack_ok(&[
            "write",
            s(&root),
            s(&out),
            "--container",
            container,
            "--encoding",
            "raw",
            "--rows-per-group",
            "7",
        ]);
        let ours = read_split(&out, "train");
        let theirs: Vec<(u64, i32, u32, u32, u8, String)> =
            serde_json::from_str(&python(READ_SHARDS, &[s(&out.join("train")), format])).unwrap();
        assert_eq!(theirs.len(), 80);
        for (a, b) in zip_exact(&ours, &theirs, "our rows and pyarrow's") {
            assert_eq!((a.index, a.label), (b.0, b.1));
            assert_eq!(
                (a.image.height(), a.image.width(), a.encoding as u8),
                (b.2, b.3, b.4)
            );
            assert_eq!(
                hex::encode(Sha256::digest(&a.bytes)),
                b.5,
                "row {} pixels differ",
                a.index
            );
        }
    }
}

const WRITE_HF: &str = r#"
import json, sys, pathlib, pyarrow as pa, pyarrow.parquet as pq
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True)
files = json.loads(sys.argv[2])
names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
meta = {"info": {"features": {"img": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}}}
def table(rows):
    img = pa.array([{"bytes": open(p, "rb").read(), "path": None} for p, _ in rows],
                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    t = pa.table({"img": img, "label": pa.array([l for _, l in rows], pa.int64())})
    return t.replace_schema_metadata({"huggingface": json.dumps(meta)})
half = len(files) // 2
pq.write_table(table(files[:half]), out / "train-00000-of-00002.parquet")
pq.write_table(table(files[half:]), out / "train-00001-of-00002.parquet")
pq.write_table(table(files[:5]), out / "test-00000-of-00001.parquet")
"#;

#[test]
fn hf_parquet_from_pyarrow_packs_with_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let images = cifar_images("test", 3);
    let files: Vec<(String, u8)> = images
        .iter()
        .map(|(l, p, _)| (s(p).to_string(), *l))
        .collect();
    let src = tmp.path().join("hf/data");
    python(
        WRITE_HF,
        &[s(&src), &serde_json::to_string(&files).unwrap()],
    );
    let out = tmp.path().join("out");
    pack_ok(&[
        "write",
        s(&tmp.path().join("hf")),
        s(&out),
        "--encoding",
        "keep",
    ]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.source.format, "hf-parquet");
    assert_eq!(m.classes[9], "truck");
    assert_eq!(m.split("train").unwrap().rows, 30);
    assert_eq!(m.split("test").unwrap().rows, 5);
    let rows = read_split(&out, "train");
    for (row, (label, path, img)) in zip_exact(&rows, &images, "rows and source images") {
        assert_eq!(row.label, i32::from(*label));
        assert_eq!(
            row.bytes,
            std::fs::read(path).unwrap(),
            "keep stores the bytes untouched"
        );
        assert_eq!(row.image.as_raw(), img.as_raw());
    }
}

/// The same layout written by arrow-rs, with a custom column name and a path-only row.
fn write_hf_rust(path: &Path, images: &[(u8, std::path::PathBuf, image::RgbImage)]) {
    let labels: Vec<i64> = images.iter().map(|(l, _, _)| i64::from(*l)).collect();
    write_hf_rust_labels(path, images, "target", &labels);
}

fn write_hf_rust_labels(
    path: &Path,
    images: &[(u8, std::path::PathBuf, image::RgbImage)],
    label_column: &str,
    labels: &[i64],
) {
    let bytes: Vec<Option<Vec<u8>>> = images
        .iter()
        .enumerate()
        .map(|(i, (_, p, _))| {
            if i == 4 {
                None
            } else {
                Some(std::fs::read(p).unwrap())
            }
        })
        .collect();
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let picture = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(BinaryArray::from_iter(bytes.iter().map(|b| b.as_deref()))) as ArrayRef,
            // Row 4's path names no file here: a path-only image that cannot be read.
            Arc::new(StringArray::from_iter(images.iter().enumerate().map(
                |(i, (_, p, _))| match i {
                    4 => Some("moved/elsewhere.jpg".to_string()),
                    _ => Some(s(p).to_string()),
                },
            ))),
        ],
        None,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("picture", DataType::Struct(fields), true),
        Field::new(label_column, DataType::Int64, false),
    ]));
    let labels = Int64Array::from_iter_values(labels.iter().copied());
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(picture), Arc::new(labels)]).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn hf_parquet_with_custom_columns_and_a_missing_image() {
    let tmp = tempfile::tempdir().unwrap();
    let images = cifar_images("train", 1);
    let file = tmp.path().join("train.parquet");
    write_hf_rust(&file, &images);
    let out = tmp.path().join("out");
    let args = [
        "write",
        s(&file),
        s(&out),
        "--image-column",
        "picture",
        "--label-column",
        "target",
    ];
    let failed = ssl_pack(&args);
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        stderr(&failed).contains("train.parquet: row 4")
            && stderr(&failed).contains("moved/elsewhere.jpg does not exist")
            && stderr(&failed).contains("embed_table_storage"),
        "{}",
        stderr(&failed)
    );
    let mut skip = args.to_vec();
    skip.extend(["--on-error", "skip"]);
    pack_ok(&skip);
    let m = Manifest::load(&out).unwrap();
    // No ClassLabel metadata: classes are numbered from the labels seen.
    assert_eq!(
        m.classes,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let train = m.split("train").unwrap();
    assert_eq!((train.rows, train.skipped.len()), (9, 1));
    assert!(train.skipped[0].file.ends_with("train.parquet: row 4"));
    let wrong = ssl_pack(&[
        "write",
        s(&file),
        s(&tmp.path().join("x")),
        "--image-column",
        "target",
    ]);
    assert!(
        stderr(&wrong)
            .contains("column `target` is Int64, expected a struct with `bytes` or binary"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn hf_parquet_with_a_huge_label_or_files_that_disagree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let images = cifar_images("train", 1);
    let mut labels: Vec<i64> = images.iter().map(|(l, _, _)| i64::from(*l)).collect();
    labels[3] = 2_000_000_000;
    let huge = tmp.path().join("huge").join("train.parquet");
    std::fs::create_dir_all(huge.parent().unwrap()).unwrap();
    write_hf_rust_labels(&huge, &images, "label", &labels);
    let out = ssl_pack(&["write", s(&huge), s(&tmp.path().join("a"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("train.parquet: row 3: label 2000000000 out of range"),
        "{}",
        stderr(&out)
    );
    // Two files of one split, the second with another label column.
    let dir = tmp.path().join("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    let ok: Vec<i64> = images.iter().map(|(l, _, _)| i64::from(*l)).collect();
    write_hf_rust_labels(
        &dir.join("train-00000-of-00002.parquet"),
        &images,
        "label",
        &ok,
    );
    write_hf_rust_labels(
        &dir.join("train-00001-of-00002.parquet"),
        &images,
        "class",
        &ok,
    );
    let out = ssl_pack(&["write", s(&dir), s(&tmp.path().join("b"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("train-00001-of-00002.parquet: columns differ"),
        "{}",
        stderr(&out)
    );
}
