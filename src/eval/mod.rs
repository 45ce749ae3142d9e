//! Evaluation of pretrained backbones: feature extraction and kNN accuracy (used by `ssl-train`
//! for monitoring).

pub mod features;
pub mod knn;
