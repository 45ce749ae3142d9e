//! The staging directory of `ssl-pack write` and `ssl-pack export`: the output is written beside
//! OUT under a hidden name that carries the writer's PID, and renamed into place only when
//! complete. Staging directories whose process is gone are removed by the next writer into the
//! same place. Errors carry the path they concern; callers wrap them in their own error type.

use std::fs;
use std::path::{Path, PathBuf};

/// An I/O error and the path it happened on.
pub type StagingError = (PathBuf, std::io::Error);

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> StagingError {
    let path = path.to_path_buf();
    move |e| (path, e)
}

/// Staging directories (and their `.old` twins) of packs into `parent/name` whose process is
/// gone (killed, or the machine went down): nothing will ever finish them.
fn remove_abandoned(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.strip_suffix(".old").unwrap_or(rest);
        if pid.parse::<u32>().is_ok_and(|pid| !process_alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let status = unsafe { libc::kill(pid, 0) };
        status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        // Without a way to ask, keep everything: a live pack must never lose its staging.
        let _ = pid;
        true
    }
}

/// The directory a dataset is written into before it is renamed to its final name.
/// Dropped without `commit`, it removes itself, so errors and panics leave nothing behind.
pub struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn create(out: &Path) -> Result<Self, StagingError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into());
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(at(parent))?;
        remove_abandoned(parent, &name);
        let path = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(at(&path))?;
        }
        fs::create_dir(&path).map_err(at(&path))?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the finished dataset to `out`, replacing what `check_output` allowed to replace.
    pub fn commit(mut self, out: &Path) -> Result<(), StagingError> {
        if out.exists() {
            let old = self.path.with_extension("old");
            fs::rename(out, &old).map_err(at(out))?;
            if let Err(e) = fs::rename(&self.path, out) {
                // Put the old dataset back rather than leave `out` empty.
                let _ = fs::rename(&old, out);
                return Err(at(out)(e));
            }
            // The new dataset is in place; a leftover copy of the old one is only clutter.
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.path, out).map_err(at(out))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
