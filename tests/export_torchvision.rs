//! `ssl-export --to torchvision` and `ssl-eval features`. The `.pth` is opened the way
//! `torch.load(weights_only=True)` opens it (Python's zipfile and an Unpickler that allows only
//! the globals torch's weights-only loader allows), without torch itself, and must hold
//! torchvision's `state_dict()` key for key (`tests/fixtures/torchvision_resnet_state.txt`, made
//! with torchvision) with the run's weights byte for byte. That torchvision's model then gives
//! our features is checked with torch by `tools/check_torchvision_export.py` (torch is too big
//! for CI to install).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array};
use candle_core::{safetensors, Device};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

/// Reads a torch.save zip as torch's weights-only loader does and prints, per tensor in order,
/// `key shape dtype sha256(bytes)`; fails on a global torch would refuse or a misaligned record.
const READ_PTH: &str = r#"
import collections, hashlib, pickle, struct, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
prefix = z.namelist()[0].split("/")[0]
assert z.read(f"{prefix}/byteorder") == b"little"
WIDTH = {"FloatStorage": (4, "float32"), "LongStorage": (8, "int64")}

def rebuild(storage, offset, shape, stride, requires_grad, hooks):
    dtype, data = storage
    dense = tuple(int(__import__("math").prod(shape[d + 1:])) for d in range(len(shape)))
    assert offset == 0 and tuple(stride) == dense and not requires_grad, (offset, stride)
    return (tuple(shape), dtype, data)

class WeightsOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild
        if module == "torch" and name in WIDTH:
            return name
        raise pickle.UnpicklingError(f"weights_only refuses {module}.{name}")
    def persistent_load(self, pid):
        tag, kind, key, location, numel = pid
        assert tag == "storage" and location == "cpu", pid
        info = z.getinfo(f"{prefix}/data/{key}")
        z.fp.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", z.fp.read(30)[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        assert info.compress_type == zipfile.ZIP_STORED and start % 64 == 0, (key, start)
        width, dtype = WIDTH[kind]
        data = z.read(info)
        assert len(data) == numel * width, (key, len(data), numel)
        return (dtype, data)

state = WeightsOnly(z.open(f"{prefix}/data.pkl")).load()
for key, (shape, dtype, data) in state.items():
    print(key, "x".join(map(str, shape)) or "-", dtype, hashlib.sha256(data).hexdigest())
"#;

fn bin(name: &str, args: &[&str]) -> Output {
    Command::new(match name {
        "ssl-export" => env!("CARGO_BIN_EXE_ssl-export"),
        _ => env!("CARGO_BIN_EXE_ssl-eval"),
    })
    .args(args)
    .output()
    .unwrap()
}

/// Two steps of `backbone` (width `width`, `stem`) on a small CIFAR-10: a run to export.
fn trained(dir: &Path, backbone: &str, width: usize, stem: &str) -> PathBuf {
    let cfg = train_config(
        small_cifar(8, 4),
        &dir.join(format!("{backbone}-{width}-{stem}")),
        &[
            &format!("backbone=\"{backbone}\""),
            &format!("width={width}"),
            &format!("stem=\"{stem}\""),
            "pdim=64",
            "batch_size=8",
            "epochs=1",
            "max_steps_per_epoch=2",
        ],
    );
    train(&cfg, false).unwrap();
    cfg.out
}

/// `key shape dtype` lines of the fixture for `model`.
fn torchvision_state(model: &str) -> Vec<String> {
    let text = include_str!("fixtures/torchvision_resnet_state.txt");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{model} ")))
        .map(str::to_string)
        .collect()
}

/// `key shape dtype sha256` lines of the run's backbone weights, from its checkpoint.
fn checkpoint_state(run: &Path, expected: &[String]) -> Vec<String> {
    let weights =
        safetensors::load(run.join("checkpoint/model.safetensors"), &Device::Cpu).unwrap();
    expected
        .iter()
        .map(|line| {
            let (key, rest) = line.split_once(' ').unwrap();
            let bytes: Vec<u8> = if key.ends_with("num_batches_tracked") {
                2i64.to_le_bytes().to_vec() // the run's two optimiser steps
            } else {
                let t = &weights[&format!("backbone.{key}")];
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            format!("{key} {rest} {}", hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

fn exports_like_torchvision(backbone: &str, stem: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let run = trained(tmp.path(), backbone, 64, stem);
    let pth = tmp.path().join("out/backbone.pth");
    let out = bin("ssl-export", &["--to", "torchvision", s(&run), s(&pth)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("torchvision.models.{backbone}()")),
        "{report}"
    );
    assert_eq!(
        report.contains("model.maxpool = torch.nn.Identity()"),
        stem == "cifar"
    );

    let mut expected = torchvision_state(backbone);
    if stem == "cifar" {
        expected[0] = "conv1.weight 64x3x3x3 float32".into();
    }
    let read = Command::new("python3")
        .args(["-c", READ_PTH, s(&pth)])
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", stderr(&read));
    let read: Vec<String> = stdout(&read).lines().map(str::to_string).collect();
    assert_eq!(read, checkpoint_state(&run, &expected));

    let st = tmp.path().join("backbone.safetensors");
    assert!(bin("ssl-export", &["--to", "torchvision", s(&run), s(&st)])
        .status
        .success());
    let saved = safetensors::load(&st, &Device::Cpu).unwrap();
    assert_eq!(saved.len(), expected.len());
    let weights =
        safetensors::load(run.join("checkpoint/model.safetensors"), &Device::Cpu).unwrap();
    let key = "layer4.1.bn2.running_var";
    let (a, b) = (&saved[key], &weights[&format!("backbone.{key}")]);
    assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
}

#[test]
fn resnet18_with_the_cifar_stem_exports_with_the_documented_change() {
    exports_like_torchvision("resnet18", "cifar");
}

#[test]
fn resnet50_with_the_imagenet_stem_exports_as_torchvision_has_it() {
    exports_like_torchvision("resnet50", "imagenet");
}

#[test]
fn backbones_torchvision_lacks_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (backbone, width, says) in [
        ("conv4", 16, "backbone conv4 has no torchvision counterpart"),
        (
            "resnet18",
            16,
            "width 16: torchvision's resnet18 has the fixed width 64",
        ),
    ] {
        let run = trained(tmp.path(), backbone, width, "cifar");
        let pth = tmp.path().join(format!("{backbone}.pth"));
        let out = bin("ssl-export", &["--to", "torchvision", s(&run), s(&pth)]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!pth.exists());
        let partial = std::fs::read_dir(tmp.path()).unwrap().find(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".partial")
        });
        assert!(partial.is_none(), "a temporary file is left: {partial:?}");
    }
    let out = bin(
        "ssl-export",
        &[
            "--to",
            "torchvision",
            s(tmp.path()),
            s(&tmp.path().join("x.pth")),
        ],
    );
    assert!(
        stderr(&out).contains("config.toml: missing"),
        "{}",
        stderr(&out)
    );
}

/// (index, label, features) rows of a file `ssl-eval features` wrote.
fn read_features(path: &Path) -> Vec<(i64, i64, Vec<f32>)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let index = col("index");
        let index = index.as_any().downcast_ref::<Int64Array>().unwrap();
        let label = col("label");
        let label = label.as_any().downcast_ref::<Int64Array>().unwrap();
        let features = col("features");
        let features = features
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        for r in 0..batch.num_rows() {
            let f = features.value(r);
            let f = f.as_any().downcast_ref::<Float32Array>().unwrap();
            rows.push((index.value(r), label.value(r), f.values().to_vec()));
        }
    }
    rows
}

#[test]
fn features_of_chosen_images_are_those_of_the_whole_split() {
    let tmp = tempfile::tempdir().unwrap();
    let run = trained(tmp.path(), "resnet18", 16, "cifar");
    let data = small_cifar(8, 4);
    let write = |out: &Path, select: &[&str]| {
        let mut args = vec!["features", "--checkpoint", s(&run), "--data", s(&data)];
        args.extend(["--split", "test", "--out", s(out)]);
        args.extend(select);
        let out = bin("ssl-eval", &args);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let all = tmp.path().join("all.parquet");
    write(&all, &[]);
    let some = tmp.path().join("some.parquet");
    write(&some, &["--indices", "7,2,31"]);

    let all = read_features(&all);
    assert_eq!(all.len(), 40);
    let labels: HashMap<i64, i64> = read_split(&data, "test")
        .iter()
        .map(|d| (d.index as i64, i64::from(d.label)))
        .collect();
    let by_index: HashMap<i64, &(i64, i64, Vec<f32>)> = all.iter().map(|r| (r.0, r)).collect();
    let some = read_features(&some);
    assert_eq!(some.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 2, 31]);
    for (index, label, features) in &some {
        assert_eq!(*label, labels[index]);
        assert_eq!(features.len(), 128, "ResNet-18 w16 pools 8 x 16 channels");
        let whole = &by_index[index].2;
        let diff = features
            .iter()
            .zip(whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "index {index}: {diff} apart with and without --indices"
        );
    }
    let missing = bin(
        "ssl-eval",
        &[
            "features",
            "--checkpoint",
            s(&run),
            "--data",
            s(&data),
            "--split",
            "test",
            "--indices",
            "999999",
            "--out",
            s(&tmp.path().join("x.parquet")),
        ],
    );
    assert!(
        stderr(&missing).contains("no row has index 999999"),
        "{}",
        stderr(&missing)
    );
}
