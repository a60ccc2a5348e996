//! Source positions carried next to parsed values, so that semantic validation can
//! point at the exact place in the YAML file.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 1-based line and column in the YAML source (columns count characters).
///
/// `Position::UNKNOWN` (0:0) marks values that were built in code rather than parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub const UNKNOWN: Position = Position { line: 0, column: 0 };

    pub fn new(line: u64, column: u64) -> Self {
        Position { line, column }
    }

    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<serde_saphyr::Location> for Position {
    fn from(location: serde_saphyr::Location) -> Self {
        Position::new(location.line(), location.column())
    }
}

/// A value together with the position it was read from.
///
/// Equality and hashing look at the value only: a configuration that was serialized
/// and parsed again is equal to the original even though its positions moved.
/// Serialization writes the bare value.
#[derive(Clone, Default)]
pub struct Located<T> {
    pub value: T,
    pub at: Position,
}

impl<T> Located<T> {
    /// A value built in code, with no source position.
    pub fn new(value: T) -> Self {
        Located {
            value,
            at: Position::UNKNOWN,
        }
    }

    pub fn at(value: T, at: Position) -> Self {
        Located { value, at }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Located<T> {}

impl<T: fmt::Debug> fmt::Debug for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            at: spanned.referenced.into(),
        })
    }
}
