//! ssl-eval on real CIFAR-10 features: a briefly pretrained conv4 against the random-init
//! network, and the feature cache (reused for the same checkpoint, refused for another).

mod common;

use std::path::Path;

use common::*;
use sslfast::eval::{evaluate, EvalReport, EvalRequest, Protocol};
use sslfast::train::TrainConfig;

fn pretrain_config(out: &Path, sets: &[&str]) -> TrainConfig {
    let base = [
        "views=2x16:0.2-1",
        "batch_size=100",
        "epochs=12",
        "width=16",
        "pdim=64",
        "lr=0.003",
        "knn_k=20",
    ];
    train_config(small_cifar(200, 50), out, &[&base[..], sets].concat())
}

fn eval(checkpoint: Option<&Path>, config: TrainConfig, out: &Path) -> EvalReport {
    let data = config.loader.data.clone();
    evaluate(&EvalRequest {
        checkpoint: checkpoint.map(Path::to_path_buf),
        config,
        train: data.clone(),
        test: data,
        train_split: "train".into(),
        test_split: "test".into(),
        protocol: Protocol::Fast,
        probe_epochs: Some(60),
        out: out.to_path_buf(),
        threads: 2,
    })
    .unwrap()
}

#[test]
fn pretraining_beats_the_random_network_and_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&pretrain_config(&run, &[]), false).unwrap();
    let trained = eval(Some(&run), pretrain_config(&run, &[]), &run);
    let random = eval(None, pretrain_config(&run, &[]), &tmp.path().join("random"));
    eprintln!("trained: {trained}\nrandom: {random}");
    assert!(
        trained.linear_top1 > 0.2,
        "chance is 0.1: {}",
        trained.linear_top1
    );
    assert!(
        trained.linear_top1 > random.linear_top1 + 0.02,
        "{} vs random {}",
        trained.linear_top1,
        random.linear_top1
    );
    assert!(trained.knn_top1 > 0.15);
    assert!(trained.rankme > 1.0 && trained.rankme <= trained.feature_dim as f64);
    assert!(trained.alpha.is_finite());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["linear_top1"].as_f64().unwrap(), trained.linear_top1);
}

#[test]
fn cached_features_are_reused_for_the_same_checkpoint_only() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&pretrain_config(&run, &["epochs=1"]), false).unwrap();
    let first = eval(Some(&run), pretrain_config(&run, &[]), &run);
    assert!(!first.features_cached);
    let second = eval(Some(&run), pretrain_config(&run, &[]), &run);
    assert!(second.features_cached, "the second run reads the cache");
    assert_eq!(
        (first.linear_top1, first.knn_top1, first.rankme),
        (second.linear_top1, second.knn_top1, second.rankme)
    );
    // Another checkpoint in the same run directory: the cache's key no longer matches.
    train(&pretrain_config(&run, &["epochs=2"]), true).unwrap();
    let third = eval(Some(&run), pretrain_config(&run, &[]), &run);
    assert!(
        !third.features_cached,
        "a cache from another checkpoint must not be reused"
    );
    assert_ne!(third.rankme, first.rankme);
}

#[test]
fn a_limited_knn_bank_is_the_same_subset_for_the_monitor_and_ssl_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sets = ["epochs=1", "knn_bank=500", "eval_split=\"test\""];
    let summary = train(&pretrain_config(&run, &sets), false).unwrap();
    let limited = eval(Some(&run), pretrain_config(&run, &sets), &run);
    assert_eq!(limited.knn_bank, 500, "50 of each class's 200");
    assert_eq!(
        summary.knn_final,
        Some(limited.knn_top1),
        "the monitor searched another bank than ssl-eval"
    );
    let whole = eval(Some(&run), pretrain_config(&run, &["epochs=1"]), &run);
    assert_eq!(whole.knn_bank, 2000);
    assert_ne!(whole.knn_top1, limited.knn_top1);
}
