//! One failing example per validation rule: each test edits the valid tests/base.yaml
//! so that exactly one rule breaks, and expects that rule's error at a known position.

use dvipsec_config::{Invalid, LogLevel, Position, SiteConfig, ValidationError};

const BASE: &str = include_str!("base.yaml");

/// Applies `edits` (each `from` must occur; every occurrence is replaced) and returns
/// the validation errors. Panics if the edited text does not parse: these tests are
/// about semantic rules.
fn errors_after(edits: &[(&str, &str)]) -> Vec<ValidationError> {
    let mut text = BASE.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "base.yaml lacks {from:?}");
        text = text.replace(from, to);
    }
    let config = match SiteConfig::parse_named(&text, "edited.yaml") {
        Ok(config) => config,
        Err(err) => panic!("edited base does not parse:\n{}", err.render()),
    };
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(dvipsec_config::ConfigError::Invalid { errors, .. }) => errors,
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn base_is_valid() {
    assert_eq!(errors_after(&[]), Vec::new());
}

macro_rules! rule {
    ($name:ident, [$(($from:expr, $to:expr)),* $(,)?], $pattern:pat) => {
        #[test]
        fn $name() {
            let errors = errors_after(&[$(($from, $to)),*]);
            assert!(
                errors.iter().any(|e| matches!(e.kind, $pattern) && e.at.is_known()),
                "expected {} at a known position, got {errors:#?}",
                stringify!($pattern)
            );
        }
    };
}

// Every DESTIP names a node that exists.
rule!(
    destip_unknown_name,
    [("destip: [D1, T1,", "destip: [D1, T7,")],
    Invalid::UnknownNode {
        context: "DESTIP",
        ..
    }
);
rule!(
    destip_unknown_xcf,
    [("T1, 192.0.2.12]", "T1, 192.0.2.77]")],
    Invalid::UnknownXcfAddress { .. }
);
rule!(
    destip_all_inside_list,
    [("destip: [D1, T1,", "destip: [D1, ALL,")],
    Invalid::DestIpAllInList
);
rule!(
    destip_empty,
    [("destip: [D1, T1, 192.0.2.12]", "destip: []")],
    Invalid::EmptyList { what: "DESTIP" }
);
rule!(
    destip_all_without_targets,
    [
        ("destip: [D1, T1, 192.0.2.12]", "destip: ALL"),
        ("[distributor, target, ike]", "[distributor, ike]"),
        ("capabilities: [target]", "capabilities: [ike]"),
    ],
    Invalid::NoTargets { .. }
);
rule!(
    destip_node_not_target,
    [("destip: [D1, T1,", "destip: [D2, T1,")],
    Invalid::NotTarget { .. }
);
rule!(
    owner_unknown,
    [("    owner: D1", "    owner: D9")],
    Invalid::UnknownNode {
        context: "owner",
        ..
    }
);
rule!(
    backup_unknown,
    [("- node: D2", "- node: D9")],
    Invalid::UnknownNode {
        context: "backup",
        ..
    }
);
rule!(
    range_node_unknown,
    [("nodes: [D1]", "nodes: [D1, D9]")],
    Invalid::UnknownNode {
        context: "VIPARANGE",
        ..
    }
);
rule!(
    range_nodes_empty,
    [("nodes: [D1]", "nodes: []")],
    Invalid::EmptyList {
        what: "VIPARANGE nodes"
    }
);

// Ranks are between 1 and 254 and unique per DVIPA.
rule!(
    rank_above_254,
    [("rank: 10", "rank: 255")],
    Invalid::RankOutOfRange { rank: 255 }
);
rule!(
    rank_zero,
    [("rank: 10", "rank: 0")],
    Invalid::RankOutOfRange { rank: 0 }
);
rule!(
    rank_twice,
    [
        (
            "        rank: 10\n",
            "        rank: 10\n      - node: T1\n        rank: 10\n"
        ),
        (
            "capabilities: [target]",
            "capabilities: [target, distributor, ike]"
        )
    ],
    Invalid::DuplicateRank { rank: 10, .. }
);
rule!(
    backup_is_owner,
    [("- node: D2", "- node: D1")],
    Invalid::BackupIsOwner { .. }
);
rule!(
    backup_twice,
    [(
        "        rank: 10\n",
        "        rank: 10\n      - node: D2\n        rank: 20\n"
    )],
    Invalid::DuplicateBackup { .. }
);

// Ports are valid; no DVIPA has two primaries.
rule!(
    distributed_port_zero,
    [("      ports: [60]", "      ports: [0]")],
    Invalid::InvalidPort { port: 0 }
);
rule!(
    selector_port_too_large,
    [("local_ports: [60]", "local_ports: [70000]")],
    Invalid::InvalidPort { port: 70000 }
);
rule!(
    port_twice,
    [("      ports: [60]", "      ports: [60, 61, 60]")],
    Invalid::DuplicatePort { port: 60, .. }
);
rule!(
    port_list_empty,
    [("      ports: [60]", "      ports: []")],
    Invalid::EmptyList {
        what: "distributed ports"
    }
);
rule!(
    ports_need_port_protocol,
    [("protocol: tcp", "protocol: icmp")],
    Invalid::PortsWithoutPortProtocol { .. }
);
rule!(
    two_primaries,
    [("vipa_ranges:", "  - name: DV2\n    define:\n      address: 198.51.100.10\n      prefix_len: 32\n    owner: D2\nvipa_ranges:")],
    Invalid::TwoPrimaries { .. }
);

// Every owner (and backup) can act as a distributor, and runs IKE when there is IPsec.
rule!(
    owner_not_distributor,
    [("    owner: D1", "    owner: T1")],
    Invalid::NotDistributor { role: "owner", .. }
);
rule!(
    backup_not_distributor,
    [("- node: D2", "- node: T2")],
    Invalid::NotDistributor { role: "backup", .. }
);
rule!(
    owner_without_ike,
    [("[distributor, target, ike]", "[distributor, target]")],
    Invalid::NoIke { role: "owner", .. }
);
rule!(
    backup_without_ike,
    [(
        "capabilities: [distributor, ike]",
        "capabilities: [distributor]"
    )],
    Invalid::NoIke { role: "backup", .. }
);

// Address families are consistent.
rule!(
    remote_selector_family,
    [("remote: 203.0.113.0/24", "remote: 2001:db8::/32")],
    Invalid::FamilyMismatch {
        what: "remote selector",
        ..
    }
);
rule!(
    local_selector_family,
    [(
        "        remote: 203.0.113.0/24",
        "        local: \"2001:db8::1\"\n        remote: 203.0.113.0/24"
    )],
    Invalid::FamilyMismatch {
        what: "local selector",
        ..
    }
);
rule!(
    xcf_family,
    [("xcf: [192.0.2.2]", "xcf: [\"2001:db8::2\"]")],
    Invalid::FamilyMismatch {
        what: "XCF address",
        ..
    }
);
rule!(
    peer_family,
    [("address: 203.0.113.10", "address: \"2001:db8::10\"")],
    Invalid::FamilyMismatch {
        what: "peer address",
        ..
    }
);
rule!(
    cf_network_family,
    [(
        "shm: /dev/shm/dvipsec-test",
        "network: \"[2001:db8::100]:7400\""
    )],
    Invalid::FamilyMismatch {
        what: "coupling facility address",
        ..
    }
);
rule!(
    dvipa_prefix_too_long,
    [("prefix_len: 32", "prefix_len: 33")],
    Invalid::PrefixTooLong { prefix_len: 33, .. }
);

// Soft limits are below hard ones.
rule!(
    soft_equals_hard,
    [("soft: 3000, hard: 3600", "soft: 3600, hard: 3600")],
    Invalid::SoftNotBelowHard {
        kind: "seconds",
        ..
    }
);
rule!(
    soft_above_hard_packets,
    [(
        "seconds: { soft: 3000, hard: 3600 }",
        "packets: { soft: 10, hard: 5 }"
    )],
    Invalid::SoftNotBelowHard {
        kind: "packets",
        ..
    }
);
rule!(
    hard_zero,
    [("soft: 3000, hard: 3600", "soft: 0, hard: 0")],
    Invalid::Zero {
        what: "a hard limit"
    }
);

// Names.
rule!(
    node_named_twice,
    [
        ("  - name: D2\n", "  - name: T1\n"),
        ("- node: D2", "- node: T1")
    ],
    Invalid::DuplicateName { kind: "node", .. }
);
rule!(dvipa_named_twice, [("vipa_ranges:", "  - name: DV1\n    define:\n      address: 198.51.100.11\n      prefix_len: 32\n    owner: D2\nvipa_ranges:")], Invalid::DuplicateName { kind: "DVIPA", .. });
rule!(
    spd_entry_named_twice,
    [("      - name: rest\n", "      - name: app\n")],
    Invalid::DuplicateName {
        kind: "SPD entry",
        ..
    }
);
rule!(
    peer_named_twice,
    [("coupling_facility:", "  - name: branch\n    address: 203.0.113.11\n    remote_id: b2.example.net\n    local_id: dv1.example.com\n    psk: env:X\ncoupling_facility:")],
    Invalid::DuplicateName { kind: "peer", .. }
);
rule!(
    port_named_twice,
    [(
        "        iface: eth0\n",
        "        iface: eth0\n      - name: up\n        driver: mem\n"
    )],
    Invalid::DuplicateName { kind: "port", .. }
);
rule!(
    node_named_all,
    [("  - name: T2\n", "  - name: all\n")],
    Invalid::InvalidName { kind: "node", .. }
);
rule!(
    node_named_like_an_address,
    [("  - name: T2\n", "  - name: 10.1.1.1\n")],
    Invalid::InvalidName { kind: "node", .. }
);
rule!(
    node_name_with_space,
    [("  - name: T2\n", "  - name: T 2\n")],
    Invalid::InvalidName { kind: "node", .. }
);

// Node details.
rule!(
    capabilities_empty,
    [("capabilities: [distributor, ike]", "capabilities: []")],
    Invalid::EmptyList {
        what: "capabilities"
    }
);
rule!(
    xcf_empty,
    [("xcf: [192.0.2.2]", "xcf: []")],
    Invalid::EmptyList {
        what: "xcf addresses"
    }
);
rule!(
    xcf_address_twice,
    [("xcf: [192.0.2.2]", "xcf: [192.0.2.1]")],
    Invalid::DuplicateXcfAddress { .. }
);
rule!(
    polling_core_twice,
    [("polling_cores: [0]", "polling_cores: [0, 1, 0]")],
    Invalid::DuplicateCore { core: 0, .. }
);
rule!(
    af_packet_needs_iface,
    [("        iface: eth0\n", "")],
    Invalid::DriverNeeds { field: "iface", .. }
);
rule!(
    mem_rejects_iface,
    [("driver: af_packet", "driver: mem")],
    Invalid::DriverRejects { field: "iface", .. }
);
rule!(
    af_packet_rejects_eal_args,
    [(
        "        iface: eth0\n",
        "        iface: eth0\n        eal_args: [\"--no-huge\"]\n"
    )],
    Invalid::DriverRejects {
        field: "eal_args",
        ..
    }
);
rule!(
    dpdk_rejects_queue,
    [(
        "        driver: af_packet\n        iface: eth0\n",
        "        driver: dpdk\n        vdevs: [net_null0]\n        queue: 1\n"
    )],
    Invalid::DriverRejects { field: "queue", .. }
);

// IPsec policy.
rule!(
    replay_window_too_small,
    [("replay_window: 128", "replay_window: 31")],
    Invalid::ReplayWindowOutOfRange { window: 31 }
);
rule!(
    replay_window_too_large,
    [("replay_window: 128", "replay_window: 4097")],
    Invalid::ReplayWindowOutOfRange { window: 4097 }
);
rule!(
    protect_needs_peer,
    [("        peer: branch\n", "")],
    Invalid::ProtectNeeds { field: "peer", .. }
);
rule!(
    protect_needs_mode,
    [("        mode: tunnel\n", "")],
    Invalid::ProtectNeeds { field: "mode", .. }
);
rule!(
    protect_needs_proposals,
    [("        proposals: [aes128gcm16]\n", "")],
    Invalid::ProtectNeeds {
        field: "proposals",
        ..
    }
);
rule!(
    proposals_empty,
    [("proposals: [aes128gcm16]", "proposals: []")],
    Invalid::EmptyList { what: "proposals" }
);
rule!(
    proposal_twice,
    [(
        "proposals: [aes128gcm16]",
        "proposals: [aes128gcm16, null-sha256, aes128gcm16]"
    )],
    Invalid::DuplicateProposal { .. }
);
rule!(
    ah_mixed_with_esp,
    [(
        "proposals: [aes128gcm16]",
        "proposals: [aes128gcm16, ah-sha256]"
    )],
    Invalid::MixedAhEsp
);
rule!(
    unknown_peer,
    [("peer: branch", "peer: elsewhere")],
    Invalid::UnknownPeer { .. }
);
rule!(
    discard_with_mode,
    [(
        "        action: discard\n",
        "        action: discard\n        mode: tunnel\n"
    )],
    Invalid::OnlyForProtect { field: "mode", .. }
);
rule!(
    discard_with_esn,
    [(
        "        action: discard\n",
        "        action: discard\n        esn: true\n"
    )],
    Invalid::OnlyForProtect { field: "esn", .. }
);
rule!(
    bypass_with_proposals,
    [(
        "        action: discard\n",
        "        action: bypass\n        proposals: [aes256gcm16]\n"
    )],
    Invalid::OnlyForProtect {
        field: "proposals",
        ..
    }
);

// VIPARANGE.
rule!(
    dvipa_inside_range,
    [("address: 198.51.100.10", "address: 198.51.100.130")],
    Invalid::DvipaInRange { .. }
);
rule!(
    ranges_overlap,
    [(
        "peers:",
        "  - network: 198.51.100.192/26\n    nodes: [D2]\npeers:"
    )],
    Invalid::RangesOverlap { .. }
);

// Coupling facility, XCF link, lifesize.
rule!(
    shm_path_relative,
    [("shm: /dev/shm/dvipsec-test", "shm: dvipsec-test")],
    Invalid::RelativeShmPath { .. }
);
rule!(
    cf_port_zero,
    [("shm: /dev/shm/dvipsec-test", "network: 192.0.2.100:0")],
    Invalid::Zero {
        what: "the coupling facility port"
    }
);
rule!(
    lease_zero,
    [(
        "sequence_allocation: per_packet",
        "sequence_allocation:\n    lease: { max: 0, timeout_us: 100 }"
    )],
    Invalid::Zero { what: "lease max" }
);
rule!(
    lease_too_large,
    [(
        "sequence_allocation: per_packet",
        "sequence_allocation:\n    lease: { max: 5000, timeout_us: 100 }"
    )],
    Invalid::LeaseTooLarge { max: 5000 }
);
rule!(
    lease_timeout_zero,
    [(
        "sequence_allocation: per_packet",
        "sequence_allocation:\n    lease: { max: 8, timeout_us: 0 }"
    )],
    Invalid::Zero {
        what: "lease timeout_us"
    }
);
rule!(
    heartbeat_zero,
    [("heartbeat_ms: 100", "heartbeat_ms: 0")],
    Invalid::Zero {
        what: "heartbeat_ms"
    }
);
rule!(
    takeover_too_short,
    [("takeover_timeout_ms: 1000", "takeover_timeout_ms: 199")],
    Invalid::TakeoverTooShort { .. }
);
rule!(
    certificate_without_ca,
    [(
        "security: trusted",
        "security:\n    protected:\n      key: file:xcf.key\n      certificate: xcf.pem"
    )],
    Invalid::CertificateWithoutCa
);
rule!(
    lifesize_threshold_above_max,
    [("threshold_percent: 5", "threshold_percent: 21")],
    Invalid::LifesizeBounds { threshold: 21, .. }
);
rule!(
    lifesize_min_zero,
    [("min_percent: 1", "min_percent: 0")],
    Invalid::LifesizeBounds { min: 0, .. }
);
rule!(
    lifesize_max_above_100,
    [("max_percent: 20", "max_percent: 101")],
    Invalid::LifesizeBounds { max: 101, .. }
);

#[test]
fn errors_are_sorted_by_position_and_all_reported() {
    let errors = errors_after(&[
        ("rank: 10", "rank: 300"),
        ("heartbeat_ms: 100", "heartbeat_ms: 0"),
    ]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].at < errors[1].at);
    assert!(matches!(errors[0].kind, Invalid::RankOutOfRange { .. }));
}

#[test]
fn schema_rejects_unknown_keys_everywhere() {
    // deny_unknown_fields on every struct: one unknown key per section.
    let sections = [
        ("site: base", "site: base\nsight: typo"),
        (
            "    polling_cores: [0]",
            "    polling_cores: [0]\n    colour: red",
        ),
        (
            "      prefix_len: 32",
            "      prefix_len: 32\n      mask: 255.255.255.255",
        ),
        ("        rank: 10", "        rank: 10\n        weight: 3"),
        (
            "        replay_window: 128",
            "        replay_window: 128\n        pfs: yes",
        ),
        (
            "    psk: env:DVIPSEC_PSK_BRANCH",
            "    psk: env:DVIPSEC_PSK_BRANCH\n    cert: x",
        ),
        ("  heartbeat_ms: 100", "  heartbeat_ms: 100\n  mtu: 9000"),
        (
            "  threshold_percent: 5",
            "  threshold_percent: 5\n  interval: 3",
        ),
    ];
    for (from, to) in sections {
        let text = BASE.replace(from, to);
        assert_ne!(text, BASE, "{from}");
        let err = SiteConfig::from_str_named(&text, "x.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{from}: {err}");
    }
}

#[test]
fn overlapping_backup_chains_are_valid() {
    // DV1: owner D1, backup D2 rank 10. DV2: owner D2, backups D1 rank 10 and D3 rank 200.
    // The same rank in different DVIPAs is fine; each chain is ordered on its own.
    let dv2 = "  - name: DV2\n    define:\n      address: 198.51.100.20\n      prefix_len: 32\n    owner: D2\n    backups:\n      - node: D1\n        rank: 10\n      - node: D3\n        rank: 200\nvipa_ranges:";
    let d3 = "    xcf: [192.0.2.2]\n  - name: D3\n    capabilities: [distributor, ike]\n    xcf: [192.0.2.3]\n";
    let text = BASE
        .replace("vipa_ranges:", dv2)
        .replace("    xcf: [192.0.2.2]\n", d3);
    let config = match SiteConfig::from_str_named(&text, "chains.yaml") {
        Ok(config) => config,
        Err(err) => panic!("{}", err.render()),
    };
    let d1 = config.node_view("D1").unwrap();
    assert_eq!(d1.backs.len(), 1);
    assert_eq!(
        (d1.backs[0].dvipa.as_str(), d1.backs[0].takeover_order),
        ("DV2", 2)
    );
    let d3 = config.node_view("D3").unwrap();
    assert_eq!(
        (d3.backs[0].dvipa.as_str(), d3.backs[0].takeover_order),
        ("DV2", 1)
    );
    let d2 = config.node_view("D2").unwrap();
    assert_eq!(d2.owns[0].dvipa, "DV2");
    assert_eq!(
        d2.owns[0]
            .backups
            .iter()
            .map(|b| b.node.as_str())
            .collect::<Vec<_>>(),
        ["D3", "D1"]
    );
    assert_eq!(d2.backs[0].dvipa, "DV1");
}

// A repeat is reported where it stands and points back at the first occurrence.
#[test]
fn repeats_point_back_at_their_first_occurrence() {
    let errors = errors_after(&[("      ports: [60]", "      ports: [60, 61, 60]")]);
    let repeat = errors
        .iter()
        .find(|e| matches!(e.kind, Invalid::DuplicatePort { port: 60, .. }))
        .unwrap_or_else(|| panic!("no DuplicatePort in {errors:#?}"));
    assert_eq!(repeat.at, Position::new(28, 23));
    assert!(
        matches!(repeat.kind, Invalid::DuplicatePort { first, .. } if first == Position::new(28, 15)),
        "{repeat:?}"
    );
}

// Operator endpoints and logging.
rule!(
    control_socket_relative,
    [(
        "    polling_cores: [0]",
        "    polling_cores: [0]\n    control: { socket: d1.sock }"
    )],
    Invalid::RelativeSocketPath { .. }
);
rule!(
    default_control_socket_too_long_for_a_long_node_name,
    [("name: T2", &format!("name: T{}", "2".repeat(100)))],
    Invalid::SocketPathTooLong { max: 107, .. }
);
rule!(
    metrics_port_zero,
    [(
        "    xcf: [192.0.2.2]",
        "    xcf: [192.0.2.2]\n    metrics: { listen: \"[::1]:0\" }"
    )],
    Invalid::Zero {
        what: "the metrics port"
    }
);
rule!(
    log_module_not_a_path,
    [(
        "lifesize:",
        "logging:\n  modules: { \"dvipsec::\": debug }\nlifesize:"
    )],
    Invalid::InvalidName {
        kind: "log module",
        ..
    }
);

#[test]
fn operator_fields_reach_the_node_view() {
    let text = BASE
        .replace(
            "    polling_cores: [0]",
            "    polling_cores: [0]\n    control: { socket: /run/site/d1.sock }\n    metrics: { listen: \"127.0.0.1:9464\" }",
        )
        .replace(
            "lifesize:",
            "logging:\n  level: warn\n  modules:\n    dvipsec_ike: debug\n    dvipsec::security: trace\nlifesize:",
        );
    let config = SiteConfig::from_str_named(&text, "ops.yaml").unwrap();
    let d1 = config.node_view("D1").unwrap();
    assert_eq!(
        d1.control_socket,
        std::path::PathBuf::from("/run/site/d1.sock")
    );
    assert_eq!(d1.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    // Absent fields: the default socket and no endpoint.
    let t1 = config.node_view("T1").unwrap();
    assert_eq!(
        t1.control_socket,
        std::path::PathBuf::from("/run/dvipsec/T1.sock")
    );
    assert_eq!(t1.metrics_listen, None);
    let logging = config.logging.as_ref().unwrap();
    assert_eq!(logging.level.value, LogLevel::Warn);
    let modules: Vec<(&str, LogLevel)> = logging.modules.iter().collect();
    assert_eq!(
        modules,
        [
            ("dvipsec_ike", LogLevel::Debug),
            ("dvipsec::security", LogLevel::Trace)
        ]
    );
    // The new keys survive a round trip through YAML.
    let again = SiteConfig::from_str_named(&config.to_yaml().unwrap(), "again.yaml").unwrap();
    assert_eq!(again, config);
}

#[test]
fn a_site_without_logging_has_none() {
    let config = SiteConfig::from_str_named(BASE, "base.yaml").unwrap();
    assert!(config.logging.is_none());
}

#[test]
fn operator_sections_reject_unknown_keys() {
    for (from, to) in [
        (
            "    polling_cores: [0]",
            "    polling_cores: [0]\n    control: { socket: /x.sock, mode: 600 }",
        ),
        (
            "    polling_cores: [0]",
            "    polling_cores: [0]\n    metrics: { listen: \"127.0.0.1:1\", path: /m }",
        ),
        ("lifesize:", "logging:\n  format: json\nlifesize:"),
    ] {
        let err = SiteConfig::from_str_named(&BASE.replace(from, to), "x.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{to}: {err}");
    }
}
