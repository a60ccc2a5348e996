//! The operator-facing parts of the schema: each node's control socket and metrics
//! endpoint, and the site's log levels.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::located::Located;

/// Directory of the control sockets of nodes that do not set one.
pub const DEFAULT_CONTROL_DIR: &str = "/run/dvipsec";

/// Longest socket path a Unix domain socket address holds (`sun_path` is 108 bytes on
/// Linux, one of them the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The default control socket of the node called `node`.
pub fn default_control_socket(node: &str) -> PathBuf {
    Path::new(DEFAULT_CONTROL_DIR).join(format!("{node}.sock"))
}

/// A node's control socket (`control: { socket: PATH }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Absolute path of the Unix domain socket.
    pub socket: Located<PathBuf>,
}

/// A node's Prometheus endpoint (`metrics: { listen: ADDR:PORT }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Located<SocketAddr>,
}

/// Site-wide log levels: one default and overrides per module path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub level: Located<LogLevel>,
    #[serde(default)]
    pub modules: LogModules,
}

/// A tracing level; `off` silences a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level's name as tracing's filter syntax spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Module paths (`dvipsec_ike`, `dvipsec::security`) and their levels, in file order.
/// Kept as a list rather than a map so that each name keeps its position for errors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogModules(pub Vec<(Located<String>, Located<LogLevel>)>);

impl LogModules {
    pub fn iter(&self) -> impl Iterator<Item = (&str, LogLevel)> {
        self.0
            .iter()
            .map(|(name, level)| (name.value.as_str(), level.value))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for LogModules {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, level) in &self.0 {
            map.serialize_entry(&name.value, &level.value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LogModules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ModulesVisitor)
    }
}

struct ModulesVisitor;

impl<'de> Visitor<'de> for ModulesVisitor {
    type Value = LogModules;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map from module paths to log levels")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<LogModules, A::Error> {
        let mut entries = Vec::new();
        while let Some((name, level)) = access.next_entry()? {
            entries.push((name, level));
        }
        Ok(LogModules(entries))
    }
}

/// Why a module path is not one: `None` when it is `ident(::ident)*`, with identifiers
/// as Rust spells them (tracing targets are module paths).
pub(crate) fn module_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    for segment in path.split("::") {
        let mut chars = segment.chars();
        match chars.next() {
            None => return Some("a `::` separates two identifiers"),
            Some(first) if !(first.is_ascii_alphabetic() || first == '_') => {
                return Some("each segment starts with a letter or `_`")
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some("use letters, digits and `_`, with `::` between segments");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths() {
        for good in ["dvipsec_ike", "dvipsec::security", "_x", "a1::b_2::c"] {
            assert_eq!(module_path_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "dvipsec-ike",
            "1abc",
            "a::",
            "::a",
            "a:::b",
            "a b",
            "a.b",
        ] {
            assert!(module_path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn default_socket_is_under_run() {
        assert_eq!(
            default_control_socket("MVS1"),
            PathBuf::from("/run/dvipsec/MVS1.sock")
        );
    }
}
