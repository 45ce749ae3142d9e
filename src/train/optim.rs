//! Adam with coupled L2 weight decay (the paper's: the gradient gets `wd * p`) and AdamW
//! (decoupled: `p *= 1 - lr * wd`), with bias-corrected moments that can be saved and restored,
//! which candle's own AdamW cannot. BatchNorm running statistics are variables in the VarMap
//! but not parameters: they are left out.
//!
//! `m = β1 m + (1 − β1) g`, `v = β2 v + (1 − β2) g²`,
//! `p -= lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

use super::config::OptimizerKind;

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    /// (name, parameter, first moment, second moment), sorted by name.
    params: Vec<(String, Var, Tensor, Tensor)>,
    step: u64,
}

/// Whether a VarMap entry is a trainable parameter (not a BatchNorm running statistic).
pub fn is_parameter(name: &str) -> bool {
    !(name.ends_with("running_mean") || name.ends_with("running_var"))
}

impl Optimizer {
    pub fn new(varmap: &VarMap, kind: OptimizerKind, weight_decay: f64) -> Result<Self> {
        let mut params: Vec<(String, Var, Tensor, Tensor)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .filter(|(name, _)| is_parameter(name))
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok((name.clone(), var.clone(), zeros.clone(), zeros))
            })
            .collect::<Result<_>>()?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            kind,
            weight_decay,
            params,
            step: 0,
        })
    }

    /// The trainable parameters, sorted by name (the same order on every rank).
    pub fn parameters(&self) -> impl Iterator<Item = &Var> {
        self.params.iter().map(|(_, var, _, _)| var)
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` from the gradients of the last backward pass.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (_, var, m, v) in &mut self.params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Everything here is detached: a moment that kept its op history would chain every
            // step's graph to the next and hold all of them in memory.
            let p = var.as_tensor().detach();
            let grad = grad.detach();
            let g = match self.kind {
                OptimizerKind::Adam if self.weight_decay > 0.0 => {
                    (grad + (&p * self.weight_decay)?)?
                }
                _ => grad,
            };
            *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + EPS)?)?;
            let p = match self.kind {
                OptimizerKind::Adamw => (&p * (1.0 - lr * self.weight_decay))?,
                OptimizerKind::Adam => p,
            };
            var.set(&(p - (update * lr)?)?.detach())?;
        }
        Ok(())
    }

    /// Saves both moments (`m.<name>`, `v.<name>`) as safetensors; the step count goes in the
    /// checkpoint's JSON state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (name, _, m, v) in &self.params {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
        }
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restores moments written by [`Optimizer::save`] and the step count.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let device = self
            .params
            .first()
            .map(|p| p.1.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut saved = candle_core::safetensors::load(path, &device)?;
        for (name, var, m, v) in &mut self.params {
            let mut take = |key: String| {
                saved.remove(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("{}: no `{key}`", path.display()))
                })
            };
            let (sm, sv) = (take(format!("m.{name}"))?, take(format!("v.{name}"))?);
            if sm.shape() != var.shape() || sv.shape() != var.shape() {
                candle_core::bail!(
                    "{}: moments of `{name}` have shape {:?}, the parameter {:?}",
                    path.display(),
                    sm.shape(),
                    var.shape()
                );
            }
            (*m, *v) = (sm, sv);
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at `step` of `total` steps: linear warm-up over `warmup` steps, then constant
/// or cosine decay to 0.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64, cosine: bool) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    if !cosine || total <= warmup {
        return base;
    }
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Init;

    /// One parameter p = [1, -2], loss = sum(p²)/2 so the gradient is p.
    fn one_step(kind: OptimizerKind, wd: f64, steps: usize) -> Vec<f64> {
        let map = VarMap::new();
        let p = map
            .get(2, "w", Init::Const(0.0), DType::F64, &Device::Cpu)
            .unwrap();
        map.data().lock().unwrap()["w"]
            .set(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap())
            .unwrap();
        let mut opt = Optimizer::new(&map, kind, wd).unwrap();
        for _ in 0..steps {
            let loss = (p.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        }
        let w = map.data().lock().unwrap()["w"]
            .as_tensor()
            .to_vec1()
            .unwrap();
        w
    }

    #[test]
    fn first_adam_step_moves_each_weight_by_lr() {
        // Bias correction makes the first update exactly lr * sign(g) (up to eps).
        let w = one_step(OptimizerKind::Adam, 0.0, 1);
        assert!(
            (w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn coupled_and_decoupled_decay_differ_as_expected() {
        let adam = one_step(OptimizerKind::Adam, 0.5, 3);
        let adamw = one_step(OptimizerKind::Adamw, 0.5, 3);
        // Coupled decay scales this gradient (g = 1.5 p), which Adam normalises away (up to eps).
        let plain = one_step(OptimizerKind::Adam, 0.0, 3);
        assert!((adam[0] - plain[0]).abs() < 1e-6, "{adam:?} vs {plain:?}");
        // Decoupled decay shrinks the weight by (1 - 0.05) every step on top of the update.
        assert!(adamw[0] < plain[0] - 0.05, "{adamw:?} vs {plain:?}");
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(learning_rate(1.0, 0, 4, 100, true), 0.25);
        assert_eq!(learning_rate(1.0, 3, 4, 100, true), 1.0);
        assert!((learning_rate(1.0, 52, 4, 100, true) - 0.5).abs() < 1e-9);
        assert_eq!(learning_rate(1.0, 80, 0, 100, false), 1.0);
    }
}
