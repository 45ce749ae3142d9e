//! sslfast: fast multi-view self-supervised vision pretraining.
//!
//! Data flows `pack` (datasets into checksummed shards) -> `shard` (schema, manifest, reader) ->
//! loader -> trainer -> evaluation; see DESIGN.md in the shared folder for the whole map.

pub mod allocator;
pub mod atomic_file;
pub mod bench;
pub mod cli;
pub mod collective;
pub mod config;
pub mod dist;
pub mod eval;
pub mod loader;
pub mod loss;
pub mod model;
pub mod pack;
pub mod plot;
pub mod shard;
pub mod sweep;
pub mod train;
