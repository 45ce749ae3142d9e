//! The K-view loader on real CIFAR-10 pixels: shapes, augmentation statistics, normalisation,
//! coverage of orders, fractions and ranks, determinism across threads and resume, and errors.

mod common;

use std::collections::BTreeMap;

use candle_core::Device;
use common::*;
use sslfast::loader::{AugmentConfig, CachePolicy};
use sslfast::loader::{Batch, Cursor, Loader, LoaderError, Order, CIFAR10_MEAN, CIFAR10_STD};

fn collect(iter: impl Iterator<Item = Result<Batch, LoaderError>>) -> Vec<Batch> {
    iter.map(|b| b.unwrap()).collect()
}

/// Views equal to the whole image: scale 1-1 keeps the full 32x32 frame.
fn identity_views() -> AugmentConfig {
    AugmentConfig {
        flip_p: 0.0,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        ..AugmentConfig::default()
    }
}

#[test]
fn batches_have_the_declared_shapes_and_labels() {
    let data = cifar10_test_raw();
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_views("2x32:0.14-1,6x16:0.05-0.14")
        .with_batch_size(64)
        .with_threads(2)
        .build()
        .unwrap();
    assert!(
        loader.dataset().is_decoded(),
        "10k CIFAR images are held decoded"
    );
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.len(), 64);
    assert_eq!((batch.groups[0].side, batch.groups[0].views), (32, 2));
    assert_eq!(batch.groups[0].data.len(), 2 * 64 * 3 * 32 * 32);
    assert_eq!((batch.groups[1].side, batch.groups[1].views), (16, 6));
    assert_eq!(batch.groups[1].data.len(), 6 * 64 * 3 * 16 * 16);
    // The CIFAR folder is packed class by class, 1000 each: the index gives the label.
    for (label, index) in zip_exact(&batch.labels, &batch.indices, "labels and indices") {
        assert_eq!(*label as u64, index / 1000);
    }
    let tensors = batch
        .to_tensors(&Device::Cpu, CIFAR10_MEAN, CIFAR10_STD)
        .unwrap();
    assert_eq!(tensors[1].dims(), &[6 * 64, 3, 16, 16]);
}

#[test]
fn identity_views_reproduce_the_stored_pixels_and_normalise_to_the_dataset_mean() {
    let data = cifar10_test_raw();
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_views("1x32:1-1")
        .with_batch_size(500)
        .with_order(Order::Sequential)
        .with_augment(identity_views())
        .build()
        .unwrap();
    let stored = read_split(&data, "test");
    let mut sums = [0f64; 3];
    let mut raw_sums = [0f64; 3];
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        for (b, index) in batch.indices.iter().enumerate() {
            let img = &stored[*index as usize].image;
            let view = batch.groups[0].view(0, b);
            // CHW view vs HWC source: the full-frame crop is the image itself.
            for (c, raw) in raw_sums.iter_mut().enumerate() {
                for (p, px) in img.pixels().enumerate() {
                    assert_eq!(
                        view[c * 1024 + p],
                        px[c],
                        "image {index} channel {c} pixel {p}"
                    );
                    *raw += f64::from(px[c]);
                }
            }
        }
        let t = &batch
            .to_tensors(&Device::Cpu, CIFAR10_MEAN, CIFAR10_STD)
            .unwrap()[0];
        let per_channel = t
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        for (c, v) in per_channel
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .enumerate()
        {
            sums[c] += f64::from(*v) * batch.len() as f64;
        }
    }
    for c in 0..3 {
        let mean = sums[c] / 10_000.0;
        let raw_mean = raw_sums[c] / (10_000.0 * 1024.0) / 255.0;
        let expected = (raw_mean - f64::from(CIFAR10_MEAN[c])) / f64::from(CIFAR10_STD[c]);
        assert!(
            (mean - expected).abs() < 1e-4,
            "channel {c}: normalised mean {mean}, expected {expected}"
        );
        // The shared copy's channel means match the official CIFAR-10 ones (its README): about 0.
        assert!(mean.abs() < 0.05, "channel {c}: {mean}");
    }
}

/// Fraction of views for which `pred` holds, over `batches` batches of 256 with one 32px view.
fn view_fraction(
    augment: AugmentConfig,
    batches: usize,
    pred: impl Fn(&[u8], &[u8]) -> bool,
) -> f64 {
    let data = cifar10_test_raw();
    let stored = read_split(&data, "test");
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_views("1x32:1-1")
        .with_augment(augment)
        .with_seed(11)
        .build()
        .unwrap();
    let (mut hits, mut total) = (0usize, 0usize);
    for batch in loader.epoch(0).take(batches) {
        let batch = batch.unwrap();
        for (b, index) in batch.indices.iter().enumerate() {
            let img = &stored[*index as usize].image;
            let chw: Vec<u8> = (0..3)
                .flat_map(|c| img.pixels().map(move |p| p[c]))
                .collect();
            hits += usize::from(pred(batch.groups[0].view(0, b), &chw));
            total += 1;
        }
    }
    hits as f64 / total as f64
}

fn mirror(chw: &[u8]) -> Vec<u8> {
    chw.chunks(32)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

#[test]
fn flip_jitter_and_grayscale_happen_at_their_probabilities() {
    // 2,560 views each: a binomial's standard deviation is under 0.01, the tolerance 0.04.
    let flipped = view_fraction(
        AugmentConfig {
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..AugmentConfig::default()
        },
        10,
        |v, src| v == mirror(src).as_slice() && v != src,
    );
    assert!((flipped - 0.5).abs() < 0.04, "flip fraction {flipped}");
    let untouched = view_fraction(
        AugmentConfig {
            flip_p: 0.0,
            grayscale_p: 0.0,
            ..AugmentConfig::default()
        },
        10,
        |v, src| v == src,
    );
    assert!(
        (untouched - 0.2).abs() < 0.04,
        "jitter p=0.8 leaves {untouched} of views untouched"
    );
    let gray = view_fraction(AugmentConfig::default(), 10, |v, _| {
        v[..1024] == v[1024..2048] && v[1024..2048] == v[2048..]
    });
    assert!((gray - 0.2).abs() < 0.04, "grayscale fraction {gray}");
}

#[test]
fn one_random_epoch_visits_every_image_once() {
    let data = cifar10_test_raw();
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_batch_size(300)
        .with_drop_last(false)
        .with_views("1x16")
        .build()
        .unwrap();
    let mut seen: Vec<u64> = collect(loader.epoch(3))
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_ne!(
        seen[..100],
        (0..100).collect::<Vec<u64>>()[..],
        "random order is shuffled"
    );
    seen.sort_unstable();
    assert_eq!(seen, (0..10_000).collect::<Vec<u64>>());
}

#[test]
fn rank_shares_are_the_one_process_batches() {
    let data = cifar10_test_raw();
    let build = |batch: usize, rank: usize, world: usize, drop_last: bool| {
        Loader::builder(&data)
            .with_split("test")
            .with_batch_size(batch)
            .with_rank(rank, world)
            .with_views("1x8")
            .with_drop_last(drop_last)
            .build()
            .unwrap()
    };
    let one = collect(build(300, 0, 1, true).epoch(1));
    let ranks: Vec<Vec<Batch>> = (0..3)
        .map(|rank| collect(build(100, rank, 3, true).epoch(1)))
        .collect();
    assert_eq!(
        one.len(),
        33,
        "10000 images make 33 whole global batches of 300"
    );
    for (b, global) in one.iter().enumerate() {
        let indices: Vec<u64> = ranks.iter().flat_map(|r| r[b].indices.clone()).collect();
        assert_eq!(
            indices, global.indices,
            "batch {b}: the ranks' shares in rank order"
        );
        let pixels: Vec<u8> = ranks
            .iter()
            .flat_map(|r| r[b].groups[0].data.clone())
            .collect();
        assert_eq!(pixels, global.groups[0].data, "batch {b}: the same views");
    }
    let last = build(1, 1, 3, false);
    assert_eq!(
        last.batches_per_epoch(),
        3334,
        "without drop_last 10000 make 3334 global batches of 3, the last of 1"
    );
    assert_eq!(
        collect(last.epoch(0)).last().unwrap().len(),
        0,
        "rank 1's share of it"
    );
}

#[test]
fn fraction_half_keeps_every_class_at_half() {
    let data = cifar10_test_raw();
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_fraction(0.5)
        .with_batch_size(100)
        .with_views("1x8")
        .build()
        .unwrap();
    let mut per_class = BTreeMap::new();
    for b in loader.epoch(0) {
        for l in b.unwrap().labels {
            *per_class.entry(l).or_insert(0) += 1;
        }
    }
    assert_eq!(
        per_class.values().copied().collect::<Vec<_>>(),
        vec![500; 10]
    );
    let again = Loader::builder(&data)
        .with_split("test")
        .with_fraction(0.5)
        .with_batch_size(100)
        .with_views("1x8")
        .build()
        .unwrap();
    assert_eq!(
        loader.sampler().subset(),
        again.sampler().subset(),
        "the subset is seeded"
    );
}

fn digests(loader: &Loader, cursor: Cursor) -> Vec<String> {
    loader
        .iter_from(cursor)
        .unwrap()
        .map(|b| b.unwrap().digest())
        .collect()
}

#[test]
fn batches_are_identical_for_any_thread_count_and_after_resume() {
    let data = cifar10_test_raw();
    let build = |threads| {
        Loader::builder(&data)
            .with_split("test")
            .with_views("2x32:0.14-1,2x16:0.05-0.14")
            .with_batch_size(250)
            .with_threads(threads)
            .with_seed(5)
            .build()
            .unwrap()
    };
    let start = Cursor {
        epoch: 2,
        batches_done: 0,
    };
    let one = digests(&build(1), start);
    assert_eq!(one.len(), 40);
    assert_eq!(one, digests(&build(2), start));
    assert_eq!(one, digests(&build(8), start));
    let resumed = digests(
        &build(2),
        Cursor {
            epoch: 2,
            batches_done: 17,
        },
    );
    assert_eq!(resumed, one[17..]);
    let inline: Vec<String> = build(1)
        .epoch_inline(2)
        .map(|b| b.unwrap().digest())
        .collect();
    assert_eq!(inline, one, "the inline reference builds the same batches");
    assert_ne!(
        one,
        digests(
            &build(2),
            Cursor {
                epoch: 3,
                batches_done: 0
            }
        ),
        "another epoch differs"
    );
    assert_eq!(
        digests(
            &build(2),
            Cursor {
                epoch: 2,
                batches_done: 40
            }
        ),
        Vec::<String>::new()
    );
    let past_end = build(2).iter_from(Cursor {
        epoch: 2,
        batches_done: 41,
    });
    let err = past_end
        .err()
        .expect("a cursor past the epoch's end is refused")
        .to_string();
    assert!(
        err.contains("batch 41") && err.contains("40 batches"),
        "{err}"
    );
}

#[test]
fn streaming_jpeg_gives_the_same_batches_as_decoded_cache() {
    let data = packed(
        "cifar10-test-keep-arrow",
        &cifar10_folder(),
        &[
            "--split",
            "test",
            "--encoding",
            "keep",
            "--container",
            "arrow",
        ],
    );
    let build = |cache| {
        Loader::builder(&data)
            .with_split("test")
            .with_views("2x24")
            .with_batch_size(128)
            .with_cache(cache)
            .with_order(Order::Quasi)
            .build()
            .unwrap()
    };
    let stream = build(CachePolicy::Stream);
    assert!(!stream.dataset().is_decoded());
    let a: Vec<String> = stream
        .epoch(0)
        .take(6)
        .map(|b| b.unwrap().digest())
        .collect();
    let b: Vec<String> = build(CachePolicy::Decoded)
        .epoch(0)
        .take(6)
        .map(|b| b.unwrap().digest())
        .collect();
    assert_eq!(a, b);
}

#[test]
fn kept_grayscale_cmyk_and_png_files_decode_to_rgb_on_the_hot_path() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd");
    let src = tmp.path().join("src/odd");
    std::fs::create_dir_all(&src).unwrap();
    for f in [
        "gray.jpg",
        "cmyk.jpg",
        "palette.png",
        "gray16.png",
        "rgba.png",
    ] {
        std::fs::copy(fixtures.join(f), src.join(f)).unwrap();
    }
    let data = tmp.path().join("data");
    pack_ok(&[
        "write",
        s(&tmp.path().join("src")),
        s(&data),
        "--encoding",
        "keep",
    ]);
    let reference = read_split(&data, "train");
    let loader = Loader::builder(&data)
        .with_views("1x8:1-1")
        .with_batch_size(5)
        .with_order(Order::Sequential)
        .with_cache(CachePolicy::Stream)
        .with_augment(identity_views())
        .build()
        .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    for (b, row) in reference.iter().enumerate() {
        // The fixtures are 40x24: the centre fallback crops 32x24 and shrinks it to 8x8.
        let view = batch.groups[0].view(0, b);
        let is_gray = row.image.pixels().all(|p| p[0] == p[1] && p[1] == p[2]);
        let view_gray = view[..64] == view[64..128] && view[64..128] == view[128..];
        assert_eq!(
            is_gray, view_gray,
            "row {b}: colour kind must survive decoding"
        );
        let mean_src: f64 = row
            .image
            .as_raw()
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / row.image.as_raw().len() as f64;
        let mean_view: f64 = view.iter().map(|&v| f64::from(v)).sum::<f64>() / view.len() as f64;
        assert!(
            (mean_src - mean_view).abs() < 12.0,
            "row {b}: {mean_src} vs {mean_view}"
        );
    }
}
