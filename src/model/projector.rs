//! The projector: `depth - 1` hidden layers of Linear(no bias) → BatchNorm1d → ReLU, then a final
//! Linear with bias. The paper's is depth 2: Linear(F→D, no bias) → BN → ReLU → Linear(D→D).
//! Parameters: `layers.{i}.linear.weight`, `layers.{i}.bn.*`, `out.{weight,bias}`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{batch_norm, linear, linear_no_bias, BatchNorm, Linear, VarBuilder};

pub struct Projector {
    hidden: Vec<(Linear, BatchNorm)>,
    out: Linear,
}

impl Projector {
    pub fn new(in_dim: usize, pdim: usize, depth: usize, vb: VarBuilder) -> Result<Self> {
        let mut hidden = Vec::new();
        let mut d = in_dim;
        for i in 0..depth.saturating_sub(1) {
            let vb = vb.pp(format!("layers.{i}"));
            hidden.push((
                linear_no_bias(d, pdim, vb.pp("linear"))?,
                batch_norm(pdim, 1e-5, vb.pp("bn"))?,
            ));
            d = pdim;
        }
        Ok(Self {
            hidden,
            out: linear(d, pdim, vb.pp("out"))?,
        })
    }
}

impl ModuleT for Projector {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (lin, bn) in &self.hidden {
            let h = lin.forward(&y)?;
            y = super::ops::batch_norm_relu(bn, &h, train, true)?;
        }
        self.out.forward(&y)
    }
}
