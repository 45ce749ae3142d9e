//! Every command in README.md's `sh` blocks works as written: once, `cargo run --release --
//! write ...` reached ssl-train instead of ssl-pack. A runnable line runs with bash in a scratch
//! checkout (`sweeps/`, `configs/`, `tools/` linked, `../shared` beside it), cargo's built
//! binaries standing in for `cargo run --release [--bin X] --` and `target/release/X`. Long jobs
//! get the shortening arguments in [`SHORTER`] appended. A synopsis (placeholders such as `SRC`,
//! `[--flag]`, `...`) has its subcommand and every flag it names checked against `--help`. Lines
//! that cannot run here are in [`ELSEWHERE`], with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Runnable lines too long for a test, whole, and what is appended to them.
const SHORTER: &[(&str, &str)] = &[
    (
        "cargo run --release",
        "--set epochs=1 --set max_steps_per_epoch=2",
    ),
    (
        "target/release/ssl-sweep run sweeps/cpu/views.toml",
        "--set data=\"SMALL\" --set epochs=1 --set max_steps_per_epoch=1 --set batch_size=50",
    ),
    (
        "target/release/ssl-train --nproc 2 --config configs/cifar10-cpu.toml --set batch_size=128 --set sync_bn=true --out runs/cifar10-cpu-2ranks",
        "--set epochs=1 --set max_steps_per_epoch=2 --set eval_split=\"\"",
    ),
    (
        "target/release/ssl-sweep run sweeps/cpu/pdim-lambda.toml",
        "--dry-run",
    ),
    (
        "target/release/ssl-sweep run sweeps/cpu/fraction.toml --reuse runs/sweeps/views",
        "--dry-run",
    ),
];

/// Lines not run, by prefix, and why.
const ELSEWHERE: &[(&str, &str)] = &[
    ("pip install", "downloads packages"),
    ("bash .ci/run", "runs the tests, this one included"),
    ("cargo build --release", "cargo test built the binaries"),
    ("PYTHON=", "needs PyTorch; the script must exist and parse"),
    (
        "tools/compare-ranks.sh",
        "runs the release binaries on all of CIFAR-10; tests/dist.rs checks the same equivalence",
    ),
    (
        "tools/fuzz.sh",
        "the fuzz harness runs as its own test, tests/fuzz.rs",
    ),
];

fn bin(name: &str) -> &'static str {
    match name {
        "ssl-pack" => env!("CARGO_BIN_EXE_ssl-pack"),
        "ssl-train" => env!("CARGO_BIN_EXE_ssl-train"),
        "ssl-eval" => env!("CARGO_BIN_EXE_ssl-eval"),
        "ssl-bench" => env!("CARGO_BIN_EXE_ssl-bench"),
        "ssl-sweep" => env!("CARGO_BIN_EXE_ssl-sweep"),
        "ssl-export" => env!("CARGO_BIN_EXE_ssl-export"),
        other => panic!("README names an unknown binary {other}"),
    }
}

/// The lines of every `sh` block, continuation lines (indented) joined, comments cut.
fn readme_commands() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh || line.trim().is_empty() {
            continue;
        }
        let command = line.split(" #").next().unwrap().trim_end();
        match (line.starts_with(' '), lines.last_mut()) {
            (true, Some(last)) => {
                last.push(' ');
                last.push_str(command.trim());
            }
            _ => lines.push(command.to_string()),
        }
    }
    lines
}

/// Names things rather than being them: `SRC`, `[--flag]`, `...`, `configs/X.toml`.
fn is_synopsis(line: &str) -> bool {
    line.contains('[')
        || line.contains("...")
        || line.split_whitespace().any(|t| {
            let t = t.trim_start_matches("DIR/");
            t.len() > 1 && t.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        || line.contains("/X.")
}

/// The binary and subcommand a synopsis names, run with `--help`: every flag it names must be
/// in the help; a Python tool's flags must be in its source.
fn check_synopsis(line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (help, what) = if words[0] == "python3" {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(words[1]);
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("README names {}: {e}", words[1]));
        (source, words[1].to_string())
    } else {
        let mut command = Command::new(bin(words[0]));
        let sub = words
            .get(1)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()));
        command.args(sub).arg("--help");
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "`{} --help` fails for README line `{line}`: {}",
            words[..1 + sub.iter().count()].join(" "),
            stderr(&out)
        );
        (stdout(&out), words[0].to_string())
    };
    for word in &words {
        let flag = word.trim_start_matches('[').trim_end_matches(']');
        let flag = flag.split(['=', ']']).next().unwrap();
        if flag.starts_with("--") && flag.len() > 2 {
            assert!(
                help.contains(flag),
                "README line `{line}`: {what} has no {flag}"
            );
        }
    }
}

/// A scratch checkout: the repository's sweeps, configs and tools, `../shared` beside it.
fn scratch(root: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("checkout");
    std::fs::create_dir_all(&work).unwrap();
    for dir in ["sweeps", "configs", "tools"] {
        std::os::unix::fs::symlink(repo.join(dir), work.join(dir)).unwrap();
    }
    let shared = shared_datasets().parent().unwrap().canonicalize().unwrap();
    std::os::unix::fs::symlink(shared, root.join("shared")).unwrap();
    work
}

/// The line as bash runs it here: the built binaries for `cargo run` and `target/release`.
fn resolve(line: &str, small: &Path) -> String {
    let mut line = line.to_string();
    if let Some((_, extra)) = SHORTER.iter().find(|(l, _)| line == *l) {
        line = format!("{line} {}", extra.replace("SMALL", s(small)));
    }
    for name in [
        "ssl-pack",
        "ssl-train",
        "ssl-eval",
        "ssl-bench",
        "ssl-sweep",
        "ssl-export",
    ] {
        // In this order: under `cargo test --release` the binary's own path holds
        // `target/release/{name}`, which must not be replaced a second time.
        line = line
            .replace(&format!("target/release/{name}"), bin(name))
            .replace(&format!("cargo run --release --bin {name} --"), bin(name));
    }
    line.replace("cargo run --release", bin("ssl-train"))
}

#[test]
fn every_readme_command_runs_as_written() {
    let commands = readme_commands();
    assert!(commands.len() > 10, "README's sh blocks were not found");
    let tmp = tempfile::tempdir().unwrap();
    let work = scratch(tmp.path());
    let small = small_cifar(10, 5);
    let (mut ran, mut checked) = (0, 0);
    for line in &commands {
        if let Some((_, why)) = ELSEWHERE.iter().find(|(p, _)| line.starts_with(p)) {
            eprintln!("not run ({why}): {line}");
            if let Some(script) = line.split_whitespace().find(|w| w.starts_with("tools/")) {
                let ok = Command::new("bash")
                    .args(["-n", script])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .unwrap();
                assert!(ok.success(), "README names {script}, which does not parse");
            }
        } else if is_synopsis(line) {
            check_synopsis(line);
            checked += 1;
        } else {
            let resolved = resolve(line, &small);
            let out = Command::new("bash")
                .args(["-c", &resolved])
                .current_dir(&work)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README command fails as written: `{line}`\n{}{}",
                stdout(&out),
                stderr(&out)
            );
            ran += 1;
        }
    }
    eprintln!("{ran} README commands ran, {checked} synopses checked");
    assert!(work.join("target/packed/cifar10/manifest.json").is_file());
    assert!(work.join("target/packed/photos/manifest.json").is_file());
    assert!(work.join("runs/sweeps/views/results.csv").is_file());
}

#[test]
fn the_old_pack_command_is_caught() {
    let line = "cargo run --release -- write target/data/cifar10 target/packed/cifar10";
    let out = Command::new("bash")
        .args(["-c", &resolve(line, Path::new("unused"))])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("unexpected argument 'write'"),
        "the command issue 13 found must fail here as it did for users"
    );
}
