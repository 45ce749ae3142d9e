//! Pooled backbone features (before the projector) with the backbone in inference mode, over
//! deterministic centre views: the largest centred square of each image, resized to `side`.

use candle_core::{Device, ModuleT};

use super::knn::FeatureSet;
use crate::config::{AugmentConfig, CachePolicy, LoaderConfig};
use crate::loader::{Loader, LoaderError, Order};
use crate::model::Backbone;

/// A loader over `split` that yields one centre view of each image, in storage order.
pub fn centre_view_loader(
    data: &std::path::Path,
    split: &str,
    side: u32,
    threads: usize,
) -> Result<Loader, LoaderError> {
    Loader::from_config(&LoaderConfig {
        data: data.to_path_buf(),
        split: split.to_string(),
        views: format!("1x{side}:1-1"),
        batch_size: 512,
        threads,
        order: Order::Sequential,
        drop_last: false,
        cache: CachePolicy::Auto,
        augment: AugmentConfig::centre(),
        ..LoaderConfig::default()
    })
}

/// Extracts features of every image the loader yields.
pub fn extract(
    backbone: &Backbone,
    loader: &Loader,
    device: &Device,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<FeatureSet, Box<dyn std::error::Error + Send + Sync>> {
    let mut set = FeatureSet {
        dim: backbone.feature_dim(),
        data: Vec::new(),
        labels: Vec::new(),
    };
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = &batch.to_tensors(device, mean, std)?[0];
        let f = backbone.forward_t(x, false)?.to_device(&Device::Cpu)?;
        set.data.extend(f.flatten_all()?.to_vec1::<f32>()?);
        set.labels.extend(&batch.labels);
    }
    Ok(set)
}
