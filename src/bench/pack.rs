//! `ssl-bench pack`: images/s of `ssl-pack write` on a given source, into a temporary directory.

use crate::config::PackConfig;
use crate::pack::{write_dataset, PackError, PackSummary};

/// Packs `cfg.source` `repeats` times into fresh temporary directories and returns the summary
/// of the fastest run (the others warm the page cache).
pub fn bench_pack(cfg: &PackConfig, repeats: usize) -> Result<PackSummary, PackError> {
    let mut best: Option<PackSummary> = None;
    for _ in 0..repeats.max(1) {
        let tmp = tempdir()?;
        let mut run = cfg.clone();
        run.out = tmp.join("out");
        run.overwrite = false;
        let summary = write_dataset(&run);
        let _ = std::fs::remove_dir_all(&tmp);
        let summary = summary?;
        if best.as_ref().is_none_or(|b| summary.seconds < b.seconds) {
            best = Some(summary);
        }
    }
    Ok(best.expect("at least one run"))
}

fn tempdir() -> Result<std::path::PathBuf, PackError> {
    let dir = std::env::temp_dir().join(format!("ssl-bench-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(PackError::io(&dir))?;
    Ok(dir)
}
