//! MNIST-family IDX files pack without a converter, gzipped or not, in torchvision's `raw/`
//! layout: grey images stay one channel on disk (a third of RGB) and reach the model as RGB.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use image::GrayImage;
use sslfast::loader::{AugmentConfig, Loader, LoaderConfig, Order};
use sslfast::shard::{Encoding, Manifest};

/// An IDX file of unsigned bytes with `shape`, gzipped when the name ends in `.gz`.
fn write_idx(path: &Path, shape: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 0x08, shape.len() as u8];
    for d in shape {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let file = std::fs::File::create(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        gz.finish().unwrap();
    } else {
        std::io::BufWriter::new(file).write_all(&bytes).unwrap();
    }
}

/// Real CIFAR-10 images made grey: `(label, image)` per image.
fn grey_images(split: &str, per_class: usize) -> Vec<(u8, GrayImage)> {
    cifar_images(split, per_class)
        .into_iter()
        .map(|(label, _, img)| (label, image::imageops::grayscale(&img)))
        .collect()
}

fn write_split(dir: &Path, prefix: &str, images: &[(u8, GrayImage)], ext: &str) {
    let pixels: Vec<u8> = images
        .iter()
        .flat_map(|(_, g)| g.as_raw().clone())
        .collect();
    let labels: Vec<u8> = images.iter().map(|(l, _)| *l).collect();
    let n = images.len() as u32;
    write_idx(
        &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
        &[n, 32, 32],
        &pixels,
    );
    write_idx(
        &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        &[n],
        &labels,
    );
}

#[test]
fn fashion_mnist_style_raw_folder_packs_grey_and_loads_as_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("FashionMNIST");
    let raw = root.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let (train, test) = (grey_images("train", 4), grey_images("test", 2));
    write_split(&raw, "train", &train, ".gz");
    write_split(&raw, "t10k", &test, "");

    let out = tmp.path().join("out");
    pack_ok(&["write", s(&root), s(&out)]);
    let manifest = Manifest::load(&out).unwrap();
    assert_eq!(manifest.source.format, "idx");
    assert_eq!(
        manifest.classes[0], "T-shirt/top",
        "a folder named Fashion* names its classes"
    );
    for (split, images) in [("train", &train), ("test", &test)] {
        let rows = read_split(&out, split);
        for (row, (label, grey)) in zip_exact(&rows, images, split) {
            assert_eq!(row.label, i32::from(*label));
            assert_eq!(row.encoding, Encoding::Gray);
            assert_eq!(row.bytes, *grey.as_raw(), "stored one channel, untouched");
            let rgb = image::DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
            assert!(row.image == rgb, "read back as RGB, the grey value thrice");
        }
    }

    // The loader hands the model RGB: every channel of a centre view is the grey image.
    let loader = Loader::from_config(&LoaderConfig {
        data: out.clone(),
        split: "test".into(),
        views: "1x32:1-1".into(),
        batch_size: 20,
        order: Order::Sequential,
        augment: AugmentConfig::centre(),
        threads: 2,
        ..LoaderConfig::default()
    })
    .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let data = &batch.groups[0].data;
    for (i, (_, grey)) in test.iter().enumerate() {
        for c in 0..3 {
            let plane = &data[(i * 3 + c) * 1024..(i * 3 + c + 1) * 1024];
            assert_eq!(plane, grey.as_raw().as_slice(), "image {i} channel {c}");
        }
    }
}

#[test]
fn grey_storage_is_a_third_of_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let images = grey_images("train", 30);
    let idx = tmp.path().join("mnist");
    std::fs::create_dir_all(&idx).unwrap();
    write_split(&idx, "train", &images, "");
    let folder = tmp.path().join("folder");
    for (n, (label, grey)) in images.iter().enumerate() {
        let dir = folder.join(format!("class{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        grey.save(dir.join(format!("{n:04}.png"))).unwrap();
    }
    let (grey_out, rgb_out) = (tmp.path().join("grey"), tmp.path().join("rgb"));
    pack_ok(&["write", s(&idx), s(&grey_out), "--encoding", "raw"]);
    pack_ok(&["write", s(&folder), s(&rgb_out), "--encoding", "raw"]);
    let image_bytes =
        |dir: &Path| -> usize { read_split(dir, "train").iter().map(|r| r.bytes.len()).sum() };
    assert_eq!(image_bytes(&grey_out) * 3, image_bytes(&rgb_out));
}

#[test]
fn damaged_idx_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let images = grey_images("test", 1);
    write_split(tmp.path(), "train", &images, "");
    let labels = tmp.path().join("train-labels-idx1-ubyte");
    write_idx(&labels, &[9], &[0; 9]);
    let out = ssl_pack(&["write", s(tmp.path()), s(&tmp.path().join("a"))]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("9 labels for 10 images") && err.contains(s(&labels)),
        "{err}"
    );

    let file = tmp.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let out = ssl_pack(&[
        "write",
        s(tmp.path()),
        s(&tmp.path().join("b")),
        "--format",
        "idx",
    ]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("truncated or corrupt") && err.contains(s(&file)),
        "{err}"
    );
}
