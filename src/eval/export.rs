//! `ssl-export --to torchvision`: a run's backbone as a state dict that torchvision's ResNets
//! load strictly. Our ResNets already use torchvision's parameter names under `backbone.`; the
//! export strips that prefix, adds the `num_batches_tracked` counters torchvision's BatchNorm
//! keeps, orders the keys as `state_dict()` does, and writes either a genuine `torch.save` zip
//! (`.pth`, read by `torch.load(path, weights_only=True)`) or, for an `.safetensors` name, a
//! safetensors file with the same keys.
//!
//! torchvision's model has a 1000-class `fc` that we do not train: set `model.fc =
//! nn.Identity()` before loading. The CIFAR stem (3x3 conv, stride 1, no max-pool) needs two more
//! lines; [`ExportReport`] prints them all.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::atomic_file::AtomicFile;
use crate::model::{BackboneKind, SslModel};
use crate::train::checkpoint::{self, TrainState, MODEL_FILE};
use crate::train::{TrainConfig, CONFIG_FILE};

/// What `--to` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTarget {
    /// `torchvision.models.resnet18/34/50` (width 64).
    Torchvision,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// `path` (a run, a split) cannot be exported as asked; the message says why.
    #[error("{}: {message}", .path.display())]
    Refused { path: PathBuf, message: String },
    /// A checkpoint file is missing, unreadable or does not fit its config.
    #[error("{}: {message}", .path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{}: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", .path.display())]
    Parquet {
        path: PathBuf,
        error: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Loader(#[from] crate::loader::LoaderError),
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("device `{name}`: {error}")]
    Device {
        name: String,
        error: candle_core::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |error| ExportError::Io { path, error }
}

/// A trained checkpoint: its config and where its weights are.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// What the user named (a run directory or its `checkpoint/`), for messages.
    pub path: PathBuf,
    pub config: TrainConfig,
    /// `.../checkpoint/model.safetensors`.
    pub weights: PathBuf,
    /// Optimiser steps taken (0 when `state.json` is missing).
    pub step: u64,
}

/// Opens a run directory of ssl-train, or its `checkpoint/` directory (anything holding
/// `model.safetensors` and `config.toml`), and applies `sets` to the config it was trained with.
pub fn open_checkpoint(path: &Path, sets: &[String]) -> Result<Checkpoint, ExportError> {
    let dir = if path.join(MODEL_FILE).is_file() || path.join("state.json").is_file() {
        path.to_path_buf()
    } else {
        // Moves `checkpoint.old/` back after a crash between the two renames of a save.
        let _ = checkpoint::load_config_text(path);
        checkpoint::checkpoint_dir(path)
    };
    let config_path = [dir.join(CONFIG_FILE), path.join(CONFIG_FILE)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| ExportError::Checkpoint {
            path: dir.join(CONFIG_FILE),
            message: "missing: expected a run directory of ssl-train or its checkpoint/".into(),
        })?;
    let config: TrainConfig = crate::config::load(Some(&config_path), sets)?;
    let weights = dir.join(MODEL_FILE);
    let step = fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<TrainState>(&t).ok())
        .map_or(0, |s| s.step);
    Ok(Checkpoint {
        path: path.to_path_buf(),
        config,
        weights,
        step,
    })
}

/// Builds the run's model on `device` and loads its weights (with the VarMap that holds them).
pub fn load_model(
    ckpt: &Checkpoint,
    device: &Device,
) -> Result<(candle_nn::VarMap, SslModel), ExportError> {
    let cfg = &ckpt.config;
    let side = cfg
        .loader
        .views
        .parse::<crate::loader::ViewSpec>()
        .map_err(|e| ExportError::Refused {
            path: ckpt.path.clone(),
            message: format!("views `{}`: {e}", cfg.loader.views),
        })?
        .largest_side();
    let (mut varmap, model) = SslModel::seeded(&cfg.model, side, cfg.loader.seed, device)?;
    if !ckpt.weights.is_file() {
        return Err(ExportError::Checkpoint {
            path: ckpt.weights.clone(),
            message: "missing: the run has no checkpoint yet".into(),
        });
    }
    varmap
        .load(&ckpt.weights)
        .map_err(|e| ExportError::Checkpoint {
            path: ckpt.weights.clone(),
            message: format!(
                "unreadable or not this run's model ({e}); was it trained with the same \
                 backbone, width and pdim?"
            ),
        })?;
    Ok((varmap, model))
}

/// torchvision's name of a `Depth`, its blocks per stage and whether they are Bottlenecks.
fn architecture(kind: BackboneKind) -> Option<(&'static str, [usize; 4], bool)> {
    match kind {
        BackboneKind::Conv4 => None,
        BackboneKind::Resnet18 => Some(("resnet18", [2, 2, 2, 2], false)),
        BackboneKind::Resnet34 => Some(("resnet34", [3, 4, 6, 3], false)),
        BackboneKind::Resnet50 => Some(("resnet50", [3, 4, 6, 3], true)),
    }
}

/// The backbone keys of torchvision's `state_dict()` in its order (no `fc`).
pub fn torchvision_keys(blocks: [usize; 4], bottleneck: bool) -> Vec<String> {
    let bn = |keys: &mut Vec<String>, p: &str| {
        for s in [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ] {
            keys.push(format!("{p}.{s}"));
        }
    };
    let mut keys = vec!["conv1.weight".to_string()];
    bn(&mut keys, "bn1");
    for (l, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", l + 1);
            for c in 1..=(if bottleneck { 3 } else { 2 }) {
                keys.push(format!("{p}.conv{c}.weight"));
                bn(&mut keys, &format!("{p}.bn{c}"));
            }
            if b == 0 && (l > 0 || bottleneck) {
                keys.push(format!("{p}.downsample.0.weight"));
                bn(&mut keys, &format!("{p}.downsample.1"));
            }
        }
    }
    keys
}

/// One tensor of the state dict, little-endian bytes in row-major order.
pub struct StateTensor {
    pub name: String,
    /// `F32`, or `I64` for `num_batches_tracked`.
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// What [`export`] wrote, and how to load it.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub model: &'static str,
    pub cifar_stem: bool,
    pub tensors: usize,
    pub parameters: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stem = if self.cifar_stem { "CIFAR" } else { "ImageNet" };
        writeln!(
            f,
            "written {} ({}, {} stem: {} tensors, {:.2}M parameters)",
            self.out.display(),
            self.model,
            stem,
            self.tensors,
            self.parameters as f64 / 1e6
        )?;
        let path = self.out.display().to_string();
        writeln!(f, "load it in PyTorch:")?;
        writeln!(f, "    import torch, torchvision")?;
        writeln!(f, "    model = torchvision.models.{}()", self.model)?;
        writeln!(
            f,
            "    model.fc = torch.nn.Identity()  # no classifier: features"
        )?;
        if self.cifar_stem {
            writeln!(
                f,
                "    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem"
            )?;
            writeln!(f, "    model.maxpool = torch.nn.Identity()  # CIFAR stem")?;
        }
        let state = if self.out.extension().is_some_and(|e| e == "safetensors") {
            writeln!(f, "    import safetensors.torch")?;
            format!("safetensors.torch.load_file({path:?})")
        } else {
            format!("torch.load({path:?}, weights_only=True)")
        };
        writeln!(f, "    model.load_state_dict({state}, strict=True)")?;
        writeln!(f, "    model.eval()")?;
        write!(
            f,
            "inputs: RGB scaled to 0..1, then (x - mean) / std with mean {:?}, std {:?}",
            self.mean, self.std
        )
    }
}

/// The state dict of a run's backbone under torchvision's names, checked against torchvision's
/// key set; `num_batches_tracked` is the run's optimiser step count.
pub fn state_dict(
    ckpt: &Checkpoint,
) -> Result<(Vec<StateTensor>, &'static str, bool), ExportError> {
    let spec = &ckpt.config.model;
    let refuse = |message: String| ExportError::Refused {
        path: ckpt.path.clone(),
        message,
    };
    let Some((model, blocks, bottleneck)) = architecture(spec.backbone) else {
        return Err(refuse(format!(
            "backbone {} has no torchvision counterpart; --to torchvision exports resnet18, \
             resnet34 and resnet50",
            format!("{:?}", spec.backbone).to_lowercase()
        )));
    };
    if spec.width != 64 {
        return Err(refuse(format!(
            "width {}: torchvision's {model} has the fixed width 64, so only width = 64 runs \
             export to it",
            spec.width
        )));
    }
    let (varmap, _) = load_model(ckpt, &Device::Cpu)?;
    let vars = varmap.data().lock().expect("varmap lock");
    let keys = torchvision_keys(blocks, bottleneck);
    let mut tensors = Vec::with_capacity(keys.len());
    for name in keys {
        if name.ends_with("num_batches_tracked") {
            tensors.push(StateTensor {
                name,
                dtype: DType::I64,
                shape: vec![],
                data: (ckpt.step as i64).to_le_bytes().to_vec(),
            });
            continue;
        }
        let var = vars
            .get(&format!("backbone.{name}"))
            .expect("the model is built with torchvision's names");
        let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        tensors.push(StateTensor {
            name,
            dtype: DType::F32,
            shape: var.dims().to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    let exported = tensors.len() - tensors.iter().filter(|t| t.dtype == DType::I64).count();
    let ours = vars.keys().filter(|k| k.starts_with("backbone.")).count();
    assert_eq!(
        exported, ours,
        "every backbone tensor has a torchvision name"
    );
    // The stem is what the run trained with (`stem = auto` chose it by view size).
    let cifar_stem = tensors[0].shape[2] == 3;
    Ok((tensors, model, cifar_stem))
}

/// Writes the run's backbone for torchvision to `out` (`.safetensors`: safetensors; any other
/// name: a `torch.save` zip), through a temporary name renamed into place.
pub fn export(ckpt: &Checkpoint, out: &Path) -> Result<ExportReport, ExportError> {
    let (tensors, model, cifar_stem) = state_dict(ckpt)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut file = AtomicFile::create(out).map_err(io(out))?;
    if out.extension().is_some_and(|e| e == "safetensors") {
        write_safetensors(&tensors, file.temp_path(), out)?;
    } else {
        write_pth(&tensors, file.file(), out)?;
    }
    file.commit().map_err(io(out))?;
    Ok(ExportReport {
        out: out.to_path_buf(),
        model,
        cifar_stem,
        tensors: tensors.len(),
        parameters: tensors
            .iter()
            .filter(|t| t.dtype == DType::F32)
            .map(|t| t.shape.iter().product::<usize>())
            .sum(),
        mean: ckpt.config.mean,
        std: ckpt.config.std,
    })
}

/// Writes `tensors` to the file at `at`; errors name `path`, the file it will become.
fn write_safetensors(tensors: &[StateTensor], at: &Path, path: &Path) -> Result<(), ExportError> {
    let map = tensors
        .iter()
        .map(|t| {
            let tensor = match t.dtype {
                DType::I64 => Tensor::new(
                    i64::from_le_bytes(t.data[..8].try_into().unwrap()),
                    &Device::Cpu,
                )?,
                _ => {
                    let values: Vec<f32> = t
                        .data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    Tensor::from_vec(values, t.shape.as_slice(), &Device::Cpu)?
                }
            };
            Ok((t.name.clone(), tensor))
        })
        .collect::<Result<std::collections::HashMap<_, _>, candle_core::Error>>()?;
    candle_core::safetensors::save(&map, at).map_err(|e| ExportError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

// ---- torch.save's format: a zip of `data.pkl` (pickle protocol 2) and one file per storage ----

/// Storages start at multiples of this (torch's `.storage_alignment`, so `mmap=True` works).
const ALIGNMENT: u64 = 64;

/// The pickle of an `OrderedDict` of `torch._utils._rebuild_tensor_v2(...)` calls, each tensor's
/// storage a persistent id `('storage', torch.FloatStorage, '<key>', 'cpu', numel)` naming
/// `data/<key>`: what `torch.save(state_dict)` writes, and all `weights_only=True` accepts.
pub fn pickle_state_dict(tensors: &[StateTensor]) -> Vec<u8> {
    fn int(p: &mut Vec<u8>, v: usize) {
        if let Ok(b) = u8::try_from(v) {
            p.extend([b'K', b]);
        } else if let Ok(w) = u16::try_from(v) {
            p.push(b'M');
            p.extend(w.to_le_bytes());
        } else if let Ok(i) = i32::try_from(v) {
            p.push(b'J');
            p.extend(i.to_le_bytes());
        } else {
            p.extend([0x8a, 8]); // LONG1, 8 bytes
            p.extend((v as i64).to_le_bytes());
        }
    }
    fn string(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn tuple(p: &mut Vec<u8>, values: &[usize]) {
        p.push(b'(');
        values.iter().for_each(|&v| int(p, v));
        p.push(b't');
    }
    let mut p = vec![0x80, 2];
    global(&mut p, "collections", "OrderedDict");
    p.extend(b")R(");
    for (key, t) in tensors.iter().enumerate() {
        string(&mut p, &t.name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend(b"((");
        string(&mut p, "storage");
        let storage = if t.dtype == DType::I64 {
            "LongStorage"
        } else {
            "FloatStorage"
        };
        global(&mut p, "torch", storage);
        string(&mut p, &key.to_string());
        string(&mut p, "cpu");
        int(&mut p, t.shape.iter().product());
        p.extend(b"tQ"); // the id tuple, BINPERSID
        int(&mut p, 0); // storage offset
        tuple(&mut p, &t.shape);
        let strides: Vec<usize> = (0..t.shape.len())
            .map(|d| t.shape[d + 1..].iter().product())
            .collect();
        tuple(&mut p, &strides);
        p.push(0x89); // requires_grad = False
        global(&mut p, "collections", "OrderedDict");
        p.extend(b")Rt"); // backward hooks; the argument tuple
        p.push(b'R');
    }
    p.extend(b"u.");
    p
}

/// Writes `tensors` as `torch.save(OrderedDict)` does (format version 3, the records in its
/// order), readable by `torch.load(path, weights_only=True)` and `mmap=True`, into `file`;
/// errors name `path`, the file it is or will become.
pub fn write_pth(tensors: &[StateTensor], file: &mut File, path: &Path) -> Result<(), ExportError> {
    let pickle = pickle_state_dict(tensors);
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    // Stored and aligned as torch.save writes them, so that `torch.load(mmap=True)` maps them.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(ALIGNMENT as u16);
    let mut record = |name: &str, data: &[u8]| -> zip::result::ZipResult<()> {
        zip.start_file(name, options)?;
        zip.write_all(data)?;
        Ok(())
    };
    let mut id = Sha256::new();
    let written = (|| {
        record("archive/data.pkl", &pickle)?;
        record("archive/.format_version", b"1")?;
        record(
            "archive/.storage_alignment",
            ALIGNMENT.to_string().as_bytes(),
        )?;
        record("archive/byteorder", b"little")?;
        for (key, t) in tensors.iter().enumerate() {
            record(&format!("archive/data/{key}"), &t.data)?;
            id.update(&t.data);
        }
        record("archive/version", b"3\n")?;
        // torch's is 40 random decimal digits; ours follows from the contents.
        let digits: String = hex::encode(id.finalize())
            .bytes()
            .take(40)
            .map(|b| char::from(b'0' + b % 10))
            .collect();
        record("archive/.data/serialization_id", digits.as_bytes())
    })();
    let zip_error = |e: zip::result::ZipError| ExportError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    };
    written.map_err(zip_error)?;
    let mut buffered = zip.finish().map_err(zip_error)?;
    buffered.flush().map_err(io(path))
}
