//! [`ConfigError`], the one error type every configuration section reports:
//! the tracker's own keys, the frontends', and every hook's and store's
//! options. One type, so the binary prints them all the same way (file, full
//! dotted key, message) whichever crate found the problem.

/// A configuration problem: which key, and what is wrong with it.
///
/// `key` is the full dotted path (`chihaya.storage.config.gc_interval`); the
/// binary adds the file name when it reports the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Prefixes the key with the path of the section it was found in.
    pub fn within(mut self, section: &str) -> Self {
        self.key = join_key(section, &self.key);
        self
    }
}

/// `section.key`, or whichever of the two is not empty.
pub(crate) fn join_key(section: &str, key: &str) -> String {
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => section.to_owned(),
        _ => format!("{section}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_prefixes_the_section() {
        let e = ConfigError::new("max", "must be at least 1").within("chihaya.prehooks[0].options");
        assert_eq!(e.key, "chihaya.prehooks[0].options.max");
        assert_eq!(
            e.to_string(),
            "chihaya.prehooks[0].options.max: must be at least 1"
        );
        assert_eq!(ConfigError::new("", "m").within("s").key, "s");
        assert_eq!(ConfigError::new("k", "m").within("").key, "k");
    }
}
