//! Bad input: every case fails with a message naming the file and the cause, exits non-zero,
//! and leaves nothing half-written behind.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::*;
use sslfast::shard::Manifest;

/// Asserts that `ssl-pack args` fails with exit code 2 and that stderr contains every `needle`.
fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let out = ssl_pack(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ssl-pack {args:?} should fail; stderr: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr of {args:?} lacks {needle:?}: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// No dataset, and no staging directory, may be left next to `out` after a failure.
fn nothing_written(out: &Path) {
    assert!(
        !out.join("manifest.json").exists(),
        "{} has a manifest",
        out.display()
    );
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A class folder of real CIFAR JPEGs, `n` per class for `classes` classes.
fn small_folder(root: &Path, classes: usize, n: usize) {
    let mut images = cifar_images("test", n);
    images.retain(|(label, _, _)| usize::from(*label) < classes);
    class_folder(root, &images, "class");
}

#[test]
fn cifar_file_of_wrong_size_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bin");
    std::fs::create_dir_all(&src).unwrap();
    for b in 1..=5 {
        std::fs::write(src.join(format!("data_batch_{b}.bin")), vec![0u8; 3073 * 2]).unwrap();
    }
    std::fs::write(src.join("test_batch.bin"), vec![0u8; 3073 * 2 + 100]).unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &["write", s(&src), s(&out)],
        &[
            "test_batch.bin",
            "size 6246 bytes is not a multiple of the 3073-byte record",
        ],
    );
    nothing_written(&out);
}

#[test]
fn cifar_with_only_the_test_batch_packs_its_test_split_and_a_partial_train_split_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bin");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("test_batch.bin"), vec![3u8; 3073 * 2]).unwrap();
    let out = tmp.path().join("out");
    let packed = ssl_pack(&["write", s(&src), s(&out), "--split", "test"]);
    assert!(packed.status.success(), "{}", stderr(&packed));
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.split("test").unwrap().rows, 2);
    assert!(m.split("train").is_err());
    std::fs::write(src.join("data_batch_1.bin"), vec![3u8; 3073]).unwrap();
    fails_with(
        &["write", s(&src), s(&tmp.path().join("partial"))],
        &["data_batch_2.bin"],
    );
}

#[test]
fn cifar_label_out_of_range_names_file_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bin");
    std::fs::create_dir_all(&src).unwrap();
    for b in 1..=5 {
        std::fs::write(src.join(format!("data_batch_{b}.bin")), vec![1u8; 3073 * 3]).unwrap();
    }
    let mut bad = vec![2u8; 3073 * 3];
    bad[3073 * 2] = 12;
    std::fs::write(src.join("test_batch.bin"), bad).unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &["write", s(&src), s(&out)],
        &[
            "test_batch.bin",
            "record 2: label byte 12 out of range 0..9",
        ],
    );
    nothing_written(&out);
}

#[test]
fn stl_truncated_images_or_labels_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("stl10_binary");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("train_X.bin"), vec![0u8; 27648 * 2 - 5]).unwrap();
    std::fs::write(src.join("train_y.bin"), [1u8, 2]).unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &["write", s(tmp.path()), s(&out)],
        &[
            "train_X.bin",
            "not a multiple of the 27648-byte record",
            "truncated",
        ],
    );
    std::fs::write(src.join("train_X.bin"), vec![0u8; 27648 * 2]).unwrap();
    std::fs::write(src.join("train_y.bin"), [1u8]).unwrap();
    fails_with(
        &["write", s(tmp.path()), s(&out)],
        &["train_X.bin", "holds 2 images but train_y.bin has 1 labels"],
    );
    std::fs::write(src.join("train_y.bin"), [1u8, 11]).unwrap();
    fails_with(
        &["write", s(tmp.path()), s(&out)],
        &["train_y.bin", "record 1: label byte 11 out of range 1..10"],
    );
    nothing_written(&out);
}

#[test]
fn missing_or_empty_folders_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &["write", s(&tmp.path().join("nope")), s(&out)],
        &["nope", "no such file or directory"],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &["write", s(&empty), s(&out)],
        &["empty", "no class folders"],
    );
    let root = tmp.path().join("root");
    small_folder(&root, 2, 2);
    std::fs::create_dir_all(root.join("zebra")).unwrap();
    std::fs::write(root.join("zebra/notes.txt"), "not an image").unwrap();
    fails_with(
        &["write", s(&root), s(&out)],
        &[
            "zebra",
            "class folder `zebra` has no images (jpg, jpeg, png",
        ],
    );
    nothing_written(&out);
}

/// A folder with three bad files among good ones.
fn folder_with_bad_images(root: &Path) -> Vec<&'static str> {
    small_folder(root, 2, 3);
    let good = std::fs::read(root.join("class0/0000.jpg")).unwrap();
    std::fs::write(root.join("class0/zero.jpg"), b"").unwrap();
    std::fs::write(root.join("class1/truncated.JPG"), &good[..good.len() / 3]).unwrap();
    let mut corrupt = good.clone();
    corrupt[2..200].fill(0x55);
    std::fs::write(root.join("class1/corrupt.png"), &corrupt).unwrap();
    vec!["zero.jpg", "truncated.JPG", "corrupt.png"]
}

#[test]
fn bad_images_fail_by_default_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    small_folder(&root, 2, 3);
    let out = tmp.path().join("out");
    std::fs::write(root.join("class0/zero.jpg"), b"").unwrap();
    fails_with(
        &["write", s(&root), s(&out)],
        &["zero.jpg", "empty file (0 bytes)"],
    );
    std::fs::remove_file(root.join("class0/zero.jpg")).unwrap();
    let good = std::fs::read(root.join("class0/0000.jpg")).unwrap();
    std::fs::write(root.join("class1/truncated.jpg"), &good[..good.len() / 3]).unwrap();
    fails_with(
        &["write", s(&root), s(&out)],
        &["truncated.jpg", "corrupt or truncated jpeg"],
    );
    std::fs::remove_file(root.join("class1/truncated.jpg")).unwrap();
    let mut bad_png = std::fs::read(tempfile_png(tmp.path())).unwrap();
    let n = bad_png.len();
    bad_png[n / 2..].fill(0);
    std::fs::write(root.join("class1/bad.png"), &bad_png).unwrap();
    fails_with(
        &["write", s(&root), s(&out)],
        &["bad.png", "corrupt or truncated png"],
    );
    nothing_written(&out);
}

fn tempfile_png(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ok.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 2, 7]))
        .save(&path)
        .unwrap();
    path
}

#[test]
fn on_error_skip_leaves_bad_images_out_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let bad = folder_with_bad_images(&root);
    let out = tmp.path().join("out");
    let text = pack_ok(&["write", s(&root), s(&out), "--on-error", "skip"]);
    assert!(
        text.contains("packed 6 images") && text.contains("3 skipped"),
        "{text}"
    );
    let m = Manifest::load(&out).unwrap();
    let skipped = &m.split("train").unwrap().skipped;
    assert_eq!(skipped.len(), 3);
    for name in bad {
        let entry = skipped
            .iter()
            .find(|s| s.file.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {skipped:?}"));
        assert!(!entry.error.is_empty());
    }
    assert_eq!(read_split(&out, "train").len(), 6);
}

#[test]
fn image_above_the_pixel_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    small_folder(&root, 1, 2);
    let out = tmp.path().join("out");
    fails_with(
        &["write", s(&root), s(&out), "--max-pixels", "1000"],
        &["0000.jpg", "32x32 = 1024 pixels, above the limit of 1000"],
    );
    nothing_written(&out);
}

#[test]
fn existing_dataset_is_kept_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    small_folder(&root, 2, 2);
    let out = tmp.path().join("out");
    pack_ok(&["write", s(&root), s(&out)]);
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    fails_with(
        &["write", s(&root), s(&out)],
        &["already holds a dataset", "--overwrite"],
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    pack_ok(&[
        "write",
        s(&root),
        s(&out),
        "--overwrite",
        "--encoding",
        "raw",
    ]);
    assert_eq!(Manifest::load(&out).unwrap().encoding.mode, "raw");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "mine").unwrap();
    fails_with(
        &["write", s(&root), s(&other), "--overwrite"],
        &["is not empty and holds no dataset"],
    );
    assert!(other.join("precious.txt").exists());
}

#[test]
fn write_error_midway_leaves_no_dataset_and_no_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Files may not grow past 2 MB (RLIMIT_FSIZE), so the first shard write fails partway.
    // SIGXFSZ is ignored (dispositions survive exec), so the write returns EFBIG instead.
    let output = unsafe {
        Command::new(env!("CARGO_BIN_EXE_ssl-pack"))
            .args(["write", s(&cifar10_folder()), s(&out), "--encoding", "raw"])
            .pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: 2 << 20,
                    rlim_max: 2 << 20,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .output()
            .unwrap()
    };
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("part-00000.parquet.partial") && err.to_lowercase().contains("file too large"),
        "{err}"
    );
    assert!(!out.exists(), "no output directory may appear");
    nothing_written(&out);
}

#[test]
fn verify_detects_a_flipped_byte_and_a_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    small_folder(&root, 2, 4);
    let out = tmp.path().join("out");
    pack_ok(&["write", s(&root), s(&out), "--container", "arrow"]);
    let good = ssl_pack(&["verify", s(&out)]);
    assert!(good.status.success(), "{}", stdout(&good));
    let shard = out.join("train/part-00000.arrow");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&shard, &bytes).unwrap();
    let bad = ssl_pack(&["verify", s(&out)]);
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(
        text.contains("part-00000.arrow: checksum mismatch") && text.contains("1 faults"),
        "{text}"
    );
    std::fs::remove_file(&shard).unwrap();
    let gone = ssl_pack(&["verify", s(&out)]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stdout(&gone).contains("part-00000.arrow: shard named in the manifest is missing"),
        "{}",
        stdout(&gone)
    );
    let no_manifest = tmp.path().join("root");
    let err = ssl_pack(&["verify", s(&no_manifest)]);
    assert_eq!(err.status.code(), Some(2));
    assert!(
        stderr(&err).contains("no manifest.json in"),
        "{}",
        stderr(&err)
    );
}
