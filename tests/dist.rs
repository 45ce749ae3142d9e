//! Data-parallel training on MPI (`--features mpi`; `.ci/run` installs Open MPI): 2 ranks with
//! half the batch each reproduce one process with the whole batch (synchronised BatchNorm), for
//! Barlow Twins and VICReg at K = 2 and 4, launched by `--nproc` and by `mpirun` itself; a killed
//! rank ends the run with an error naming it; a resume after the kill is exact; a resume with
//! another world size is refused by name.
#![cfg(feature = "mpi")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::*;

const SSL_TRAIN: &str = env!("CARGO_BIN_EXE_ssl-train");

/// `ssl-train` on the CIFAR-10 test split: conv4 w8, pdim 32, 16 px views, 1 thread per rank,
/// no kNN monitor; then `sets`.
fn args(out: &Path, sets: &[&str]) -> Vec<String> {
    let data = cifar10_test_raw();
    let mut args: Vec<String> = vec!["--data".into(), s(&data).into(), "--out".into()];
    args.push(s(out).into());
    let base = [
        "split=test",
        "backbone=conv4",
        "width=8",
        "pdim=32",
        "epochs=1",
        "max_steps_per_epoch=3",
        "eval_split=\"\"",
        "threads=1",
        "lr=0.01",
    ];
    for set in base.iter().chain(sets) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}

fn finished(cmd: &mut Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    within(Duration::from_secs(300), what, move || {
        child.wait_with_output().unwrap()
    })
}

fn train_ok(cmd: &mut Command, what: &str) {
    let out = finished(cmd.env("RAYON_NUM_THREADS", "1"), what);
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
}

fn step_losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "step")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    let file = run.join("checkpoint/model.safetensors");
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()
}

/// VICReg's and Barlow Twins' terms are all unchanged by a shift of the embeddings, so the
/// gradient of the projector's output bias is zero up to rounding, whose sign differs with the
/// batch split, and Adam turns any such noise into steps of ±lr. That entry says nothing about
/// equivalence (it differed by 0.0093 = lr x 0.93 here with VICReg), so it is left out.
const LOSS_INVARIANT: &str = "projector.out.bias";

/// Largest absolute difference between the two runs' weights, and the entry where it is.
fn weight_diff(a: &Path, b: &Path) -> (f32, String) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .filter(|(name, _)| name.as_str() != LOSS_INVARIANT)
        .map(|(name, t)| {
            let d = (t - &b[name]).unwrap().abs().unwrap();
            let d = d
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            (d, name.clone())
        })
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a })
}

fn assert_same_run(one: &Path, two: &Path, what: &str) {
    let (l1, l2) = (step_losses(one), step_losses(two));
    assert_eq!(l1.len(), 3, "{what}: one process took 3 steps");
    for (a, b) in zip_exact(&l1, &l2, what) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "{what}: losses {l1:?} vs {l2:?}"
        );
    }
    assert_ne!(l1[0], l1[2], "{what}: training moved the loss");
    let (d, name) = weight_diff(one, two);
    assert!(
        d < 1e-4,
        "{what}: weights after 3 steps differ by {d} (at {name})"
    );
    eprintln!("{what}: weights differ by at most {d:e} (at {name}), losses {l1:?} vs {l2:?}");
}

#[test]
fn two_ranks_with_half_batches_reproduce_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    for (loss, views) in [
        ("barlow-twins", "2x16:0.2-1"),
        ("barlow-twins", "4x16:0.2-1"),
        ("vicreg", "2x16:0.2-1"),
        ("vicreg", "4x16:0.2-1"),
    ] {
        let what = format!("{loss} {views}");
        let dir = tmp.path().join(what.replace([' ', ':'], "_"));
        let common = [
            format!("loss={loss}"),
            format!("views=\"{views}\""),
            "sync_bn=true".into(),
        ];
        let sets = |batch: &str| {
            let mut v: Vec<String> = common.to_vec();
            v.push(format!("batch_size={batch}"));
            v
        };
        let one = sets("32");
        let one: Vec<&str> = one.iter().map(String::as_str).collect();
        train_ok(
            Command::new(SSL_TRAIN).args(args(&dir.join("one"), &one)),
            &format!("{what}: one process"),
        );
        let two = sets("16");
        let two: Vec<&str> = two.iter().map(String::as_str).collect();
        train_ok(
            Command::new(SSL_TRAIN)
                .arg("--nproc")
                .arg("2")
                .args(args(&dir.join("two"), &two)),
            &format!("{what}: --nproc 2"),
        );
        assert_same_run(&dir.join("one"), &dir.join("two"), &what);
        if loss == "barlow-twins" && views.starts_with('2') {
            // The same with ranks started by mpirun itself.
            let mut mpirun = Command::new("mpirun");
            mpirun.args(["-np", "2", "--oversubscribe", "--bind-to", "none"]);
            if unsafe { libc::geteuid() } == 0 {
                mpirun.arg("--allow-run-as-root");
            }
            train_ok(
                mpirun.arg(SSL_TRAIN).args(args(&dir.join("mpirun"), &two)),
                &format!("{what}: mpirun -np 2"),
            );
            assert_same_run(
                &dir.join("one"),
                &dir.join("mpirun"),
                &format!("{what} (mpirun)"),
            );
            // Without synchronised BatchNorm each rank normalises its own half: another run.
            let mut local_bn = two.clone();
            local_bn.retain(|s| !s.starts_with("sync_bn"));
            train_ok(
                Command::new(SSL_TRAIN)
                    .args(["--nproc", "2"])
                    .args(args(&dir.join("local-bn"), &local_bn)),
                "per-rank BatchNorm",
            );
            let (d, _) = weight_diff(&dir.join("one"), &dir.join("local-bn"));
            assert!(
                d > 1e-3,
                "per-rank BatchNorm should train another model, differs by {d}"
            );
        }
    }
}

/// The PID of rank `rank` of the run whose environment carries `mark`.
fn rank_pid(mark: &str, rank: usize) -> Option<i32> {
    let want = [
        format!("SSL_TEST_MARK={mark}"),
        format!("OMPI_COMM_WORLD_RANK={rank}"),
    ];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
            want.iter()
                .all(|w| vars.contains(&w.as_bytes()))
                .then_some(pid)
        })
}

fn epochs_checkpointed(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("checkpoint/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|s| s["cursor"]["epoch"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_killed_rank_ends_the_run_and_the_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "epochs=2",
        "max_steps_per_epoch=10",
        "batch_size=64",
        "views=\"2x32:0.2-1\"",
        "width=16",
        "sync_bn=true",
    ];
    let straight: PathBuf = tmp.path().join("straight");
    train_ok(
        Command::new(SSL_TRAIN)
            .args(["--nproc", "2"])
            .args(args(&straight, &sets)),
        "uninterrupted 2-rank run",
    );
    let killed = tmp.path().join("killed");
    let mark = s(&killed).to_string();
    let mut child = Command::new(SSL_TRAIN)
        .args(["--nproc", "2"])
        .args(args(&killed, &sets))
        .env("SSL_TEST_MARK", &mark)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while epochs_checkpointed(&killed) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no checkpoint after 240 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(&mark, 1).expect("rank 1 of the run is running");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the kill"
    );
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    let out = within(
        Duration::from_secs(60),
        "the run after a rank was killed",
        move || child.wait_with_output().unwrap(),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a run with a killed rank succeeded");
    assert!(
        err.contains("rank 1"),
        "the error should name rank 1: {err}"
    );
    eprintln!("run ended {:?} after the kill: {err}", killed_at.elapsed());
    assert_eq!(
        epochs_checkpointed(&killed),
        1,
        "the kill came in the second epoch"
    );

    // Another world size would train on other batches: refused by name.
    let once = finished(
        Command::new(SSL_TRAIN).arg("--resume").arg(&killed),
        "1-rank resume",
    );
    assert_eq!(once.status.code(), Some(2));
    assert!(
        stderr(&once).contains("world size 2 -> 1"),
        "{}",
        stderr(&once)
    );

    train_ok(
        Command::new(SSL_TRAIN)
            .args(["--nproc", "2", "--resume"])
            .arg(&killed),
        "2-rank resume",
    );
    assert_eq!(
        step_losses(&killed),
        step_losses(&straight),
        "loss sequence after resume"
    );
    let (a, b) = (weights(&killed), weights(&straight));
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (name, t) in &a {
        assert!(bits(t) == bits(&b[name]), "{name} differs after the resume");
    }
}

/// Without `--out`, the ranks `--nproc` starts must all be told the one run directory settled
/// before the launch (each choosing its own races: the second may find the first's directory
/// and pick a fresh one), on the built-in data packed once, here into a fresh temp dir.
#[test]
fn nproc_without_out_settles_one_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = finished(
        Command::new(SSL_TRAIN)
            .current_dir(tmp.path())
            .env("TMPDIR", tmp.path())
            .env("RAYON_NUM_THREADS", "1")
            .args([
                "--nproc",
                "2",
                "--set",
                "epochs=1",
                "--set",
                "max_steps_per_epoch=2",
            ])
            .args(["--set", "eval_split=\"\"", "--set", "threads=1"]),
        "--nproc 2 on the built-in default",
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let runs: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "the ranks wrote {runs:?}");
    let dir = runs[0].strip_prefix(tmp.path()).unwrap();
    let command = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(
        command.ends_with(&format!(" --out {}", s(dir))),
        "the ranks were not given the run directory {dir:?}: {command}"
    );
    assert_eq!(step_losses(&runs[0]).len(), 2, "{:?}", runs[0]);
}
