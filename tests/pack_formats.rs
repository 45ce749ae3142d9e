//! Each input format packed from real pixels (CIFAR-10 and the photo set in `../shared`), read
//! back through the shard reader and compared with the source.

mod common;

use std::path::Path;

use common::*;
use image::RgbImage;
use sslfast::shard::{Encoding, Manifest};

/// CHW planes of an image (the CIFAR layout).
fn planes(img: &RgbImage) -> Vec<u8> {
    (0..3)
        .flat_map(|c| img.pixels().map(move |p| p[c]))
        .collect()
}

/// Writes CIFAR-10 binary files in the official layout from real pixels:
/// 5 train batches of `per_batch` records and one test batch.
fn write_cifar10_bin(
    dir: &Path,
    train: &[(u8, std::path::PathBuf, RgbImage)],
    test: &[(u8, std::path::PathBuf, RgbImage)],
) {
    std::fs::create_dir_all(dir).unwrap();
    let per_batch = train.len() / 5;
    for b in 0..5 {
        let bytes: Vec<u8> = train[b * per_batch..(b + 1) * per_batch]
            .iter()
            .flat_map(|(label, _, img)| std::iter::once(*label).chain(planes(img)))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = test
        .iter()
        .flat_map(|(l, _, img)| std::iter::once(*l).chain(planes(img)))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
}

#[test]
fn cifar10_bin_round_trip_is_byte_exact_in_both_containers() {
    let tmp = tempfile::tempdir().unwrap();
    // Interleave classes so every train batch holds every class, as in the real release.
    let mut train = cifar_images("train", 20);
    train.sort_by_key(|(label, path, _)| (path.file_name().unwrap().to_owned(), *label));
    let test = cifar_images("test", 5);
    let src = tmp.path().join("cifar-10-batches-bin");
    write_cifar10_bin(&src, &train, &test);
    for container in ["parquet", "arrow"] {
        let out = tmp.path().join(container);
        // SRC is the parent: the reader finds cifar-10-batches-bin/ itself, and the format is detected.
        pack_ok(&[
            "write",
            s(tmp.path()),
            s(&out),
            "--encoding",
            "raw",
            "--container",
            container,
            "--rows-per-group",
            "64",
        ]);
        let manifest = Manifest::load(&out).unwrap();
        assert_eq!(manifest.source.format, "cifar10-bin");
        assert_eq!(manifest.classes[1], "automobile");
        assert_eq!(manifest.split("train").unwrap().rows, 200);
        assert_eq!(manifest.split("train").unwrap().per_class, vec![20; 10]);
        assert_eq!(
            manifest.split("train").unwrap().shards[0].row_groups,
            vec![64, 64, 64, 8]
        );
        for (split, source) in [("train", &train), ("test", &test)] {
            let rows = read_split(&out, split);
            assert_eq!(rows.len(), source.len());
            for (i, (row, (label, _, img))) in rows.iter().zip(source.iter()).enumerate() {
                assert_eq!(row.index, i as u64);
                assert_eq!(row.label, i32::from(*label));
                assert_eq!(row.encoding, Encoding::Raw);
                assert_eq!(
                    row.image.as_raw(),
                    img.as_raw(),
                    "{container} {split} row {i} differs"
                );
            }
        }
    }
}

#[test]
fn cifar100_bin_keeps_fine_or_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&src).unwrap();
    let images = cifar_images("test", 3);
    // Fine label = 10*class + k, coarse = class*2 (synthetic labels over real pixels).
    let records = |take: usize| -> Vec<u8> {
        images
            .iter()
            .take(take)
            .enumerate()
            .flat_map(|(i, (class, _, img))| {
                [class * 2, class * 10 + (i % 10) as u8]
                    .into_iter()
                    .chain(planes(img))
            })
            .collect()
    };
    std::fs::write(src.join("train.bin"), records(30)).unwrap();
    std::fs::write(src.join("test.bin"), records(12)).unwrap();
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    std::fs::write(src.join("fine_label_names.txt"), fine).unwrap();
    let coarse: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
    std::fs::write(src.join("coarse_label_names.txt"), coarse).unwrap();

    let out = tmp.path().join("fine");
    let text = pack_ok(&["write", s(&src), s(&out)]);
    assert!(text.contains("packed 42 images"), "{text}");
    let rows = read_split(&out, "train");
    for (i, row) in rows.iter().enumerate() {
        let (class, _, img) = &images[i];
        assert_eq!(row.label, i32::from(class * 10 + (i % 10) as u8));
        assert_eq!(row.image.as_raw(), img.as_raw());
    }
    assert_eq!(Manifest::load(&out).unwrap().classes[37], "fine37");

    let out = tmp.path().join("coarse");
    pack_ok(&[
        "write",
        s(&src),
        s(&out),
        "--format",
        "cifar100-bin",
        "--cifar100-label",
        "coarse",
    ]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.classes.len(), 20);
    let rows = read_split(&out, "test");
    assert_eq!(
        rows.iter().map(|r| r.label).collect::<Vec<_>>(),
        images
            .iter()
            .take(12)
            .map(|(c, _, _)| i32::from(c * 2))
            .collect::<Vec<_>>()
    );
}

/// 96x96 images cut from the real photos, stored as STL-10's column-major planes.
fn stl_images(n: usize) -> Vec<RgbImage> {
    let dir = hymenoptera().join("train/ants");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .take(n)
        .map(|f| {
            image::open(f)
                .unwrap()
                .resize_exact(96, 96, image::imageops::FilterType::Triangle)
                .to_rgb8()
        })
        .collect()
}

fn column_major(img: &RgbImage) -> Vec<u8> {
    (0..3)
        .flat_map(|c| (0..96).flat_map(move |x| (0..96).map(move |y| img.get_pixel(x, y)[c])))
        .collect()
}

#[test]
fn stl10_bin_transposes_planes_and_shifts_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("stl10_binary");
    std::fs::create_dir_all(&src).unwrap();
    let images = stl_images(12);
    let x = |r: std::ops::Range<usize>| -> Vec<u8> {
        images[r].iter().flat_map(column_major).collect()
    };
    std::fs::write(src.join("train_X.bin"), x(0..6)).unwrap();
    std::fs::write(src.join("train_y.bin"), [1u8, 2, 3, 10, 5, 1]).unwrap();
    std::fs::write(src.join("test_X.bin"), x(6..9)).unwrap();
    std::fs::write(src.join("test_y.bin"), [4u8, 4, 9]).unwrap();
    std::fs::write(src.join("unlabeled_X.bin"), x(9..12)).unwrap();
    let out = tmp.path().join("out");
    pack_ok(&["write", s(tmp.path()), s(&out), "--encoding", "raw"]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.source.format, "stl10-bin");
    assert_eq!(m.split("unlabeled").unwrap().unlabeled, 3);
    let train = read_split(&out, "train");
    assert_eq!(
        train.iter().map(|r| r.label).collect::<Vec<_>>(),
        vec![0, 1, 2, 9, 4, 0]
    );
    for (row, img) in zip_exact(&train, &images[0..6], "rows and source images") {
        assert_eq!(
            row.image.as_raw(),
            img.as_raw(),
            "pixels must come back in HWC order"
        );
    }
    let unlabeled = read_split(&out, "unlabeled");
    assert!(unlabeled.iter().all(|r| r.label == -1));
    assert_eq!(unlabeled[2].image.as_raw(), images[11].as_raw());
}

#[test]
fn cifar10_folder_packs_all_60k_and_verifies() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("c10");
    let text = pack_ok(&["write", s(&cifar10_folder()), s(&out), "--encoding", "keep"]);
    assert!(
        text.contains("packed 60000 images (test 10000, train 50000)"),
        "{text}"
    );
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.source.format, "image-folder");
    assert_eq!(
        m.classes,
        [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck"
        ]
    );
    assert_eq!(m.split("train").unwrap().per_class, vec![5000; 10]);
    assert_eq!(m.split("test").unwrap().per_class, vec![1000; 10]);
    let table = pack_ok(&["inspect", s(&out)]);
    assert!(
        table.contains("train") && table.contains("50000") && table.contains("airplane"),
        "{table}"
    );
    let verify = pack_ok(&["verify", s(&out)]);
    assert!(verify.contains("60000 rows checked, 0 faults"), "{verify}");
    // `keep` stores the source files byte for byte, in ImageFolder order.
    let rows = read_split(&out, "test");
    let first_cat = cifar_images("test", 1)
        .into_iter()
        .find(|(l, _, _)| *l == 3)
        .unwrap();
    let row = &rows[3000];
    assert_eq!((row.label, row.encoding), (3, Encoding::Jpeg));
    assert_eq!(row.bytes, std::fs::read(&first_cat.1).unwrap());
    assert_eq!(row.image.as_raw(), first_cat.2.as_raw());
}

#[test]
fn raw_from_jpeg_folder_equals_the_decoded_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("raw");
    pack_ok(&[
        "write",
        s(&cifar10_folder()),
        s(&out),
        "--split",
        "test",
        "--encoding",
        "raw",
        "--container",
        "arrow",
    ]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.splits.keys().collect::<Vec<_>>(), ["test"]);
    let rows = read_split(&out, "test");
    let source = cifar_images("test", 2);
    for (label, path, img) in source {
        let row = &rows[usize::from(label) * 1000 + if path.ends_with("0000.jpg") { 0 } else { 1 }];
        assert_eq!(row.encoding, Encoding::Raw);
        assert_eq!(row.image.as_raw(), img.as_raw(), "{}", path.display());
    }
}

#[test]
fn photos_downscale_to_max_side_and_stay_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("photos");
    let text = pack_ok(&["write", s(&hymenoptera()), s(&out), "--max-side", "256"]);
    assert!(
        text.contains("packed 397 images (train 244, val 153)"),
        "{text}"
    );
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.classes, ["ants", "bees"]);
    let mut shrunk = 0;
    for split in ["train", "val"] {
        let mut files: Vec<_> = ["ants", "bees"]
            .iter()
            .flat_map(|c| {
                std::fs::read_dir(hymenoptera().join(split).join(c))
                    .unwrap()
                    .map(|e| e.unwrap().path())
            })
            .collect();
        files.sort();
        for (row, file) in zip_exact(&read_split(&out, split), &files, "rows and files") {
            let (w, h) = image::image_dimensions(file).unwrap();
            let (rw, rh) = row.image.dimensions();
            assert_eq!(rw.max(rh), w.max(h).min(256), "{}", file.display());
            let aspect = |a: u32, b: u32| f64::from(a) / f64::from(b);
            assert!(
                (aspect(rw, rh) - aspect(w, h)).abs() < 0.02,
                "{} keeps its aspect",
                file.display()
            );
            assert_eq!(row.encoding, Encoding::Jpeg);
            shrunk += usize::from(w.max(h) > 256);
        }
    }
    assert!(
        shrunk > 390,
        "nearly all photos are larger than 256: {shrunk}"
    );
    assert!(pack_ok(&["verify", s(&out)]).contains("0 faults"));
}

#[test]
fn odd_image_kinds_become_rgb8() {
    // Fixtures made by tools/make_fixtures.py with Pillow; expected means are Pillow's
    // `Image.open(f).convert("RGB")` channel means, rounded.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd");
    let expected: Vec<(&str, [f64; 3], f64)> = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixtures.join("expected.json")).unwrap(),
    )
    .unwrap()
    .as_object()
    .unwrap()
    .iter()
    .map(|(k, v)| {
        let m = v["mean"].as_array().unwrap();
        let mean = [
            m[0].as_f64().unwrap(),
            m[1].as_f64().unwrap(),
            m[2].as_f64().unwrap(),
        ];
        (
            Box::leak(k.clone().into_boxed_str()) as &str,
            mean,
            v["tolerance"].as_f64().unwrap(),
        )
    })
    .collect();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src/odd");
    std::fs::create_dir_all(&src).unwrap();
    for (name, _, _) in &expected {
        std::fs::copy(fixtures.join(name), src.join(name)).unwrap();
    }
    let out = tmp.path().join("out");
    pack_ok(&[
        "write",
        s(&tmp.path().join("src")),
        s(&out),
        "--encoding",
        "raw",
    ]);
    let rows = read_split(&out, "train");
    let mut names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    names.sort();
    for (row, name) in zip_exact(&rows, &names, "rows and file names") {
        let (_, mean, tol) = expected.iter().find(|e| e.0 == *name).unwrap();
        let px = row.image.as_raw();
        for (c, pillow) in mean.iter().enumerate() {
            let m: f64 = px
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / (px.len() / 3) as f64;
            assert!(
                (m - pillow).abs() <= *tol,
                "{name}: channel {c} mean {m:.1}, Pillow gives {pillow}"
            );
        }
    }
}
