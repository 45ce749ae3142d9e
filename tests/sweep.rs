//! ssl-sweep end to end on the built-in data: a 2-point grid of 2-epoch runs where one point was
//! interrupted after its first epoch, run (the interrupted point resumes), run again (nothing is
//! retrained), and reported (tables and figures), through the library and the binary; then a
//! second grid reuses the first one's finished point instead of retraining it, grows, and leaves
//! out a point.

mod common;

use std::path::Path;

use sslfast::eval::monitor::train_with_knn;
use sslfast::sweep::{self, PointState, SweepConfig};
use sslfast::train::{metrics, Run, SUMMARY_FILE};

const SWEEP: &str = r#"
title = "tiny"
[base]
backbone = "conv4"
width = 4
views = "2x16:0.3-1"
batch_size = 64
epochs = 2
max_steps_per_epoch = 2
threads = 2
eval_size = 16
knn_k = 20
[[axes]]
key = "pdim"
values = [16, 32]
"#;

fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    let all = metrics::read(run).unwrap();
    all.into_iter().filter(|r| r["kind"] == kind).collect()
}

#[test]
fn a_sweep_resumes_its_interrupted_point_skips_finished_ones_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.toml");
    std::fs::write(&file, SWEEP).unwrap();
    let config = SweepConfig::load(&file, &[]).unwrap();
    let dir = tmp.path().join("sweep");
    let points = config.points();
    assert_eq!(points.len(), 2);
    let (first, second) = (
        sweep::run_dir(&dir, &points[0]),
        sweep::run_dir(&dir, &points[1]),
    );

    // The second point stopped after its first epoch: a checkpoint, no summary.
    let mut cut = config.point_config(&points[1], &dir).unwrap();
    cut.epochs = 1;
    train_with_knn(&Run::new(cut, false).unwrap(), &[]).unwrap();
    std::fs::remove_file(second.join(SUMMARY_FILE)).unwrap();
    assert_eq!(
        sweep::point_state(&config, &second),
        PointState::Interrupted
    );

    let results = sweep::run(&dir, &config, &[]).unwrap();
    for p in &results.points {
        assert_eq!(p.state, PointState::Done, "{}", p.point.name());
        assert_eq!(p.epochs.len(), 2);
        assert!(p.knn_final().is_some() && p.linear_top1.is_some());
        assert!(p.knn_random_init.is_some());
    }
    let starts = records(&second, "start");
    assert_eq!(starts.len(), 2, "trained once, then resumed");
    assert_eq!(starts[1]["resume"], true);
    let steps = records(&second, "step");
    let numbers: Vec<u64> = steps.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4],
        "the resumed point trained only its second epoch"
    );
    assert_eq!(records(&first, "start").len(), 1);

    // Again: everything is done, nothing is trained.
    let lines = |run: &Path| std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let before = (lines(&first), lines(&second));
    sweep::run(&dir, &config, &[]).unwrap();
    assert_eq!((lines(&first), lines(&second)), before);

    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("point,pdim,state,epochs"), "{csv}");
    assert!(rows[1].starts_with("pdim-16,16,Done,2,") && rows[2].starts_with("pdim-32,32,Done,2,"));
    let curves = std::fs::read_to_string(dir.join("curves.csv")).unwrap();
    assert_eq!(curves.lines().count(), 1 + 2 * 2, "{curves}");
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let rows: Vec<&str> = summary.lines().collect();
    assert!(
        rows[0].starts_with("pdim,seeds_done,seeds,knn_mean,"),
        "{summary}"
    );
    assert!(
        rows[1].starts_with("16,1,1,0.") && rows[2].starts_with("32,1,1,0."),
        "{summary}"
    );
    for png in [
        dir.join("curves.png"),
        dir.join("pdim.png"),
        first.join("curves.png"),
    ] {
        let (w, h) = image::image_dimensions(&png).unwrap();
        assert!(w >= 500 && h >= 400, "{}", png.display());
    }

    // The binary's report redraws the same table from the run directories alone.
    std::fs::remove_file(dir.join("results.csv")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssl-sweep"))
        .args(["report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("results.csv")).unwrap(),
        csv
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pdim-32"));

    // Another grid in the same directory is refused, not mixed in.
    let other = SWEEP.replace("[16, 32]", "[16, 64]");
    std::fs::write(&file, other).unwrap();
    let err = sweep::run(&dir, &SweepConfig::load(&file, &[]).unwrap(), &[]).unwrap_err();
    assert!(err.to_string().contains("holds another sweep"), "{err}");

    // That grid elsewhere, reusing this one: pdim 16 is copied and only probed, 64 is trained.
    let other = SweepConfig::load(&file, &[]).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    let results = sweep::run(&elsewhere, &other, std::slice::from_ref(&dir)).unwrap();
    assert!(results.points.iter().all(|p| p.state == PointState::Done));
    let (copied, trained) = (
        sweep::run_dir(&elsewhere, &other.points()[0]),
        sweep::run_dir(&elsewhere, &other.points()[1]),
    );
    let note: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copied.join("reused.json")).unwrap())
            .unwrap();
    assert_eq!(note["from"], first.display().to_string());
    assert_eq!(lines(&copied), lines(&first), "copied, not retrained");
    let config = std::fs::read_to_string(copied.join("config.toml")).unwrap();
    assert!(config.contains(&copied.display().to_string()), "{config}");
    let linear = |run: &Path| {
        let eval = std::fs::read_to_string(run.join("eval.json")).unwrap();
        let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
        assert_eq!(eval["checkpoint"], run.display().to_string());
        eval["linear_top1"].as_f64().unwrap()
    };
    assert_eq!(linear(&copied), linear(&first), "the probe of the copy");
    assert!(!trained.join("reused.json").exists());
    assert_eq!(records(&trained, "step").len(), 4);

    // Widening an axis there keeps its points (the stored grid is a subset): only the new value
    // runs, copied from the first sweep. A changed base is another sweep and still refused.
    let wider = SweepConfig::load(&file, &[]).unwrap();
    let wider = SweepConfig {
        axes: vec![sweep::Axis {
            key: "pdim".into(),
            values: [16, 64, 32].map(toml::Value::Integer).to_vec(),
        }],
        ..wider
    };
    let before = (lines(&copied), lines(&trained));
    let results = sweep::run(&elsewhere, &wider, std::slice::from_ref(&dir)).unwrap();
    assert_eq!(results.points.len(), 3);
    assert!(results.points.iter().all(|p| p.state == PointState::Done));
    assert_eq!(
        (lines(&copied), lines(&trained)),
        before,
        "kept, not retrained"
    );
    let stored = std::fs::read_to_string(elsewhere.join("sweep.toml")).unwrap();
    assert_eq!(toml::from_str::<SweepConfig>(&stored).unwrap(), wider);
    let changed = SweepConfig::load(&file, &["epochs=3".into()]).unwrap();
    let err = sweep::run(&elsewhere, &changed, &[]).unwrap_err();
    assert!(err.to_string().contains("holds another sweep"), "{err}");

    // Excluding a point that never started keeps the directory; one with a run directory would
    // vanish from the report, so that is refused.
    let exclude = |pdim: i64| SweepConfig {
        exclude: vec![toml::Table::from_iter([(
            "pdim".into(),
            toml::Value::Integer(pdim),
        )])],
        ..wider.clone()
    };
    let unstarted = elsewhere.join(sweep::RUNS_DIR).join("pdim-32");
    std::fs::remove_dir_all(&unstarted).unwrap();
    let results = sweep::run(&elsewhere, &exclude(32), &[]).unwrap();
    assert_eq!(results.points.len(), 2);
    assert!(!unstarted.exists(), "left out, not trained");
    let err = sweep::run(&elsewhere, &exclude(64), &[]).unwrap_err();
    assert!(err.to_string().contains("leaves out a point"), "{err}");

    // A run carried through git (tools/sweep-carry.sh keeps its files, not its checkpoint) is
    // reused with its evaluation, which cannot be redone; without one it is not reusable.
    let carried = tmp.path().join("carried");
    let carried_run = carried.join(first.file_name().unwrap());
    std::fs::create_dir_all(&carried_run).unwrap();
    for file in std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        if file.is_file() {
            std::fs::copy(&file, carried_run.join(file.file_name().unwrap())).unwrap();
        }
    }
    let third = tmp.path().join("third");
    std::fs::write(&file, SWEEP.replace("[16, 32]", "[16]")).unwrap();
    let one_point = SweepConfig::load(&file, &[]).unwrap();
    sweep::run(&third, &one_point, std::slice::from_ref(&carried)).unwrap();
    let copied = sweep::run_dir(&third, &one_point.points()[0]);
    assert!(copied.join("reused.json").is_file());
    let eval = |run: &Path| std::fs::read_to_string(run.join("eval.json")).unwrap();
    assert_eq!(eval(&copied), eval(&first));
    std::fs::remove_file(carried_run.join("eval.json")).unwrap();
    let plan = sweep::plan(&tmp.path().join("fourth"), &one_point, &[carried]).unwrap();
    assert_eq!(plan.points[0].2, None, "nothing to probe: trained anew");
}

#[test]
fn bad_sweep_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    for (text, needle) in [
        (
            "[[axes]]\nkey = \"bakbone\"\nvalues = [\"conv4\"]\n",
            "unknown field `bakbone`",
        ),
        ("axes = []\n", "at least one axis"),
        (
            "[[axes]]\nkey = \"seed\"\nvalues = [0]\n[[exclude]]\nsed = 0\n",
            "sed is not an axis",
        ),
        (
            "[base]\nlr = \"fast\"\n[[axes]]\nkey = \"seed\"\nvalues = [0]\n",
            "lr",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = SweepConfig::load(&file, &[]).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains(needle), "{err}");
    }
}
