//! `ssl-bench`: throughput of every stage.

pub mod pack;
