//! ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck) with a width multiplier (64 is standard)
//! and a CIFAR stem (3x3 stride 1, no max-pool) or the ImageNet stem (7x7 stride 2 + max-pool).
//! Parameter names match torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
//! ...), so weights map one to one; there is no `fc`.

use candle_core::{Result, Tensor};
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, Conv2d, Conv2dConfig, VarBuilder};

use super::ops::{batch_norm_add_relu, conv_bn, conv_chain};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    R18,
    R34,
    R50,
}

impl Depth {
    fn blocks(self) -> [usize; 4] {
        match self {
            Self::R18 => [2, 2, 2, 2],
            Self::R34 | Self::R50 => [3, 4, 6, 3],
        }
    }

    fn expansion(self) -> usize {
        if self == Self::R50 {
            4
        } else {
            1
        }
    }
}

fn conv(in_c: usize, out_c: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d_no_bias(
        in_c,
        out_c,
        k,
        Conv2dConfig {
            padding: k / 2,
            stride,
            ..Default::default()
        },
        vb,
    )
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    batch_norm(c, 1e-5, vb)
}

/// A BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3, 1x1) with its shortcut.
struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(
        depth: Depth,
        in_c: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let out_c = planes * depth.expansion();
        let convs = if depth == Depth::R50 {
            vec![
                (
                    conv(in_c, planes, 1, 1, vb.pp("conv1"))?,
                    bn(planes, vb.pp("bn1"))?,
                ),
                (
                    conv(planes, planes, 3, stride, vb.pp("conv2"))?,
                    bn(planes, vb.pp("bn2"))?,
                ),
                (
                    conv(planes, out_c, 1, 1, vb.pp("conv3"))?,
                    bn(out_c, vb.pp("bn3"))?,
                ),
            ]
        } else {
            vec![
                (
                    conv(in_c, planes, 3, stride, vb.pp("conv1"))?,
                    bn(planes, vb.pp("bn1"))?,
                ),
                (
                    conv(planes, planes, 3, 1, vb.pp("conv2"))?,
                    bn(planes, vb.pp("bn2"))?,
                ),
            ]
        };
        let downsample = if stride != 1 || in_c != out_c {
            Some((
                conv(in_c, out_c, 1, stride, vb.pp("downsample.0"))?,
                bn(out_c, vb.pp("downsample.1"))?,
            ))
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((c, b)) => conv_bn(c, b, x, train, false)?,
            None => x.clone(),
        };
        let (z, bn) = conv_chain(&self.convs, x, train)?;
        batch_norm_add_relu(bn, &z, &shortcut, train)
    }
}

pub struct ResNet {
    stem: (Conv2d, BatchNorm),
    max_pool: bool,
    layers: Vec<Block>,
    feature_dim: usize,
}

impl ResNet {
    pub fn new(depth: Depth, width: usize, cifar_stem: bool, vb: VarBuilder) -> Result<Self> {
        let stem = if cifar_stem {
            (
                conv(3, width, 3, 1, vb.pp("conv1"))?,
                bn(width, vb.pp("bn1"))?,
            )
        } else {
            (
                conv(3, width, 7, 2, vb.pp("conv1"))?,
                bn(width, vb.pp("bn1"))?,
            )
        };
        let mut layers = Vec::new();
        let mut in_c = width;
        for (l, blocks) in depth.blocks().into_iter().enumerate() {
            let planes = width << l;
            for b in 0..blocks {
                let stride = if l > 0 && b == 0 { 2 } else { 1 };
                layers.push(Block::new(
                    depth,
                    in_c,
                    planes,
                    stride,
                    vb.pp(format!("layer{}.{b}", l + 1)),
                )?);
                in_c = planes * depth.expansion();
            }
        }
        Ok(Self {
            stem,
            max_pool: !cifar_stem,
            layers,
            feature_dim: in_c,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = conv_bn(&self.stem.0, &self.stem.1, x, train, true)?;
        if self.max_pool {
            // torchvision's MaxPool2d(3, stride 2, padding 1), with a backward.
            y = super::ops::max_pool::max_pool2d(&y, 3, 2, 1)?;
        }
        self.layers
            .iter()
            .try_fold(y, |y, block| block.forward_t(&y, train))
    }
}
