//! `conv4`: 4 x [conv3x3 (no bias) - BatchNorm - ReLU], widths w, 2w, 4w, 8w, strides 1, 2, 2, 2.
//! Parameters: `layers.{i}.conv.weight`, `layers.{i}.bn.*`.

use candle_core::{Result, Tensor};
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, Conv2d, Conv2dConfig, VarBuilder};

use super::ops::{batch_norm_relu, conv_chain};

pub struct Conv4 {
    layers: Vec<(Conv2d, BatchNorm)>,
    width: usize,
}

impl Conv4 {
    pub fn new(width: usize, vb: VarBuilder) -> Result<Self> {
        let mut layers = Vec::with_capacity(4);
        let mut in_c = 3;
        for (i, stride) in [1, 2, 2, 2].into_iter().enumerate() {
            let out_c = width << i;
            let vb = vb.pp(format!("layers.{i}"));
            let cfg = Conv2dConfig {
                padding: 1,
                stride,
                ..Default::default()
            };
            layers.push((
                conv2d_no_bias(in_c, out_c, 3, cfg, vb.pp("conv"))?,
                batch_norm(out_c, 1e-5, vb.pp("bn"))?,
            ));
            in_c = out_c;
        }
        Ok(Self { layers, width })
    }

    pub fn feature_dim(&self) -> usize {
        self.width * 8
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (z, bn) = conv_chain(&self.layers, x, train)?;
        batch_norm_relu(bn, &z, train, true)
    }
}
