//! The XCF message codec: versioned, length-prefixed, big-endian binary.
//!
//! Every frame is a fixed header followed by a body of `body_len` bytes:
//!
//! ```text
//!  0      version (u8, = 1)
//!  1      kind (u8)
//!  2..4   flags (u16, must be zero)
//!  4..8   body_len (u32, at most MAX_BODY_LEN)
//!  8..16  sender incarnation (u64)
//! 16..24  receiver incarnation the sender believes in (u64, 0 = not known yet)
//! 24..28  sequence number (u32, 0 = unsequenced: ACK, HEARTBEAT, HELLO)
//! ```
//!
//! Additions keep version 1: a HEARTBEAT with an empty body is the original heartbeat, one with
//! a body carries the sender's view of the other members ([`Message::HeartbeatView`]); kind 12
//! (TAKEOVER) is new. Every frame an older node sent decodes exactly as before; an older node
//! refuses the additions as one bad frame each (its link carries on).
//!
//! Decoding never panics: every read is bounds-checked and a failure names the field and
//! the byte offset where it happened.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dvipsec_esp::{
    Direction, IpsecProtocol, LifetimeLimits, Mode, SaConfig, SaKeys, Suite, TunnelEndpoints,
    UdpEncap,
};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::WireError;

/// The only protocol version this code speaks.
pub const XCF_VERSION: u8 = 1;
/// Bytes of the fixed frame header.
pub const HEADER_LEN: usize = 28;
/// Largest body accepted (a CONN_REPORT of many connections is the biggest message).
pub const MAX_BODY_LEN: usize = 1 << 20;

/// Message kinds on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    VipaList = 2,
    SaInstall = 3,
    SaDelete = 4,
    Lifesize = 5,
    NewConnRequest = 6,
    NewConnResponse = 7,
    ConnReport = 8,
    TargetLoad = 9,
    Heartbeat = 10,
    Ack = 11,
    Takeover = 12,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::VipaList,
            3 => Kind::SaInstall,
            4 => Kind::SaDelete,
            5 => Kind::Lifesize,
            6 => Kind::NewConnRequest,
            7 => Kind::NewConnResponse,
            8 => Kind::ConnReport,
            9 => Kind::TargetLoad,
            10 => Kind::Heartbeat,
            11 => Kind::Ack,
            12 => Kind::Takeover,
            _ => return None,
        })
    }

    /// Whether frames of this kind are sequenced, acknowledged and retransmitted.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Kind::Hello | Kind::Heartbeat | Kind::Ack)
    }
}

/// One frame: who sent it to whom, its sequence number and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub from_incarnation: u64,
    pub to_incarnation: u64,
    /// 0 for unsequenced kinds.
    pub seq: u32,
    pub message: Message,
}

/// The XCF messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Membership: "node N is up" (its incarnation is in the header).
    Hello { node: String },
    /// The DVIPAs and ports a target serves.
    VipaList(Vec<VipaEntry>),
    /// An SA with its keys and dynamic filters for a DVIPA.
    SaInstall(Box<SaInstall>),
    /// Remove an SA from the shadow caches.
    SaDelete(SaRef),
    /// A batch of lifesize reports.
    Lifesize(Vec<LifesizeEntry>),
    /// A target asks for an SA to a peer (seed figure 11).
    NewConnRequest(NewConnRequest),
    /// The distributor's answer to a NEWCONN request.
    NewConnResponse {
        request_id: u32,
        outcome: NewConnOutcome,
    },
    /// The connections a target holds for a DVIPA, so the DCT can be rebuilt.
    ConnReport {
        dvipa: String,
        connections: Vec<Connection>,
    },
    /// A target's load, for target selection.
    TargetLoad(TargetLoad),
    /// Liveness.
    Heartbeat,
    /// Acknowledges the sequenced frame `seq`.
    Ack { seq: u32 },
    /// Liveness with what the sender hears of the other members and which DVIPAs it owns (a
    /// HEARTBEAT with a body), so a member silent to one node but heard by others is told
    /// apart from a failed one, and a node that starts learns who owns what.
    HeartbeatView(HeartbeatView),
    /// The sender owns `dvipa` now (takeover or planned move): targets follow it, drop the old
    /// owner's shadow SAs of the DVIPA, attach to the CF in `cf_epoch` and send CONN_REPORT.
    Takeover(TakeoverNotice),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::VipaList(_) => Kind::VipaList,
            Message::SaInstall(_) => Kind::SaInstall,
            Message::SaDelete(_) => Kind::SaDelete,
            Message::Lifesize(_) => Kind::Lifesize,
            Message::NewConnRequest(_) => Kind::NewConnRequest,
            Message::NewConnResponse { .. } => Kind::NewConnResponse,
            Message::ConnReport { .. } => Kind::ConnReport,
            Message::TargetLoad(_) => Kind::TargetLoad,
            Message::Heartbeat => Kind::Heartbeat,
            Message::Ack { .. } => Kind::Ack,
            Message::HeartbeatView(_) => Kind::Heartbeat,
            Message::Takeover(_) => Kind::Takeover,
        }
    }
}

/// A DVIPA a target serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaEntry {
    pub dvipa: String,
    pub address: IpAddr,
    /// Empty: all ports.
    pub ports: Vec<u16>,
}

/// Names one SA of a DVIPA.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaRef {
    pub dvipa: String,
    pub direction: WireDirection,
    pub spi: u32,
}

/// [`Direction`] with an order, so SAs can be keys of sorted maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireDirection {
    Inbound,
    Outbound,
}

impl From<WireDirection> for Direction {
    fn from(value: WireDirection) -> Direction {
        match value {
            WireDirection::Inbound => Direction::Inbound,
            WireDirection::Outbound => Direction::Outbound,
        }
    }
}

impl From<Direction> for WireDirection {
    fn from(value: Direction) -> WireDirection {
        match value {
            Direction::Inbound => WireDirection::Inbound,
            Direction::Outbound => WireDirection::Outbound,
        }
    }
}

/// Key material carried by SA_INSTALL. Zeroized on drop; Debug shows only lengths.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct WireKeys {
    enc: Vec<u8>,
    auth: Vec<u8>,
}

impl WireKeys {
    pub fn new(enc: &[u8], auth: &[u8]) -> WireKeys {
        WireKeys {
            enc: enc.to_vec(),
            auth: auth.to_vec(),
        }
    }

    /// The keys in the ESP engine's type.
    pub fn to_sa_keys(&self) -> SaKeys {
        SaKeys::new(&self.enc, &self.auth)
    }

    /// The encryption key (AEADs: key then salt). Only the operator's key export reads it.
    pub fn expose_enc(&self) -> &[u8] {
        &self.enc
    }

    /// The integrity key (empty for AEADs). Only the operator's key export reads it.
    pub fn expose_auth(&self) -> &[u8] {
        &self.auth
    }
}

impl fmt::Debug for WireKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireKeys")
            .field("enc", &format_args!("<redacted {} bytes>", self.enc.len()))
            .field(
                "auth",
                &format_args!("<redacted {} bytes>", self.auth.len()),
            )
            .finish()
    }
}

/// An address prefix of a filter rule (the ESP engine's selector prefix).
pub use dvipsec_esp::IpPrefix as Prefix;

/// An inclusive port range; `0..=65535` is any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        low: 0,
        high: u16::MAX,
    };

    pub fn single(port: u16) -> PortRange {
        PortRange {
            low: port,
            high: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// A dynamic filter rule: traffic it matches is protected by the SA it came with.
/// Addresses are seen from this cluster: `local` is the DVIPA side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterRule {
    pub local: Prefix,
    pub remote: Prefix,
    /// IP protocol number, 0 for any.
    pub protocol: u8,
    pub local_ports: PortRange,
    pub remote_ports: PortRange,
}

impl FilterRule {
    /// Whether a flow falls under the rule.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.local.contains(flow.local)
            && self.remote.contains(flow.remote)
            && (self.protocol == 0 || self.protocol == flow.protocol)
            && self.local_ports.contains(flow.local_port)
            && self.remote_ports.contains(flow.remote_port)
    }
}

/// A connection's addresses, seen from the cluster (`local` is the DVIPA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub protocol: u8,
    pub local_port: u16,
    pub remote_port: u16,
}

/// SA_INSTALL: one SA of a DVIPA, its keys, its dynamic filters and its CF slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SaInstall {
    pub dvipa: String,
    /// The remote IKE peer the SA is with.
    pub peer: IpAddr,
    /// The coupling-facility slot holding the SA's sequence and lifesize state.
    pub cf_slot: u64,
    /// Targets report lifesize each time this percentage of the hard lifetime is used.
    pub lifesize_percent: u8,
    pub spi: u32,
    pub direction: Direction,
    pub protocol: IpsecProtocol,
    pub suite: Suite,
    pub mode: Mode,
    pub tunnel: Option<TunnelEndpoints>,
    pub udp_encap: Option<UdpEncap>,
    pub replay_window: u32,
    pub esn: bool,
    pub lifetime: LifetimeLimits,
    pub keys: WireKeys,
    pub filters: Vec<FilterRule>,
}

impl SaInstall {
    pub fn sa_ref(&self) -> SaRef {
        SaRef {
            dvipa: self.dvipa.clone(),
            direction: self.direction.into(),
            spi: self.spi,
        }
    }

    /// The configuration the ESP engine builds this SA from.
    pub fn to_sa_config(&self) -> SaConfig {
        let mut config =
            SaConfig::new(self.spi, self.direction, self.suite, self.keys.to_sa_keys());
        config.protocol = self.protocol;
        config.mode = self.mode;
        config.tunnel = self.tunnel;
        config.udp_encap = self.udp_encap;
        config.replay_window = self.replay_window;
        config.esn = self.esn;
        config.lifetime = self.lifetime;
        config
    }
}

/// Bytes and packets a target used on one SA since its last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifesizeEntry {
    pub sa: SaRef,
    pub bytes: u64,
    pub packets: u64,
}

/// NEWCONN: a target wants to open `flow` and has no SA for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConnRequest {
    pub request_id: u32,
    pub dvipa: String,
    pub flow: Flow,
}

/// How the distributor answered a NEWCONN request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewConnOutcome {
    /// The SA exists and has been sent.
    Installed,
    /// Not a DVIPA this distributor owns or the target serves.
    Refused,
    /// IKE could not negotiate an SA.
    NegotiationFailed,
}

/// How long ago the sender of a heartbeat view last heard from `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSeen {
    pub node: String,
    /// Milliseconds; [`MemberSeen::NEVER`] when the sender never heard from it.
    pub heard_ms_ago: u32,
}

impl MemberSeen {
    pub const NEVER: u32 = u32::MAX;
}

/// The body of a heartbeat with a view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatView {
    pub seen: Vec<MemberSeen>,
    /// The DVIPAs the sender owns, each with the CF epoch it took it in (a newer epoch wins).
    pub owns: Vec<OwnerClaim>,
}

/// "I own `dvipa` since CF epoch `cf_epoch`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerClaim {
    pub dvipa: String,
    pub cf_epoch: u64,
}

/// TAKEOVER: who owns a DVIPA now, and the CF epoch the new owner fenced the old one with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverNotice {
    pub dvipa: String,
    pub cf_epoch: u64,
}

/// A connection a target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub flow: Flow,
}

/// A target's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLoad {
    pub cpu_percent: u8,
    pub connections: u32,
    pub shadow_sas: u32,
}

// ---------------------------------------------------------------------------------------
// Encoding

impl Frame {
    /// The frame's bytes. Zeroized on drop, since SA_INSTALL carries keys.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, WireError> {
        // Sized up front: growing would leave copies of the keys in freed memory.
        let mut out = Zeroizing::new(Vec::with_capacity(capacity_hint(&self.message)));
        out.extend_from_slice(&[XCF_VERSION, self.message.kind() as u8, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&self.from_incarnation.to_be_bytes());
        out.extend_from_slice(&self.to_incarnation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        encode_body(&self.message, &mut out)?;
        let body_len = out.len() - HEADER_LEN;
        if body_len > MAX_BODY_LEN {
            return Err(WireError::BodyTooLong { len: body_len });
        }
        // Fits: checked against MAX_BODY_LEN just above.
        let len = (body_len as u32).to_be_bytes();
        out[4..8].copy_from_slice(&len);
        Ok(out)
    }
}

/// An upper bound of the encoded size of frames that carry keys, and a fair guess for others.
pub(crate) fn capacity_hint(message: &Message) -> usize {
    match message {
        Message::SaInstall(install) => {
            // Fixed fields and two tunnel addresses stay under 512 bytes; a filter under 64.
            HEADER_LEN
                + 512
                + install.keys.enc.len()
                + install.keys.auth.len()
                + 64 * install.filters.len()
        }
        _ => HEADER_LEN + 64,
    }
}

fn encode_body(message: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    match message {
        Message::Hello { node } => put_str(out, node, "hello.node")?,
        Message::VipaList(entries) => {
            put_count(out, entries.len(), "vipalist.entries")?;
            for entry in entries {
                put_str(out, &entry.dvipa, "vipalist.dvipa")?;
                put_ip(out, entry.address);
                put_count(out, entry.ports.len(), "vipalist.ports")?;
                for port in &entry.ports {
                    out.extend_from_slice(&port.to_be_bytes());
                }
            }
        }
        Message::SaInstall(install) => encode_install(install, out)?,
        Message::SaDelete(sa) => put_sa_ref(out, sa)?,
        Message::Lifesize(entries) => {
            put_count(out, entries.len(), "lifesize.entries")?;
            for entry in entries {
                put_sa_ref(out, &entry.sa)?;
                out.extend_from_slice(&entry.bytes.to_be_bytes());
                out.extend_from_slice(&entry.packets.to_be_bytes());
            }
        }
        Message::NewConnRequest(request) => {
            out.extend_from_slice(&request.request_id.to_be_bytes());
            put_str(out, &request.dvipa, "newconn.dvipa")?;
            put_flow(out, &request.flow);
        }
        Message::NewConnResponse {
            request_id,
            outcome,
        } => {
            out.extend_from_slice(&request_id.to_be_bytes());
            out.push(match outcome {
                NewConnOutcome::Installed => 0,
                NewConnOutcome::Refused => 1,
                NewConnOutcome::NegotiationFailed => 2,
            });
        }
        Message::ConnReport { dvipa, connections } => {
            put_str(out, dvipa, "connreport.dvipa")?;
            put_count(out, connections.len(), "connreport.connections")?;
            for connection in connections {
                put_flow(out, &connection.flow);
            }
        }
        Message::TargetLoad(load) => {
            out.push(load.cpu_percent);
            out.extend_from_slice(&load.connections.to_be_bytes());
            out.extend_from_slice(&load.shadow_sas.to_be_bytes());
        }
        Message::Heartbeat => {}
        Message::Ack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
        Message::HeartbeatView(view) => {
            put_count(out, view.seen.len(), "heartbeat.view")?;
            for member in &view.seen {
                put_str(out, &member.node, "heartbeat.node")?;
                out.extend_from_slice(&member.heard_ms_ago.to_be_bytes());
            }
            put_count(out, view.owns.len(), "heartbeat.owns")?;
            for claim in &view.owns {
                put_str(out, &claim.dvipa, "heartbeat.owns.dvipa")?;
                out.extend_from_slice(&claim.cf_epoch.to_be_bytes());
            }
        }
        Message::Takeover(notice) => {
            put_str(out, &notice.dvipa, "takeover.dvipa")?;
            out.extend_from_slice(&notice.cf_epoch.to_be_bytes());
        }
    }
    Ok(())
}

fn encode_install(install: &SaInstall, out: &mut Vec<u8>) -> Result<(), WireError> {
    put_str(out, &install.dvipa, "sa_install.dvipa")?;
    put_ip(out, install.peer);
    out.extend_from_slice(&install.cf_slot.to_be_bytes());
    out.push(install.lifesize_percent);
    out.extend_from_slice(&install.spi.to_be_bytes());
    out.push(direction_code(install.direction.into()));
    out.push(match install.protocol {
        IpsecProtocol::Esp => 50,
        IpsecProtocol::Ah => 51,
    });
    out.push(suite_code(install.suite)?);
    out.push(match install.mode {
        Mode::Transport => 0,
        Mode::Tunnel => 1,
    });
    match install.tunnel {
        None => out.push(0),
        Some(tunnel) => {
            out.push(1);
            put_ip(out, tunnel.src);
            put_ip(out, tunnel.dst);
        }
    }
    match install.udp_encap {
        None => out.push(0),
        Some(encap) => {
            out.push(1);
            out.extend_from_slice(&encap.src_port.to_be_bytes());
            out.extend_from_slice(&encap.dst_port.to_be_bytes());
        }
    }
    out.extend_from_slice(&install.replay_window.to_be_bytes());
    out.push(u8::from(install.esn));
    let limits = &install.lifetime;
    for limit in [
        limits.soft_packets,
        limits.hard_packets,
        limits.soft_bytes,
        limits.hard_bytes,
    ] {
        put_opt_u64(out, limit);
    }
    put_key(out, &install.keys.enc, "sa_install.keys.enc")?;
    put_key(out, &install.keys.auth, "sa_install.keys.auth")?;
    put_count(out, install.filters.len(), "sa_install.filters")?;
    for filter in &install.filters {
        put_prefix(out, filter.local);
        put_prefix(out, filter.remote);
        out.push(filter.protocol);
        put_ports(out, filter.local_ports);
        put_ports(out, filter.remote_ports);
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, text: &str, field: &'static str) -> Result<(), WireError> {
    let len = u8::try_from(text.len()).map_err(|_| WireError::FieldTooLong { field })?;
    out.push(len);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, count: usize, field: &'static str) -> Result<(), WireError> {
    let count = u32::try_from(count).map_err(|_| WireError::FieldTooLong { field })?;
    out.extend_from_slice(&count.to_be_bytes());
    Ok(())
}

fn put_key(out: &mut Vec<u8>, key: &[u8], field: &'static str) -> Result<(), WireError> {
    let len = u16::try_from(key.len()).map_err(|_| WireError::FieldTooLong { field })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    Ok(())
}

fn put_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_prefix(out: &mut Vec<u8>, prefix: Prefix) {
    put_ip(out, prefix.addr);
    out.push(prefix.len);
}

fn put_ports(out: &mut Vec<u8>, ports: PortRange) {
    out.extend_from_slice(&ports.low.to_be_bytes());
    out.extend_from_slice(&ports.high.to_be_bytes());
}

fn put_opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_sa_ref(out: &mut Vec<u8>, sa: &SaRef) -> Result<(), WireError> {
    put_str(out, &sa.dvipa, "sa.dvipa")?;
    out.push(direction_code(sa.direction));
    out.extend_from_slice(&sa.spi.to_be_bytes());
    Ok(())
}

fn put_flow(out: &mut Vec<u8>, flow: &Flow) {
    put_ip(out, flow.local);
    put_ip(out, flow.remote);
    out.push(flow.protocol);
    out.extend_from_slice(&flow.local_port.to_be_bytes());
    out.extend_from_slice(&flow.remote_port.to_be_bytes());
}

fn direction_code(direction: WireDirection) -> u8 {
    match direction {
        WireDirection::Inbound => 0,
        WireDirection::Outbound => 1,
    }
}

fn suite_code(suite: Suite) -> Result<u8, WireError> {
    Ok(match suite {
        Suite::Aes128Gcm16 => 1,
        Suite::Aes256Gcm16 => 2,
        Suite::ChaCha20Poly1305 => 3,
        Suite::Aes128CbcHmacSha256 => 4,
        Suite::Aes256CbcHmacSha256 => 5,
        Suite::NullHmacSha256 => 6,
        other => {
            return Err(WireError::UnsupportedSuite {
                suite: other.name(),
            })
        }
    })
}

fn suite_from_code(code: u8) -> Option<Suite> {
    Some(match code {
        1 => Suite::Aes128Gcm16,
        2 => Suite::Aes256Gcm16,
        3 => Suite::ChaCha20Poly1305,
        4 => Suite::Aes128CbcHmacSha256,
        5 => Suite::Aes256CbcHmacSha256,
        6 => Suite::NullHmacSha256,
        _ => return None,
    })
}

/// Fails for a message the codec cannot carry (a name over 255 bytes, a suite without a
/// code...), so callers can refuse it before storing anything.
pub fn check_encodable(message: &Message) -> Result<(), WireError> {
    Frame {
        from_incarnation: 0,
        to_incarnation: 0,
        seq: u32::from(message.kind().is_reliable()),
        message: message.clone(),
    }
    .encode()
    .map(drop)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// The length of the frame that starts `buf`, once its header is there: for splitting a
/// byte stream into frames. `Ok(None)`: not enough bytes for the header yet.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = parse_header(buf)?;
    Ok(Some(HEADER_LEN + header.body_len))
}

struct Header {
    kind: Kind,
    body_len: usize,
    from_incarnation: u64,
    to_incarnation: u64,
    seq: u32,
}

fn parse_header(buf: &[u8]) -> Result<Header, WireError> {
    let mut reader = Reader::new(buf, 0);
    let version = reader.u8("header.version")?;
    if version != XCF_VERSION {
        return Err(WireError::UnsupportedVersion {
            version,
            supported: XCF_VERSION,
        });
    }
    let kind_code = reader.u8("header.kind")?;
    let kind = Kind::from_u8(kind_code).ok_or(WireError::UnknownKind { kind: kind_code })?;
    let flags = reader.u16("header.flags")?;
    if flags != 0 {
        return Err(WireError::BadValue {
            field: "header.flags",
            offset: 2,
            value: u64::from(flags),
        });
    }
    let body_len = reader.u32("header.body_len")? as usize;
    if body_len > MAX_BODY_LEN {
        return Err(WireError::BodyTooLong { len: body_len });
    }
    let from_incarnation = reader.u64("header.from_incarnation")?;
    let to_incarnation = reader.u64("header.to_incarnation")?;
    let seq = reader.u32("header.seq")?;
    let sequenced = seq != 0;
    if sequenced != kind.is_reliable() {
        return Err(WireError::BadValue {
            field: "header.seq",
            offset: 24,
            value: u64::from(seq),
        });
    }
    Ok(Header {
        kind,
        body_len,
        from_incarnation,
        to_incarnation,
        seq,
    })
}

impl Frame {
    /// Decodes exactly one frame; `buf` must hold the frame and nothing else.
    pub fn decode(buf: &[u8]) -> Result<Frame, WireError> {
        let header = parse_header(buf)?;
        let expected = HEADER_LEN + header.body_len;
        if buf.len() < expected {
            return Err(WireError::Truncated {
                field: "body",
                offset: buf.len(),
            });
        }
        if buf.len() > expected {
            return Err(WireError::TrailingBytes { offset: expected });
        }
        let mut reader = Reader::new(&buf[HEADER_LEN..], HEADER_LEN);
        let message = decode_body(header.kind, &mut reader)?;
        reader.finish()?;
        Ok(Frame {
            from_incarnation: header.from_incarnation,
            to_incarnation: header.to_incarnation,
            seq: header.seq,
            message,
        })
    }
}

fn decode_body(kind: Kind, r: &mut Reader<'_>) -> Result<Message, WireError> {
    Ok(match kind {
        Kind::Hello => Message::Hello {
            node: r.string("hello.node")?,
        },
        Kind::VipaList => Message::VipaList(r.list("vipalist.entries", read_vipa_entry)?),
        Kind::SaInstall => Message::SaInstall(Box::new(read_install(r)?)),
        Kind::SaDelete => Message::SaDelete(read_sa_ref(r)?),
        Kind::Lifesize => Message::Lifesize(r.list("lifesize.entries", |r| {
            Ok(LifesizeEntry {
                sa: read_sa_ref(r)?,
                bytes: r.u64("lifesize.bytes")?,
                packets: r.u64("lifesize.packets")?,
            })
        })?),
        Kind::NewConnRequest => Message::NewConnRequest(NewConnRequest {
            request_id: r.u32("newconn.request_id")?,
            dvipa: r.string("newconn.dvipa")?,
            flow: read_flow(r)?,
        }),
        Kind::NewConnResponse => Message::NewConnResponse {
            request_id: r.u32("newconn_response.request_id")?,
            outcome: read_outcome(r)?,
        },
        Kind::ConnReport => Message::ConnReport {
            dvipa: r.string("connreport.dvipa")?,
            connections: r.list("connreport.connections", |r| {
                Ok(Connection {
                    flow: read_flow(r)?,
                })
            })?,
        },
        Kind::TargetLoad => Message::TargetLoad(TargetLoad {
            cpu_percent: r.u8("target_load.cpu_percent")?,
            connections: r.u32("target_load.connections")?,
            shadow_sas: r.u32("target_load.shadow_sas")?,
        }),
        // An empty body is the original heartbeat; a body is the view (see the module doc).
        Kind::Heartbeat if r.is_empty() => Message::Heartbeat,
        Kind::Heartbeat => Message::HeartbeatView(HeartbeatView {
            seen: r.list("heartbeat.view", |r| {
                Ok(MemberSeen {
                    node: r.string("heartbeat.node")?,
                    heard_ms_ago: r.u32("heartbeat.heard_ms_ago")?,
                })
            })?,
            owns: r.list("heartbeat.owns", |r| {
                Ok(OwnerClaim {
                    dvipa: r.string("heartbeat.owns.dvipa")?,
                    cf_epoch: r.u64("heartbeat.owns.cf_epoch")?,
                })
            })?,
        }),
        Kind::Takeover => Message::Takeover(TakeoverNotice {
            dvipa: r.string("takeover.dvipa")?,
            cf_epoch: r.u64("takeover.cf_epoch")?,
        }),
        Kind::Ack => Message::Ack {
            seq: r.u32("ack.seq")?,
        },
    })
}

fn read_vipa_entry(r: &mut Reader<'_>) -> Result<VipaEntry, WireError> {
    Ok(VipaEntry {
        dvipa: r.string("vipalist.dvipa")?,
        address: r.ip("vipalist.address")?,
        ports: r.list("vipalist.ports", |r| r.u16("vipalist.port"))?,
    })
}

fn read_install(r: &mut Reader<'_>) -> Result<SaInstall, WireError> {
    let dvipa = r.string("sa_install.dvipa")?;
    let peer = r.ip("sa_install.peer")?;
    let cf_slot = r.u64("sa_install.cf_slot")?;
    let lifesize_percent = r.bounded_u8("sa_install.lifesize_percent", 1, 100)?;
    let spi = r.u32("sa_install.spi")?;
    let direction = read_direction(r, "sa_install.direction")?.into();
    let protocol = match r.coded("sa_install.protocol")? {
        (50, _) => IpsecProtocol::Esp,
        (51, _) => IpsecProtocol::Ah,
        (value, offset) => return Err(bad("sa_install.protocol", offset, value)),
    };
    let (suite_value, suite_offset) = r.coded("sa_install.suite")?;
    let suite = suite_from_code(suite_value)
        .ok_or_else(|| bad("sa_install.suite", suite_offset, suite_value))?;
    let mode = match r.coded("sa_install.mode")? {
        (0, _) => Mode::Transport,
        (1, _) => Mode::Tunnel,
        (value, offset) => return Err(bad("sa_install.mode", offset, value)),
    };
    let tunnel = r.optional("sa_install.tunnel", |r| {
        Ok(TunnelEndpoints {
            src: r.ip("sa_install.tunnel.src")?,
            dst: r.ip("sa_install.tunnel.dst")?,
        })
    })?;
    let udp_encap = r.optional("sa_install.udp_encap", |r| {
        Ok(UdpEncap {
            src_port: r.u16("sa_install.udp_encap.src_port")?,
            dst_port: r.u16("sa_install.udp_encap.dst_port")?,
        })
    })?;
    let replay_window = r.u32("sa_install.replay_window")?;
    let esn = r.bool("sa_install.esn")?;
    let lifetime = LifetimeLimits {
        soft_packets: r.optional("sa_install.lifetime.soft_packets", |r| {
            r.u64("sa_install.lifetime.soft_packets")
        })?,
        hard_packets: r.optional("sa_install.lifetime.hard_packets", |r| {
            r.u64("sa_install.lifetime.hard_packets")
        })?,
        soft_bytes: r.optional("sa_install.lifetime.soft_bytes", |r| {
            r.u64("sa_install.lifetime.soft_bytes")
        })?,
        hard_bytes: r.optional("sa_install.lifetime.hard_bytes", |r| {
            r.u64("sa_install.lifetime.hard_bytes")
        })?,
    };
    let enc = r.key("sa_install.keys.enc")?;
    let auth = r.key("sa_install.keys.auth")?;
    let keys = WireKeys::new(&enc, &auth);
    let filters = r.list("sa_install.filters", read_filter)?;
    Ok(SaInstall {
        dvipa,
        peer,
        cf_slot,
        lifesize_percent,
        spi,
        direction,
        protocol,
        suite,
        mode,
        tunnel,
        udp_encap,
        replay_window,
        esn,
        lifetime,
        keys,
        filters,
    })
}

fn read_filter(r: &mut Reader<'_>) -> Result<FilterRule, WireError> {
    Ok(FilterRule {
        local: r.prefix("filter.local")?,
        remote: r.prefix("filter.remote")?,
        protocol: r.u8("filter.protocol")?,
        local_ports: r.ports("filter.local_ports")?,
        remote_ports: r.ports("filter.remote_ports")?,
    })
}

fn read_sa_ref(r: &mut Reader<'_>) -> Result<SaRef, WireError> {
    Ok(SaRef {
        dvipa: r.string("sa.dvipa")?,
        direction: read_direction(r, "sa.direction")?,
        spi: r.u32("sa.spi")?,
    })
}

fn read_direction(r: &mut Reader<'_>, field: &'static str) -> Result<WireDirection, WireError> {
    match r.coded(field)? {
        (0, _) => Ok(WireDirection::Inbound),
        (1, _) => Ok(WireDirection::Outbound),
        (value, offset) => Err(bad(field, offset, value)),
    }
}

fn read_flow(r: &mut Reader<'_>) -> Result<Flow, WireError> {
    Ok(Flow {
        local: r.ip("flow.local")?,
        remote: r.ip("flow.remote")?,
        protocol: r.u8("flow.protocol")?,
        local_port: r.u16("flow.local_port")?,
        remote_port: r.u16("flow.remote_port")?,
    })
}

fn read_outcome(r: &mut Reader<'_>) -> Result<NewConnOutcome, WireError> {
    match r.coded("newconn_response.outcome")? {
        (0, _) => Ok(NewConnOutcome::Installed),
        (1, _) => Ok(NewConnOutcome::Refused),
        (2, _) => Ok(NewConnOutcome::NegotiationFailed),
        (value, offset) => Err(bad("newconn_response.outcome", offset, value)),
    }
}

fn bad(field: &'static str, offset: usize, value: u8) -> WireError {
    WireError::BadValue {
        field,
        offset,
        value: u64::from(value),
    }
}

/// A bounds-checked cursor; `base` is the offset of `buf[0]` in the frame, for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let truncated = WireError::Truncated {
            field,
            offset: self.offset(),
        };
        let end = self.pos.checked_add(len).ok_or(truncated.clone())?;
        let bytes = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A one-byte code and the offset it was read at.
    fn coded(&mut self, field: &'static str) -> Result<(u8, usize), WireError> {
        let offset = self.offset();
        Ok((self.u8(field)?, offset))
    }

    fn bounded_u8(&mut self, field: &'static str, min: u8, max: u8) -> Result<u8, WireError> {
        let (value, offset) = self.coded(field)?;
        if !(min..=max).contains(&value) {
            return Err(bad(field, offset, value));
        }
        Ok(value)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.coded(field)? {
            (0, _) => Ok(false),
            (1, _) => Ok(true),
            (value, offset) => Err(bad(field, offset, value)),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u8(field)?);
        let offset = self.offset();
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadUtf8 { field, offset })
    }

    fn key(&mut self, field: &'static str) -> Result<Zeroizing<Vec<u8>>, WireError> {
        let len = usize::from(self.u16(field)?);
        Ok(Zeroizing::new(self.take(len, field)?.to_vec()))
    }

    fn ip(&mut self, field: &'static str) -> Result<IpAddr, WireError> {
        match self.coded(field)? {
            (4, _) => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?))),
            (6, _) => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?))),
            (value, offset) => Err(bad(field, offset, value)),
        }
    }

    fn prefix(&mut self, field: &'static str) -> Result<Prefix, WireError> {
        let addr = self.ip(field)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = self.bounded_u8(field, 0, max)?;
        Ok(Prefix { addr, len })
    }

    fn ports(&mut self, field: &'static str) -> Result<PortRange, WireError> {
        let offset = self.offset();
        let low = self.u16(field)?;
        let high = self.u16(field)?;
        if low > high {
            return Err(WireError::BadValue {
                field,
                offset,
                value: u64::from(low),
            });
        }
        Ok(PortRange { low, high })
    }

    fn optional<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, WireError>,
    ) -> Result<Option<T>, WireError> {
        if self.bool(field)? {
            Ok(Some(read(self)?))
        } else {
            Ok(None)
        }
    }

    /// A u32 count and that many items. The count is checked against the bytes left, so a
    /// forged count cannot make us reserve memory.
    fn list<T>(
        &mut self,
        field: &'static str,
        mut read: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let offset = self.offset();
        let count = self.u32(field)? as usize;
        if count > self.buf.len() - self.pos {
            return Err(WireError::BadValue {
                field,
                offset,
                value: count as u64,
            });
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.pos != self.buf.len() {
            return Err(WireError::TrailingBytes {
                offset: self.offset(),
            });
        }
        Ok(())
    }
}
