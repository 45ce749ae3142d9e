//! What the binaries share in reporting to the user.

/// Lets a closed stdout end the process quietly, as it ends `ls` or `grep`: Rust ignores
/// SIGPIPE, so `ssl-pack inspect D | head -1` would otherwise panic in `println!`. Every
/// binary calls this first.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `err` and its causes as one line, like anyhow's `{:#}`. Our error types name their cause in
/// their own message ("{path}: {error}") and so do not also return it as `source()`: each cause
/// appears once.
pub fn error_message(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_appears_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let named = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "a.toml".into(),
            error: io,
        });
        assert_eq!(error_message(&named), "a.toml: gone");
        let wrapped = named.context("loading config");
        assert_eq!(error_message(&wrapped), "loading config: a.toml: gone");
        let shard = crate::shard::ShardError::io("s.parquet")(std::io::Error::other("short read"));
        let loader = crate::loader::LoaderError::from(shard);
        let message = error_message(&anyhow::Error::new(loader).context("training failed"));
        assert_eq!(message, "training failed: s.parquet: short read");
    }
}
