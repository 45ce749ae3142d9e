//! Image folders lose nothing without a word: every extension torchvision's ImageFolder accepts
//! is packed, other files are counted in the summary and manifest, and a tree whose levels could
//! be read two ways (Tiny-ImageNet's `train/<wnid>/images/`) is refused until `--layout` says.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use image::{DynamicImage, ImageFormat};
use sslfast::shard::Manifest;

/// Tiny-ImageNet's training tree: `train/<wnid>/images/<wnid>_N.JPEG` and `<wnid>_boxes.txt`.
fn tiny_imagenet_train(root: &Path, wnids: &[&str], per_class: usize) {
    let images = cifar_images("train", per_class);
    for (i, wnid) in wnids.iter().enumerate() {
        let dir = root.join("train").join(wnid);
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(dir.join(format!("{wnid}_boxes.txt")), "0 0 8 8\n").unwrap();
        let class: Vec<_> = images.iter().filter(|(l, _, _)| *l as usize == i).collect();
        for (n, (_, path, _)) in class.iter().enumerate() {
            let to = dir.join("images").join(format!("{wnid}_{n}.JPEG"));
            std::fs::copy(path, to).unwrap();
        }
    }
}

#[test]
fn a_tree_with_two_readings_is_refused_until_layout_says() {
    let tmp = tempfile::tempdir().unwrap();
    let wnids = ["n01443537", "n01629819", "n01641577"];
    let tree = tmp.path().join("tiny-imagenet");
    tiny_imagenet_train(&tree, &wnids, 4);
    let train = tree.join("train");

    let out = ssl_pack(&["write", s(&train), s(&tmp.path().join("auto"))]);
    assert!(!out.status.success(), "one split per class must not pass");
    let err = stderr(&out);
    assert!(
        err.contains("ambiguous layout")
            && err.contains("--layout flat")
            && err.contains(s(&train)),
        "{err}"
    );

    let flat = tmp.path().join("flat");
    let summary = pack_ok(&["write", s(&train), s(&flat), "--layout", "flat"]);
    let manifest = Manifest::load(&flat).unwrap();
    assert_eq!(manifest.classes, wnids);
    let split = &manifest.splits["train"];
    assert_eq!(split.per_class, [4, 4, 4]);
    assert_eq!(split.not_images, BTreeMap::from([("txt".to_string(), 3)]));
    assert!(
        summary.contains("3 files that are not images left out: 3 txt"),
        "{summary}"
    );

    // From the root, `train` is a split name: the same classes, no question asked.
    let from_root = tmp.path().join("root");
    pack_ok(&["write", s(&tree), s(&from_root)]);
    let manifest = Manifest::load(&from_root).unwrap();
    assert_eq!(manifest.classes, wnids);
    assert_eq!(manifest.splits["train"].per_class, [4, 4, 4]);

    // `--layout splits` reads the class folders as splits, as asked.
    let splits = tmp.path().join("splits");
    pack_ok(&["write", s(&train), s(&splits), "--layout", "splits"]);
    assert_eq!(Manifest::load(&splits).unwrap().splits.len(), 3);
}

#[test]
fn every_torchvision_extension_is_packed_and_other_files_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let images = cifar_images("test", 1);
    let kinds = [
        ("a.webp", ImageFormat::WebP),
        ("b.BMP", ImageFormat::Bmp),
        ("c.tif", ImageFormat::Tiff),
        ("d.tiff", ImageFormat::Tiff),
        ("e.ppm", ImageFormat::Pnm),
        ("f.png", ImageFormat::Png),
    ];
    let class = src.join("things");
    std::fs::create_dir_all(&class).unwrap();
    let mut expected = Vec::new();
    for ((name, format), (_, _, img)) in kinds.iter().zip(&images) {
        DynamicImage::ImageRgb8(img.clone())
            .save_with_format(class.join(name), *format)
            .unwrap();
        expected.push(img.clone());
    }
    let grey = image::imageops::grayscale(&images[6].2);
    DynamicImage::ImageLuma8(grey.clone())
        .save_with_format(class.join("g.pgm"), ImageFormat::Pnm)
        .unwrap();
    expected.push(DynamicImage::ImageLuma8(grey).to_rgb8());
    std::fs::copy(&images[7].1, class.join("h.JPG")).unwrap();
    std::fs::write(class.join("notes.txt"), "not an image").unwrap();
    std::fs::write(class.join(".DS_Store"), [0u8; 8]).unwrap();
    std::fs::write(class.join("README"), "no extension").unwrap();

    let out = tmp.path().join("out");
    let summary = pack_ok(&["write", s(&src), s(&out), "--encoding", "raw"]);
    let rows = read_split(&out, "train");
    assert_eq!(rows.len(), 8, "every torchvision extension is an image");
    for (row, want) in zip_exact(&rows[..7], &expected, "lossless rows") {
        assert!(
            row.image == *want,
            "row {} differs from its source",
            row.index
        );
    }
    let manifest = Manifest::load(&out).unwrap();
    let left_out = BTreeMap::from([
        ("(hidden)".to_string(), 1),
        (String::new(), 1),
        ("txt".to_string(), 1),
    ]);
    assert_eq!(manifest.splits["train"].not_images, left_out);
    assert!(
        summary.contains(
            "3 files that are not images left out: 1 without extension, 1 (hidden), 1 txt"
        ),
        "{summary}"
    );
}
