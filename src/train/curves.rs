//! `curves.png` in a run directory, redrawn after every epoch from `metrics.jsonl`: the mean
//! training loss and the monitor's kNN top-1 per epoch, and kNN against training wall time
//! (the sum of the epochs' training seconds, evaluation excluded).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{metrics, TrainError};
use crate::plot::{draw_png, Panel, Series};

pub const CURVES_FILE: &str = "curves.png";

/// What `metrics.jsonl` says of one epoch (epoch 0: the randomly initialised network).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochRecord {
    /// Mean training loss.
    pub loss: Option<f64>,
    /// Training seconds of this epoch, evaluation excluded.
    pub seconds: Option<f64>,
    pub knn_top1: Option<f64>,
}

/// Every epoch's record, the last of each epoch winning (a resume after a crash may have
/// written one twice).
pub fn epochs(records: &[Value]) -> BTreeMap<u64, EpochRecord> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["kind"] == "epoch") {
        if let Some(epoch) = r["epoch"].as_u64() {
            let record = EpochRecord {
                loss: r["loss"].as_f64(),
                seconds: r["seconds"].as_f64(),
                knn_top1: r["knn_top1"].as_f64(),
            };
            out.insert(epoch, record);
        }
    }
    out
}

/// Draws the run's curves into `run/curves.png`.
pub fn draw(run: &Path) -> Result<(), TrainError> {
    let epochs = epochs(&metrics::read(run)?);
    let (mut loss, mut knn, mut knn_time) = (Vec::new(), Vec::new(), Vec::new());
    let mut wall = 0.0;
    for (&epoch, record) in &epochs {
        wall += record.seconds.unwrap_or(0.0);
        if let Some(l) = record.loss {
            loss.push((epoch as f64, l));
        }
        if let Some(acc) = record.knn_top1 {
            knn.push((epoch as f64, 100.0 * acc));
            knn_time.push((wall, 100.0 * acc));
        }
    }
    let one = |points| {
        vec![Series {
            name: String::new(),
            points,
        }]
    };
    let panels = [
        Panel {
            title: "training loss".into(),
            x_label: "epoch".into(),
            y_label: "mean loss".into(),
            series: one(loss),
            log_x: false,
        },
        Panel {
            title: "kNN top-1".into(),
            x_label: "epoch".into(),
            y_label: "%".into(),
            series: one(knn),
            log_x: false,
        },
        Panel {
            title: "kNN top-1 against time".into(),
            x_label: "training seconds".into(),
            y_label: "%".into(),
            series: one(knn_time),
            log_x: false,
        },
    ];
    draw_png(&run.join(CURVES_FILE), &panels).map_err(|e| TrainError::Plot(Box::new(e)))
}
