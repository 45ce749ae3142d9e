//! Hostile input, values: every config value is checked once, where the config is read, and a
//! bad one is refused by its key, value and allowed range (exit 2, never a worker's panic, never
//! a silent change of meaning). Each case is the command line and the text its error must hold.

mod common;

use std::ffi::OsStr;
use std::process::{Command, Output};

use common::*;

fn ssl_train<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssl-train"))
        .args(args)
        .output()
        .unwrap()
}

/// `ssl-train --data D --out (tmp) --set ...` refused with `needle`, before a run directory
/// holds anything.
fn refused(sets: &[&str], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = small_cifar(2, 1);
    let out = tmp.path().join("run");
    let mut args = vec!["--data", s(&data), "--out", s(&out)];
    args.extend(["--set", "epochs=1", "--set", "knn_every=0"]);
    for set in sets {
        args.extend(["--set", set]);
    }
    let run = ssl_train(&args);
    assert_eq!(run.status.code(), Some(2), "{sets:?}: {}", stderr(&run));
    assert!(stderr(&run).contains(needle), "{sets:?}: {}", stderr(&run));
    assert!(!out.join("checkpoint").exists(), "{sets:?} trained anyway");
}

#[test]
fn augmentation_values_outside_their_range_are_named() {
    let cases = [
        (
            "augment.ratio=[2.0, 1.0]",
            "`augment.ratio` = [2, 1]: must be [lo, hi] with 0 < lo <= hi",
        ),
        ("augment.ratio=[0.0, 1.0]", "`augment.ratio` = [0, 1]"),
        (
            "augment.hue=-0.1",
            "`augment.hue` = -0.1: must be in [0, 0.5]",
        ),
        ("augment.hue=0.7", "`augment.hue` = 0.7"),
        (
            "augment.brightness=-1",
            "`augment.brightness` = -1: must be a finite number, 0 or above",
        ),
        ("augment.contrast=nan", "`augment.contrast` = NaN"),
        (
            "augment.blur_sigma=[2.0, 0.1]",
            "`augment.blur_sigma` = [2, 0.1]",
        ),
        (
            "augment.flip_p=1.5",
            "`augment.flip_p` = 1.5: must be in [0, 1]",
        ),
        ("augment.grayscale_p=-0.2", "`augment.grayscale_p` = -0.2"),
        (
            "augment.solarize_threshold=300",
            "`augment.solarize_threshold` = 300",
        ),
    ];
    for (set, needle) in cases {
        refused(&[set], needle);
    }
}

#[test]
fn training_values_outside_their_range_are_named() {
    let cases = [
        ("lr=-1", "`lr` = -1: must be a finite number above 0"),
        ("lr=0", "`lr` = 0"),
        (
            "knn_temperature=0",
            "`knn_temperature` = 0: must be a finite number above 0",
        ),
        ("weight_decay=-0.1", "`weight_decay` = -0.1"),
        ("warmup_epochs=inf", "`warmup_epochs` = inf"),
        ("epochs=0", "`epochs` = 0: must be at least 1"),
        ("knn_k=0", "`knn_k` = 0"),
        ("lambda=-0.01", "`lambda` = -0.01"),
        ("std=[0.2, 0.0, 0.2]", "`std[1]` = 0"),
        ("batch_size=0", "`batch_size` = 0: must be at least 1"),
        ("fraction=1.5", "`fraction` = 1.5: must be in (0, 1]"),
        ("rank=2", "`rank` = 2: must be below world (1)"),
    ];
    for (set, needle) in cases {
        refused(&[set], needle);
    }
}

#[test]
fn a_view_spec_is_never_read_as_a_number() {
    // TOML reads 0x32 as the integer 50: it must stay the view spec it was typed as.
    refused(&["views=0x32"], "`0x32` needs N >= 1");
    refused(&["batch_size=0x10"], "batch_size");
}

#[test]
fn a_named_eval_split_must_exist_and_hold_labels() {
    refused(
        &["eval_split=\"tset\""],
        "has no split `tset` (it has test, train)",
    );
}

#[test]
fn arguments_that_are_not_utf8_are_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"runs/\xff\xfe");
    let run = ssl_train(&[OsStr::new("--set"), bad]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let run = ssl_train(&[
        OsStr::new("--out"),
        bad,
        OsStr::new("--set"),
        OsStr::new("lr=-1"),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("`out` = runs/"), "{}", stderr(&run));
    let data = small_cifar(2, 1);
    let run = ssl_train(&[
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--out"),
        bad,
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("must be a path in valid UTF-8"),
        "{}",
        stderr(&run)
    );
}
