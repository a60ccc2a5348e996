//! Secrets (PSKs, XCF link keys) read from the sources a configuration names.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::values::SecretSource;

/// Secret bytes, wiped from memory on drop. `Debug` shows only the length class, never
/// the bytes, and there is deliberately no `Display` or `Serialize`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read. Never carries the secret or its file contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("cannot read secret file {path}: {source}")]
    FileUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret from {source_name} is empty")]
    Empty { source_name: String },
}

impl SecretSource {
    /// Reads the secret. A relative file path is taken relative to `base_dir` (the
    /// directory of the YAML file). One trailing line break of a file is dropped.
    pub fn read(&self, base_dir: &Path) -> Result<Secret, SecretError> {
        let bytes = match self {
            SecretSource::Env(name) => read_env(name)?,
            SecretSource::File(path) => read_file(&base_dir.join(path))?,
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty {
                source_name: self.to_string(),
            });
        }
        Ok(Secret(bytes))
    }
}

fn read_env(name: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    match std::env::var(name) {
        Ok(text) => Ok(Zeroizing::new(text.into_bytes())),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
            name: name.to_owned(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
            name: name.to_owned(),
        }),
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut bytes =
        Zeroizing::new(
            std::fs::read(path).map_err(|source| SecretError::FileUnreadable {
                path: path.display().to_string(),
                source,
            })?,
        );
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret(Zeroizing::new(b"correct horse battery".to_vec()));
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("correct"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn file_secret_is_read_relative_to_base_dir_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.psk"), b"s3cret-value\n").unwrap();
        let source: SecretSource = "file:k.psk".parse().unwrap();
        let secret = source.read(dir.path()).unwrap();
        assert_eq!(secret.expose(), b"s3cret-value");
    }

    #[test]
    fn missing_and_empty_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.psk"), b"\n").unwrap();
        let empty: SecretSource = "file:empty.psk".parse().unwrap();
        assert!(matches!(
            empty.read(dir.path()),
            Err(SecretError::Empty { .. })
        ));
        let absent: SecretSource = "file:nope.psk".parse().unwrap();
        assert!(matches!(
            absent.read(dir.path()),
            Err(SecretError::FileUnreadable { .. })
        ));
        let env: SecretSource = "env:DVIPSEC_TEST_SURELY_UNSET_VARIABLE".parse().unwrap();
        assert!(matches!(
            env.read(dir.path()),
            Err(SecretError::EnvMissing { .. })
        ));
    }
}
