//! Writes the checked-in seed corpus of `frame`: one encoded frame of every XCF message kind,
//! as a distributor and its targets send them (the SA install carries made-up keys).
//!
//! Run from this folder: `cargo run --example seeds` (it rewrites `corpus/frame/seed-*`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use dvipsec_cluster::wire::{
    Connection, FilterRule, Flow, Frame, HeartbeatView, LifesizeEntry, MemberSeen, Message,
    NewConnOutcome, NewConnRequest, OwnerClaim, PortRange, Prefix, SaInstall, SaRef,
    TakeoverNotice, TargetLoad, VipaEntry, WireDirection, WireKeys,
};
use dvipsec_esp::{
    Direction, IpsecProtocol, LifetimeLimits, Mode, Suite, TunnelEndpoints, UdpEncap,
};

const DVIPA: &str = "app-a";
const DVIPA_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn v4(addr: Ipv4Addr) -> IpAddr {
    IpAddr::V4(addr)
}

fn flow() -> Flow {
    Flow {
        local: v4(DVIPA_ADDR),
        remote: v4(Ipv4Addr::new(10, 1, 0, 1)),
        protocol: 6,
        local_port: 60,
        remote_port: 40_000,
    }
}

fn sa_ref(spi: u32) -> SaRef {
    SaRef {
        dvipa: DVIPA.into(),
        direction: WireDirection::Inbound,
        spi,
    }
}

fn install() -> SaInstall {
    SaInstall {
        dvipa: DVIPA.into(),
        peer: v4(PEER),
        cf_slot: 3,
        lifesize_percent: 5,
        spi: 0x1000,
        direction: Direction::Inbound,
        protocol: IpsecProtocol::Esp,
        suite: Suite::Aes128Gcm16,
        mode: Mode::Tunnel,
        tunnel: Some(TunnelEndpoints {
            src: v4(PEER),
            dst: v4(DVIPA_ADDR),
        }),
        udp_encap: Some(UdpEncap::NAT_T),
        replay_window: 128,
        esn: false,
        lifetime: LifetimeLimits {
            soft_bytes: Some(900_000_000),
            hard_bytes: Some(1_000_000_000),
            ..LifetimeLimits::default()
        },
        keys: WireKeys::new(&[0x11; 20], &[]),
        filters: vec![FilterRule {
            local: Prefix::host(v4(DVIPA_ADDR)),
            remote: Prefix {
                addr: v4(Ipv4Addr::new(10, 1, 0, 0)),
                len: 16,
            },
            protocol: 6,
            local_ports: PortRange::single(60),
            remote_ports: PortRange {
                low: 1024,
                high: u16::MAX,
            },
        }],
    }
}

fn messages() -> Vec<(&'static str, Message)> {
    vec![
        ("hello", Message::Hello { node: "MVS1".into() }),
        (
            "vipa-list",
            Message::VipaList(vec![VipaEntry {
                dvipa: DVIPA.into(),
                address: v4(DVIPA_ADDR),
                ports: vec![60, 443],
            }]),
        ),
        ("sa-install", Message::SaInstall(Box::new(install()))),
        ("sa-delete", Message::SaDelete(sa_ref(0x1000))),
        (
            "lifesize",
            Message::Lifesize(vec![LifesizeEntry {
                sa: sa_ref(0x1000),
                bytes: 1_500_000,
                packets: 1_000,
            }]),
        ),
        (
            "newconn-request",
            Message::NewConnRequest(NewConnRequest {
                request_id: 7,
                dvipa: DVIPA.into(),
                flow: flow(),
            }),
        ),
        (
            "newconn-response",
            Message::NewConnResponse {
                request_id: 7,
                outcome: NewConnOutcome::Installed,
            },
        ),
        (
            "conn-report",
            Message::ConnReport {
                dvipa: DVIPA.into(),
                connections: vec![Connection { flow: flow() }],
            },
        ),
        (
            "target-load",
            Message::TargetLoad(TargetLoad {
                cpu_percent: 35,
                connections: 120,
                shadow_sas: 8,
            }),
        ),
        ("heartbeat", Message::Heartbeat),
        ("ack", Message::Ack { seq: 41 }),
        (
            "heartbeat-view",
            Message::HeartbeatView(HeartbeatView {
                seen: vec![MemberSeen {
                    node: "MVS2".into(),
                    heard_ms_ago: 250,
                }],
                owns: vec![OwnerClaim {
                    dvipa: DVIPA.into(),
                    cf_epoch: 2,
                }],
            }),
        ),
        (
            "takeover",
            Message::Takeover(TakeoverNotice {
                dvipa: DVIPA.into(),
                cf_epoch: 3,
            }),
        ),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("corpus/frame");
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
            fs::remove_file(path)?;
        }
    }
    for (seq, (name, message)) in (1u32..).zip(messages()) {
        let seq = if message.kind().is_reliable() { seq } else { 0 };
        let frame = Frame {
            from_incarnation: 0x1111,
            to_incarnation: 0x2222,
            seq,
            message,
        };
        let bytes = frame.encode()?;
        // What the fuzzer's decoder must give back for these.
        if Frame::decode(&bytes)? != frame {
            return Err(format!("{name} does not decode to itself").into());
        }
        fs::write(dir.join(format!("seed-{name}")), &bytes[..])?;
    }
    Ok(())
}
