//! Hostile input, runs: numbers computed on nonsense are refused (`ssl-eval` on an unlabelled
//! split or across datasets whose classes differ, a resume on another dataset at the same
//! path), and a run's history stays true (a damaged checkpoint is named, a failed resume leaves
//! its config alone, a resume after a kill does not record steps twice).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sslfast::train::{metrics, TrainConfig};

fn config(out: &Path, sets: &[&str]) -> TrainConfig {
    let base = ["views=2x16:0.2-1", "batch_size=20", "width=4", "pdim=16"];
    train_config(small_cifar(4, 2), out, &[&base[..], sets].concat())
}

fn ssl_eval(run: &Path, train: &Path, test: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "--checkpoint",
        s(run),
        "--train",
        s(train),
        "--test",
        s(test),
    ];
    args.extend(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_ssl-eval"))
        .args(&args)
        .output()
        .unwrap();
    (out.status.code(), stderr(&out))
}

/// A packed dataset of the same images with other class names (and one without labels).
fn relabelled(tmp: &Path) -> (PathBuf, PathBuf) {
    let src = tmp.join("src");
    let mut images = cifar_images("test", 2);
    images.retain(|(label, _, _)| *label < 3);
    class_folder(&src.join("train"), &images, "kind");
    class_folder(&src.join("test"), &images, "kind");
    let other = tmp.join("other");
    pack_ok(&["write", s(&src), s(&other), "--encoding", "raw"]);
    let hf = tmp.join("hf");
    pack_ok(&["export", "--to", "hf", s(&other), s(&hf)]);
    // The same rows without their label column: every row label -1.
    let unlabelled_src = tmp.join("test.parquet");
    let script = "import pyarrow.parquet as pq, sys, glob\n\
                  t = pq.read_table(sorted(glob.glob(sys.argv[1] + '/data/test-*.parquet'))[0])\n\
                  pq.write_table(t.drop(['label']), sys.argv[2])";
    let py = Command::new("python3")
        .args(["-c", script, s(&hf), s(&unlabelled_src)])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", stderr(&py));
    let unlabelled = tmp.join("unlabelled");
    pack_ok(&["write", s(&unlabelled_src), s(&unlabelled)]);
    (other, unlabelled)
}

#[test]
fn evaluation_refuses_scores_without_meaning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1", "max_steps_per_epoch=1"]), false).unwrap();
    let data = small_cifar(4, 2);
    let (other, unlabelled) = relabelled(tmp.path());

    let (code, err) = ssl_eval(&run, &data, &unlabelled, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("split `test` has 6 unlabelled rows of 6"),
        "{err}"
    );

    let (code, err) = ssl_eval(&run, &data, &other, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("name different classes (class0, class1"),
        "{err}"
    );
    assert!(err.contains("against kind0, kind1, kind2)"), "{err}");

    let (code, err) = ssl_eval(&run, &data, &data, &["--test-split", "tset"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("has no split `tset`"), "{err}");
}

#[test]
fn a_resume_on_another_dataset_at_the_same_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("src");
    let images = cifar_images("test", 3);
    class_folder(&src, &images, "class");
    pack_ok(&["write", s(&src), s(&data), "--encoding", "raw"]);
    let run = tmp.path().join("run");
    let cfg = |epochs: &str| {
        let base = ["views=2x16", "batch_size=10", "width=4", "pdim=16", epochs];
        train_config(data.clone(), &run, &base)
    };
    train(&cfg("epochs=1"), false).unwrap();
    // Re-packed in place from other images: same path, same config, another dataset.
    let other = cifar_images("train", 3);
    let src2 = tmp.path().join("src2");
    class_folder(&src2, &other, "class");
    pack_ok(&[
        "write",
        s(&src2),
        s(&data),
        "--encoding",
        "raw",
        "--overwrite",
    ]);
    let err = train(&cfg("epochs=2"), true).unwrap_err().to_string();
    assert!(
        err.contains("is not the dataset the checkpoint was trained on"),
        "{err}"
    );
}

#[test]
fn a_damaged_checkpoint_is_named_not_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1"]), false).unwrap();
    let config_before = std::fs::read(run.join("config.toml")).unwrap();
    let model = run.join("checkpoint/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // one bit of one weight
    std::fs::write(&model, bytes).unwrap();
    let err = train(&config(&run, &["epochs=2", "lr=0.002"]), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors: sha256"), "{err}");
    assert!(
        err.contains("the file changed after it was written"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("config.toml")).unwrap(),
        config_before,
        "a failed resume leaves the run's config as it was"
    );
    let (code, err) = ssl_eval(&run, &small_cifar(4, 2), &small_cifar(4, 2), &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the file changed after it was written"),
        "{err}"
    );
}

#[test]
fn a_resume_after_a_kill_records_each_step_once() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&config(&run, &["epochs=1"]), false).unwrap();
    // What a run killed in its second epoch, after its checkpoint of epoch 1, leaves behind:
    // step records past the checkpoint and a line cut short.
    let mut text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text += "{\"kind\":\"step\",\"epoch\":1,\"step\":3,\"loss\":9.0}\n";
    text += "{\"kind\":\"step\",\"epoch\":1,\"step\":4,\"lo";
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
    train(&config(&run, &["epochs=2"]), true).unwrap();
    let steps: Vec<u64> = metrics::read(&run)
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "each step once, in order");
}
