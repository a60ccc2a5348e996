//! The schema of a site configuration file: one YAML document for the whole cluster.
//!
//! The names follow the seed's definitions where it has them: VIPADEFINE becomes a
//! DVIPA's `define`, VIPADISTRIBUTE its `distribute`, VIPABACKUP its `backups`, and
//! VIPARANGE the top-level `vipa_ranges`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::located::Located;
use crate::operator::{ControlConfig, LoggingConfig, MetricsConfig};
use crate::values::{DestIp, IkeIdentity, IpNet, PortSet, Protocol, SecretSource};

/// The whole site. Every box boots from the same file and finds its part by node name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// A name for the site, used in logs and reports.
    pub site: Located<String>,
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub dvipas: Vec<DvipaConfig>,
    #[serde(default)]
    pub vipa_ranges: Vec<VipaRange>,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    pub coupling_facility: CouplingFacility,
    pub xcf: XcfLink,
    #[serde(default)]
    pub lifesize: Lifesize,
    /// Log levels of every box; absent means `info` everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingConfig>,
    /// Where the file was read from; not part of the schema.
    #[serde(skip)]
    pub(crate) origin: crate::Origin,
}

/// One box (one protocol stack in the seed's words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: Located<String>,
    pub capabilities: Located<Vec<Located<Capability>>>,
    /// XCF addresses of this node (the seed's XCF1, XCF2, ...).
    pub xcf: Located<Vec<Located<IpAddr>>>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// CPU cores that poll this node's ports.
    #[serde(default)]
    pub polling_cores: Vec<Located<u32>>,
    /// The control socket; absent means `/run/dvipsec/NAME.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlConfig>,
    /// The Prometheus endpoint; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Who runs the ESP ciphers of this node's data plane; absent means software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<CryptoConfig>,
}

/// The ESP cipher engine of a node (`crypto: { provider: cryptodev, device: NAME }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoConfig {
    pub provider: Located<CryptoProvider>,
    /// The DPDK crypto device (`crypto_aesni_gcm0`, a QAT device), for `cryptodev`. A vdev
    /// must also be created through the EAL arguments of one of the node's DPDK ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Located<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoProvider {
    /// aws-lc-rs in the polling thread.
    Software,
    /// A DPDK cryptodev (needs a build with the `dpdk` feature and a DPDK port on the node).
    Cryptodev,
}

impl NodeConfig {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.iter().any(|c| c.value == capability)
    }

    /// The control socket path, the default one when the file sets none.
    pub fn control_socket(&self) -> PathBuf {
        self.control.as_ref().map_or_else(
            || crate::operator::default_control_socket(&self.name),
            |control| control.socket.value.clone(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Can own a DVIPA and distribute its traffic (a routing stack).
    #[serde(alias = "routing")]
    Distributor,
    /// Can serve a DVIPA: shadow SAs, decap of forwarded ESP, outbound ESP.
    Target,
    /// Runs IKEv2.
    Ike,
}

/// A data-plane port of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: Located<String>,
    pub driver: Located<PortDriver>,
    /// Network interface, for `af_packet` and `af_xdp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<Located<String>>,
    /// Queue id, for `af_xdp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Located<u32>>,
    /// EAL arguments, for `dpdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eal_args: Option<Located<Vec<String>>>,
    /// Virtual devices (`--vdev` values), for `dpdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdevs: Option<Located<Vec<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortDriver {
    /// In-memory port (tests and the embedded demo).
    Mem,
    AfPacket,
    AfXdp,
    Dpdk,
}

/// A dynamic VIPA: its VIPADEFINE, owner, VIPADISTRIBUTE, backups and IPsec policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DvipaConfig {
    pub name: Located<String>,
    pub define: VipaDefine,
    /// The routing node that owns the DVIPA (its primary).
    pub owner: Located<String>,
    /// How the owner spreads connections; absent means the owner serves alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<VipaDistribute>,
    /// Backup owners; a higher rank takes over first.
    #[serde(default)]
    pub backups: Vec<VipaBackup>,
    /// SPD entries for traffic to and from this DVIPA, in match order.
    #[serde(default)]
    pub policy: Vec<SpdEntry>,
}

/// VIPADEFINE: the address, its mask as a prefix length, and how it moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipaDefine {
    pub address: Located<IpAddr>,
    pub prefix_len: Located<u8>,
    #[serde(default)]
    pub moveable: Located<Moveable>,
    /// Whether the owner, once it is back, moves the DVIPA home from the backup that took it
    /// over (a planned move: the connections are rebuilt from the targets' reports). Absent:
    /// it does not, and `dvipsecctl takeover` moves it on purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_back: Option<Located<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moveable {
    /// MOVEABLE IMMEDIATE: with `take_back`, the returning owner moves the DVIPA home at once.
    #[default]
    Immediate,
    /// MOVEABLE WHENIDLE: the owner would wait until the backup has no connections left. The
    /// firmware does not track that, so validation refuses it together with `take_back`.
    WhenIdle,
}

/// VIPADISTRIBUTE: the ports that are distributed and the DESTIP targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipaDistribute {
    pub ports: Located<PortSet>,
    pub destip: Located<DestIp>,
}

/// VIPABACKUP: a node that takes the DVIPA over, with its own distribution once it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipaBackup {
    pub node: Located<String>,
    /// 1..=254; a higher rank takes over first.
    pub rank: Located<u32>,
    /// The backup's VIPADISTRIBUTE; absent means it uses the owner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<VipaDistribute>,
}

/// VIPARANGE: addresses that applications on the listed nodes may activate as DVIPAs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipaRange {
    pub network: Located<IpNet>,
    #[serde(default)]
    pub moveable: Located<RangeMoveable>,
    pub nodes: Located<Vec<Located<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeMoveable {
    #[default]
    NonDisruptive,
    Disruptive,
}

/// One security policy database entry of a DVIPA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdEntry {
    pub name: Located<String>,
    /// Local address selector; absent means the DVIPA itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Located<IpNet>>,
    pub remote: Located<IpNet>,
    #[serde(default)]
    pub protocol: Located<Protocol>,
    #[serde(default)]
    pub local_ports: Located<PortSet>,
    #[serde(default)]
    pub remote_ports: Located<PortSet>,
    pub action: Located<Action>,
    /// The IKE peer that protects this traffic (protect entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Located<Mode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposals: Option<Located<Vec<Located<Proposal>>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<Located<u32>>,
    #[serde(default)]
    pub esn: Located<bool>,
    /// Log packets that match this entry.
    #[serde(default)]
    pub log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Protect,
    Bypass,
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Transport,
    Tunnel,
}

/// An ESP or AH transform, named as strongSwan names its proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Proposal {
    #[serde(rename = "aes128gcm16")]
    Aes128Gcm16,
    #[serde(rename = "aes256gcm16")]
    Aes256Gcm16,
    #[serde(rename = "chacha20poly1305")]
    Chacha20Poly1305,
    #[serde(rename = "aes128cbc-sha256")]
    Aes128CbcSha256,
    #[serde(rename = "aes256cbc-sha256")]
    Aes256CbcSha256,
    /// ESP without encryption, integrity by HMAC-SHA-256 (RFC 2410).
    #[serde(rename = "null-sha256")]
    NullSha256,
    /// AH with HMAC-SHA-256.
    #[serde(rename = "ah-sha256")]
    AhSha256,
}

impl Proposal {
    pub fn is_ah(&self) -> bool {
        matches!(self, Proposal::AhSha256)
    }
}

/// SA lifetimes; each kind has a soft limit (start rekeying) and a hard one (expire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<Limit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub soft: Located<u64>,
    pub hard: Located<u64>,
}

/// A remote IKE peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: Located<String>,
    pub address: Located<IpAddr>,
    pub remote_id: Located<IkeIdentity>,
    pub local_id: Located<IkeIdentity>,
    #[serde(default)]
    pub nat_t: Located<NatTraversal>,
    /// Where the pre-shared key is read from (never the key itself).
    pub psk: Located<SecretSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatTraversal {
    /// Detect NAT with the IKE NAT detection payloads and encapsulate only when needed.
    #[default]
    Auto,
    /// Always encapsulate ESP in UDP 4500.
    Force,
    /// Never encapsulate.
    Off,
}

/// The coupling facility: the shared sequence region and how numbers are handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouplingFacility {
    pub backend: Located<CfBackend>,
    pub sequence_allocation: Located<SequenceAllocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CfBackend {
    /// A shared-memory region (all nodes on one host, or a mapped device).
    Shm(PathBuf),
    /// A network coupling facility at this address.
    Network(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceAllocation {
    /// One fetch-and-add per packet.
    PerPacket,
    /// A target reserves up to `max` numbers at once and gives back what it has not
    /// used after `timeout_us`.
    Lease(Lease),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub max: Located<u32>,
    pub timeout_us: Located<u64>,
}

/// The XCF link between the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XcfLink {
    pub security: Located<XcfSecurity>,
    pub heartbeat_ms: Located<u32>,
    pub takeover_timeout_ms: Located<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XcfSecurity {
    /// A physically or logically secure link: messages travel in clear.
    Trusted,
    /// Messages are authenticated and encrypted.
    Protected(XcfProtection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XcfProtection {
    /// The link key (or the private key that goes with `certificate`).
    pub key: Located<SecretSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Located<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<Located<PathBuf>>,
}

/// How targets report lifesize (bytes and packets used) back to the distributor's IKE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifesize {
    /// Report when a target has used this percentage of the lifetime.
    #[serde(default = "default_threshold_percent")]
    pub threshold_percent: Located<u8>,
    #[serde(default)]
    pub adaptive: AdaptiveBounds,
}

impl Default for Lifesize {
    fn default() -> Self {
        Lifesize {
            threshold_percent: default_threshold_percent(),
            adaptive: AdaptiveBounds::default(),
        }
    }
}

fn default_threshold_percent() -> Located<u8> {
    Located::new(5)
}

/// The range the reporting threshold adapts within when IKE fails to rekey in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveBounds {
    pub min_percent: Located<u8>,
    pub max_percent: Located<u8>,
}

impl Default for AdaptiveBounds {
    fn default() -> Self {
        AdaptiveBounds {
            min_percent: Located::new(1),
            max_percent: Located::new(20),
        }
    }
}
