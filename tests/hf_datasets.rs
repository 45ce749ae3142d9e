//! Both ways with Hugging Face `datasets` itself (`.ci/run` installs it; without it these tests
//! fail, they never skip): what users export with it packs, and `ssl-pack export --to hf` loads
//! in it with its `Image` and `ClassLabel` features and in pandas (`tools/check_hf_export.py`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sslfast::shard::Manifest;

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", std::env::temp_dir().join("sslfast-hf-home"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 {args:?} failed (is `datasets` installed? `pip install datasets pandas`): {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn exports_made_with_datasets_pack_with_their_classes_and_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    for split in ["train", "test"] {
        class_folder(&folder.join(split), &cifar_images(split, 3), "class");
    }
    let made = tmp.path().join("made");
    let names = python(&["tools/hf_roundtrip.py", s(&folder), s(&made)]);
    let names: Vec<String> = serde_json::from_str(names.trim()).unwrap();

    let ours = tmp.path().join("ours");
    pack_ok(&["write", s(&folder), s(&ours), "--encoding", "raw"]);
    let expected = |split: &str| {
        let mut rows: Vec<(i32, Vec<u8>)> = read_split(&ours, split)
            .into_iter()
            .map(|r| (r.label, r.image.into_raw()))
            .collect();
        rows.sort();
        rows
    };
    for (name, split) in [
        ("saved_dict", "train"),
        ("saved_dict", "test"),
        ("saved_test", "test"),
        ("pathonly", "train"),
    ] {
        let out = tmp.path().join(format!("{name}-{split}"));
        pack_ok(&[
            "write",
            s(&made.join(name)),
            s(&out),
            "--encoding",
            "raw",
            "--split",
            split,
        ]);
        let manifest = Manifest::load(&out).unwrap();
        assert_eq!(manifest.classes, names, "{name}");
        let mut rows: Vec<(i32, Vec<u8>)> = read_split(&out, split)
            .into_iter()
            .map(|r| (r.label, r.image.into_raw()))
            .collect();
        rows.sort();
        assert!(
            rows == expected(split),
            "{name} {split}: rows differ from the folder's"
        );
    }
}

#[test]
fn our_export_loads_in_datasets_and_pandas() {
    let data = small_cifar(10, 5);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    pack_ok(&["export", "--to", "hf", s(&data), s(&out)]);
    let manifest = data.join("manifest.json");
    let report = python(&[
        "tools/check_hf_export.py",
        s(&out),
        "--manifest",
        s(&manifest),
    ]);
    assert!(report.contains("check_hf_export: OK"), "{report}");
    assert!(
        report.contains("pandas.read_parquet(OUT/data): 150 rows"),
        "{report}"
    );
    assert!(Path::new(&out).join("data").is_dir());
}
