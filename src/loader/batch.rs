//! Batches: per resolution group one u8 buffer `[V * B, 3, S, S]`, view-major (view v of image b
//! at row `v * B + b`), plus labels, source indices and the time each stage took. Batches travel
//! as u8; [`Batch::to_tensors`] normalises on the device.

use std::ops::AddAssign;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::augment::{view_rng, ViewPipeline, ViewScratch};
use super::dataset::{Dataset, WorkerCache};
use super::LoaderError;

/// CIFAR-10 channel means and standard deviations (of 0..1 pixels) as fastssl normalises
/// (`CIFAR_FFCV_MEAN/STD` / 255; the stds are the usual per-image ones, not the pixel-level
/// 0.247, 0.243, 0.261).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

/// Time spent per stage, summed over a batch's samples (or over many batches).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Fetching row bytes (row-group reads when streaming).
    pub read: Duration,
    /// Decoding JPEG/PNG or copying raw pixels.
    pub decode: Duration,
    /// Cropping, resizing and colour ops of every view.
    pub augment: Duration,
    /// Allocating the batch and gathering labels.
    pub assemble: Duration,
}

impl AddAssign for StageTimes {
    fn add_assign(&mut self, o: Self) {
        self.read += o.read;
        self.decode += o.decode;
        self.augment += o.augment;
        self.assemble += o.assemble;
    }
}

/// The views of one resolution group.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewBatch {
    pub side: u32,
    pub views: usize,
    pub batch: usize,
    /// `[views * batch, 3, side, side]`, view-major.
    pub data: Vec<u8>,
}

impl ViewBatch {
    /// View `v` of image `b`, CHW.
    pub fn view(&self, v: usize, b: usize) -> &[u8] {
        let n = 3 * (self.side * self.side) as usize;
        &self.data[(v * self.batch + b) * n..][..n]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Batch number within the epoch.
    pub number: usize,
    pub groups: Vec<ViewBatch>,
    pub labels: Vec<i32>,
    /// The `index` column (position in the source split) of each image.
    pub indices: Vec<u64>,
    pub times: StageTimes,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// SHA-256 over every pixel, label and index: equal digests mean identical batches.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for g in &self.groups {
            h.update(g.side.to_le_bytes());
            h.update(&g.data);
        }
        for (l, i) in self.labels.iter().zip(&self.indices) {
            h.update(l.to_le_bytes());
            h.update(i.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// One f32 tensor per group, `[V * B, 3, S, S]`, normalised as `(x / 255 - mean) / std`.
    pub fn to_tensors(
        &self,
        device: &Device,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> candle_core::Result<Vec<Tensor>> {
        let scale: Vec<f32> = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        let scale = Tensor::from_vec(scale, (1, 3, 1, 1), device)?;
        let shift = Tensor::from_vec(shift, (1, 3, 1, 1), device)?;
        self.groups
            .iter()
            .map(|g| {
                let s = g.side as usize;
                let x = Tensor::from_slice(&g.data, (g.views * g.batch, 3, s, s), device)?
                    .to_dtype(DType::F32)?;
                x.broadcast_mul(&scale)?.broadcast_add(&shift)
            })
            .collect()
    }
}

/// Builds batch `number` of `epoch` from `positions`: each image is decoded once and cropped into
/// every view of every group.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    dataset: &Dataset,
    pipelines: &[(usize, ViewPipeline)],
    seed: u64,
    epoch: u64,
    number: usize,
    positions: &[u32],
    cache: &mut WorkerCache,
    scratch: &mut ViewScratch,
) -> Result<Batch, LoaderError> {
    let start = Instant::now();
    let b = positions.len();
    let mut groups: Vec<ViewBatch> = pipelines
        .iter()
        .map(|(views, p)| {
            let side = p.crop.side;
            ViewBatch {
                side,
                views: *views,
                batch: b,
                data: vec![0u8; views * b * 3 * (side * side) as usize],
            }
        })
        .collect();
    let labels = positions
        .iter()
        .map(|&p| dataset.labels[p as usize])
        .collect();
    let indices = positions
        .iter()
        .map(|&p| dataset.indices[p as usize])
        .collect();
    let mut times = StageTimes {
        assemble: start.elapsed(),
        ..Default::default()
    };
    for (i, &pos) in positions.iter().enumerate() {
        let (pixels, w, h) = dataset.image(pos, cache, &mut times)?;
        let start = Instant::now();
        let mut view = 0u64;
        for ((views, pipeline), out) in pipelines.iter().zip(groups.iter_mut()) {
            let n = 3 * (out.side * out.side) as usize;
            for v in 0..*views {
                let mut rng = view_rng(seed, epoch, u64::from(pos), view);
                let dst = &mut out.data[(v * b + i) * n..][..n];
                pipeline.make_view(&mut rng, pixels, w, h, scratch, dst);
                view += 1;
            }
        }
        times.augment += start.elapsed();
    }
    Ok(Batch {
        epoch,
        number,
        groups,
        labels,
        indices,
        times,
    })
}
