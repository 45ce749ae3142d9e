//! One training step against PyTorch: with the same weights and the same input batch, our model
//! (our CPU ops), projector and losses give PyTorch's loss and parameter gradients. The expected
//! values come from `tools/torch_step_fixtures.py` (the models and losses of
//! `tools/reference_torch.py`, the fastssl recipe in PyTorch): conv4 and ResNet-18, Barlow Twins
//! and VICReg, K = 2 and 4.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sslfast::loss::{barlow_twins, vicreg, LossForm};
use sslfast::model::{BackboneKind, ModelSpec, SslModel, Stem};

/// Largest |ours − theirs| relative to the largest |theirs| of a tensor.
const TOLERANCE: f32 = 1e-4;
/// A gradient that is zero in exact arithmetic (VICReg's output bias: every term is
/// translation-invariant but the invariance, where it cancels) is float noise on both sides; its
/// scale is floored at this fraction of the largest gradient of the model.
const ZERO_FLOOR: f32 = 1e-3;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    settings: serde_json::Value,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_step")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let settings = header["__metadata__"]["settings"].as_str().unwrap();
    Fixture {
        tensors: candle_core::safetensors::load(&path, &Device::Cpu).unwrap(),
        settings: serde_json::from_str(settings).unwrap(),
    }
}

fn max_abs(t: &Tensor) -> f32 {
    let flat = t.abs().unwrap().flatten_all().unwrap();
    flat.max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Largest |ours − theirs| over the larger of `floor` and the largest |theirs|.
fn relative_diff(ours: &Tensor, theirs: &Tensor, floor: f32) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    max_abs(&(ours - theirs).unwrap()) / max_abs(theirs).max(floor).max(1e-12)
}

fn check(name: &str) {
    let f = fixture(name);
    let s = &f.settings;
    let backbone = match s["backbone"].as_str().unwrap() {
        "conv4" => BackboneKind::Conv4,
        "resnet18" => BackboneKind::Resnet18,
        other => panic!("{name}: backbone {other}"),
    };
    let spec = ModelSpec {
        backbone,
        width: s["width"].as_u64().unwrap() as usize,
        stem: match s["stem"].as_str().unwrap_or("cifar") {
            "cifar" => Stem::Cifar,
            "imagenet" => Stem::Imagenet,
            other => panic!("{name}: stem {other}"),
        },
        pdim: s["pdim"].as_u64().unwrap() as usize,
        projector_depth: 2,
    };
    let k = s["k"].as_u64().unwrap() as usize;
    let input = &f.tensors["input"];
    let side = input.dim(3).unwrap() as u32;
    let (varmap, model) = SslModel::seeded(&spec, side, 0, &Device::Cpu).unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    for (var_name, var) in &vars {
        let w = f
            .tensors
            .get(&format!("weight.{var_name}"))
            .unwrap_or_else(|| panic!("{name}: no weight for {var_name}"));
        var.set(w).unwrap();
    }
    let weights = f
        .tensors
        .keys()
        .filter(|k| k.starts_with("weight."))
        .count();
    assert_eq!(
        weights,
        vars.len(),
        "{name}: every PyTorch weight has a variable"
    );

    let z = model.embed(std::slice::from_ref(input), true).unwrap();
    let loss = match s["loss"].as_str().unwrap() {
        "barlow-twins" => {
            let lambda = s["lambda"].as_f64().unwrap();
            barlow_twins::loss(&z, k, lambda, LossForm::Efficient).unwrap()
        }
        "vicreg" => vicreg::loss(&z, k, vicreg::Weights::default(), LossForm::Efficient).unwrap(),
        other => panic!("{name}: loss {other}"),
    };
    let total = loss.total.reshape(1).unwrap();
    let loss_diff = relative_diff(&total, &f.tensors["loss"], 0.0);
    assert!(
        loss_diff < TOLERANCE,
        "{name}: loss differs by {loss_diff:e}"
    );
    let grads = loss.total.backward().unwrap();
    let largest = f
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("grad."))
        .map(|(_, t)| max_abs(t))
        .fold(0f32, f32::max);
    let mut checked = 0;
    for (var_name, var) in &vars {
        let Some(theirs) = f.tensors.get(&format!("grad.{var_name}")) else {
            continue; // BatchNorm running statistics: not parameters
        };
        let ours = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {var_name}"));
        let d = relative_diff(ours, theirs, ZERO_FLOOR * largest);
        assert!(
            d < TOLERANCE,
            "{name}: gradient of {var_name} differs by {d:e}"
        );
        checked += 1;
    }
    let expected = f.tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, expected, "{name}: every gradient compared");
}

#[test]
fn conv4_barlow_twins_k2_matches_pytorch() {
    check("conv4-k2-barlow-twins.safetensors");
}

#[test]
fn conv4_barlow_twins_k4_matches_pytorch() {
    check("conv4-k4-barlow-twins.safetensors");
}

#[test]
fn conv4_vicreg_k4_matches_pytorch() {
    check("conv4-k4-vicreg.safetensors");
}

#[test]
fn resnet18_barlow_twins_k2_matches_pytorch() {
    check("resnet18-k2-barlow-twins.safetensors");
}

#[test]
fn resnet18_barlow_twins_k4_matches_pytorch() {
    check("resnet18-k4-barlow-twins.safetensors");
}

#[test]
fn resnet18_vicreg_k2_matches_pytorch() {
    check("resnet18-k2-vicreg.safetensors");
}

/// torchvision's stem (7x7 stride-2 conv, 3x3 stride-2 max-pool with padding 1): candle alone has
/// no backward for that pooling.
#[test]
fn resnet18_imagenet_stem_matches_pytorch() {
    check("resnet18-k2-barlow-twins-imagenet.safetensors");
}
