//! `dvipsecctl esp seal|open|peek`: ESP with known keys, for people debugging a capture.
//!
//! Reads raw IP packets (binary, or hex lines with `--hex`), runs them through one SA of the
//! dvipsec-esp engine and writes the result. Exit status: 0 success, 1 the ICV did not verify
//! (`open`), 2 any other rejected packet or bad input. Keys are never printed.

#[path = "esp/packet_io.rs"]
mod packet_io;
#[path = "esp/sa_args.rs"]
mod sa_args;
#[path = "esp/secret_hex.rs"]
mod secret_hex;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_esp::{
    Direction, EspError, Mode, Sa, SaConfig, SaError, SaKeys, TunnelEndpoints, UdpEncap,
    MAX_HEADROOM, MAX_TAILROOM,
};
use zeroize::Zeroizing;

use packet_io::{InputPacket, PacketIoError, PacketSink};
use sa_args::{ModeArg, SaArgs};
use secret_hex::KeyHexError;

const EXAMPLES: &str = "\
Examples:
  # open a captured packet (hex, one per line) of an AES-128-GCM tunnel-mode SA in NAT-T
  dvipsecctl esp open --hex --in packet.hex --spi 0xc0ffee01 --suite aes128gcm16 \\
      --key <16-byte key + 4-byte salt, hex> --mode tunnel --udp-encap 4500:4500
  # seal an inner packet with sequence number 7
  dvipsecctl esp seal --in inner.bin --out esp.bin --spi 0x1001 --seq 7 \\
      --suite aes256cbc-sha256 --key <32 bytes hex> --auth-key <32 bytes hex> \\
      --mode tunnel --tunnel-src 192.0.2.1 --tunnel-dst 192.0.2.2
Exit status: 0 done, 1 an ICV did not verify, 2 any other rejected packet or bad input.";

/// `dvipsecctl esp`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct EspArgs {
    #[command(subcommand)]
    action: EspAction,
}

#[derive(Subcommand, Debug)]
enum EspAction {
    /// Encapsulate IP packets in ESP (tunnel mode: the input is the inner packet).
    Seal(PacketArgs),
    /// Verify and decapsulate ESP packets; exit 1 if an ICV does not verify.
    Open(PacketArgs),
    /// Print the inner 5-tuple of ESP packets as JSON without verifying them (unauthenticated).
    Peek(PacketArgs),
}

impl EspAction {
    fn name(&self) -> &'static str {
        match self {
            EspAction::Seal(_) => "seal",
            EspAction::Open(_) => "open",
            EspAction::Peek(_) => "peek",
        }
    }
}

#[derive(Args, Debug)]
struct PacketArgs {
    /// Read packets from FILE instead of stdin.
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,

    /// Write results to FILE instead of stdout.
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,

    /// Hex instead of binary: one packet per input line, one result per output line.
    #[arg(long)]
    hex: bool,

    #[command(flatten)]
    sa: SaArgs,
}

/// Why `dvipsecctl esp` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum EspCommandError {
    /// Input or output.
    #[error(transparent)]
    Io(#[from] PacketIoError),
    /// A key flag is not hex.
    #[error(transparent)]
    KeyHex(#[from] KeyHexError),
    /// The flags do not describe a usable SA.
    #[error("{0}")]
    Flags(String),
    /// The engine refused the SA.
    #[error("invalid SA: {0}")]
    Sa(#[from] SaError),
    /// The engine rejected a packet.
    #[error("{location}: {cause}")]
    Packet {
        /// Which input packet.
        location: String,
        /// What the engine said.
        cause: EspError,
    },
}

impl EspCommandError {
    /// 1 when an ICV failed to verify; 2 for everything else.
    fn exit_code(&self) -> u8 {
        match self {
            EspCommandError::Packet {
                cause: EspError::Authentication { .. },
                ..
            } => 1,
            _ => 2,
        }
    }
}

/// Runs `dvipsecctl esp ...`.
pub fn run(args: EspArgs) -> ExitCode {
    let action = args.action.name();
    match execute(args.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dvipsecctl esp {action}: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn execute(action: EspAction) -> Result<(), EspCommandError> {
    match action {
        EspAction::Seal(args) => seal(&args),
        EspAction::Open(args) => open(&args),
        EspAction::Peek(args) => peek(&args),
    }
}

fn seal(args: &PacketArgs) -> Result<(), EspCommandError> {
    let first_seq = args.sa.seq.unwrap_or(1);
    if first_seq == 0 {
        return Err(EspCommandError::Flags(
            "--seq 0: sequence number 0 is never sent, the first packet is 1".to_owned(),
        ));
    }
    check_seq_fits(&args.sa, first_seq)?;
    let mut sa = build_sa(&args.sa, Direction::Outbound)?;
    let packets = packet_io::read_packets(args.input.as_deref(), args.hex)?;
    let mut sink = PacketSink::open(args.output.as_ref())?;
    let result = packets.iter().zip(0u64..).try_for_each(|(packet, index)| {
        let seq = first_seq
            .checked_add(index)
            .ok_or(EspCommandError::Packet {
                location: packet.location.clone(),
                cause: EspError::SequenceExhausted,
            })?;
        let sealed = seal_one(&mut sa, packet, seq)?;
        sink.write_packet(&sealed, args.hex)?;
        Ok(())
    });
    finish(sink, result)
}

fn seal_one(sa: &mut Sa, packet: &InputPacket, seq: u64) -> Result<Vec<u8>, EspCommandError> {
    let len = packet.bytes.len();
    let mut buf = vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + len].copy_from_slice(&packet.bytes);
    let sealed = sa
        .seal_with_seq(&mut buf, MAX_HEADROOM..MAX_HEADROOM + len, seq)
        .map_err(|cause| packet_error(packet, cause))?;
    Ok(buf[sealed.packet].to_vec())
}

fn open(args: &PacketArgs) -> Result<(), EspCommandError> {
    let mut sa = build_receiver(&args.sa)?;
    let packets = packet_io::read_packets(args.input.as_deref(), args.hex)?;
    let mut sink = PacketSink::open(args.output.as_ref())?;
    let result = packets.iter().try_for_each(|packet| {
        let mut buf = packet.bytes.clone();
        let len = buf.len();
        let opened = sa
            .open(&mut buf, 0..len)
            .map_err(|cause| packet_error(packet, cause))?;
        sink.write_packet(&buf[opened.packet], args.hex)?;
        Ok(())
    });
    finish(sink, result)
}

fn peek(args: &PacketArgs) -> Result<(), EspCommandError> {
    let sa = build_receiver(&args.sa)?;
    let packets = packet_io::read_packets(args.input.as_deref(), args.hex)?;
    let mut sink = PacketSink::open(args.output.as_ref())?;
    let result = packets.iter().try_for_each(|packet| {
        let peeked = sa
            .peek(&packet.bytes)
            .map_err(|cause| packet_error(packet, cause))?;
        sink.write_line(&peek_json(peeked.unverified()).to_string())?;
        Ok(())
    });
    finish(sink, result)
}

/// IP protocol numbers whose headers carry the ports peek reports.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// peek's output: `{"src","dst","proto","sport","dport","syn"}` of the inner packet. The ports
/// are null for protocols without ports (ICMP, ...), so they cannot be mistaken for port 0.
fn peek_json(info: &dvipsec_esp::PeekInfo) -> serde_json::Value {
    let has_ports = matches!(info.protocol, TCP | UDP);
    let port = |p: u16| has_ports.then_some(p);
    serde_json::json!({
        "src": info.src.to_string(),
        "dst": info.dst.to_string(),
        "proto": info.protocol,
        "sport": port(info.src_port),
        "dport": port(info.dst_port),
        "syn": info.syn,
    })
}

/// Flushes what was produced, then reports the first failure (earlier packets stay delivered).
fn finish(sink: PacketSink, result: Result<(), EspCommandError>) -> Result<(), EspCommandError> {
    let flushed = sink.finish();
    result?;
    Ok(flushed?)
}

fn packet_error(packet: &InputPacket, cause: EspError) -> EspCommandError {
    EspCommandError::Packet {
        location: packet.location.clone(),
        cause,
    }
}

/// The inbound SA for open and peek, with its window starting at `--seq` (default 0).
fn build_receiver(args: &SaArgs) -> Result<Sa, EspCommandError> {
    let highest_accepted = args.seq.unwrap_or(0);
    check_seq_fits(args, highest_accepted)?;
    let mut sa = build_sa(args, Direction::Inbound)?;
    sa.set_replay_top(highest_accepted);
    Ok(sa)
}

fn check_seq_fits(args: &SaArgs, seq: u64) -> Result<(), EspCommandError> {
    if !args.esn && seq > u64::from(u32::MAX) {
        return Err(EspCommandError::Flags(format!(
            "--seq {seq} needs --esn (without it sequence numbers are 32-bit)"
        )));
    }
    Ok(())
}

fn build_sa(args: &SaArgs, direction: Direction) -> Result<Sa, EspCommandError> {
    let enc = key_flag(args, "--key")?;
    let auth = key_flag(args, "--auth-key")?;
    let mut config = SaConfig::new(args.spi, direction, args.suite, SaKeys::new(&enc, &auth));
    config.mode = match args.mode {
        ModeArg::Transport => Mode::Transport,
        ModeArg::Tunnel => Mode::Tunnel,
    };
    config.tunnel = tunnel_endpoints(args, direction)?;
    config.udp_encap = args.udp_encap.map(|ports| UdpEncap {
        src_port: ports.sport,
        dst_port: ports.dport,
    });
    config.replay_window = args.replay_window;
    config.esn = args.esn;
    Ok(Sa::new(config)?)
}

/// Decodes `--key` or `--auth-key` and checks it against what the suite needs.
fn key_flag(args: &SaArgs, flag: &'static str) -> Result<Zeroizing<Vec<u8>>, EspCommandError> {
    let suite = args.suite;
    let (given, needed, what) = match flag {
        "--key" => (
            args.key.as_ref(),
            suite.enc_key_len(),
            if suite.is_aead() {
                "key followed by the 4-byte salt"
            } else {
                "encryption key"
            },
        ),
        _ => (
            args.auth_key.as_ref(),
            suite.auth_key_len(),
            "HMAC-SHA-256 key",
        ),
    };
    let key = match given {
        Some(hex) => hex.decode(flag)?,
        None => Zeroizing::new(Vec::new()),
    };
    if needed == 0 && given.is_some() {
        return Err(EspCommandError::Flags(format!(
            "{flag} is not used by suite {suite}"
        )));
    }
    if key.len() != needed {
        let state = if given.is_some() {
            format!("got {} bytes", key.len())
        } else {
            "missing".to_owned()
        };
        return Err(EspCommandError::Flags(format!(
            "{flag}: suite {suite} needs {needed} bytes ({what}), {state}"
        )));
    }
    Ok(key)
}

fn tunnel_endpoints(
    args: &SaArgs,
    direction: Direction,
) -> Result<Option<TunnelEndpoints>, EspCommandError> {
    match (args.mode, args.tunnel_src, args.tunnel_dst) {
        (ModeArg::Tunnel, Some(src), Some(dst)) => Ok(Some(TunnelEndpoints { src, dst })),
        (ModeArg::Tunnel, None, None) if direction == Direction::Inbound => Ok(None),
        (ModeArg::Tunnel, _, _) => Err(EspCommandError::Flags(
            "tunnel mode needs both --tunnel-src and --tunnel-dst to seal \
             (open and peek accept neither or both)"
                .to_owned(),
        )),
        (ModeArg::Transport, None, None) => Ok(None),
        (ModeArg::Transport, _, _) => Err(EspCommandError::Flags(
            "--tunnel-src/--tunnel-dst need --mode tunnel".to_owned(),
        )),
    }
}
