//! Hostile input, files: what `ssl-pack` reads from disk (special files, links, names that are
//! not UTF-8, layouts that read two ways, decoders' limits) and what `inspect`/`verify` trust in
//! a manifest. Each case: the input, the exit code, and the text its error or fault must hold.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn fails(args: &[&str], code: i32, needle: &str) {
    let out = ssl_pack(args);
    let err = stderr(&out) + &stdout(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?} lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Two classes of three real CIFAR JPEGs under `root`.
fn classes(root: &Path) {
    let mut images = cifar_images("test", 3);
    images.retain(|(label, _, _)| *label < 2);
    class_folder(root, &images, "class");
}

#[test]
fn a_fifo_named_like_an_image_is_left_out_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root);
    let fifo = root.join("class0/pipe.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = tmp.path().join("out");
    let args: Vec<String> = ["write", s(&root), s(&out)].map(String::from).to_vec();
    let text = within(
        Duration::from_secs(60),
        "packing beside a FIFO",
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pack_ok(&args)
        },
    );
    assert!(text.contains("(not a regular file)"), "{text}");
    assert!(text.contains("packed 6 images"), "{text}");
}

#[test]
fn a_symlink_back_up_the_tree_is_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root);
    std::os::unix::fs::symlink("..", root.join("class0/up")).unwrap();
    let out = tmp.path().join("out");
    fails(
        &["write", s(&root), s(&out), "--layout", "flat"],
        2,
        "a symlink loop",
    );
    std::fs::remove_file(root.join("class0/up")).unwrap();
    std::os::unix::fs::symlink(".", root.join("class1/here")).unwrap();
    fails(
        &["write", s(&root), s(&out), "--layout", "flat"],
        2,
        "a symlink loop",
    );
}

#[test]
fn class_names_that_are_not_utf8_are_refused_not_merged() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root);
    let bad = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::rename(root.join("class1"), &bad).unwrap();
    fails(
        &["write", s(&root), s(&tmp.path().join("out"))],
        2,
        "not valid UTF-8",
    );
}

#[test]
fn a_source_path_that_is_not_utf8_is_refused_before_packing() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(std::ffi::OsStr::from_bytes(b"src\xff"));
    classes(&root);
    let out = ssl_pack_os(&[
        "write".as_ref(),
        root.as_os_str(),
        tmp.path().join("out").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the source path is not valid UTF-8"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("out").exists());
}

fn ssl_pack_os(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ssl-pack"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_stray_image_beside_split_folders_is_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root.join("train"));
    classes(&root.join("test"));
    let image = std::fs::read(root.join("train/class0/0000.jpg")).unwrap();
    std::fs::write(root.join("train/stray.jpg"), image).unwrap();
    let out = tmp.path().join("out");
    fails(
        &["write", s(&root), s(&out)],
        2,
        "stray.jpg is an image beside them",
    );
    // The flag settles it: the top folders as classes.
    let text = pack_ok(&["write", s(&root), s(&out), "--layout", "flat"]);
    assert!(text.contains("train 13"), "{text}");
}

#[test]
fn hub_parquet_trees_keep_their_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = small_cifar(2, 1);
    let hf = tmp.path().join("hf");
    pack_ok(&["export", "--to", "hf", s(&data), s(&hf)]);
    // refs/convert/parquet's layout: <config>/<split>/NNNN.parquet.
    let root = tmp.path().join("converted");
    for split in ["train", "test"] {
        let dir = root.join("default").join(split);
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::read_dir(hf.join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(split))
            .unwrap();
        std::fs::copy(file, dir.join("0000.parquet")).unwrap();
    }
    let out = tmp.path().join("out");
    let text = pack_ok(&["write", s(&root), s(&out)]);
    assert!(text.contains("test 10, train 20"), "{text}");
}

#[test]
fn a_packed_dataset_is_not_a_source() {
    let tmp = tempfile::tempdir().unwrap();
    let data = small_cifar(2, 1);
    fails(
        &["write", s(&data), s(&tmp.path().join("out"))],
        2,
        "is already a dataset packed by ssl-pack",
    );
}

#[test]
fn nothing_to_pack_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("a/x.jpg"), b"not a jpeg").unwrap();
    std::fs::write(root.join("b/y.jpg"), b"").unwrap();
    let out = tmp.path().join("out");
    fails(
        &["write", s(&root), s(&out), "--on-error", "skip"],
        2,
        "has no images to pack; all 2 images were skipped",
    );
    assert!(!out.exists());
}

#[test]
fn one_jpeg_decoder_one_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root);
    // Cut at half its data: Pillow refuses it as truncated, and so must every stage here.
    let good = std::fs::read(root.join("class0/0000.jpg")).unwrap();
    std::fs::write(root.join("class0/half.jpg"), &good[..good.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    fails(&["write", s(&root), s(&out)], 2, "half.jpg");
    std::fs::remove_file(root.join("class0/half.jpg")).unwrap();
    // Wider than 16,384 px: it packs as JPEG and the loader reads it back.
    let wide = image::RgbImage::from_fn(17_000, 8, |x, y| image::Rgb([x as u8, y as u8, 9]));
    let bytes = sslfast::shard::codec::encode_jpeg(&wide, 90).unwrap();
    std::fs::write(root.join("class0/wide.jpg"), bytes).unwrap();
    pack_ok(&["write", s(&root), s(&out), "--encoding", "keep"]);
    let report = pack_ok(&["verify", s(&out)]);
    assert!(report.contains("0 faults"), "{report}");
    let loader = sslfast::loader::Loader::builder(&out)
        .with_views("2x8")
        .with_batch_size(7)
        .with_threads(1)
        .build()
        .unwrap();
    for batch in loader.epoch(0) {
        batch.unwrap();
    }
}

/// A copy of a small packed dataset whose manifest `edit` changes.
fn lying(tmp: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let data = tmp.join("data");
    let src = small_cifar(2, 1);
    copy_dir(&src, &data);
    let path = data.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    data
}

#[test]
fn manifest_values_are_checked_before_they_are_used() {
    type Lie = fn(&mut Value);
    let cases: [(&str, Lie); 5] = [
        ("says 18446744073709551615 rows, its shards 20", |m| {
            m["splits"]["train"]["rows"] = Value::from(u64::MAX)
        }),
        ("rows, its row groups 20", |m| {
            let big = 1_000_000_000_000u64;
            m["splits"]["train"]["rows"] = Value::from(big);
            m["splits"]["train"]["shards"][0]["rows"] = Value::from(big);
            m["splits"]["train"]["per_class"][0] = Value::from(big - 18);
        }),
        ("sha256 is not 64 hexadecimal digits", |m| {
            m["splits"]["train"]["shards"][0]["sha256"] = Value::from("é".repeat(32))
        }),
        ("class `class0` is listed twice", |m| {
            m["classes"][1] = Value::from("class0")
        }),
        ("is not a file of the folder `train/`", |m| {
            m["splits"]["train"]["shards"][0]["file"] = Value::from("../../etc/passwd")
        }),
    ];
    for (needle, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let data = lying(tmp.path(), edit);
        fails(&["inspect", s(&data)], 2, needle);
        fails(&["verify", s(&data)], 2, needle);
    }
}

#[test]
fn verify_counts_what_the_manifest_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let data = lying(tmp.path(), |m| {
        // Sums still add up: only the data can tell.
        m["splits"]["train"]["per_class"] = serde_json::json!([1, 3, 2, 2, 2, 2, 2, 2, 2, 2]);
    });
    fails(
        &["verify", s(&data)],
        1,
        "the data (train/part-00000.parquet) holds [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]",
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = lying(tmp.path(), |m| {
        m["splits"]["train"]["per_class"] = serde_json::json!([1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        m["splits"]["train"]["unlabeled"] = Value::from(1);
    });
    fails(
        &["verify", s(&data)],
        1,
        "says 1 unlabeled rows, the data (train/part-00000.parquet) holds 0",
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = lying(tmp.path(), |_| {});
    std::fs::copy(
        data.join("train/part-00000.parquet"),
        data.join("train/part-00001.parquet"),
    )
    .unwrap();
    fails(
        &["verify", s(&data)],
        1,
        "train/part-00001.parquet: in the split's folder but not in the manifest",
    );
}

#[test]
fn an_abandoned_staging_directory_is_removed_by_the_next_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    classes(&root);
    // PIDs above the kernel's pid_max (4194304 at most) are never alive.
    let abandoned = tmp.path().join(".out.partial-99999999");
    std::fs::create_dir_all(abandoned.join("train")).unwrap();
    pack_ok(&["write", s(&root), s(&tmp.path().join("out"))]);
    assert!(!abandoned.exists());
}
