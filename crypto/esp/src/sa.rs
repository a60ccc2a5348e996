//! The SA type: configuration, keys, per-SA crypto state, sequence numbers, lifetime and counters.

use crate::error::{CryptoError, SaError};
use crate::provider::{AeadAlgorithm, AeadProvider, AwsLcProvider, EspAead};
use crate::replay::{ReplayWindow, MAX_WINDOW, MIN_WINDOW};
use crate::suite::Suite;
use aws_lc_rs::cipher::{DecryptingKey, EncryptingKey, UnboundCipherKey};
use aws_lc_rs::hmac;
use std::net::IpAddr;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Whether the SA protects packets we send or packets we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We receive and open (or peek) its packets.
    Inbound,
    /// We seal and send its packets.
    Outbound,
}

impl Direction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// ESP or AH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpsecProtocol {
    /// Encapsulating Security Payload (RFC 4303).
    Esp,
    /// Authentication Header (RFC 4302); the suite must be [`Suite::NullHmacSha256`].
    Ah,
}

/// Transport or tunnel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Protects the payload of the IP packet; the IP header stays outside.
    Transport,
    /// Protects a whole inner IP packet behind a new outer header.
    Tunnel,
}

/// Outer addresses of a tunnel-mode SA, as they appear on this SA's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEndpoints {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
}

/// UDP encapsulation ports (RFC 3948), as they appear on this SA's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    /// UDP source port (4500 unless a NAT changed it).
    pub src_port: u16,
    /// UDP destination port (4500 unless a NAT changed it).
    pub dst_port: u16,
}

impl UdpEncap {
    /// The usual 4500 -> 4500.
    pub const NAT_T: UdpEncap = UdpEncap {
        src_port: 4500,
        dst_port: 4500,
    };
}

/// Soft and hard lifetime limits in packets and bytes (time limits belong to the caller, which owns the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LifetimeLimits {
    /// Packets after which a rekey should start.
    pub soft_packets: Option<u64>,
    /// Packets after which the SA refuses to work.
    pub hard_packets: Option<u64>,
    /// Payload bytes after which a rekey should start.
    pub soft_bytes: Option<u64>,
    /// Payload bytes after which the SA refuses to work.
    pub hard_bytes: Option<u64>,
}

/// Where an SA stands against its lifetime limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeState {
    /// Below every limit.
    Fresh,
    /// A soft limit is reached: rekey now.
    Soft,
    /// A hard limit is reached: the SA no longer seals or opens.
    Hard,
}

/// Per-SA counters. Every dropped packet is counted under its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaCounters {
    /// Packets sealed or opened successfully.
    pub packets: u64,
    /// Inner bytes (plaintext payload) of those packets.
    pub bytes: u64,
    /// Packets dropped as replays.
    pub replays: u64,
    /// Packets dropped because the ICV failed.
    pub auth_failures: u64,
    /// Authentic packets dropped for bad padding or next header.
    pub bad_trailer: u64,
    /// Packets dropped as malformed (truncated, wrong SPI, not ESP, fragments...).
    pub malformed: u64,
    /// Dummy packets (next header 59) dropped after verification.
    pub dummies: u64,
}

/// Key material of an SA. Zeroized on drop; Debug shows only lengths.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SaKeys {
    enc: Vec<u8>,
    auth: Vec<u8>,
}

impl SaKeys {
    /// `enc`: the encryption key (for GCM and ChaCha20-Poly1305 followed by the 4-byte salt, as IKEv2
    /// derives it; empty for null); `auth`: the integrity key (empty for AEADs).
    pub fn new(enc: &[u8], auth: &[u8]) -> Self {
        SaKeys {
            enc: enc.to_vec(),
            auth: auth.to_vec(),
        }
    }
}

impl std::fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaKeys")
            .field("enc", &format_args!("<redacted {} bytes>", self.enc.len()))
            .field(
                "auth",
                &format_args!("<redacted {} bytes>", self.auth.len()),
            )
            .finish()
    }
}

/// Everything needed to build an [`Sa`]. Start from [`SaConfig::new`] and set the public fields.
#[derive(Debug, Clone)]
pub struct SaConfig {
    /// Security Parameter Index (network order on the wire).
    pub spi: u32,
    /// Inbound or outbound.
    pub direction: Direction,
    /// ESP or AH.
    pub protocol: IpsecProtocol,
    /// Cryptographic suite.
    pub suite: Suite,
    /// Key material (moved into the SA's crypto state at [`Sa::new`], then zeroized).
    pub keys: SaKeys,
    /// Transport or tunnel.
    pub mode: Mode,
    /// Tunnel endpoints; required for outbound tunnel-mode SAs.
    pub tunnel: Option<TunnelEndpoints>,
    /// UDP encapsulation (RFC 3948), if any.
    pub udp_encap: Option<UdpEncap>,
    /// Anti-replay window, 32..=4096, or 0 to disable anti-replay (inbound only).
    pub replay_window: u32,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Lifetime limits in packets/bytes.
    pub lifetime: LifetimeLimits,
}

impl SaConfig {
    /// An ESP transport-mode SA without UDP encapsulation or ESN, with a 128-packet window.
    pub fn new(spi: u32, direction: Direction, suite: Suite, keys: SaKeys) -> Self {
        SaConfig {
            spi,
            direction,
            protocol: IpsecProtocol::Esp,
            suite,
            keys,
            mode: Mode::Transport,
            tunnel: None,
            udp_encap: None,
            replay_window: 128,
            esn: false,
            lifetime: LifetimeLimits::default(),
        }
    }
}

/// The SA's parameters without keys (what [`Sa::params`] returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaParams {
    /// SPI.
    pub spi: u32,
    /// Direction.
    pub direction: Direction,
    /// ESP or AH.
    pub protocol: IpsecProtocol,
    /// Suite.
    pub suite: Suite,
    /// Mode.
    pub mode: Mode,
    /// Tunnel endpoints.
    pub tunnel: Option<TunnelEndpoints>,
    /// UDP encapsulation.
    pub udp_encap: Option<UdpEncap>,
    /// Replay window (0: disabled).
    pub replay_window: u32,
    /// ESN.
    pub esn: bool,
    /// Lifetime limits.
    pub lifetime: LifetimeLimits,
}

/// Keyed primitives, set up once when the SA is built.
pub(crate) enum Cipher {
    Aead {
        aead: Box<dyn EspAead>,
        salt: Zeroizing<[u8; 4]>,
    },
    CbcHmac(Box<CbcHmacKeys>),
    Null {
        mac: Box<hmac::Key>,
    },
}

/// AES-CBC and HMAC keys of a CBC suite.
pub(crate) struct CbcHmacKeys {
    pub encrypt: EncryptingKey,
    pub decrypt: DecryptingKey,
    /// AES-ECB with the same key, for deterministic unpredictable IVs (NIST SP 800-38A appendix C).
    pub iv_gen: EncryptingKey,
    pub mac: hmac::Key,
}

/// A Security Association ready to seal, open and peek packets.
///
/// Build with [`Sa::new`]; see the crate docs for the packet calls.
pub struct Sa {
    pub(crate) params: SaParams,
    pub(crate) cipher: Cipher,
    pub(crate) replay: ReplayWindow,
    /// Outbound: the last sequence number sent (0: none yet).
    pub(crate) last_seq: u64,
    pub(crate) counters: SaCounters,
}

impl std::fmt::Debug for Sa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sa")
            .field("params", &self.params)
            .field("keys", &"<redacted>")
            .field("last_seq", &self.last_seq)
            .field("replay_top", &self.replay.top())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Sa {
    /// Builds the SA with the aws-lc-rs provider. Keys are set up here, once.
    pub fn new(config: SaConfig) -> Result<Sa, SaError> {
        Sa::with_provider(config, &AwsLcProvider)
    }

    /// Builds the SA with another AEAD provider.
    pub fn with_provider(config: SaConfig, provider: &dyn AeadProvider) -> Result<Sa, SaError> {
        validate(&config)?;
        let cipher = build_cipher(config.suite, &config.keys, provider)?;
        let params = SaParams {
            spi: config.spi,
            direction: config.direction,
            protocol: config.protocol,
            suite: config.suite,
            mode: config.mode,
            tunnel: config.tunnel,
            udp_encap: config.udp_encap,
            replay_window: config.replay_window,
            esn: config.esn,
            lifetime: config.lifetime,
        };
        Ok(Sa {
            params,
            cipher,
            replay: ReplayWindow::new(config.replay_window.max(MIN_WINDOW)),
            last_seq: 0,
            counters: SaCounters::default(),
        })
    }

    /// The SA's parameters (no keys).
    pub fn params(&self) -> &SaParams {
        &self.params
    }

    /// The SA's counters.
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }

    /// Outbound: the last sequence number used. Inbound: the highest accepted one.
    pub fn sequence(&self) -> u64 {
        match self.params.direction {
            Direction::Outbound => self.last_seq,
            Direction::Inbound => self.replay.top(),
        }
    }

    /// Inbound: restarts the replay window with `top` as the highest number seen and nothing
    /// recorded below it (a target taking over an SA's inbound state, or a test starting deep in
    /// the ESN space).
    pub fn set_replay_top(&mut self, top: u64) {
        self.replay = ReplayWindow::new(self.replay.size());
        if top > 0 {
            self.replay.accept(top);
        }
    }

    /// Outbound: sets the last sequence number used, so [`Sa::seal`] continues after it.
    pub fn set_last_sequence(&mut self, last: u64) {
        self.last_seq = last;
    }

    /// Where the SA stands against its lifetime limits.
    pub fn lifetime_state(&self) -> LifetimeState {
        let limits = &self.params.lifetime;
        let reached = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value >= l);
        let c = &self.counters;
        if reached(limits.hard_packets, c.packets) || reached(limits.hard_bytes, c.bytes) {
            LifetimeState::Hard
        } else if reached(limits.soft_packets, c.packets) || reached(limits.soft_bytes, c.bytes) {
            LifetimeState::Soft
        } else {
            LifetimeState::Fresh
        }
    }

    /// Whether an inbound sequence number would pass the replay check now (no state change).
    /// `seq_lo` is the 32-bit number from the packet; the high bits are inferred when ESN is on.
    pub fn replay_check(&self, seq_lo: u32) -> Result<u64, crate::EspError> {
        let seq = self.full_seq(seq_lo);
        if self.params.replay_window == 0 || self.replay.check(seq) {
            Ok(seq)
        } else {
            Err(crate::EspError::Replay { seq })
        }
    }

    /// The full sequence number of an inbound packet whose header carries `seq_lo`: with ESN the
    /// high half is inferred from this SA's window (RFC 4303 appendix A2), as [`Sa::peek`] does.
    /// For callers of [`crate::peek_burst_flows`], which reports only the low half.
    pub fn infer_sequence(&self, seq_lo: u32) -> u64 {
        self.full_seq(seq_lo)
    }

    pub(crate) fn full_seq(&self, seq_lo: u32) -> u64 {
        if self.params.esn {
            self.replay.infer_esn(seq_lo)
        } else {
            u64::from(seq_lo)
        }
    }
}

fn validate(config: &SaConfig) -> Result<(), SaError> {
    let window = config.replay_window;
    if window != 0 && !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        return Err(SaError::ReplayWindow(window));
    }
    if config.spi < 256 {
        return Err(SaError::ReservedSpi(config.spi));
    }
    if config.protocol == IpsecProtocol::Ah && config.suite != Suite::NullHmacSha256 {
        return Err(SaError::SuiteNotForAh(config.suite.name()));
    }
    if let Some(t) = config.tunnel {
        if t.src.is_ipv4() != t.dst.is_ipv4() {
            return Err(SaError::MixedTunnelFamilies {
                src: t.src,
                dst: t.dst,
            });
        }
    }
    let needs_endpoints = config.mode == Mode::Tunnel && config.direction == Direction::Outbound;
    if needs_endpoints && config.tunnel.is_none() {
        return Err(SaError::MissingTunnelEndpoints);
    }
    Ok(())
}

fn check_len(algorithm: &'static str, key: &[u8], expected: usize) -> Result<(), CryptoError> {
    if key.len() != expected {
        return Err(CryptoError::KeyLength {
            algorithm,
            expected,
            got: key.len(),
        });
    }
    Ok(())
}

fn build_cipher(
    suite: Suite,
    keys: &SaKeys,
    provider: &dyn AeadProvider,
) -> Result<Cipher, CryptoError> {
    check_len("encryption", &keys.enc, suite.enc_key_len())?;
    check_len("integrity", &keys.auth, suite.auth_key_len())?;
    let key_error = CryptoError::Provider {
        operation: "cipher key setup",
    };
    match suite {
        Suite::Aes128Gcm16 | Suite::Aes256Gcm16 | Suite::ChaCha20Poly1305 => {
            let algorithm = match suite {
                Suite::Aes128Gcm16 => AeadAlgorithm::Aes128Gcm,
                Suite::Aes256Gcm16 => AeadAlgorithm::Aes256Gcm,
                _ => AeadAlgorithm::ChaCha20Poly1305,
            };
            let (key, salt_bytes) = keys.enc.split_at(keys.enc.len() - 4);
            let mut salt = Zeroizing::new([0u8; 4]);
            salt.copy_from_slice(salt_bytes);
            Ok(Cipher::Aead {
                aead: provider.new_aead(algorithm, key)?,
                salt,
            })
        }
        Suite::Aes128CbcHmacSha256 | Suite::Aes256CbcHmacSha256 => {
            let alg = if suite == Suite::Aes128CbcHmacSha256 {
                &aws_lc_rs::cipher::AES_128
            } else {
                &aws_lc_rs::cipher::AES_256
            };
            let unbound = || UnboundCipherKey::new(alg, &keys.enc).map_err(|_| key_error);
            Ok(Cipher::CbcHmac(Box::new(CbcHmacKeys {
                encrypt: EncryptingKey::cbc(unbound()?).map_err(|_| key_error)?,
                decrypt: DecryptingKey::cbc(unbound()?).map_err(|_| key_error)?,
                iv_gen: EncryptingKey::ecb(unbound()?).map_err(|_| key_error)?,
                mac: hmac::Key::new(hmac::HMAC_SHA256, &keys.auth),
            })))
        }
        Suite::NullHmacSha256 => Ok(Cipher::Null {
            mac: Box::new(hmac::Key::new(hmac::HMAC_SHA256, &keys.auth)),
        }),
    }
}
