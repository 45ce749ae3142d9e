//! `ssl-train --dump-batches DIR`: writes the batches a run would train on, and its initial
//! weights, without training, so that another trainer (`tools/reference_torch.py
//! --batches-from DIR --init-from DIR/init.safetensors`) can train on exactly our data and start
//! from exactly our weights. Layout: `epoch-E/batch-NNNNN-gG.npy` (u8 `[V * B, 3, S, S]`, one
//! file per resolution group, NumPy's format) and `init.safetensors`.

use std::io::Write;
use std::path::Path;

use super::{io, setup, steps_per_epoch, Run, TrainError};
use crate::atomic_file::AtomicFile;
use crate::loader::Cursor;

pub const INIT_FILE: &str = "init.safetensors";

/// Writes the first `epochs` epochs of `run`'s batches (at most `max_steps_per_epoch` per epoch
/// when set) and the seeded initial weights into `dir`; returns the number of batches.
pub fn dump_batches(run: &Run, dir: &Path, epochs: u64) -> Result<usize, TrainError> {
    let s = setup(run, &super::Replicas::default())?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    s.varmap.save(dir.join(INIT_FILE))?;
    let per_epoch = steps_per_epoch(&run.config, &s.loader);
    let mut written = 0;
    for epoch in 0..epochs {
        let folder = dir.join(format!("epoch-{epoch}"));
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let batches = s.loader.iter_from(Cursor {
            epoch,
            batches_done: 0,
        })?;
        for batch in batches.take(per_epoch) {
            let batch = batch?;
            for (g, group) in batch.groups.iter().enumerate() {
                let side = group.side as usize;
                let path = folder.join(format!("batch-{:05}-g{g}.npy", batch.number));
                let shape = [group.views * group.batch, 3, side, side];
                write_npy_u8(&path, &shape, &group.data).map_err(io(&path))?;
            }
            written += 1;
        }
    }
    Ok(written)
}

/// A u8 array in NumPy's `.npy` format (version 1.0), written to a temporary name then renamed.
fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    // The magic (6), version (2) and length (2) bytes plus the header end on a 64-byte boundary.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut f = AtomicFile::create(path)?;
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_names_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy_u8(&path, &[2, 3, 1, 1], &[1, 2, 3, 4, 5, 6]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (2, 3, 1, 1,)"), "{header}");
        assert_eq!(&bytes[10 + len..], &[1, 2, 3, 4, 5, 6]);
    }
}
