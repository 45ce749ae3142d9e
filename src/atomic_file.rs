//! Files that readers must see whole or not at all (manifests, configs, metrics, evaluations,
//! plots, features): written under a temporary name beside the target, synced, then renamed
//! over it. An error or a kill midway leaves the old file, if any, where it was; a temporary
//! file dropped before `commit` is removed (tempfile's `NamedTempFile`), and one a kill leaves
//! behind is named `.<file>.<random>.partial`, hidden and never taken for the real file.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Replaces `path` with `contents`, whole or not at all.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(contents.as_ref())?;
    file.commit()
}

/// A file being written in place of `path`; `path` changes only on [`AtomicFile::commit`].
pub struct AtomicFile {
    temp: NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// A new, empty temporary file in `path`'s directory (a rename is atomic only within one
    /// file system).
    pub fn create(path: &Path) -> io::Result<Self> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // A temporary file is private (0600) by default; the file it becomes is an ordinary
        // output, readable as the umask allows, like one `fs::write` creates.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        // tempfile's error names the temporary file, which never existed or is gone; the caller
        // names `path`.
        let temp = builder.tempfile_in(dir).map_err(without_temp_path)?;
        Ok(Self {
            temp,
            path: path.to_path_buf(),
        })
    }

    /// The temporary file's path, for encoders that open a path themselves.
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// The temporary file, for encoders that take a `File` rather than any `Write`.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Syncs the temporary file and renames it over `path`.
    pub fn commit(self) -> io::Result<()> {
        // An encoder given `temp_path` may have replaced the file with one of its own, private
        // (safetensors writes a 0600 file and renames it): the permissions of the file we
        // created, and the sync, go to whatever is at the path now.
        let permissions = self.temp.as_file().metadata()?.permissions();
        std::fs::set_permissions(self.temp.path(), permissions)?;
        File::open(self.temp.path())?.sync_all()?;
        self.temp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// tempfile appends ` at path "<temporary name>"` to the OS error and keeps no other handle
/// on it; the error's kind and the OS message stay.
fn without_temp_path(error: io::Error) -> io::Error {
    let message = error.to_string();
    match message.split_once(" at path ") {
        Some((os_message, _)) => io::Error::new(error.kind(), os_message),
        None => error,
    }
}

impl Write for AtomicFile {
    // Through the File: NamedTempFile's own Write adds the temporary name to every error.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.as_file_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.as_file_mut().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(names(dir.path()), ["eval.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_as_readable_as_one_fs_write_creates() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("a"), dir.path().join("b"));
        write(&ours, "x").unwrap();
        std::fs::write(&plain, "x").unwrap();
        let mode = |p: &Path| p.metadata().unwrap().permissions().mode();
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn a_file_dropped_before_commit_keeps_the_old_one_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        std::fs::write(&path, "old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half a man").unwrap();
        assert_eq!(names(dir.path()).len(), 2);
        assert!(names(dir.path())[0].starts_with(".manifest.json."));
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["manifest.json"]);
    }

    #[test]
    fn an_encoder_may_write_through_the_temporary_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.safetensors");
        let file = AtomicFile::create(&path).unwrap();
        std::fs::write(file.temp_path(), "by path").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "by path");
    }

    #[test]
    fn writing_into_a_missing_directory_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("x.json");
        let error = write(&path, "x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        // The caller names `path`; a temporary name in the message would only mislead.
        assert!(!error.to_string().contains("partial"), "{error}");
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_an_encoder_replaced_gets_the_permissions_of_ours() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, plain) = (dir.path().join("model.safetensors"), dir.path().join("b"));
        std::fs::write(&plain, "x").unwrap();
        let file = AtomicFile::create(&path).unwrap();
        // As safetensors does: its own private file renamed over the path it was given.
        let private = dir.path().join("private");
        std::fs::write(&private, "weights").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&private, file.temp_path()).unwrap();
        file.commit().unwrap();
        let mode = |p: &Path| p.metadata().unwrap().permissions().mode();
        assert_eq!(mode(&path), mode(&plain));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "weights");
    }
}
