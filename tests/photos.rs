//! ResNets pretrain on photos at the sizes photos are trained at: with `stem = auto`, views above
//! 64 px take the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool), whose max-pool
//! backward candle lacks (kernel 3 != stride 2) and our own op provides.

mod common;

use std::path::PathBuf;

use candle_core::{safetensors, Device};
use common::*;
use sslfast::model::SslModel;

/// The ant and bee photos, packed with their long side capped at 256 px.
fn photos() -> PathBuf {
    packed("hymenoptera-256", &hymenoptera(), &["--max-side", "256"])
}

/// Three steps of `backbone` at `views` from the seed's initial weights: every step's loss is
/// finite, the stem is the ImageNet one, and it was trained (its weights moved).
fn pretrains_on_photos(backbone: &str, views: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = train_config(
        photos(),
        &tmp.path().join("run"),
        &[
            &format!("backbone=\"{backbone}\""),
            &format!("views=\"{views}\""),
            "width=16",
            "pdim=64",
            "stem=\"auto\"",
            "batch_size=6",
            "epochs=1",
            "max_steps_per_epoch=3",
        ],
    );
    let summary = train(&cfg, false)
        .unwrap_or_else(|e| panic!("{backbone} at {views} does not train: {e:#}"));
    assert_eq!(summary.steps, 3);
    assert!(summary.last_loss.is_finite(), "loss {}", summary.last_loss);

    let trained = safetensors::load(cfg.out.join("checkpoint/model.safetensors"), &Device::Cpu)
        .unwrap()
        .remove("backbone.conv1.weight")
        .unwrap();
    assert_eq!(
        trained.dims(),
        [16, 3, 7, 7],
        "{views} views take the ImageNet stem"
    );
    let side: u32 = views.split('x').nth(1).unwrap().parse().unwrap();
    let (init, _) = SslModel::seeded(&cfg.model, side, cfg.loader.seed, &Device::Cpu).unwrap();
    let init = init.data().lock().unwrap()["backbone.conv1.weight"]
        .as_tensor()
        .clone();
    let moved = (init - &trained)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0, "the stem conv's weights did not change");
}

#[test]
fn resnet18_pretrains_on_photos_at_2x128() {
    pretrains_on_photos("resnet18", "2x128");
}

#[test]
fn resnet18_pretrains_on_photos_at_2x224() {
    pretrains_on_photos("resnet18", "2x224");
}

#[test]
fn resnet50_pretrains_on_photos_at_2x128() {
    pretrains_on_photos("resnet50", "2x128");
}

#[test]
fn resnet50_pretrains_on_photos_at_2x224() {
    pretrains_on_photos("resnet50", "2x224");
}
