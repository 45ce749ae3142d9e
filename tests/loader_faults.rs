//! Faults in the loader: a corrupt row surfaces as an error naming shard and row (never a hang),
//! and dropping the iterator mid-epoch stops and joins every worker thread. This file is its own
//! test binary so that counting loader threads is not disturbed by other tests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sslfast::loader::CachePolicy;
use sslfast::loader::Loader;

/// Both tests count loader threads, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn loader_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("ssl-loader"))
        .count()
}

#[test]
fn corrupt_row_is_an_error_naming_shard_and_row() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let images = cifar_images("test", 30);
    let root = tmp.path().join("src");
    class_folder(&root, &images, "c");
    let data = tmp.path().join("data");
    pack_ok(&[
        "write",
        s(&root),
        s(&data),
        "--encoding",
        "keep",
        "--rows-per-group",
        "25",
    ]);
    // Row 137 of the (uncompressed) shard: find its JPEG bytes in the file and break the header.
    let victim = std::fs::read(&images[137].1).unwrap();
    let shard = data.join("train/part-00000.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes
        .windows(victim.len())
        .position(|w| w == victim.as_slice())
        .expect("keep stores bytes verbatim");
    bytes[at..at + 4].fill(0);
    std::fs::write(&shard, bytes).unwrap();

    // Decoded mode checks every shard's checksum before decoding the split.
    let err = Loader::builder(&data)
        .with_cache(CachePolicy::Decoded)
        .build()
        .err()
        .expect("the checksum no longer matches");
    assert!(
        err.to_string()
            .contains("part-00000.parquet: checksum mismatch"),
        "{err}"
    );

    // Streaming checks each shard's checksum the first time a worker needs it.
    let streamed = Loader::builder(&data)
        .with_cache(CachePolicy::Stream)
        .with_batch_size(10)
        .with_threads(3)
        .build()
        .unwrap();
    let Some(Err(err)) = streamed.epoch(0).next() else {
        panic!("the checksum no longer matches, so the first batch is an error");
    };
    let err = err.to_string();
    assert!(
        err.contains("part-00000.parquet: checksum mismatch"),
        "{err}"
    );
    drop(streamed);

    // Without the check, the broken row itself is named.
    let loader = Loader::builder(&data)
        .with_cache(CachePolicy::Stream)
        .with_checksums(false)
        .with_batch_size(10)
        .with_threads(3)
        .build()
        .unwrap();
    let start = Instant::now();
    let results: Vec<_> = loader.epoch(0).collect();
    assert!(start.elapsed() < Duration::from_secs(20));
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 1, "iteration stops at the first error");
    assert!(
        errors[0].contains("train/part-00000.parquet: row 137") && errors[0].contains("jpeg"),
        "{}",
        errors[0]
    );
    assert!(results.last().unwrap().is_err(), "the error ends the epoch");
    assert_eq!(loader_threads(), 0);
}

#[test]
fn dropping_the_iterator_mid_epoch_joins_every_worker() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = cifar10_test_raw();
    let loader = Loader::builder(&data)
        .with_split("test")
        .with_views("4x32")
        .with_batch_size(64)
        .with_threads(4)
        .with_prefetch(8)
        .build()
        .unwrap();
    let mut batches = loader.epoch(0);
    for _ in 0..3 {
        batches.next().unwrap().unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(loader_threads(), 4, "workers run while batches remain");
    within(
        Duration::from_secs(30),
        "dropping the batch iterator",
        move || drop(batches),
    );
    assert_eq!(
        loader_threads(),
        0,
        "every worker is joined when the iterator drops"
    );
}
