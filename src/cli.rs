//! What the binaries share in reporting to the user.

/// `err` and its causes as one line, like anyhow's `{:#}`, but without a cause that the
/// message before it already ends with: our error types name their source in their own
/// message ("{path}: {source}") and also return it as `source()`, which `{:#}` printed twice.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if message.is_empty() {
            message = cause;
        } else if !message.ends_with(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let named = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "a.toml".into(),
            error: io,
        });
        assert_eq!(error_message(&named), "a.toml: gone");
        let wrapped = named.context("loading config");
        assert_eq!(error_message(&wrapped), "loading config: a.toml: gone");
    }
}
