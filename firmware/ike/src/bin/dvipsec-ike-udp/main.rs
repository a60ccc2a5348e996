//! A small UDP event loop around the sans-io endpoint, for interoperability tests and manual
//! trials: IKE on ports 500 and 4500 (with the RFC 3948 non-ESP marker on 4500), events printed
//! one per line on stdout, commands read from stdin.
//!
//! Usage (arguments are key=value):
//!   dvipsec-ike-udp local=10.50.0.1 remote=10.50.0.2 local_id=a@test remote_id=b@test
//!       suite=gcm|cbc local_ts=10.60.0.1/32 remote_ts=10.60.0.2/32 [initiate=1] [mode=transport]
//! The pre-shared key comes from the environment variable DVIPSEC_IKE_PSK, never from argv.
//! With `flood=N` it only sends N IKE_SA_INIT requests from N source ports and exits.
//! stdin commands: `list`, `stats`, `delete`, `liveness`, `rekey-child`, `rekey-ike`, `ping`, `esp`,
//! `quit` (or end of input).
//! ESP arriving on port 4500 is opened by the ESP engine; ICMP echo requests inside are answered
//! (`inner=` is our tunnel address), and `ping` sends an echo request to `peer_inner=`. `pfs=1` adds an x25519 (gcm) or modp2048 (cbc) PFS group to child rekeys.
#![forbid(unsafe_code)]

mod tunnel;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use dvipsec_ike::crypto::{EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{
    Credential, Endpoint, EndpointConfig, Event, Identity, IkeSaId, Lifetime, Mode, PeerConfig, Psk,
};

const NON_ESP_MARKER: [u8; 4] = [0; 4];
const IKE_PORT: u16 = 500;
const NAT_T_PORT: u16 = 4500;
const PEER_NAME: &str = "peer";

type Args = HashMap<String, String>;

fn main() {
    if let Err(message) = run() {
        eprintln!("dvipsec-ike-udp: {message}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Args = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let local_ip: IpAddr = parse(&args, "local")?;
    let remote_ip: IpAddr = parse(&args, "remote")?;
    let peer = peer_config(&args, remote_ip)?;
    let mut endpoint = Endpoint::new(EndpointConfig::new(vec![peer])).map_err(|e| e.to_string())?;
    if let Some(count) = args.get("flood") {
        let count: u16 = count.parse().map_err(|_| "bad value for flood=")?;
        return flood(&mut endpoint, local_ip, remote_ip, count);
    }
    let sockets = Sockets::bind(local_ip)?;
    let commands = spawn_stdin_reader();
    if args.get("initiate").is_some_and(|v| v == "1") {
        endpoint
            .initiate(
                Instant::now(),
                PEER_NAME,
                SocketAddr::new(local_ip, IKE_PORT),
                SocketAddr::new(remote_ip, IKE_PORT),
            )
            .map_err(|e| e.to_string())?;
    }
    let inner: Option<Ipv4Addr> = args.get("inner").and_then(|a| a.parse().ok());
    let peer_inner: Option<Ipv4Addr> = args.get("peer_inner").and_then(|a| a.parse().ok());
    let mut tunnel = tunnel::Tunnel::default();
    let mut last_sa: Option<IkeSaId> = None;
    loop {
        let now = Instant::now();
        match commands.try_recv() {
            Ok(command) if command == "ping" => match (inner, peer_inner) {
                (Some(src), Some(dst)) => match tunnel.ping(src, dst) {
                    Ok((esp, remote)) => sockets.send_esp(&esp, remote),
                    Err(message) => say(&format!("error {message}")),
                },
                _ => say("error ping needs inner= and peer_inner="),
            },
            Ok(command) if command == "esp" => {
                let (packets_in, packets_out) = tunnel.counts();
                say(&format!(
                    "esp packets_in={packets_in} packets_out={packets_out}"
                ));
            }
            Ok(command) => {
                if !execute(&command, &mut endpoint, last_sa, now) {
                    return Ok(());
                }
            }
            Err(TryRecvError::Disconnected) => return Ok(()),
            Err(TryRecvError::Empty) => {}
        }
        sockets.receive_into(&mut endpoint, &mut tunnel, now);
        if endpoint.poll_timeout().is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
        }
        while let Some(transmit) = endpoint.poll_transmit(now) {
            sockets.send(&transmit);
        }
        while let Some(event) = endpoint.poll_event() {
            let installed = match &event {
                Event::IkeSaEstablished { ike_sa, .. } => {
                    last_sa = Some(*ike_sa);
                    Ok(())
                }
                Event::IkeSaRekeyed { new, .. } => {
                    last_sa = Some(*new);
                    Ok(())
                }
                Event::ChildSaInstalled(child) => tunnel.install(child),
                Event::ChildSaRekeyed { new, .. } => tunnel.install(new),
                Event::ChildSaDeleted { inbound_spi, .. } => {
                    tunnel.remove(*inbound_spi);
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(message) = installed {
                say(&format!("error ESP engine refused the child SA: {message}"));
            }
            print_event(&event);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `count` IKE_SA_INIT requests, each from its own UDP source port, and nothing else:
/// a flood for the responder's cookie defence.
fn flood(endpoint: &mut Endpoint, local: IpAddr, remote: IpAddr, count: u16) -> Result<(), String> {
    let now = Instant::now();
    let mut sent = 0;
    for _ in 0..count {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(|e| e.to_string())?;
        let source = socket.local_addr().map_err(|e| e.to_string())?;
        endpoint
            .initiate(now, PEER_NAME, source, SocketAddr::new(remote, IKE_PORT))
            .map_err(|e| e.to_string())?;
        while let Some(transmit) = endpoint.poll_transmit(now) {
            socket
                .send_to(&transmit.payload, transmit.remote)
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        // A little pacing, so that the flood tests the cookie defence, not socket buffers.
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    say(&format!("flood sent={sent}"));
    Ok(())
}

fn parse<T: std::str::FromStr>(args: &Args, key: &str) -> Result<T, String> {
    args.get(key)
        .ok_or_else(|| format!("missing argument {key}="))?
        .parse()
        .map_err(|_| format!("bad value for {key}="))
}

fn selector(text: &str) -> Result<TrafficSelector, String> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad selector {text}"))?;
    let len: u8 = len.parse().map_err(|_| format!("bad prefix in {text}"))?;
    Ok(TrafficSelector::prefix(addr, len))
}

fn identity(text: &str) -> Identity {
    if text.contains('@') {
        Identity::Email(text.to_owned())
    } else {
        Identity::Fqdn(text.to_owned())
    }
}

fn peer_config(args: &Args, remote_ip: IpAddr) -> Result<PeerConfig, String> {
    let psk = std::env::var("DVIPSEC_IKE_PSK").map_err(|_| "DVIPSEC_IKE_PSK is not set")?;
    let (ike, esp) = match args.get("suite").map(String::as_str) {
        Some("gcm") | None => (IkeSuite::AES128GCM_SHA256_X25519, EspSuite::AES128GCM),
        Some("cbc") => (
            IkeSuite::AES256CBC_SHA256_MODP2048,
            EspSuite::AES256CBC_SHA256,
        ),
        Some(other) => return Err(format!("unknown suite {other}")),
    };
    // With pfs=1 the PFS variant comes first (used by our rekeys); both are accepted.
    let with_pfs = EspSuite {
        pfs: Some(ike.dh),
        ..esp
    };
    let esp_suites = if args.get("pfs").is_some_and(|v| v == "1") {
        vec![with_pfs, esp]
    } else {
        vec![esp, with_pfs]
    };
    let text = |key: &str| args.get(key).cloned().ok_or(format!("missing {key}="));
    Ok(PeerConfig {
        name: PEER_NAME.into(),
        remote_addr: Some(remote_ip),
        local_id: identity(&text("local_id")?),
        remote_id: identity(&text("remote_id")?),
        credential: Credential::Psk(Psk::new(psk.as_bytes())),
        ike_suites: vec![ike],
        esp_suites,
        local_ts: vec![selector(&text("local_ts")?)?],
        remote_ts: vec![selector(&text("remote_ts")?)?],
        mode: if args.get("mode").is_some_and(|m| m == "transport") {
            Mode::Transport
        } else {
            Mode::Tunnel
        },
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    })
}

fn spawn_stdin_reader() -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line.trim().to_owned()).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Runs one stdin command; false means quit.
fn execute(command: &str, endpoint: &mut Endpoint, sa: Option<IkeSaId>, now: Instant) -> bool {
    let outcome = match (command, sa) {
        ("quit", _) => return false,
        ("stats", _) => {
            let stats = endpoint.stats();
            say(&format!(
                "stats cookies_sent={} malformed={} unknown_spi={} spi_mismatch={} \
                 integrity_failures={} half_open_peer_drops={} half_open_global_drops={}",
                stats.cookies_sent,
                stats.malformed,
                stats.unknown_spi,
                stats.spi_mismatch,
                stats.integrity_failures,
                stats.half_open_peer_drops,
                stats.half_open_global_drops
            ));
            Ok(())
        }
        ("list", _) => {
            for info in endpoint.ike_sas() {
                let children: Vec<String> = info
                    .children
                    .iter()
                    .map(|c| format!("{:08x}/{:08x}", c.inbound_spi, c.outbound_spi))
                    .collect();
                say(&format!(
                    "sa ike_sa={:016x} state={:?} spi_i={:016x} spi_r={:016x} busy={} children={}",
                    info.id.0,
                    info.state,
                    info.spi_i,
                    info.spi_r,
                    info.request_outstanding,
                    children.join(",")
                ));
            }
            say("list-end");
            Ok(())
        }
        ("delete", Some(id)) => endpoint.delete_ike_sa(now, id).map_err(|e| e.to_string()),
        ("liveness", Some(id)) => endpoint.check_liveness(now, id).map_err(|e| e.to_string()),
        ("rekey-ike", Some(id)) => endpoint.rekey_ike(now, id).map_err(|e| e.to_string()),
        ("rekey-child", Some(id)) => {
            let first_child = endpoint
                .ike_sas()
                .into_iter()
                .find(|sa| sa.id == id)
                .and_then(|sa| sa.children.first().map(|c| c.inbound_spi));
            match first_child {
                Some(spi) => endpoint
                    .rekey_child(now, id, spi)
                    .map_err(|e| e.to_string()),
                None => Err("no child SA to rekey".into()),
            }
        }
        (other, _) => Err(format!("cannot run {other:?} now")),
    };
    if let Err(message) = outcome {
        say(&format!("error {message}"));
    }
    true
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn print_event(event: &Event) {
    let line = match event {
        Event::IkeSaEstablished {
            ike_sa,
            nat_detected,
            ..
        } => format!("event=ike_established ike_sa={:016x} nat={nat_detected}", ike_sa.0),
        Event::ChildSaInstalled(child) => format!(
            "event=child_installed ike_sa={:016x} spi_in={:08x} spi_out={:08x} udp_encap={} mode={:?}",
            child.ike_sa.0,
            child.inbound_spi,
            child.outbound_spi,
            child.udp_encapsulation,
            child.mode
        ),
        Event::ChildSaRefused { ike_sa, notify } => {
            format!("event=child_refused ike_sa={:016x} notify={notify}", ike_sa.0)
        }
        Event::ChildSaDeleted {
            ike_sa,
            inbound_spi,
            outbound_spi,
        } => format!(
            "event=child_deleted ike_sa={:016x} spi_in={inbound_spi:08x} spi_out={outbound_spi:08x}",
            ike_sa.0
        ),
        Event::IkeSaDeleted { ike_sa, reason } => {
            format!("event=ike_deleted ike_sa={:016x} reason={reason:?}", ike_sa.0)
        }
        Event::ChildSaRekeyed {
            old_inbound_spi,
            old_outbound_spi,
            new,
        } => format!(
            "event=child_rekeyed ike_sa={:016x} old_spi_in={old_inbound_spi:08x} old_spi_out={old_outbound_spi:08x} spi_in={:08x} spi_out={:08x}",
            new.ike_sa.0, new.inbound_spi, new.outbound_spi
        ),
        Event::IkeSaRekeyed { old, new } => {
            format!("event=ike_rekeyed old={:016x} new={:016x}", old.0, new.0)
        }
        other => format!("event=other {other:?}"),
    };
    say(&line);
}

/// The two IKE sockets. Port 4500 also carries UDP-encapsulated ESP, which this loop drops.
struct Sockets {
    ike: UdpSocket,
    nat_t: UdpSocket,
}

impl Sockets {
    fn bind(ip: IpAddr) -> Result<Self, String> {
        let bind = |port| {
            let socket = UdpSocket::bind(SocketAddr::new(ip, port))
                .map_err(|e| format!("bind {ip}:{port}: {e}"))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| format!("nonblocking {ip}:{port}: {e}"))?;
            Ok::<_, String>(socket)
        };
        Ok(Self {
            ike: bind(IKE_PORT)?,
            nat_t: bind(NAT_T_PORT)?,
        })
    }

    fn receive_into(&self, endpoint: &mut Endpoint, tunnel: &mut tunnel::Tunnel, now: Instant) {
        let mut buf = [0u8; 65536];
        for (socket, marker) in [(&self.ike, false), (&self.nat_t, true)] {
            let Ok(local) = socket.local_addr() else {
                continue;
            };
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let datagram = &buf[..len];
                let ike = if marker {
                    // Non-ESP marker: IKE. A single 0xff byte is a NAT keepalive; the rest is ESP.
                    match datagram.strip_prefix(&NON_ESP_MARKER) {
                        Some(ike) => ike,
                        None => {
                            if datagram != [0xff] {
                                self.handle_esp(tunnel, from, local, datagram);
                            }
                            continue;
                        }
                    }
                } else {
                    datagram
                };
                endpoint.handle_datagram(now, from, local, ike);
            }
        }
    }

    fn handle_esp(
        &self,
        tunnel: &mut tunnel::Tunnel,
        from: SocketAddr,
        local: SocketAddr,
        esp: &[u8],
    ) {
        match tunnel.receive(from, local, esp) {
            Ok((Some(reply), _)) => self.send_esp(&reply, from),
            Ok((None, true)) => say("event=ping_reply"),
            Ok((None, false)) => {}
            Err(message) => eprintln!("dvipsec-ike-udp: ESP dropped: {message}"),
        }
    }

    fn send_esp(&self, esp: &[u8], remote: SocketAddr) {
        if let Err(e) = self.nat_t.send_to(esp, remote) {
            eprintln!("dvipsec-ike-udp: send ESP to {remote}: {e}");
        }
    }

    fn send(&self, transmit: &dvipsec_ike::Transmit) {
        let result = if transmit.local.port() == NAT_T_PORT {
            let framed = [&NON_ESP_MARKER[..], &transmit.payload].concat();
            self.nat_t.send_to(&framed, transmit.remote)
        } else {
            self.ike.send_to(&transmit.payload, transmit.remote)
        };
        if let Err(e) = result {
            eprintln!("dvipsec-ike-udp: send to {}: {e}", transmit.remote);
        }
    }
}
