//! Pooled backbone features (before the projector), backbone in inference mode.
//! - `fast`: one centre view per image (the largest centred square, resized to `side`);
//! - `paper`: the mean over 16 views, the centre view and 15 views with the pretraining
//!   augmentations (the reference code's protocol).
//!
//! Extracted features are cached next to the checkpoint with a key naming the checkpoint, the
//! dataset and the settings, so a cache made for anything else is detected and recomputed.

use std::path::{Path, PathBuf};

use candle_core::{Device, ModuleT, Tensor};
use sha2::{Digest, Sha256};

use super::knn::FeatureSet;
use super::{EvalError, Protocol};
use crate::atomic_file::AtomicFile;
use crate::loader::{AugmentConfig, CachePolicy, Loader, LoaderConfig, LoaderError, Order};
use crate::model::Backbone;

/// Views averaged under the paper protocol besides the centre one.
pub const PAPER_AUGMENTED_VIEWS: usize = 15;
const EVAL_BATCH: usize = 256;

/// How features of one split are made.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    pub data: PathBuf,
    pub split: String,
    pub side: u32,
    pub protocol: Protocol,
    /// Pretraining augmentations and crop scale for the paper protocol's extra views.
    pub augment: AugmentConfig,
    pub scale: (f32, f32),
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub threads: usize,
    pub seed: u64,
}

fn loader(
    spec: &FeatureSpec,
    views: String,
    augment: AugmentConfig,
    fraction: f64,
) -> Result<Loader, LoaderError> {
    Loader::from_config(&LoaderConfig {
        data: spec.data.clone(),
        split: spec.split.clone(),
        views,
        batch_size: EVAL_BATCH,
        threads: spec.threads,
        order: Order::Sequential,
        drop_last: false,
        seed: spec.seed,
        cache: CachePolicy::Auto,
        augment,
        fraction,
        ..LoaderConfig::default()
    })
}

/// A loader over `split` that yields one centre view of each image, in storage order; a
/// `fraction` below 1 keeps the seeded class-balanced subset a training loader would.
pub fn centre_view_loader(
    data: &Path,
    split: &str,
    side: u32,
    threads: usize,
    fraction: f64,
) -> Result<Loader, LoaderError> {
    let spec = FeatureSpec {
        data: data.to_path_buf(),
        split: split.to_string(),
        side,
        protocol: Protocol::Fast,
        augment: AugmentConfig::centre(),
        scale: (1.0, 1.0),
        mean: [0.0; 3],
        std: [1.0; 3],
        threads,
        seed: 0,
    };
    loader(
        &spec,
        format!("1x{side}:1-1"),
        AugmentConfig::centre(),
        fraction,
    )
}

/// The datasets' own image size when both splits, `(dataset, split)`, hold square images of one
/// size: features are computed on clean images at that size (as fastssl evaluates), whatever the
/// training views' sizes. `None` when sizes vary (then the caller picks a size).
pub fn evaluation_side(
    train: (&Path, &str),
    test: (&Path, &str),
) -> Result<Option<u32>, LoaderError> {
    let side =
        |(data, split): (&Path, &str)| crate::shard::ShardReader::open(data)?.square_side(split);
    let (a, b) = (side(train)?, side(test)?);
    Ok(if a == b { a } else { None })
}

/// Features of every image the loader yields (centre views).
pub fn extract(
    backbone: &Backbone,
    loader: &Loader,
    device: &Device,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<FeatureSet, EvalError> {
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

/// Features as the protocol says (averaged over 16 views for `paper`).
pub fn features(
    backbone: &Backbone,
    spec: &FeatureSpec,
    device: &Device,
) -> Result<FeatureSet, EvalError> {
    let side = spec.side;
    let centre = loader(spec, format!("1x{side}:1-1"), AugmentConfig::centre(), 1.0)?;
    let mut set = extract(backbone, &centre, device, spec.mean, spec.std)?;
    if spec.protocol == Protocol::Fast {
        return Ok(set);
    }
    let views = format!(
        "{PAPER_AUGMENTED_VIEWS}x{side}:{}-{}",
        spec.scale.0, spec.scale.1
    );
    let augmented = loader(spec, views, spec.augment.clone(), 1.0)?;
    let dim = set.dim;
    let mut row = 0;
    for batch in augmented.epoch(0) {
        let batch = batch?;
        let b = batch.len();
        let x = &batch.to_tensors(device, spec.mean, spec.std)?[0];
        // [15 * B, F] -> [15, B, F] -> sum over views -> [B, F]
        let f = backbone
            .forward_t(x, false)?
            .reshape((PAPER_AUGMENTED_VIEWS, b, dim))?
            .sum(0)?;
        let sums = f.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        for (dst, add) in set.data[row * dim..(row + b) * dim].iter_mut().zip(sums) {
            *dst = (*dst + add) / (PAPER_AUGMENTED_VIEWS as f32 + 1.0);
        }
        row += b;
    }
    Ok(set)
}

/// The cache key: the checkpoint's weights, the dataset's manifest and every setting.
pub fn cache_key(weights: &Path, spec: &FeatureSpec) -> Result<String, EvalError> {
    let mut h = Sha256::new();
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| EvalError::Io {
            path: p.to_path_buf(),
            error,
        })
    };
    h.update(read(weights)?);
    h.update(read(
        &spec.data.join(crate::shard::manifest::MANIFEST_FILE),
    )?);
    h.update(format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        spec.split,
        spec.side,
        spec.protocol,
        spec.augment,
        spec.scale,
        spec.mean,
        spec.std,
        spec.seed
    ));
    Ok(hex::encode(h.finalize()))
}

/// `dir/<protocol>-<split>.safetensors`, with its key in a `.key` file beside it.
pub fn cache_path(dir: &Path, spec: &FeatureSpec) -> PathBuf {
    dir.join(format!("{:?}-{}.safetensors", spec.protocol, spec.split).to_lowercase())
}

/// The cached features if the cache exists and was made with `key`.
pub fn load_cache(path: &Path, key: &str) -> Option<FeatureSet> {
    let stored = std::fs::read_to_string(path.with_extension("key")).ok()?;
    if stored.trim() != key {
        return None;
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).ok()?;
    let (f, l) = (tensors.get("features")?, tensors.get("labels")?);
    let dim = f.dim(1).ok()?;
    Some(FeatureSet {
        dim,
        data: f.flatten_all().ok()?.to_vec1().ok()?,
        labels: l
            .to_vec1::<i64>()
            .ok()?
            .into_iter()
            .map(|v| v as i32)
            .collect(),
    })
}

/// Writes features, then their key (each under a temporary name, then renamed).
pub fn save_cache(path: &Path, key: &str, set: &FeatureSet) -> Result<(), EvalError> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir).map_err(|error| EvalError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let n = set.len();
    let tensors = std::collections::HashMap::from([
        (
            "features".to_string(),
            Tensor::from_vec(set.data.clone(), (n, set.dim), &Device::Cpu)?,
        ),
        (
            "labels".to_string(),
            Tensor::from_vec(
                set.labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(),
                n,
                &Device::Cpu,
            )?,
        ),
    ]);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |error| EvalError::Io { path: p, error }
    };
    // The old key goes first: a stop between the two renames must leave features with no key
    // (a miss next time), never new features under the old run's key (a wrong hit).
    let key_path = path.with_extension("key");
    match std::fs::remove_file(&key_path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&key_path)(error));
        }
        _ => {}
    }
    let file = AtomicFile::create(path).map_err(io(path))?;
    candle_core::safetensors::save(&tensors, file.temp_path())?;
    file.commit().map_err(io(path))?;
    crate::atomic_file::write(&key_path, key).map_err(io(&key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: f32) -> FeatureSet {
        FeatureSet {
            dim: 2,
            data: vec![value; 6],
            labels: vec![0, 1, 2],
        }
    }

    #[test]
    fn a_cache_is_read_back_only_under_the_key_it_was_saved_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fast-test.safetensors");
        save_cache(&path, "first", &set(1.0)).unwrap();
        save_cache(&path, "second", &set(2.0)).unwrap();
        assert!(load_cache(&path, "first").is_none());
        let hit = load_cache(&path, "second").expect("the latest key hits");
        assert_eq!(
            (hit.dim, hit.data, hit.labels),
            (2, vec![2.0; 6], vec![0, 1, 2])
        );
        std::fs::remove_file(path.with_extension("key")).unwrap();
        assert!(
            load_cache(&path, "second").is_none(),
            "features without a key are a miss"
        );
    }

    #[test]
    fn a_save_that_fails_leaves_no_key_for_the_old_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fast-test.safetensors");
        save_cache(&path, "first", &set(1.0)).unwrap();
        // A directory where the features go makes their rename fail after the old key is gone.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(save_cache(&path, "second", &set(2.0)).is_err());
        assert!(!path.with_extension("key").exists());
    }
}
