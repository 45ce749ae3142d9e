//! `ssl-bench`: throughput of every stage.

pub mod dist;
pub mod loader;
pub mod loss;
pub mod pack;
pub mod step;
