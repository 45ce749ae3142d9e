//! Seeded mutation fuzzing on stable Rust. Real files (CIFAR JPEGs, a PNG, Parquet and Arrow
//! shards of a packed dataset, its manifest, a checkpoint's `state.json`) are mutated (bit flips,
//! byte runs, interesting words, truncation, insertion, splices; for manifests also values
//! swapped for extreme ones) and handed to what reads them in production: the source decoder,
//! `verify`, the loader, `Manifest::load` and `inspect`'s table, the checkpoint reader. Every
//! case must end within its timeout in a result or an error (for shards, one naming the file;
//! a shard changed without resealing its checksum must be refused by `verify` and the loader);
//! a panic outside the decoders' containment or a hang fails the run, and the input is saved
//! under `target/fuzz-crashers/<target>/`. Copy it to `tests/fixtures/fuzz/<target>/` to keep it:
//! every file there is replayed first, as a regression case.
//!
//! `FUZZ_SECONDS` (default 40) bounds the run;
//! `FUZZ_SEED` picks the sequence (default 0).
//! `tools/fuzz.sh --minutes N` runs it longer, in release mode.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use sslfast::loader::Loader;
use sslfast::shard::Manifest;

/// Panics that reached the hook: ones the decoders' containment let through.
static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Generous, for a loaded machine. `tests/fixtures/fuzz/parquet-shard/case-40658-resealed` once
/// kept parquet's Thrift reader skipping a damaged page header for 22 s of CPU (over 60 s on a
/// busy core); `shard::page_headers` now refuses it at once.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Jpeg,
    Png,
    ParquetShard,
    ArrowShard,
    Manifest,
    State,
}

const TARGETS: [Target; 6] = [
    Target::Jpeg,
    Target::Png,
    Target::ParquetShard,
    Target::ArrowShard,
    Target::Manifest,
    Target::State,
];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Jpeg => "jpeg",
            Target::Png => "png",
            Target::ParquetShard => "parquet-shard",
            Target::ArrowShard => "arrow-shard",
            Target::Manifest => "manifest",
            Target::State => "state",
        }
    }
}

/// The pristine inputs, made once.
struct Seeds {
    jpegs: Vec<Vec<u8>>,
    png: Vec<u8>,
    parquet: PathBuf,
    arrow: PathBuf,
    run: PathBuf,
}

fn seeds(dir: &Path) -> Seeds {
    let images = cifar_images("test", 2);
    let src = dir.join("src");
    class_folder(&src, &images[..6], "class");
    let jpegs = images
        .iter()
        .take(4)
        .map(|(_, p, _)| std::fs::read(p).unwrap())
        .collect();
    let mut png = Vec::new();
    images[0]
        .2
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let parquet = dir.join("parquet");
    pack_ok(&[
        "write",
        s(&src),
        s(&parquet),
        "--encoding",
        "keep",
        "--rows-per-group",
        "2",
    ]);
    let arrow = dir.join("arrow");
    pack_ok(&[
        "write",
        s(&src),
        s(&arrow),
        "--container",
        "arrow",
        "--encoding",
        "raw",
    ]);
    let run = dir.join("run");
    let cfg = train_config(
        parquet.clone(),
        &run,
        &["views=2x8", "batch_size=3", "width=2", "pdim=4", "epochs=1"],
    );
    train(&cfg, false).unwrap();
    Seeds {
        jpegs,
        png,
        parquet,
        arrow,
        run,
    }
}

/// One mutation of `bytes`.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.random());
        return;
    }
    let at = rng.random_range(0..bytes.len());
    match rng.random_range(0..7) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            let fill: u8 = [0x00, 0xFF, rng.random()][rng.random_range(0..3)];
            let end = (at + rng.random_range(1..=16)).min(bytes.len());
            bytes[at..end].fill(fill);
        }
        2 => {
            let words: [u32; 6] = [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF];
            let word = words[rng.random_range(0..words.len())].to_le_bytes();
            let end = (at + 4).min(bytes.len());
            bytes[at..end].copy_from_slice(&word[..end - at]);
        }
        3 => bytes.truncate(at),
        4 => {
            let extra: Vec<u8> = (0..rng.random_range(1..=32))
                .map(|_| rng.random())
                .collect();
            bytes.splice(at..at, extra);
        }
        5 => {
            let from = rng.random_range(0..bytes.len());
            let len = rng.random_range(1..=64).min(bytes.len() - from);
            let chunk = bytes[from..from + len].to_vec();
            bytes.splice(at..at, chunk);
        }
        _ => {
            let end = (at + rng.random_range(1..=64)).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

/// A manifest with one value swapped for an extreme or a lie (the rest as packed).
fn lie(rng: &mut ChaCha8Rng, text: &str) -> Vec<u8> {
    fn leaves(v: &mut serde_json::Value, out: &mut Vec<*mut serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(|v| leaves(v, out)),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| leaves(v, out)),
            leaf => out.push(leaf),
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut all = Vec::new();
    leaves(&mut value, &mut all);
    let choices = [
        serde_json::json!(u64::MAX),
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1u64 << 40),
        serde_json::json!("ééé"),
        serde_json::json!(""),
        serde_json::json!("../x"),
        serde_json::json!(null),
    ];
    let target = all[rng.random_range(0..all.len())];
    // SAFETY: the pointers are into `value`, which is alive and otherwise unborrowed here.
    unsafe { *target = choices[rng.random_range(0..choices.len())].clone() };
    serde_json::to_vec_pretty(&value).unwrap()
}

/// Writes `bytes` as shard `file` of the dataset in `dir`; with `reseal`, the manifest's size and
/// checksum are updated so the readers get past the checksum to the damage.
fn plant_shard(dir: &Path, file: &str, bytes: &[u8], reseal: bool) {
    std::fs::write(dir.join(file), bytes).unwrap();
    if !reseal {
        return;
    }
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for split in m["splits"].as_object_mut().unwrap().values_mut() {
        for shard in split["shards"].as_array_mut().unwrap() {
            if shard["file"] == file {
                shard["bytes"] = bytes.len().into();
                shard["sha256"] = hex::encode(Sha256::digest(bytes)).into();
            }
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Reads a dataset the ways production does; errors must name one of `files` (or the manifest).
/// Returns whether `verify` and the loader each refused it.
fn read_dataset(dir: &Path, files: &[String]) -> Result<(bool, bool), String> {
    let name = |e: String| match files.iter().any(|f| e.contains(f.as_str()))
        || e.contains("manifest.json")
    {
        true => Ok(()),
        false => Err(format!("an error that names none of {files:?}: {e}")),
    };
    let verify_refused = match sslfast::shard::verify::verify(dir) {
        Ok(report) => {
            for fault in &report.faults {
                name(fault.clone())?;
            }
            !report.faults.is_empty()
        }
        Err(e) => name(e.to_string()).map(|()| true)?,
    };
    let loader = Loader::builder(dir)
        .with_views("2x8")
        .with_batch_size(2)
        .with_threads(1)
        .build();
    let loader_refused = match loader {
        Err(e) => name(e.to_string()).map(|()| true)?,
        Ok(loader) => match loader.epoch(0).find_map(Result::err) {
            Some(e) => name(e.to_string()).map(|()| true)?,
            None => false,
        },
    };
    Ok((verify_refused, loader_refused))
}

/// One case: `bytes` into `target`. `Err` describes a failure (other than a panic or a hang).
fn run_case(
    target: Target,
    bytes: &[u8],
    seeds: &Seeds,
    scratch: &Path,
    reseal: bool,
) -> Result<(), String> {
    match target {
        Target::Jpeg | Target::Png => {
            let _ = sslfast::shard::codec::decode_source(bytes, 1 << 24);
            Ok(())
        }
        Target::ParquetShard | Target::ArrowShard => {
            let (src, file) = match target {
                Target::ParquetShard => (&seeds.parquet, "train/part-00000.parquet"),
                _ => (&seeds.arrow, "train/part-00000.arrow"),
            };
            copy_dir(src, scratch);
            let changed = std::fs::read(scratch.join(file)).unwrap() != bytes;
            plant_shard(scratch, file, bytes, reseal);
            let refused = read_dataset(scratch, &[file.to_string()])?;
            // Bytes that no longer match the manifest's checksum must never be read as data.
            match (changed && !reseal, refused) {
                (true, (false, _)) => {
                    Err("silent acceptance: verify passed a changed shard".into())
                }
                (true, (_, false)) => {
                    Err("silent acceptance: the loader read a changed shard".into())
                }
                _ => Ok(()),
            }
        }
        Target::Manifest => {
            copy_dir(&seeds.parquet, scratch);
            std::fs::write(scratch.join("manifest.json"), bytes).unwrap();
            if let Ok(m) = Manifest::load(scratch) {
                let _ = m.table(scratch);
                // A lie about a shard may be caught at the shard: errors name it (as the
                // manifest, mutated or not, names it) or the manifest.
                // (or the shard on disk, which a renamed entry leaves unlisted).
                let mut files = vec!["train/part-".to_string()];
                files.extend(
                    (m.splits.values())
                        .flat_map(|s| s.shards.iter().map(|shard| shard.file.clone())),
                );
                read_dataset(scratch, &files)?;
            }
            Ok(())
        }
        Target::State => {
            copy_dir(&seeds.run, scratch);
            let ckpt = scratch.join("checkpoint");
            std::fs::write(ckpt.join("state.json"), bytes).unwrap();
            if reseal {
                let _ = std::fs::remove_file(ckpt.join("SHA256SUMS"));
            }
            let _ = sslfast::train::checkpoint::load_state(scratch);
            Ok(())
        }
    }
}

fn base_bytes(target: Target, seeds: &Seeds, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    match target {
        Target::Jpeg => seeds.jpegs[rng.random_range(0..seeds.jpegs.len())].clone(),
        Target::Png => seeds.png.clone(),
        Target::ParquetShard => read(seeds.parquet.join("train/part-00000.parquet")),
        Target::ArrowShard => read(seeds.arrow.join("train/part-00000.arrow")),
        Target::Manifest => read(seeds.parquet.join("manifest.json")),
        Target::State => read(seeds.run.join("checkpoint/state.json")),
    }
}

/// Runs one case in its own thread under the timeout; returns what went wrong, if anything.
fn checked(
    target: Target,
    bytes: Vec<u8>,
    seeds: &'static Seeds,
    scratch: PathBuf,
    reseal: bool,
) -> Option<String> {
    let before = PANICS.load(Ordering::SeqCst);
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(target, &bytes, seeds, &scratch, reseal)
        }));
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = send.send(result);
    });
    let problem = match receive.recv_timeout(CASE_TIMEOUT) {
        Err(_) => Some(format!("hang: no result within {CASE_TIMEOUT:?}")),
        Ok(Err(_)) => Some("panic".to_string()),
        Ok(Ok(Err(e))) => Some(e),
        Ok(Ok(Ok(()))) => None,
    };
    match (problem, PANICS.load(Ordering::SeqCst) > before) {
        (None, true) => Some("panic in another thread".into()),
        (problem, _) => problem,
    }
}

fn save_crasher(target: Target, case: usize, bytes: &[u8], reseal: bool) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/fuzz-crashers")
        .join(target.name());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "case-{case}{}",
        if reseal { "-resealed" } else { "" }
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn mutated_inputs_end_in_a_result_or_an_error_naming_the_file() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    // The decoders' containment wraps the hook above, so contained panics are not counted.
    let _ = sslfast::shard::contain::contain(|| ());
    let work = tempfile::tempdir().unwrap();
    let seeds: &'static Seeds = Box::leak(Box::new(seeds(work.path())));
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    let mut cases = 0usize;

    // Regression cases first: every file kept under tests/fixtures/fuzz/<target>/.
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for target in TARGETS {
        let Ok(entries) = std::fs::read_dir(kept.join(target.name())) else {
            continue;
        };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let reseal = entry.file_name().to_string_lossy().ends_with("-resealed");
            let scratch = work.path().join(format!("case-{cases}"));
            if let Some(problem) = checked(target, bytes, seeds, scratch, reseal) {
                failures.push(format!("{}: {problem}", entry.path().display()));
            }
            cases += 1;
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut per_target = [0usize; TARGETS.len()];
    while Instant::now() < deadline && failures.len() < 10 {
        let t = cases % TARGETS.len();
        let target = TARGETS[t];
        let mut bytes = base_bytes(target, seeds, &mut rng);
        if target == Target::Manifest && rng.random_bool(0.5) {
            bytes = lie(&mut rng, std::str::from_utf8(&bytes).unwrap());
        } else {
            for _ in 0..rng.random_range(1..=4) {
                mutate(&mut rng, &mut bytes);
            }
        }
        let reseal = rng.random_bool(0.5);
        let scratch = work.path().join(format!("case-{cases}"));
        if let Some(problem) = checked(target, bytes.clone(), seeds, scratch, reseal) {
            let saved = save_crasher(target, cases, &bytes, reseal);
            failures.push(format!(
                "{} case {cases}: {problem} (input: {})",
                target.name(),
                saved.display()
            ));
            if problem.starts_with("hang") {
                break; // the stuck thread holds on; stop here and report
            }
        }
        per_target[t] += 1;
        cases += 1;
    }
    let counts: Vec<String> = TARGETS
        .iter()
        .zip(per_target)
        .map(|(t, n)| format!("{} {n}", t.name()))
        .collect();
    println!(
        "fuzz: {cases} cases in {seconds} s (seed {seed}): {}",
        counts.join(", ")
    );
    let kinds = ["panic", "hang", "silent acceptance"];
    let count = |kind: &str| failures.iter().filter(|f| f.contains(kind)).count();
    println!(
        "fuzz: {} panics, {} hangs, {} silent acceptances, {} other failures",
        count("panic"),
        count("hang"),
        count("silent acceptance"),
        failures
            .iter()
            .filter(|f| !kinds.iter().any(|k| f.contains(k)))
            .count()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        per_target.iter().all(|&n| n > 0),
        "every target ran: {counts:?}"
    );
}
