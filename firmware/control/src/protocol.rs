//! The control protocol: one JSON object per line over a Unix stream socket, each carrying the
//! protocol version. A request names what it wants; the answer is a typed report or an error.
//! No report carries key material except [`KeyExport`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::keys::KeyExport;

/// The protocol version this build speaks. A peer with another version gets
/// [`ControlError::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request or response line accepted (bytes, newline included).
pub const MAX_LINE: usize = 1 << 20;

/// What an operator asks a box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Role, DVIPAs, peers and links.
    Status,
    /// The SAD (distributor) or the shadow SA cache (target).
    SaList,
    /// The distributed connection table.
    DctList,
    /// IKE SAs.
    IkeList,
    /// Configured connections.
    ConnList,
    /// The coupling facility: slots, counters and epoch.
    CfShow,
    /// A planned move of a DVIPA to this box.
    Takeover {
        /// The DVIPA to take over.
        dvipa: IpAddr,
    },
    /// Key material for Wireshark (the only request whose answer carries keys).
    KeysExport,
    /// The Prometheus text exposition.
    Metrics,
}

/// A request on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The sender's protocol version.
    pub version: u32,
    /// The request.
    pub request: Request,
}

/// A response on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The server's protocol version.
    pub version: u32,
    /// The answer or why there is none.
    pub result: Result<Response, ControlError>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Answers [`Request::Status`].
    Status(StatusReport),
    /// Answers [`Request::SaList`].
    SaList(SaListReport),
    /// Answers [`Request::DctList`].
    DctList(DctReport),
    /// Answers [`Request::IkeList`].
    IkeList(IkeListReport),
    /// Answers [`Request::ConnList`].
    ConnList(ConnListReport),
    /// Answers [`Request::CfShow`].
    CfShow(CfReport),
    /// Answers [`Request::Takeover`].
    Takeover(TakeoverReport),
    /// Answers [`Request::KeysExport`].
    KeysExport(KeyExport),
    /// Answers [`Request::Metrics`].
    Metrics(MetricsText),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlError {
    /// The request's protocol version is not the server's.
    #[error("protocol version {requested} is not supported (this box speaks version {supported})")]
    UnsupportedVersion {
        /// What the client sent.
        requested: u32,
        /// What the server speaks.
        supported: u32,
    },
    /// The request line is not a valid request.
    #[error("bad request at line {line}, column {column}: {reason}")]
    BadRequest {
        /// Line within the request text (1-based; 0 when unknown).
        line: usize,
        /// Column within that line (1-based; 0 when unknown).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The request line is longer than [`MAX_LINE`].
    #[error("request longer than {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// This box does not do what was asked (for example no IKE on a target).
    #[error("{request} is not supported by this box: {reason}")]
    Unsupported {
        /// The request's name.
        request: String,
        /// Why.
        reason: String,
    },
    /// The box could not answer.
    #[error("{request} failed: {reason}")]
    Failed {
        /// The request's name.
        request: String,
        /// Why.
        reason: String,
    },
}

impl Request {
    /// The request's name as operators type it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::SaList => "sa list",
            Request::DctList => "dct list",
            Request::IkeList => "ike list",
            Request::ConnList => "conn list",
            Request::CfShow => "cf show",
            Request::Takeover { .. } => "takeover",
            Request::KeysExport => "keys export",
            Request::Metrics => "metrics",
        }
    }
}

/// Parses one request line; errors name the position and never echo more than the parser's
/// own message.
pub fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    let bad = |err: serde_json::Error| ControlError::BadRequest {
        line: err.line(),
        column: err.column(),
        reason: err.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(bad)?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    match version {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ControlError::UnsupportedVersion {
                requested: u32::try_from(v).unwrap_or(u32::MAX),
                supported: PROTOCOL_VERSION,
            })
        }
        None => {
            return Err(ControlError::BadRequest {
                line: 1,
                column: 0,
                reason: "field `version` (an unsigned integer) is missing".into(),
            })
        }
    }
    let envelope: RequestEnvelope = serde_json::from_value(value).map_err(bad)?;
    Ok(envelope.request)
}

/// A box's role toward its DVIPAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs IKE for the DVIPA and forwards inbound ESP.
    Distributor,
    /// Keeps shadow SAs and serves connections.
    Target,
    /// Ready to take over as distributor.
    Backup,
}

/// How a box relates to one DVIPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DvipaRelation {
    /// Owns it (distributor).
    Owns,
    /// Backs it (takes over if the owner fails).
    Backs,
    /// Serves connections of it (target).
    Serves,
}

/// One DVIPA and how this box relates to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvipaStatus {
    /// The address.
    pub dvipa: IpAddr,
    /// How this box relates to it.
    pub relation: DvipaRelation,
}

/// A cluster peer of this box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its XCF address.
    pub xcf_address: IpAddr,
    /// Its role.
    pub role: Role,
    /// Whether the link to it is up (None: this box cannot tell).
    pub link_up: Option<bool>,
}

/// A packet port of this box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The port's name.
    pub name: String,
    /// Whether it is up (None: this port cannot tell).
    pub up: Option<bool>,
    /// Frames received.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Frames dropped.
    pub drops: u64,
}

/// Answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The box's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// DVIPAs it owns, backs or serves.
    pub dvipas: Vec<DvipaStatus>,
    /// Its cluster peers.
    pub peers: Vec<PeerStatus>,
    /// Its packet ports.
    pub links: Vec<LinkStatus>,
}

/// Which table an SA was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaLocation {
    /// The distributor's SAD.
    Sad,
    /// A target's shadow SA cache.
    Shadow,
}

/// Packets and bytes left before an SA's hard lifetime (None: no such limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LifetimeLeft {
    /// Packets left.
    pub packets: Option<u64>,
    /// Bytes left.
    pub bytes: Option<u64>,
    /// Seconds left (None: no time limit known to the data plane).
    pub seconds: Option<u64>,
}

/// One SA, without keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaEntry {
    /// SPI.
    pub spi: u32,
    /// "inbound" or "outbound".
    pub direction: String,
    /// "esp" or "ah".
    pub protocol: String,
    /// Suite name (strongSwan proposal style, e.g. aes128gcm16).
    pub suite: String,
    /// "tunnel" or "transport".
    pub mode: String,
    /// The DVIPA.
    pub dvipa: IpAddr,
    /// The remote peer's outer address.
    pub peer: IpAddr,
    /// Outer source and destination of its packets (tunnel mode).
    pub tunnel: Option<(IpAddr, IpAddr)>,
    /// UDP encapsulation ports (source, destination).
    pub udp_encap: Option<(u16, u16)>,
    /// Local traffic selector, as prefix text.
    pub local_ts: String,
    /// Remote traffic selector, as prefix text.
    pub remote_ts: String,
    /// Inner bytes sealed or opened here.
    pub bytes: u64,
    /// Packets sealed or opened here.
    pub packets: u64,
    /// Replays dropped.
    pub replays: u64,
    /// ICV failures.
    pub auth_failures: u64,
    /// "fresh", "soft" or "hard".
    pub lifetime_state: String,
    /// What is left of its lifetime.
    pub lifetime_left: LifetimeLeft,
    /// The CF slot it uses.
    pub cf_slot: u64,
    /// Where it was found.
    pub location: SaLocation,
}

/// Answer to `sa list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaListReport {
    /// The SAs.
    pub sas: Vec<SaEntry>,
}

/// One DCT entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DctFlow {
    /// Remote address.
    pub src: IpAddr,
    /// Remote port.
    pub src_port: u16,
    /// DVIPA.
    pub dst: IpAddr,
    /// DVIPA port.
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// The target that serves it.
    pub target: u16,
}

/// Answer to `dct list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DctReport {
    /// Entries held (live or not yet swept).
    pub entries: u64,
    /// Configured capacity.
    pub capacity: u64,
    /// Entries added so far.
    pub added: u64,
    /// New flows refused because the table was full.
    pub full_drops: u64,
    /// Entries expired.
    pub expired: u64,
    /// Entries closed by FIN or RST.
    pub closed: u64,
    /// The flows the box can enumerate.
    pub flows: Vec<DctFlow>,
}

/// One IKE SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSaEntry {
    /// Connection name.
    pub name: String,
    /// State (e.g. ESTABLISHED).
    pub state: String,
    /// Local address.
    pub local: IpAddr,
    /// Remote address.
    pub remote: IpAddr,
    /// Initiator SPI, hex.
    pub initiator_spi: String,
    /// Responder SPI, hex.
    pub responder_spi: String,
    /// Child SA SPIs (inbound, outbound).
    pub children: Vec<(u32, u32)>,
}

/// Answer to `ike list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeListReport {
    /// The IKE SAs.
    pub ike_sas: Vec<IkeSaEntry>,
}

/// One configured connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    /// Its name.
    pub name: String,
    /// Local address (the DVIPA).
    pub local: IpAddr,
    /// Remote address or "%any".
    pub remote: String,
    /// Local traffic selectors.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
    /// ESP proposals.
    pub esp_proposals: Vec<String>,
    /// "tunnel" or "transport".
    pub mode: String,
}

/// Answer to `conn list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnListReport {
    /// The connections.
    pub conns: Vec<ConnEntry>,
}

/// One CF slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfSlot {
    /// Slot id.
    pub slot: u64,
    /// The DVIPA of its SA.
    pub dvipa: IpAddr,
    /// The SPI of its SA.
    pub spi: u32,
    /// Lifesize: inbound bytes.
    pub bytes_in: u64,
    /// Lifesize: inbound packets.
    pub packets_in: u64,
    /// Lifesize: outbound bytes.
    pub bytes_out: u64,
    /// Lifesize: outbound packets.
    pub packets_out: u64,
}

/// Answer to `cf show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfReport {
    /// The region's epoch.
    pub epoch: u64,
    /// The region's incarnation.
    pub incarnation: u64,
    /// Slots in the region.
    pub slot_capacity: u32,
    /// Slots of SAs this box knows.
    pub slots: Vec<CfSlot>,
}

/// Answer to `takeover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverReport {
    /// The DVIPA.
    pub dvipa: IpAddr,
    /// What happened.
    pub outcome: String,
}

/// Answer to `metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsText {
    /// Prometheus text exposition.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &Request) -> Vec<u8> {
        serde_json::to_vec(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            request: request.clone(),
        })
        .unwrap()
    }

    #[test]
    fn every_request_survives_the_wire() {
        let requests = [
            Request::Status,
            Request::SaList,
            Request::DctList,
            Request::IkeList,
            Request::ConnList,
            Request::CfShow,
            Request::Takeover {
                dvipa: "2001:db8::10".parse().unwrap(),
            },
            Request::KeysExport,
            Request::Metrics,
        ];
        for request in requests {
            assert_eq!(parse_request(&line(&request)).unwrap(), request);
        }
    }

    #[test]
    fn versions_other_than_ours_are_named_in_the_error() {
        let error = parse_request(br#"{"version":7,"request":{"kind":"status"}}"#).unwrap_err();
        assert_eq!(
            error,
            ControlError::UnsupportedVersion {
                requested: 7,
                supported: PROTOCOL_VERSION
            }
        );
        let huge = parse_request(br#"{"version":99999999999,"request":{"kind":"status"}}"#);
        assert!(matches!(
            huge,
            Err(ControlError::UnsupportedVersion {
                requested: u32::MAX,
                ..
            })
        ));
        let text = parse_request(br#"{"version":"1","request":{"kind":"status"}}"#);
        assert!(matches!(text, Err(ControlError::BadRequest { .. })));
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let error = parse_request(b"{\"version\":1,\n  \"request\": nope}").unwrap_err();
        let ControlError::BadRequest { line, column, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!((line, column), (2, 15));
        let bad_address =
            parse_request(br#"{"version":1,"request":{"kind":"takeover","dvipa":"300.1.1.1"}}"#)
                .unwrap_err();
        assert!(
            bad_address.to_string().contains("invalid IP address"),
            "{bad_address}"
        );
    }
}
