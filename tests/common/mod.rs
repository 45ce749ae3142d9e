//! Shared test helpers: the real datasets from `../shared/datasets`, unpacked once into
//! `target/data`, the binaries under test, and readers for packed datasets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::RgbImage;
use sslfast::eval::monitor::train_with_knn;
use sslfast::loader::LoaderConfig;
use sslfast::model::{BackboneKind, ModelSpec};
use sslfast::shard::codec::decode_stored;
use sslfast::shard::ShardReader;
use sslfast::train::{Run, TrainConfig, TrainError, TrainSummary};

/// `../shared/datasets` beside the checkout. Missing data fails loudly: no test skips silently.
pub fn shared_datasets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    assert!(
        dir.join("cifar10-jpeg.tar.gz").is_file(),
        "real test data missing: expected {} (the shared folder beside the checkout)",
        dir.display()
    );
    dir
}

/// Unpacks `tarball` from the shared datasets into `target/data/<name>` once; concurrent test
/// binaries race safely because each extracts to its own temporary name and renames.
pub fn dataset(name: &str, tarball: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data");
    let dest = root.join(name);
    if dest.is_dir() {
        return dest;
    }
    let tmp = root.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(shared_datasets().join(tarball))
        .arg("-C")
        .arg(&tmp)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar failed on {tarball}");
    if std::fs::rename(&tmp, &dest).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(dest.is_dir());
    dest
}

/// CIFAR-10 as an image folder: `train/<class>/*.jpg`, `test/<class>/*.jpg`.
pub fn cifar10_folder() -> PathBuf {
    dataset("cifar10", "cifar10-jpeg.tar.gz")
}

/// The 397 large ant and bee photos: `train/{ants,bees}`, `val/{ants,bees}`.
pub fn hymenoptera() -> PathBuf {
    dataset("hymenoptera", "hymenoptera.tar.gz").join("hymenoptera")
}

/// The first `n` images (sorted by file name) of each class of a CIFAR folder split, decoded.
pub fn cifar_images(split: &str, per_class: usize) -> Vec<(u8, PathBuf, RgbImage)> {
    let dir = cifar10_folder().join(split);
    let mut classes: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(class)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().take(per_class) {
            let img = image::open(&f).unwrap().to_rgb8();
            out.push((label as u8, f, img));
        }
    }
    out
}

/// Runs `ssl-pack` with `args`.
pub fn ssl_pack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssl-pack"))
        .args(args)
        .output()
        .expect("ssl-pack runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs ssl-pack and panics with its stderr unless it succeeded.
pub fn pack_ok(args: &[&str]) -> String {
    let out = ssl_pack(args);
    assert!(
        out.status.success(),
        "ssl-pack {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// One row of a packed split, decoded.
#[derive(Debug)]
pub struct Decoded {
    pub index: u64,
    pub label: i32,
    pub encoding: sslfast::shard::Encoding,
    pub bytes: Vec<u8>,
    pub image: RgbImage,
}

/// Every row of `split`, in storage order, decoded to RGB8.
pub fn read_split(dir: &Path, split: &str) -> Vec<Decoded> {
    let reader = ShardReader::open(dir).unwrap();
    let info = reader.manifest().split(split).unwrap().clone();
    let mut rows = Vec::new();
    for s in 0..info.shards.len() {
        let shard = reader.shard(split, s).unwrap();
        for g in 0..shard.num_groups() {
            let group = shard.read_group(g).unwrap();
            for i in 0..group.len() {
                let r = group.row(i, shard.name()).unwrap();
                rows.push(Decoded {
                    index: r.index,
                    label: r.label,
                    encoding: r.encoding,
                    bytes: r.image.to_vec(),
                    image: decode_stored(r.image, r.encoding, r.width, r.height).unwrap(),
                });
            }
        }
    }
    rows
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A packed copy of the real data made once per checkout under `target/data/packed/<name>`
/// (`ssl-pack write` with `args`); racing test binaries each pack and the first rename wins.
pub fn packed(name: &str, src: &Path, args: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/packed");
    let dest = root.join(name);
    if dest.join("manifest.json").is_file() {
        return dest;
    }
    std::fs::create_dir_all(&root).unwrap();
    let tmp = root.join(format!(".{name}.{}", std::process::id()));
    let mut all = vec!["write", s(src), s(&tmp)];
    all.extend_from_slice(args);
    pack_ok(&all);
    if std::fs::rename(&tmp, &dest).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dest
}

/// The CIFAR-10 test split (10,000 real images), stored raw.
pub fn cifar10_test_raw() -> PathBuf {
    packed(
        "cifar10-test-raw",
        &cifar10_folder(),
        &["--split", "test", "--encoding", "raw"],
    )
}

/// Copies `images` (as [`cifar_images`] gives them) into `root/<prefix><label>/`: a class folder
/// as `ssl-pack write` and torchvision's ImageFolder read it.
pub fn class_folder(root: &Path, images: &[(u8, PathBuf, RgbImage)], prefix: &str) {
    for (label, path, _) in images {
        let dir = root.join(format!("{prefix}{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// Pairs of `a` and `b`, which must be as long as each other: a zip that stops at the shorter
/// side would let missing rows pass unchecked.
pub fn zip_exact<'a, A, B>(
    a: &'a [A],
    b: &'a [B],
    what: &str,
) -> impl Iterator<Item = (&'a A, &'a B)> {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    a.iter().zip(b)
}

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`: a hang
/// becomes a failure naming `what` instead of a test run that never ends.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}: a hang or a panic"))
}

/// A small CIFAR-10 with both splits (`train_per_class` and `test_per_class` real images per
/// class), packed raw: fast enough to train on in tests.
pub fn small_cifar(train_per_class: usize, test_per_class: usize) -> PathBuf {
    // Tests of one binary run in parallel threads: one of them builds the source folder.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("cifar10-small-{train_per_class}-{test_per_class}");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/data")
        .join(format!("{name}-src"));
    if !src.join("done").exists() {
        let _ = std::fs::remove_dir_all(&src);
        for (split, n) in [("train", train_per_class), ("test", test_per_class)] {
            class_folder(&src.join(split), &cifar_images(split, n), "class");
        }
        std::fs::write(src.join("done"), "").unwrap();
    }
    packed(&name, &src, &["--encoding", "raw"])
}

/// A tiny pretraining run on `data` into `out`: conv4, 2 loader threads, kNN monitor off
/// (`eval_split` empty), then `sets` by their TOML names, as `--set` takes them.
pub fn train_config(data: PathBuf, out: &Path, sets: &[&str]) -> TrainConfig {
    let default = TrainConfig::default();
    let base = TrainConfig {
        loader: LoaderConfig {
            data,
            threads: 2,
            ..default.loader.clone()
        },
        model: ModelSpec {
            backbone: BackboneKind::Conv4,
            ..default.model
        },
        eval_split: String::new(),
        out: out.to_path_buf(),
        ..default
    };
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sslfast::config::apply_sets(&base, &sets).unwrap()
}

/// Trains `cfg` as `ssl-train` does (with the kNN monitor when `eval_split` is set).
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<TrainSummary, TrainError> {
    train_with_knn(&Run::new(cfg.clone(), resume)?, &[])
}

/// A copy of the directory tree `from` at `to` (a dataset or a run to tamper with).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}
