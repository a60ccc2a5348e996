//! Property test: any valid configuration, serialized to YAML and parsed again, comes
//! back equal. Lives inside the crate because configurations are built field by field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use proptest::prelude::*;

use crate::located::Located;
use crate::model::*;
use crate::operator::{ControlConfig, LogLevel, LogModules, LoggingConfig, MetricsConfig};
use crate::values::{DestIp, IkeIdentity, IpNet, PortSet, Protocol, SecretSource};

fn loc<T>(value: T) -> Located<T> {
    Located::new(value)
}

/// Strings that a careless YAML writer would get wrong: they read as other types,
/// start with indicators, or carry quotes and colons.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("yes".to_owned()),
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("1024".to_owned()),
        Just("0x1F".to_owned()),
        Just("1e3".to_owned()),
        Just("- dash".to_owned()),
        Just("#hash".to_owned()),
        Just("key: value".to_owned()),
        Just("'single' \"double\"".to_owned()),
        Just("".to_owned()),
        "[ -~]{0,16}",
    ]
}

fn addr(v6: bool, index: u16) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, index + 1))
    } else {
        let [hi, lo] = (index + 1).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(192, 0, hi, lo))
    }
}

fn net(v6: bool, index: u16, prefix_len: u8) -> IpNet {
    let base = addr(v6, index);
    IpNet {
        addr: base,
        prefix_len: prefix_len.min(crate::values::max_prefix_len(&base)),
    }
}

fn port_strategy() -> impl Strategy<Value = PortConfig> {
    (
        0..4u8,
        tricky_text(),
        proptest::collection::vec(tricky_text(), 0..3),
        any::<u32>(),
    )
        .prop_map(|(kind, text, list, queue)| {
            let mut port = PortConfig {
                name: loc("p".to_owned()),
                driver: loc(PortDriver::Mem),
                iface: None,
                queue: None,
                eal_args: None,
                vdevs: None,
            };
            match kind {
                0 => {}
                1 => {
                    port.driver = loc(PortDriver::AfPacket);
                    port.iface = Some(loc(text));
                }
                2 => {
                    port.driver = loc(PortDriver::AfXdp);
                    port.iface = Some(loc(text));
                    port.queue = Some(loc(queue));
                }
                _ => {
                    port.driver = loc(PortDriver::Dpdk);
                    port.eal_args = Some(loc(list.clone()));
                    port.vdevs = Some(loc(list));
                }
            }
            port
        })
}

fn port_set_strategy() -> impl Strategy<Value = PortSet> {
    prop_oneof![
        Just(PortSet::All),
        proptest::collection::btree_set(1..=65535u32, 1..4)
            .prop_map(|ports| PortSet::List(ports.into_iter().map(loc).collect())),
    ]
}

fn proposals_strategy() -> impl Strategy<Value = Vec<Located<Proposal>>> {
    let esp = [
        Proposal::Aes128Gcm16,
        Proposal::Aes256Gcm16,
        Proposal::Chacha20Poly1305,
        Proposal::Aes128CbcSha256,
        Proposal::Aes256CbcSha256,
        Proposal::NullSha256,
    ];
    prop_oneof![
        Just(vec![loc(Proposal::AhSha256)]),
        proptest::sample::subsequence(esp.to_vec(), 1..=esp.len())
            .prop_map(|list| list.into_iter().map(loc).collect()),
    ]
}

fn limit_strategy() -> impl Strategy<Value = Option<Limit>> {
    proptest::option::of((0..u64::MAX - 1, 1..u64::MAX).prop_map(|(a, b)| {
        let (soft, hard) = if a < b { (a, b) } else { (b - 1, b) };
        Limit {
            soft: loc(soft),
            hard: loc(hard),
        }
    }))
}

fn lifetime_strategy() -> impl Strategy<Value = Lifetime> {
    (limit_strategy(), limit_strategy(), limit_strategy()).prop_map(|(seconds, bytes, packets)| {
        Lifetime {
            seconds,
            bytes,
            packets,
        }
    })
}

/// An SPD entry for a DVIPA of the given family, protected through `peer`.
fn spd_strategy(v6: bool, peer: String) -> impl Strategy<Value = SpdEntry> {
    (
        0..3u8,
        any::<bool>(),
        0..=128u8,
        port_set_strategy(),
        proposals_strategy(),
        proptest::option::of(lifetime_strategy()),
        proptest::option::of(32..=4096u32),
        any::<bool>(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(
            move |(action, tunnel, prefix, ports, proposals, lifetime, window, esn, log, proto)| {
                let protocol = if matches!(ports, PortSet::All) {
                    Protocol::Number(proto)
                } else {
                    Protocol::Tcp
                };
                let mut entry = SpdEntry {
                    name: loc("e".to_owned()),
                    local: tunnel.then(|| loc(net(v6, 500, prefix))),
                    remote: loc(net(v6, 900, prefix)),
                    protocol: loc(protocol),
                    local_ports: loc(ports.clone()),
                    remote_ports: loc(ports),
                    action: loc(Action::Discard),
                    peer: None,
                    mode: None,
                    proposals: None,
                    lifetime: None,
                    replay_window: None,
                    esn: loc(false),
                    log,
                };
                match action {
                    0 => {
                        entry.action = loc(Action::Protect);
                        entry.peer = Some(loc(peer.clone()));
                        entry.mode = Some(loc(if tunnel {
                            Mode::Tunnel
                        } else {
                            Mode::Transport
                        }));
                        entry.proposals = Some(loc(proposals));
                        entry.lifetime = lifetime;
                        entry.replay_window = window.map(loc);
                        entry.esn = loc(esn);
                    }
                    1 => entry.action = loc(Action::Bypass),
                    _ => {}
                }
                entry
            },
        )
}

fn identity_strategy() -> impl Strategy<Value = IkeIdentity> {
    prop_oneof![
        "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,2}".prop_map(IkeIdentity::Fqdn),
        "[a-z0-9._+-]{1,8}@[a-z0-9.-]{1,10}".prop_map(IkeIdentity::Email),
        any::<[u8; 4]>().prop_map(|b| IkeIdentity::Ip(IpAddr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IkeIdentity::Ip(IpAddr::from(b))),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(IkeIdentity::KeyId),
    ]
}

fn secret_source_strategy() -> impl Strategy<Value = SecretSource> {
    prop_oneof![
        "[A-Z_][A-Z0-9_]{0,12}".prop_map(SecretSource::Env),
        "[a-z0-9/._ -]{1,20}".prop_map(|p| SecretSource::File(PathBuf::from(p))),
    ]
}

fn peer_strategy(v6: bool, index: u16) -> impl Strategy<Value = PeerConfig> {
    (
        identity_strategy(),
        identity_strategy(),
        prop_oneof![
            Just(NatTraversal::Auto),
            Just(NatTraversal::Force),
            Just(NatTraversal::Off)
        ],
        secret_source_strategy(),
    )
        .prop_map(move |(remote_id, local_id, nat_t, psk)| PeerConfig {
            name: loc(format!("peer{index}")),
            address: loc(addr(v6, 700 + index)),
            remote_id: loc(remote_id),
            local_id: loc(local_id),
            nat_t: loc(nat_t),
            psk: loc(psk),
        })
}

fn site_parts(v6: bool) -> impl Strategy<Value = SiteConfig> {
    let nodes = proptest::collection::vec(
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(port_strategy(), 0..3),
            proptest::collection::btree_set(0..64u32, 0..3),
        ),
        1..5,
    );
    let dvipas = proptest::collection::vec(
        (
            proptest::option::of((port_set_strategy(), any::<bool>())),
            proptest::collection::vec(spd_strategy(v6, "peer0".to_owned()), 0..3),
            any::<bool>(),
            0..=32u8,
        ),
        0..3,
    );
    let cf = (
        any::<bool>(),
        1..=crate::MAX_LEASE,
        1..u64::MAX,
        any::<u16>(),
    );
    let xcf = (0..3u8, secret_source_strategy(), 1..10_000u32, 2..4u32);
    let lifesize = (1..=100u8, 0..=100u8, 0..=100u8);
    (
        nodes,
        dvipas,
        peer_strategy(v6, 0),
        cf,
        xcf,
        lifesize,
        tricky_text(),
    )
        .prop_map(move |(nodes, dvipas, peer, cf, xcf, lifesize, site)| {
            build_site(v6, nodes, dvipas, peer, cf, xcf, lifesize, site)
        })
}

type NodeParts = (bool, bool, Vec<PortConfig>, std::collections::BTreeSet<u32>);
type DvipaParts = (Option<(PortSet, bool)>, Vec<SpdEntry>, bool, u8);

#[allow(clippy::too_many_arguments)]
fn build_site(
    v6: bool,
    nodes: Vec<NodeParts>,
    dvipas: Vec<DvipaParts>,
    peer: PeerConfig,
    (network_cf, lease_max, lease_timeout, cf_port): (bool, u32, u64, u16),
    (security, key, heartbeat, factor): (u8, SecretSource, u32, u32),
    (min, a, b): (u8, u8, u8),
    site: String,
) -> SiteConfig {
    // The first node can do everything, so every DVIPA has a valid owner and target.
    let nodes: Vec<NodeConfig> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, (distributor, target, ports, cores))| {
            let mut capabilities = vec![Capability::Ike];
            if distributor || i == 0 {
                capabilities.push(Capability::Distributor);
            }
            if target || i == 0 {
                capabilities.push(Capability::Target);
            }
            let ports = ports
                .into_iter()
                .enumerate()
                .map(|(j, mut port)| {
                    port.name = loc(format!("port{j}"));
                    port
                })
                .collect();
            NodeConfig {
                name: loc(format!("N{i}")),
                capabilities: loc(capabilities.into_iter().map(loc).collect()),
                xcf: loc(vec![loc(addr(v6, i as u16))]),
                ports,
                polling_cores: cores.into_iter().map(loc).collect(),
                // Even nodes set their operator endpoints, odd ones take the defaults.
                control: (i % 2 == 0).then(|| ControlConfig {
                    socket: loc(PathBuf::from(format!("/run/dvipsec-test/n{i}.sock"))),
                }),
                metrics: (i % 2 == 0).then(|| MetricsConfig {
                    listen: loc(SocketAddr::new(addr(v6, i as u16), 9100 + i as u16)),
                }),
                // Every third node names its cipher engine (software: no DPDK port needed).
                crypto: (i % 3 == 0).then(|| CryptoConfig {
                    provider: loc(CryptoProvider::Software),
                    device: None,
                }),
            }
        })
        .collect();
    let distributors: Vec<String> = nodes
        .iter()
        .filter(|n| n.has(Capability::Distributor))
        .map(|n| n.name.value.clone())
        .collect();
    let dvipas = dvipas
        .into_iter()
        .enumerate()
        .map(|(i, parts)| build_dvipa(v6, i, parts, &nodes, &distributors))
        .collect();
    let backend = if network_cf {
        CfBackend::Network(SocketAddr::new(addr(v6, 300), cf_port.max(1)))
    } else {
        CfBackend::Shm(PathBuf::from(format!("/dev/shm/cf-{cf_port}")))
    };
    let sequence_allocation = if lease_max % 2 == 0 {
        SequenceAllocation::PerPacket
    } else {
        SequenceAllocation::Lease(Lease {
            max: loc(lease_max),
            timeout_us: loc(lease_timeout),
        })
    };
    let security = match security {
        0 => XcfSecurity::Trusted,
        1 => XcfSecurity::Protected(XcfProtection {
            key: loc(key),
            certificate: None,
            ca: None,
        }),
        _ => XcfSecurity::Protected(XcfProtection {
            key: loc(key),
            certificate: Some(loc(PathBuf::from("certs/node.pem"))),
            ca: Some(loc(PathBuf::from("/etc/dvipsec/ca.pem"))),
        }),
    };
    let (low, high) = (a.max(min), b.max(min));
    let (threshold, max) = (low.min(high), low.max(high));
    SiteConfig {
        site: loc(site),
        nodes,
        dvipas,
        vipa_ranges: vec![VipaRange {
            network: loc(net(v6, 2000, if v6 { 120 } else { 30 })),
            moveable: loc(RangeMoveable::Disruptive),
            nodes: loc(vec![loc("N0".to_owned())]),
        }],
        peers: vec![peer],
        coupling_facility: CouplingFacility {
            backend: loc(backend),
            sequence_allocation: loc(sequence_allocation),
        },
        xcf: XcfLink {
            security: loc(security),
            heartbeat_ms: loc(heartbeat),
            takeover_timeout_ms: loc(heartbeat * factor),
        },
        lifesize: Lifesize {
            threshold_percent: loc(threshold),
            adaptive: AdaptiveBounds {
                min_percent: loc(min),
                max_percent: loc(max),
            },
        },
        logging: (cf_port % 2 == 0).then(|| LoggingConfig {
            level: loc(LogLevel::Warn),
            modules: LogModules(vec![
                (loc("dvipsec_ike".to_owned()), loc(LogLevel::Debug)),
                (loc("dvipsec::security".to_owned()), loc(LogLevel::Info)),
            ]),
        }),
        origin: crate::Origin::default(),
    }
}

fn build_dvipa(
    v6: bool,
    index: usize,
    (distribute, spd, when_idle, prefix_len): DvipaParts,
    nodes: &[NodeConfig],
    distributors: &[String],
) -> DvipaConfig {
    let owner = distributors[index % distributors.len()].clone();
    let targets: Vec<&NodeConfig> = nodes.iter().filter(|n| n.has(Capability::Target)).collect();
    let distribute = distribute.map(|(ports, all)| VipaDistribute {
        ports: loc(ports),
        destip: loc(if all {
            DestIp::All
        } else {
            // Alternate between node names and XCF addresses.
            DestIp::List(
                targets
                    .iter()
                    .enumerate()
                    .map(|(j, n)| {
                        loc(if j % 2 == 0 {
                            n.name.value.clone()
                        } else {
                            n.xcf[0].value.to_string()
                        })
                    })
                    .collect(),
            )
        }),
    });
    let backups = distributors
        .iter()
        .filter(|d| **d != owner)
        .enumerate()
        .map(|(rank, node)| VipaBackup {
            node: loc(node.clone()),
            rank: loc(254 - rank as u32),
            distribute: None,
        })
        .collect();
    let policy = spd
        .into_iter()
        .enumerate()
        .map(|(j, mut entry)| {
            entry.name = loc(format!("entry{j}"));
            entry
        })
        .collect();
    DvipaConfig {
        name: loc(format!("DV{index}")),
        define: VipaDefine {
            address: loc(addr(v6, 100 + index as u16)),
            prefix_len: loc(if v6 { prefix_len * 4 } else { prefix_len }),
            moveable: loc(if when_idle {
                Moveable::WhenIdle
            } else {
                Moveable::Immediate
            }),
            // Take-back goes with `immediate` only (validation refuses it with `when_idle`).
            take_back: (!when_idle && index.is_multiple_of(2)).then(|| loc(true)),
        },
        owner: loc(owner),
        distribute,
        backups,
        policy,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn serialize_then_parse_gives_an_equal_config(config in any::<bool>().prop_flat_map(site_parts)) {
        if let Err(err) = config.validate() {
            panic!("generator built an invalid config:\n{}\n{config:#?}", err.render());
        }
        let yaml = config.to_yaml().expect("serialize");
        let parsed = match crate::SiteConfig::from_str_named(&yaml, "roundtrip.yaml") {
            Ok(parsed) => parsed,
            Err(err) => panic!("{}\n--- yaml ---\n{yaml}", err.render()),
        };
        prop_assert_eq!(parsed, config, "yaml:\n{}", yaml);
    }
}

#[test]
fn examples_round_trip_too() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in ["figure4.yaml", "one-distributor-two-targets.yaml"] {
        let config = crate::SiteConfig::load(dir.join(name)).unwrap();
        let yaml = config.to_yaml().unwrap();
        let parsed = crate::SiteConfig::from_str_named(&yaml, name).unwrap();
        assert_eq!(parsed, config, "{name}:\n{yaml}");
    }
}

#[test]
fn equality_sees_value_changes() {
    // The round-trip check is only meaningful if equality notices a changed value.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = crate::SiteConfig::load(dir.join("figure4.yaml")).unwrap();
    let mut changed = config.clone();
    changed.dvipas[0].backups[0].rank.value = 99;
    assert_ne!(changed, config);
}
