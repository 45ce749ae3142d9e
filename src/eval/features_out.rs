//! `ssl-eval features`: pooled backbone features of chosen images of a split, written to Parquet
//! with each image's `index` and `label`, for a researcher's own tools. The features are the fast
//! protocol's ([`super::features`]): one centre view (the largest centred square, resized to the
//! evaluation side), the backbone in inference mode.
//!
//! | column   | type                          | meaning                                   |
//! |----------|-------------------------------|-------------------------------------------|
//! | index    | Int64                         | the row's `index` column (source position)|
//! | label    | Int64                         | class id, -1 when unlabeled               |
//! | features | FixedSizeList<Float32, D>     | the pooled features (512 for ResNet-18)   |
//!
//! The file's key-value metadata `sslfast` (JSON) names the checkpoint, data, split, side, mean
//! and std, so a check can rebuild the same inputs.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use candle_core::{Device, ModuleT};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::export::{load_model, open_checkpoint, ExportError};
use super::knn::FeatureSet;
use crate::atomic_file::AtomicFile;
use crate::loader::augment::{ViewPipeline, ViewScratch};
use crate::loader::batch::assemble;
use crate::loader::dataset::{Dataset, WorkerCache};
use crate::loader::{AugmentConfig, CachePolicy};
use crate::model::Backbone;
use crate::shard::ShardReader;

/// Images per forward pass.
const BATCH: usize = 256;
/// The Parquet key-value metadata entry that describes how the features were made.
pub const METADATA_KEY: &str = "sslfast";

/// `ssl-eval features`' arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FeaturesArgs {
    /// A run directory written by ssl-train (or its checkpoint/ directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset written by ssl-pack.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Only these images, by their `index` column, comma-separated; rows follow this order.
    #[arg(long, value_delimiter = ',', conflicts_with = "limit")]
    pub indices: Vec<u64>,
    /// Only the first N images in storage order.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The Parquet file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Override a config key of the run (`eval_size`, `device`, ...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// Which rows of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// The first N in storage order.
    First(usize),
    /// These values of the `index` column, in this order.
    Indices(Vec<u64>),
}

/// Features of selected rows, in selection order.
#[derive(Debug, Clone)]
pub struct SelectedFeatures {
    pub indices: Vec<u64>,
    pub set: FeatureSet,
}

/// The storage positions of `selection` in `dataset` (`what` names data and split in errors).
fn positions(
    dataset: &Dataset,
    selection: &Selection,
    what: &Path,
) -> Result<Vec<u32>, ExportError> {
    let n = dataset.len();
    Ok(match selection {
        Selection::All => (0..n as u32).collect(),
        Selection::First(0) => {
            return Err(ExportError::Refused {
                path: what.to_path_buf(),
                message: "--limit must be at least 1".into(),
            })
        }
        Selection::First(k) => (0..(*k).min(n) as u32).collect(),
        Selection::Indices(wanted) => {
            let at: HashMap<u64, u32> = dataset
                .indices
                .iter()
                .enumerate()
                .map(|(p, &i)| (i, p as u32))
                .collect();
            let mut out = Vec::with_capacity(wanted.len());
            for i in wanted {
                out.push(*at.get(i).ok_or_else(|| ExportError::Refused {
                    path: what.to_path_buf(),
                    message: format!(
                        "no row has index {i} (the split's {n} rows have indices {}..={})",
                        dataset.indices.iter().min().unwrap_or(&0),
                        dataset.indices.iter().max().unwrap_or(&0)
                    ),
                })?);
            }
            out
        }
    })
}

/// Features of the `selection` of `split` under the fast protocol: one centre view at `side`,
/// normalised with `mean` and `std`, the backbone in inference mode. The same pixels as the
/// loader's centre views ([`super::features::centre_view_loader`]), built here for the chosen
/// rows only.
#[allow(clippy::too_many_arguments)]
pub fn centre_features(
    backbone: &Backbone,
    data: &Path,
    split: &str,
    selection: &Selection,
    side: u32,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<SelectedFeatures, ExportError> {
    let reader = ShardReader::open(data)?;
    let dataset = Dataset::open(&reader, split, CachePolicy::Stream, 0, true)?;
    let positions = positions(&dataset, selection, &data.join(split))?;
    let pipelines = [(
        1,
        ViewPipeline::new(side, (1.0, 1.0), &AugmentConfig::centre()),
    )];
    let (mut cache, mut scratch) = (WorkerCache::default(), ViewScratch::default());
    let mut set = FeatureSet {
        dim: backbone.feature_dim(),
        data: Vec::with_capacity(positions.len() * backbone.feature_dim()),
        labels: Vec::with_capacity(positions.len()),
    };
    let mut indices = Vec::with_capacity(positions.len());
    for (number, chunk) in positions.chunks(BATCH).enumerate() {
        let batch = assemble(
            &dataset,
            &pipelines,
            0,
            0,
            number,
            chunk,
            &mut cache,
            &mut scratch,
        )?;
        let x = &batch.to_tensors(device, mean, std)?[0];
        let f = backbone.forward_t(x, false)?.to_device(&Device::Cpu)?;
        set.data.extend(f.flatten_all()?.to_vec1::<f32>()?);
        set.labels.extend(&batch.labels);
        indices.extend(&batch.indices);
    }
    Ok(SelectedFeatures { indices, set })
}

/// What [`write_features`] wrote.
#[derive(Debug, Clone)]
pub struct FeaturesReport {
    pub out: PathBuf,
    pub rows: usize,
    pub dim: usize,
    pub side: u32,
    pub seconds: f64,
}

impl std::fmt::Display for FeaturesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "written {} ({} rows x {} features, centre view at {} px, {:.1}s)",
            self.out.display(),
            self.rows,
            self.dim,
            self.side,
            self.seconds
        )
    }
}

/// Computes the features `args` asks for and writes them to `args.out` (a temporary name, then
/// a rename).
pub fn write_features(args: &FeaturesArgs) -> Result<FeaturesReport, ExportError> {
    let start = Instant::now();
    let ckpt = open_checkpoint(&args.checkpoint, &args.sets)?;
    let cfg = &ckpt.config;
    let device = crate::model::device(&cfg.device).map_err(|error| ExportError::Device {
        name: cfg.device.clone(),
        error,
    })?;
    let (_, model) = load_model(&ckpt, &device)?;
    let side = match cfg.eval_size {
        0 => match ShardReader::open(&args.data)?.square_side(&args.split)? {
            Some(side) => side,
            None => cfg
                .loader
                .views
                .parse::<crate::loader::ViewSpec>()
                .map_err(crate::loader::LoaderError::from)?
                .largest_side(),
        },
        n => n,
    };
    let selection = match (&args.indices[..], args.limit) {
        ([], None) => Selection::All,
        ([], Some(n)) => Selection::First(n),
        (wanted, _) => Selection::Indices(wanted.to_vec()),
    };
    let features = centre_features(
        &model.backbone,
        &args.data,
        &args.split,
        &selection,
        side,
        cfg.mean,
        cfg.std,
        &device,
    )?;
    let metadata = serde_json::json!({
        "checkpoint": args.checkpoint.display().to_string(),
        "data": args.data.display().to_string(),
        "split": args.split,
        "side": side,
        "mean": cfg.mean,
        "std": cfg.std,
        "backbone": cfg.model.backbone,
        "protocol": "fast",
    });
    write_parquet(&features, &metadata.to_string(), &args.out)?;
    Ok(FeaturesReport {
        out: args.out.clone(),
        rows: features.indices.len(),
        dim: features.set.dim,
        side,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes `index`, `label` and `features` columns (see the module docs) to `path`, whole or
/// not at all.
pub fn write_parquet(
    features: &SelectedFeatures,
    metadata: &str,
    path: &Path,
) -> Result<(), ExportError> {
    let dim = features.set.dim;
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
        Field::new(
            "features",
            DataType::FixedSizeList(item.clone(), dim as i32),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            features.indices.iter().map(|&i| i as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            features.set.labels.iter().map(|&l| i64::from(l)),
        )),
        Arc::new(FixedSizeListArray::try_new(
            item,
            dim as i32,
            Arc::new(Float32Array::from(features.set.data.clone())),
            None,
        )?),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            METADATA_KEY.to_string(),
            metadata.to_string(),
        )]))
        .build();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|error| ExportError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let io = |error| ExportError::Io {
        path: path.to_path_buf(),
        error,
    };
    let parquet = |error| ExportError::Parquet {
        path: path.to_path_buf(),
        error,
    };
    let mut file = AtomicFile::create(path).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file.file(), schema, Some(props)).map_err(parquet)?;
    writer.write(&batch).map_err(parquet)?;
    writer.close().map_err(parquet)?;
    file.commit().map_err(io)
}
