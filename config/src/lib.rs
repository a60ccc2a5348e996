//! Site configuration for a dvipsec cluster.
//!
//! Owns the YAML schema that every box boots from (nodes, DVIPAs, IPsec policy, peers,
//! coupling facility, XCF link, lifesize reporting), the validation that goes beyond
//! types, and the resolved per-node view. Every error names `FILE:LINE:COLUMN`.
//! It does no I/O beyond reading the file and, only when asked, the secret sources
//! named in it; it never prints or logs a secret.
#![forbid(unsafe_code)]

mod check;
mod error;
mod located;
mod model;
mod operator;
#[cfg(test)]
mod roundtrip_tests;
mod secret;
mod validate;
mod values;
mod view;

use std::fmt;
use std::path::{Path, PathBuf};

pub use check::{check_site, Checked, EXIT_INVALID};
pub use error::{ConfigError, Family, Invalid, ValidationError};
pub use located::{Located, Position};
pub use model::*;
pub use operator::{
    default_control_socket, ControlConfig, LogLevel, LogModules, LoggingConfig, MetricsConfig,
    DEFAULT_CONTROL_DIR, MAX_SOCKET_PATH,
};
pub use secret::{Secret, SecretError};
pub use validate::{MAX_LEASE, RANK_RANGE, REPLAY_WINDOW_RANGE};
pub use values::{max_prefix_len, DestIp, IkeIdentity, IpNet, PortSet, Protocol, SecretSource};
pub use view::{BackedDvipa, BackupRef, NodeView, OwnedDvipa, PeerView, ServedDvipa};

/// Replay window of a protect entry that does not set one.
pub const DEFAULT_REPLAY_WINDOW: u32 = 128;

/// Where a configuration came from: the name used in messages, the directory that
/// relative secret paths are taken from, and the text (for error snippets).
/// Not part of the configuration's value: two configurations compare equal whatever
/// their origin.
#[derive(Clone, Default)]
pub(crate) struct Origin {
    file: String,
    base_dir: PathBuf,
    text: String,
}

impl PartialEq for Origin {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin").field("file", &self.file).finish()
    }
}

impl SiteConfig {
    /// Reads, parses and validates the file at `path`. Secrets are not read.
    pub fn load(path: impl AsRef<Path>) -> Result<SiteConfig, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut config = Self::from_str_named(&text, &file)?;
        config.origin.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    /// Parses and validates `text`; `name` is the file name used in messages, and its
    /// directory is where relative secret paths are looked up.
    pub fn from_str_named(text: &str, name: &str) -> Result<SiteConfig, ConfigError> {
        let config = Self::parse_named(text, name)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses `text` against the schema without the semantic rules.
    pub fn parse_named(text: &str, name: &str) -> Result<SiteConfig, ConfigError> {
        let mut config: SiteConfig =
            serde_saphyr::from_str(text).map_err(|err| syntax_error(name, text, &err))?;
        config.origin = Origin {
            file: name.to_owned(),
            base_dir: Path::new(name)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            text: text.to_owned(),
        };
        Ok(config)
    }

    /// Checks the rules that go beyond types. All findings are returned, sorted by
    /// position.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = validate::validate(self);
        if errors.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            file: self.origin.file.clone(),
            errors,
            source_text: if may_hold_inline_secret(&self.origin.text) {
                String::new()
            } else {
                self.origin.text.clone()
            },
        })
    }

    /// The file name this configuration was read from (empty if built in code).
    pub fn file_name(&self) -> &str {
        &self.origin.file
    }

    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|node| node.name.value == name)
    }

    /// The resolved view of the node called `name`.
    pub fn node_view(&self, name: &str) -> Result<NodeView, ConfigError> {
        let node = self.node(name).ok_or_else(|| ConfigError::NoSuchNode {
            file: self.origin.file.clone(),
            name: name.to_owned(),
        })?;
        Ok(view::node_view(self, node))
    }

    /// Views of every node, in file order.
    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|node| view::node_view(self, node))
            .collect()
    }

    /// The configuration as YAML (it parses back to an equal configuration).
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }

    /// Reads the PSK of the peer called `peer`.
    pub fn peer_psk(&self, peer: &str) -> Result<Secret, ConfigError> {
        let Some(config) = self.peers.iter().find(|p| p.name.value == peer) else {
            return Err(ConfigError::NoSuchPeer {
                file: self.origin.file.clone(),
                name: peer.to_owned(),
            });
        };
        self.read_secret(&config.psk, &format!("PSK of peer {peer}"))
    }

    /// Reads the XCF link key. `Ok(None)` when the site marks the link trusted, which
    /// carries messages in clear and so has no key.
    pub fn xcf_key(&self) -> Result<Option<Secret>, ConfigError> {
        match &self.xcf.security.value {
            XcfSecurity::Trusted => Ok(None),
            XcfSecurity::Protected(protection) => {
                self.read_secret(&protection.key, "XCF link key").map(Some)
            }
        }
    }

    /// Reads every secret that `node` needs (all of them when `node` is `None`) and
    /// drops them again: proof that they are available. Returns how many were read.
    pub fn check_secrets(&self, node: Option<&str>) -> Result<usize, ConfigError> {
        let peers: Vec<&PeerConfig> = match node {
            None => self.peers.iter().collect(),
            Some(name) => {
                let view = self.node_view(name)?;
                self.peers
                    .iter()
                    .filter(|p| view.peers.iter().any(|v| v.name == p.name.value))
                    .collect()
            }
        };
        let mut count = 0;
        for peer in peers {
            self.read_secret(&peer.psk, &format!("PSK of peer {}", peer.name.value))?;
            count += 1;
        }
        if self.xcf_key()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    fn read_secret(
        &self,
        source: &Located<SecretSource>,
        what: &str,
    ) -> Result<Secret, ConfigError> {
        source
            .read(&self.origin.base_dir)
            .map_err(|err| ConfigError::Secret {
                file: self.origin.file.clone(),
                at: source.at,
                what: what.to_owned(),
                source: err,
            })
    }
}

/// Turns a serde-saphyr error into one that names `FILE:LINE:COLUMN` and keeps its
/// snippet, unless the text may hold a secret written inline.
fn syntax_error(file: &str, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    use serde_saphyr::MessageFormatter;

    let at = err
        .location()
        .map(Position::from)
        .filter(Position::is_known)
        .unwrap_or(Position::new(1, 1));
    let message =
        sanitize(&serde_saphyr::DefaultMessageFormatter.format_message(err.without_snippet()));
    let snippet = if may_hold_inline_secret(text) {
        None
    } else {
        let rendered = err.render_with_options(serde_saphyr::render_options! {
            source_name: Some(file),
        });
        // The first line repeats the message; our headline replaces it.
        rendered
            .split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .filter(|rest| !rest.trim().is_empty())
    };
    ConfigError::Syntax {
        file: file.to_owned(),
        at,
        message,
        snippet,
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether a line of the text sets a secret-bearing key (`psk:` or `key:`) to
/// something other than an `env:` or `file:` source. Such text is never echoed.
fn may_hold_inline_secret(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        ["psk", "key"].iter().any(|key| {
            line.strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .map(|value| {
                    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                    !(value.is_empty()
                        || value.starts_with('#')
                        || value.starts_with("env:")
                        || value.starts_with("file:"))
                })
                .unwrap_or(false)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secret_detection() {
        assert!(may_hold_inline_secret("peers:\n  - psk: hunter2\n"));
        assert!(may_hold_inline_secret("    key: \"abc\"\n"));
        assert!(!may_hold_inline_secret("    psk: env:DVIPSEC_PSK\n"));
        assert!(!may_hold_inline_secret("    key: 'file:keys/xcf.key'\n"));
        assert!(!may_hold_inline_secret(
            "    protected:\n      key: file:k\n"
        ));
        assert!(!may_hold_inline_secret("    keys_dir: /x\n"));
    }
}
