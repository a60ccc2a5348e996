//! Errors of loading and validating a site configuration. Each names the file, line and
//! column it is about, and renders with a source snippet.

use std::fmt;
use std::net::IpAddr;

use crate::located::Position;
use crate::secret::SecretError;

/// An address family, for messages about mixed families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// What went wrong when loading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse or did not fit the schema (unknown key, wrong type, ...).
    #[error("{file}:{at}: {message}")]
    Syntax {
        file: String,
        at: Position,
        message: String,
        /// serde-saphyr's snippet (without its headline), if it is safe to show.
        snippet: Option<String>,
    },
    /// The file parsed but breaks validation rules; `errors` is sorted by position and
    /// never empty.
    #[error("{}", headline(.file, .errors))]
    Invalid {
        file: String,
        errors: Vec<ValidationError>,
        source_text: String,
    },
    /// A secret named in the file could not be read.
    #[error("{file}:{at}: {what}: {source}")]
    Secret {
        file: String,
        at: Position,
        what: String,
        #[source]
        source: SecretError,
    },
    #[error("{file}: no node is named `{name}`")]
    NoSuchNode { file: String, name: String },
    #[error("{file}: no peer is named `{name}`")]
    NoSuchPeer { file: String, name: String },
}

fn headline(file: &str, errors: &[ValidationError]) -> String {
    match errors.first() {
        Some(first) => format!("{file}:{}: {}", first.at, first.kind),
        None => format!("{file}: invalid configuration"),
    }
}

impl ConfigError {
    /// The position of the (first) error, if it has one.
    pub fn position(&self) -> Option<Position> {
        match self {
            ConfigError::Syntax { at, .. } | ConfigError::Secret { at, .. } => Some(*at),
            ConfigError::Invalid { errors, .. } => errors.first().map(|e| e.at),
            _ => None,
        }
    }

    /// The full report for a terminal: every error as `FILE:LINE:COLUMN: message`
    /// followed by a snippet of the source.
    pub fn render(&self) -> String {
        match self {
            ConfigError::Syntax {
                file,
                at,
                message,
                snippet,
            } => {
                let mut out = format!("{file}:{at}: {message}\n");
                if let Some(snippet) = snippet {
                    out.push_str(snippet);
                    if !snippet.ends_with('\n') {
                        out.push('\n');
                    }
                }
                out
            }
            ConfigError::Invalid {
                file,
                errors,
                source_text,
            } => errors
                .iter()
                .map(|error| error.render(file, source_text))
                .collect(),
            other => format!("{other}\n"),
        }
    }
}

/// One broken rule, at the position of the offending value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    pub at: Position,
    pub kind: Invalid,
}

impl ValidationError {
    fn render(&self, file: &str, source_text: &str) -> String {
        let mut out = format!("{file}:{}: {}\n", self.at, self.kind);
        out.push_str(&snippet(file, source_text, self.at, &self.kind.to_string()));
        out
    }
}

/// A small source excerpt with a caret under `at`, in the style serde-saphyr uses.
fn snippet(file: &str, source_text: &str, at: Position, label: &str) -> String {
    let Ok(line_index) = usize::try_from(at.line) else {
        return String::new();
    };
    if line_index == 0 {
        return String::new();
    }
    let lines: Vec<&str> = source_text.lines().collect();
    let Some(line) = lines.get(line_index - 1) else {
        return String::new();
    };
    let width = line_index.to_string().len();
    let pad = " ".repeat(width);
    let mut out = format!("{pad}--> {file}:{at}\n{pad} |\n");
    if line_index >= 2 {
        if let Some(previous) = lines.get(line_index - 2) {
            out.push_str(&format!("{:>width$} | {previous}\n", line_index - 1));
        }
    }
    out.push_str(&format!("{line_index:>width$} | {line}\n"));
    let caret_offset = usize::try_from(at.column.saturating_sub(1)).unwrap_or(0);
    out.push_str(&format!(
        "{pad} | {}^ {label}\n",
        " ".repeat(caret_offset.min(line.chars().count()))
    ));
    out
}

/// The validation rules, one variant per way to break them. Messages say what was
/// expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("{context} names node `{name}`, but no node has that name")]
    UnknownNode { name: String, context: &'static str },
    #[error("DESTIP {addr} is not the XCF address of any node")]
    UnknownXcfAddress { addr: IpAddr },
    #[error("DESTIP `ALL` must stand alone: write `destip: ALL` instead of a list")]
    DestIpAllInList,
    #[error("{what} is empty: expected at least one entry")]
    EmptyList { what: &'static str },
    #[error("DESTIP ALL of {dvipa} matches no node with the target capability")]
    NoTargets { dvipa: String },
    #[error("rank {rank} is out of range: expected 1..=254")]
    RankOutOfRange { rank: u32 },
    #[error(
        "rank {rank} is used twice for {dvipa} (first at {first}): ranks must be unique per DVIPA"
    )]
    DuplicateRank {
        rank: u32,
        dvipa: String,
        first: Position,
    },
    #[error("port {port} is not valid: expected 1..=65535")]
    InvalidPort { port: u32 },
    #[error("port {port} is listed twice (first at {first})")]
    DuplicatePort { port: u32, first: Position },
    #[error("{dvipa} has the address {address}, already defined for {first_dvipa} owned by {first_owner} (at {first}): a DVIPA has one primary")]
    TwoPrimaries {
        dvipa: String,
        address: IpAddr,
        first_dvipa: String,
        first_owner: String,
        first: Position,
    },
    #[error("{role} {node} of {dvipa} cannot act as a distributor: add `distributor` to its capabilities")]
    NotDistributor {
        role: &'static str,
        node: String,
        dvipa: String,
    },
    #[error("{role} {node} of {dvipa} does not run IKE, but {dvipa} has protect entries: add `ike` to its capabilities")]
    NoIke {
        role: &'static str,
        node: String,
        dvipa: String,
    },
    #[error("DESTIP of {dvipa} lists {node}, which lacks the `target` capability")]
    NotTarget { node: String, dvipa: String },
    #[error("{what} is {found}, but expected {expected} like {reference}")]
    FamilyMismatch {
        what: &'static str,
        found: Family,
        expected: Family,
        reference: String,
    },
    #[error("prefix length {prefix_len} is too long for an {family} address: expected 0..={max}")]
    PrefixTooLong {
        prefix_len: u8,
        family: Family,
        max: u8,
    },
    #[error("soft {kind} limit {soft} must be below the hard limit {hard}")]
    SoftNotBelowHard {
        kind: &'static str,
        soft: u64,
        hard: u64,
    },
    #[error("{what} must be greater than 0")]
    Zero { what: &'static str },
    #[error("{kind} `{name}` is defined twice (first at {first}): names must be unique")]
    DuplicateName {
        kind: &'static str,
        name: String,
        first: Position,
    },
    #[error("{kind} name `{name}` is not valid: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("{node} owns {dvipa} and cannot also be its backup")]
    BackupIsOwner { node: String, dvipa: String },
    #[error("{node} is listed twice as a backup of {dvipa} (first at {first})")]
    DuplicateBackup {
        node: String,
        dvipa: String,
        first: Position,
    },
    #[error("replay window {window} is out of range: expected 32..=4096")]
    ReplayWindowOutOfRange { window: u32 },
    #[error("SPD entry {entry} protects traffic but has no `{field}`")]
    ProtectNeeds { entry: String, field: &'static str },
    #[error("`{field}` only applies to protect entries, and {entry} is a {action} entry")]
    OnlyForProtect {
        entry: String,
        field: &'static str,
        action: &'static str,
    },
    #[error("SPD entry {entry} names peer `{name}`, but no peer has that name")]
    UnknownPeer { entry: String, name: String },
    #[error("ah-sha256 cannot be mixed with ESP proposals in one SPD entry")]
    MixedAhEsp,
    #[error("proposal {proposal} is listed twice")]
    DuplicateProposal { proposal: String },
    #[error("port selectors need protocol tcp, udp or sctp, not {protocol}")]
    PortsWithoutPortProtocol { protocol: String },
    #[error("a {driver} port needs `{field}`")]
    DriverNeeds {
        driver: &'static str,
        field: &'static str,
    },
    #[error("`{field}` does not apply to a {driver} port")]
    DriverRejects {
        driver: &'static str,
        field: &'static str,
    },
    #[error("XCF address {addr} is already used by {first_node}: XCF addresses must be unique")]
    DuplicateXcfAddress { addr: IpAddr, first_node: String },
    #[error("polling core {core} is listed twice (first at {first})")]
    DuplicateCore { core: u32, first: Position },
    #[error("shared-memory path {path} must be absolute")]
    RelativeShmPath { path: String },
    #[error("lease max {max} is too large: expected 1..=1024 so that peers' replay windows hold")]
    LeaseTooLarge { max: u32 },
    #[error("`take_back` with `moveable: when_idle` is not supported: the owner cannot tell when the backup is idle; use `moveable: immediate` or leave `take_back` out")]
    TakeBackWhenIdle,
    #[error("takeover timeout {takeover_ms} ms must be at least twice the heartbeat interval {heartbeat_ms} ms")]
    TakeoverTooShort { takeover_ms: u32, heartbeat_ms: u32 },
    #[error("lifesize percentages must satisfy 1 <= min ({min}) <= threshold ({threshold}) <= max ({max}) <= 100")]
    LifesizeBounds { min: u8, threshold: u8, max: u8 },
    #[error("{dvipa} address {address} lies inside VIPARANGE {range}: a defined DVIPA must not overlap a range")]
    DvipaInRange {
        dvipa: String,
        address: IpAddr,
        range: String,
    },
    #[error("VIPARANGE {range} overlaps VIPARANGE {other} (at {first})")]
    RangesOverlap {
        range: String,
        other: String,
        first: Position,
    },
    #[error("`certificate` and `ca` go together: give both or neither")]
    CertificateWithoutCa,
    #[error("crypto provider cryptodev needs {what}")]
    CryptodevNeeds { what: &'static str },
    #[error("control socket path {path} must be absolute")]
    RelativeSocketPath { path: String },
    #[error(
        "control socket path {path} is {len} bytes long: a Unix socket address holds at most {max}"
    )]
    SocketPathTooLong {
        path: String,
        len: usize,
        max: usize,
    },
}
