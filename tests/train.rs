//! ssl-train end to end on a small real CIFAR-10 subset: the loss falls, resume is exact,
//! a non-finite loss stops training and keeps the last good checkpoint.

mod common;

use std::path::Path;

use common::*;
use sslfast::train::{metrics, TrainConfig, TrainError};

fn config(out: &Path, sets: &[&str]) -> TrainConfig {
    let base = [
        "views=2x16:0.2-1",
        "batch_size=60",
        "epochs=2",
        "width=4",
        "pdim=32",
    ];
    train_config(small_cifar(30, 5), out, &[&base[..], sets].concat())
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    metrics::read(run)
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn resume_gives_the_same_losses_and_weights_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    train(&config(&straight, &[]), false).unwrap();
    let split = tmp.path().join("split");
    train(&config(&split, &["epochs=1"]), false).unwrap();
    assert_eq!(step_losses(&split).len(), 5, "300 images in batches of 60");
    train(&config(&split, &["epochs=2"]), true).unwrap();
    let (a, b) = (step_losses(&straight), step_losses(&split));
    assert_eq!(a.len(), 10);
    assert_eq!(
        a, b,
        "losses after resume must equal the uninterrupted run's, bit for bit"
    );
    let weights = |run: &Path| std::fs::read(run.join("checkpoint/model.safetensors")).unwrap();
    assert_eq!(weights(&straight), weights(&split));
}

#[test]
fn loss_falls_over_a_few_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let summary = train(&config(&run, &["epochs=6", "width=8", "lr=0.003"]), false).unwrap();
    let records = metrics::read(&run).unwrap();
    let epochs: Vec<f64> = records
        .iter()
        .filter(|r| r["kind"] == "epoch")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(epochs.len(), 6);
    assert!(epochs[5] < 0.8 * epochs[0], "epoch losses {epochs:?}");
    assert!(records[0]["kind"] == "start" && records[0]["config"]["width"] == 8);
    assert!(
        records[0]["host"]["cores"].as_u64().unwrap() >= 1,
        "{}",
        records[0]
    );
    assert!(run.join("config.toml").is_file() && run.join("summary.json").is_file());
    assert_eq!(summary.steps, 30);
    let waits: Vec<f64> = records
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| r["data_wait"].as_f64().unwrap())
        .collect();
    assert!(waits.iter().all(|w| (0.0..=1.0).contains(w)));
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1"]), false).unwrap();
    let before = std::fs::read(run.join("checkpoint/model.safetensors")).unwrap();
    let err = train(&config(&run, &["epochs=3", "lr=1e30"]), true).unwrap_err();
    match &err {
        // Steps count from 1: the first after resuming is step 6.
        TrainError::NonFinite { epoch, step, .. } => assert!(*epoch >= 1 && *step >= 6, "{err}"),
        other => panic!("expected a non-finite loss, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("training stopped") && text.contains("checkpoint"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint/model.safetensors")).unwrap(),
        before,
        "the last good checkpoint is untouched"
    );
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1"]), false).unwrap();
    let err = train(&config(&run, &["epochs=1"]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn resume_refuses_changed_settings_and_survives_a_crash_between_renames() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1"]), false).unwrap();
    let config_before = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(run.join("checkpoint/config.toml").is_file());
    let err = train(
        &config(&run, &["epochs=2", "seed=9", "batch_size=30"]),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("seed 0 -> 9") && err.contains("batch_size 60 -> 30"),
        "{err}"
    );
    // Every key outside the short list of resumable ones is compared, nested ones by full name.
    let sets = [
        "epochs=2",
        "augment.hue=0.1",
        "loss=vicreg",
        "stem=imagenet",
        "optimizer=adamw",
    ];
    let err = train(&config(&run, &sets), true).unwrap_err().to_string();
    for change in [
        "augment.hue 0.0 -> 0.1",
        "loss \"barlow-twins\" -> \"vicreg\"",
        "stem \"auto\" -> \"imagenet\"",
        "optimizer \"adam\" -> \"adamw\"",
    ] {
        assert!(err.contains(change), "{change} missing from: {err}");
    }
    // Training longer at a lower learning rate is a resume, not a new run.
    let lower = ["epochs=2", "lr=0.0005", "threads=1"];
    let resumed = run.with_file_name("resumed");
    copy_dir(&run, &resumed);
    train(&config(&resumed, &lower), true).unwrap();
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        config_before,
        "a refused resume leaves the run's config alone"
    );
    // A crash after `checkpoint/` moved aside and before its successor moved in.
    std::fs::rename(run.join("checkpoint"), run.join("checkpoint.old")).unwrap();
    let summary = train(&config(&run, &["epochs=2"]), true).unwrap();
    assert_eq!(summary.steps, 10);
    assert!(!run.join("checkpoint.old").exists());
}

#[test]
fn cli_names_a_mistyped_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssl-train"))
        .args(["--set", "bakbone=conv4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `bakbone`"), "{err}");
}

/// fastssl keeps each epoch's short last batch; one of a single image is skipped, not trained on
/// with undefined standard deviations.
#[test]
fn last_short_batch_is_kept_and_a_lone_image_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = tmp.path().join("kept");
    let s = train(&config(&kept, &["epochs=1", "batch_size=43"]), false).unwrap();
    assert_eq!(s.steps, 7, "300 images: 6 batches of 43 and one of 42");
    let dropped = tmp.path().join("dropped");
    let s = train(
        &config(&dropped, &["epochs=1", "batch_size=43", "drop_last=true"]),
        false,
    )
    .unwrap();
    assert_eq!(s.steps, 6);
    let lone = tmp.path().join("lone");
    let s = train(&config(&lone, &["epochs=1", "batch_size=299"]), false).unwrap();
    assert_eq!(
        s.steps, 1,
        "the batch of 299 trains, the lone image does not"
    );
    assert!(s.last_loss.is_finite());
    let skips = metrics::read(&lone)
        .unwrap()
        .into_iter()
        .filter(|r| r["kind"] == "skip")
        .count();
    assert_eq!(skips, 1);
}
