//! Linear probe on frozen features, as the paper's reference code trains it: one linear layer,
//! Adam (lr 1e-3, coupled L2 1e-6), cross-entropy with label smoothing 0.1, batch 512, shuffled
//! each epoch from a seed; top-1 and top-5 accuracy on the test features.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, Linear, Module, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::knn::FeatureSet;
use crate::train::optim::Optimizer;
use crate::train::OptimizerKind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
}

impl ProbeConfig {
    /// The paper's protocol: 200 epochs.
    pub fn paper() -> Self {
        Self {
            epochs: 200,
            batch_size: 512,
            lr: 1e-3,
            weight_decay: 1e-6,
            label_smoothing: 0.1,
            seed: 0,
        }
    }

    /// For monitoring: 20 epochs.
    pub fn fast() -> Self {
        Self {
            epochs: 20,
            ..Self::paper()
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProbeResult {
    pub top1: f64,
    pub top5: f64,
    pub final_train_loss: f64,
}

fn tensor(
    set: &FeatureSet,
    rows: &[usize],
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|&i| set.row(i).iter().copied())
        .collect();
    let labels: Vec<u32> = rows.iter().map(|&i| set.labels[i].max(0) as u32).collect();
    Ok((
        Tensor::from_vec(data, (rows.len(), set.dim), device)?,
        Tensor::from_vec(labels, rows.len(), device)?,
    ))
}

/// Cross-entropy with label smoothing ε: `(1 − ε)·CE(y) + ε·mean_c(−log p_c)`.
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_p.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - eps))? + (uniform * eps)?
}

/// Trains a linear classifier on `train` (labelled rows only) and scores it on `test`.
pub fn linear_probe(
    train: &FeatureSet,
    test: &FeatureSet,
    cfg: &ProbeConfig,
) -> candle_core::Result<ProbeResult> {
    let device = Device::Cpu;
    let classes = train
        .labels
        .iter()
        .chain(&test.labels)
        .copied()
        .max()
        .unwrap_or(0)
        .max(0) as usize
        + 1;
    let varmap = VarMap::new();
    // Zero init: the problem is convex, and candle's CPU generator cannot be seeded, so random
    // init would make the probe's numbers differ between runs on the same features.
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device).pp("probe");
    let weight = vb.get_with_hints((classes, train.dim), "weight", Init::Const(0.0))?;
    let bias = vb.get_with_hints(classes, "bias", Init::Const(0.0))?;
    let layer = Linear::new(weight, Some(bias));
    let mut opt = Optimizer::new(&varmap, OptimizerKind::Adam, cfg.weight_decay)?;
    let mut rows: Vec<usize> = (0..train.len()).filter(|&i| train.labels[i] >= 0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut last = 0.0;
    for _ in 0..cfg.epochs {
        rows.shuffle(&mut rng);
        let (mut sum, mut n) = (0.0, 0);
        for chunk in rows.chunks(cfg.batch_size) {
            let (x, y) = tensor(train, chunk, &device)?;
            let loss = smoothed_cross_entropy(&layer.forward(&x)?, &y, cfg.label_smoothing)?;
            opt.step(&loss.backward()?, cfg.lr)?;
            sum += f64::from(loss.to_scalar::<f32>()?);
            n += 1;
        }
        last = sum / n.max(1) as f64;
    }
    let (mut top1, mut top5) = (0usize, 0usize);
    let all: Vec<usize> = (0..test.len()).collect();
    for chunk in all.chunks(4096) {
        let (x, y) = tensor(test, chunk, &device)?;
        let order = layer
            .forward(&x)?
            .arg_sort_last_dim(false)?
            .to_vec2::<u32>()?;
        for (ranked, label) in order.iter().zip(y.to_vec1::<u32>()?) {
            top1 += usize::from(ranked[0] == label);
            top5 += usize::from(ranked.iter().take(5).any(|&c| c == label));
        }
    }
    let n = test.len().max(1) as f64;
    Ok(ProbeResult {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        final_train_loss: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_smoothing_matches_its_formula() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let z: f64 = [2.0f64, 0.0, -1.0]
            .iter()
            .map(|v| v.exp())
            .sum::<f64>()
            .ln();
        let log_p = [2.0 - z, -z, -1.0 - z];
        let expected = 0.9 * -log_p[0] + 0.1 * -(log_p.iter().sum::<f64>() / 3.0);
        let got = f64::from(
            smoothed_cross_entropy(&logits, &y, 0.1)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        );
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn separable_features_are_learned() {
        let make = |n: usize| {
            let labels: Vec<i32> = (0..n).map(|i| (i % 3) as i32).collect();
            let data = labels
                .iter()
                .flat_map(|&l| {
                    (0..4).map(move |d| if d == l as usize { 1.0 } else { 0.1 * d as f32 })
                })
                .collect();
            FeatureSet {
                dim: 4,
                data,
                labels,
            }
        };
        let r = linear_probe(
            &make(300),
            &make(60),
            &ProbeConfig {
                epochs: 60,
                ..ProbeConfig::paper()
            },
        )
        .unwrap();
        assert_eq!(r.top1, 1.0);
        assert_eq!(r.top5, 1.0);
    }
}
