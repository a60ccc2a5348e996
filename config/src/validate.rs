//! Semantic validation: the rules that types alone cannot express. Every finding
//! points at the value that breaks the rule.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use crate::error::{Family, Invalid, ValidationError};
use crate::located::{Located, Position};
use crate::model::{
    Action, Capability, CfBackend, CryptoProvider, DvipaConfig, Lifetime, Limit, Moveable,
    NodeConfig, PortConfig, PortDriver, SequenceAllocation, SiteConfig, SpdEntry, VipaDistribute,
    XcfSecurity,
};
use crate::operator::{module_path_problem, MAX_SOCKET_PATH};
use crate::values::{max_prefix_len, DestIp, IpNet, PortSet, Protocol};

/// Smallest and largest replay window a protect entry may ask for.
pub const REPLAY_WINDOW_RANGE: std::ops::RangeInclusive<u32> = 32..=4096;
/// Ranks of VIPABACKUP.
pub const RANK_RANGE: std::ops::RangeInclusive<u32> = 1..=254;
/// Largest sequence-number lease a target may take from the coupling facility.
pub const MAX_LEASE: u32 = 1024;

/// Checks every rule and returns the findings sorted by position.
pub(crate) fn validate(config: &SiteConfig) -> Vec<ValidationError> {
    let mut validator = Validator {
        config,
        errors: Vec::new(),
    };
    validator.nodes();
    validator.dvipas();
    validator.vipa_ranges();
    validator.peers();
    validator.coupling_facility();
    validator.xcf_link();
    validator.lifesize();
    validator.logging();
    let mut errors = validator.errors;
    errors.sort_by_key(|error| error.at);
    errors
}

struct Validator<'a> {
    config: &'a SiteConfig,
    errors: Vec<ValidationError>,
}

/// Which name rules apply: node names also must not look like DESTIP keywords or
/// addresses, because DESTIP lists mix names and XCF addresses.
#[derive(Clone, Copy, PartialEq)]
enum NameKind {
    Node,
    Other(&'static str),
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::Node => "node",
            NameKind::Other(label) => label,
        }
    }
}

impl<'a> Validator<'a> {
    fn report(&mut self, at: Position, kind: Invalid) {
        self.errors.push(ValidationError { at, kind });
    }

    fn node(&self, name: &str) -> Option<&'a NodeConfig> {
        self.config
            .nodes
            .iter()
            .find(|node| node.name.value == name)
    }

    /// The family of the first XCF address: every XCF address must share it.
    fn xcf_reference(&self) -> Option<&'a Located<IpAddr>> {
        self.config.nodes.iter().find_map(|node| node.xcf.first())
    }

    fn check_name(&mut self, kind: NameKind, name: &Located<String>) {
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            Some("use letters, digits, `_`, `-` and `.`")
        } else if kind == NameKind::Node && name.eq_ignore_ascii_case("all") {
            Some("`ALL` is the DESTIP keyword for every node")
        } else if kind == NameKind::Node && name.parse::<IpAddr>().is_ok() {
            Some("it reads as an address, and DESTIP entries that read as addresses are XCF addresses")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.report(
                name.at,
                Invalid::InvalidName {
                    kind: kind.label(),
                    name: name.value.clone(),
                    reason,
                },
            );
        }
    }

    fn check_unique_names<'n>(
        &mut self,
        kind: NameKind,
        names: impl IntoIterator<Item = &'n Located<String>>,
    ) {
        let mut seen: FirstSeen<&str> = FirstSeen::default();
        for name in names {
            self.check_name(kind, name);
            if let Some(first) = seen.earlier(name.as_str(), name.at) {
                self.report(
                    name.at,
                    Invalid::DuplicateName {
                        kind: kind.label(),
                        name: name.value.clone(),
                        first,
                    },
                );
            }
        }
    }

    fn check_family(&mut self, what: &'static str, found: &Located<IpAddr>, reference: &IpAddr) {
        let (found_family, expected) = (Family::of(found), Family::of(reference));
        if found_family != expected {
            self.report(
                found.at,
                Invalid::FamilyMismatch {
                    what,
                    found: found_family,
                    expected,
                    reference: reference.to_string(),
                },
            );
        }
    }

    fn check_net_family(&mut self, what: &'static str, net: &Located<IpNet>, reference: &IpAddr) {
        self.check_family(what, &Located::at(net.addr, net.at), reference);
    }

    fn check_nonempty<T>(&mut self, what: &'static str, list: &Located<Vec<T>>) {
        if list.is_empty() {
            self.report(list.at, Invalid::EmptyList { what });
        }
    }

    fn check_port_set(&mut self, what: &'static str, ports: &Located<PortSet>) {
        let PortSet::List(list) = &ports.value else {
            return;
        };
        if list.is_empty() {
            self.report(ports.at, Invalid::EmptyList { what });
        }
        let mut seen: FirstSeen<u32> = FirstSeen::default();
        for port in list {
            if port.value == 0 || port.value > u32::from(u16::MAX) {
                self.report(port.at, Invalid::InvalidPort { port: port.value });
            } else if let Some(first) = seen.earlier(port.value, port.at) {
                self.report(
                    port.at,
                    Invalid::DuplicatePort {
                        port: port.value,
                        first,
                    },
                );
            }
        }
    }
}

// Nodes.
impl Validator<'_> {
    fn nodes(&mut self) {
        let config = self.config;
        self.check_unique_names(NameKind::Node, config.nodes.iter().map(|node| &node.name));
        let mut xcf_owners: HashMap<IpAddr, &str> = HashMap::new();
        let reference = self.xcf_reference().map(|addr| addr.value);
        for node in &config.nodes {
            self.check_nonempty("capabilities", &node.capabilities);
            self.check_nonempty("xcf addresses", &node.xcf);
            for addr in node.xcf.iter() {
                if let Some(reference) = reference {
                    self.check_family("XCF address", addr, &reference);
                }
                match xcf_owners.get(&addr.value) {
                    Some(first_node) => self.report(
                        addr.at,
                        Invalid::DuplicateXcfAddress {
                            addr: addr.value,
                            first_node: (*first_node).to_owned(),
                        },
                    ),
                    None => {
                        xcf_owners.insert(addr.value, &node.name);
                    }
                }
            }
            self.check_unique_names(
                NameKind::Other("port"),
                node.ports.iter().map(|port| &port.name),
            );
            for port in &node.ports {
                self.port(port);
            }
            self.polling_cores(&node.polling_cores);
            self.operator_endpoints(node);
            self.crypto(node);
        }
    }

    /// A cryptodev needs its device's name and an EAL, which only a DPDK port starts.
    fn crypto(&mut self, node: &NodeConfig) {
        let Some(crypto) = &node.crypto else {
            return;
        };
        if crypto.provider.value != CryptoProvider::Cryptodev {
            return;
        }
        if crypto.device.is_none() {
            self.report(
                crypto.provider.at,
                Invalid::CryptodevNeeds {
                    what: "a `device` name",
                },
            );
        }
        if !node
            .ports
            .iter()
            .any(|p| p.driver.value == PortDriver::Dpdk)
        {
            self.report(
                crypto.provider.at,
                Invalid::CryptodevNeeds {
                    what: "a port with driver dpdk on the node (its EAL creates the device)",
                },
            );
        }
    }

    /// The control socket must be a path a Unix socket can bind; the metrics endpoint
    /// needs a fixed port to be scraped.
    fn operator_endpoints(&mut self, node: &NodeConfig) {
        let socket = node.control_socket();
        // A default path is blamed on the node name that it is built from.
        let at = node.control.as_ref().map_or(node.name.at, |c| c.socket.at);
        let path = socket.display().to_string();
        if !socket.is_absolute() {
            self.report(at, Invalid::RelativeSocketPath { path });
        } else if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let len = socket.as_os_str().len();
            self.report(
                at,
                Invalid::SocketPathTooLong {
                    path,
                    len,
                    max: MAX_SOCKET_PATH,
                },
            );
        }
        if let Some(metrics) = &node.metrics {
            if metrics.listen.port() == 0 {
                self.report(
                    metrics.listen.at,
                    Invalid::Zero {
                        what: "the metrics port",
                    },
                );
            }
        }
    }

    fn port(&mut self, port: &PortConfig) {
        let driver = port_driver_name(port.driver.value);
        let needs_iface = matches!(port.driver.value, PortDriver::AfPacket | PortDriver::AfXdp);
        if needs_iface && port.iface.is_none() {
            self.report(
                port.driver.at,
                Invalid::DriverNeeds {
                    driver,
                    field: "iface",
                },
            );
        }
        let rejected = [
            ("iface", port.iface.as_ref().map(|v| v.at), !needs_iface),
            (
                "queue",
                port.queue.as_ref().map(|v| v.at),
                port.driver.value != PortDriver::AfXdp,
            ),
            (
                "eal_args",
                port.eal_args.as_ref().map(|v| v.at),
                port.driver.value != PortDriver::Dpdk,
            ),
            (
                "vdevs",
                port.vdevs.as_ref().map(|v| v.at),
                port.driver.value != PortDriver::Dpdk,
            ),
        ];
        for (field, at, forbidden) in rejected {
            if let (Some(at), true) = (at, forbidden) {
                self.report(at, Invalid::DriverRejects { driver, field });
            }
        }
    }

    fn polling_cores(&mut self, cores: &[Located<u32>]) {
        let mut seen: FirstSeen<u32> = FirstSeen::default();
        for core in cores {
            if let Some(first) = seen.earlier(core.value, core.at) {
                self.report(
                    core.at,
                    Invalid::DuplicateCore {
                        core: core.value,
                        first,
                    },
                );
            }
        }
    }
}

fn port_driver_name(driver: PortDriver) -> &'static str {
    match driver {
        PortDriver::Mem => "mem",
        PortDriver::AfPacket => "af_packet",
        PortDriver::AfXdp => "af_xdp",
        PortDriver::Dpdk => "dpdk",
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Protect => "protect",
        Action::Bypass => "bypass",
        Action::Discard => "discard",
    }
}

// DVIPAs: VIPADEFINE, owner, VIPADISTRIBUTE, VIPABACKUP.
impl Validator<'_> {
    fn dvipas(&mut self) {
        let config = self.config;
        self.check_unique_names(
            NameKind::Other("DVIPA"),
            config.dvipas.iter().map(|dvipa| &dvipa.name),
        );
        let mut primaries: HashMap<IpAddr, &DvipaConfig> = HashMap::new();
        for dvipa in &config.dvipas {
            let address = &dvipa.define.address;
            match primaries.get(&address.value) {
                Some(first) => self.report(
                    address.at,
                    Invalid::TwoPrimaries {
                        dvipa: dvipa.name.value.clone(),
                        address: address.value,
                        first_dvipa: first.name.value.clone(),
                        first_owner: first.owner.value.clone(),
                        first: first.define.address.at,
                    },
                ),
                None => {
                    primaries.insert(address.value, dvipa);
                }
            }
            self.dvipa(dvipa);
        }
    }

    fn dvipa(&mut self, dvipa: &DvipaConfig) {
        let address = dvipa.define.address.value;
        let max = max_prefix_len(&address);
        let prefix_len = &dvipa.define.prefix_len;
        if prefix_len.value > max {
            self.report(
                prefix_len.at,
                Invalid::PrefixTooLong {
                    prefix_len: prefix_len.value,
                    family: Family::of(&address),
                    max,
                },
            );
        }
        if let Some(take_back) = dvipa.define.take_back.as_ref().filter(|t| t.value) {
            if dvipa.define.moveable.value == Moveable::WhenIdle {
                self.report(take_back.at, Invalid::TakeBackWhenIdle);
            }
        }
        self.routing_node("owner", &dvipa.owner, dvipa);
        if let Some(distribute) = &dvipa.distribute {
            self.distribution(dvipa, distribute);
        }
        self.backups(dvipa);
        self.check_unique_names(
            NameKind::Other("SPD entry"),
            dvipa.policy.iter().map(|entry| &entry.name),
        );
        for entry in &dvipa.policy {
            self.spd_entry(dvipa, entry);
        }
    }

    /// An owner or backup: it must exist, distribute, and run IKE if there is IPsec to
    /// negotiate.
    fn routing_node(&mut self, role: &'static str, name: &Located<String>, dvipa: &DvipaConfig) {
        let Some(node) = self.node(name) else {
            self.report(
                name.at,
                Invalid::UnknownNode {
                    name: name.value.clone(),
                    context: role,
                },
            );
            return;
        };
        if !node.has(Capability::Distributor) {
            self.report(
                name.at,
                Invalid::NotDistributor {
                    role,
                    node: name.value.clone(),
                    dvipa: dvipa.name.value.clone(),
                },
            );
        }
        let protects = dvipa
            .policy
            .iter()
            .any(|entry| entry.action.value == Action::Protect);
        if protects && !node.has(Capability::Ike) {
            self.report(
                name.at,
                Invalid::NoIke {
                    role,
                    node: name.value.clone(),
                    dvipa: dvipa.name.value.clone(),
                },
            );
        }
    }

    fn distribution(&mut self, dvipa: &DvipaConfig, distribute: &VipaDistribute) {
        self.check_port_set("distributed ports", &distribute.ports);
        match &distribute.destip.value {
            DestIp::All => {
                let any_target = self
                    .config
                    .nodes
                    .iter()
                    .any(|node| node.has(Capability::Target));
                if !any_target {
                    self.report(
                        distribute.destip.at,
                        Invalid::NoTargets {
                            dvipa: dvipa.name.value.clone(),
                        },
                    );
                }
            }
            DestIp::List(entries) => {
                if entries.is_empty() {
                    self.report(distribute.destip.at, Invalid::EmptyList { what: "DESTIP" });
                }
                for entry in entries {
                    self.destip_entry(dvipa, entry);
                }
            }
        }
    }

    fn destip_entry(&mut self, dvipa: &DvipaConfig, entry: &Located<String>) {
        if entry.eq_ignore_ascii_case("all") {
            self.report(entry.at, Invalid::DestIpAllInList);
            return;
        }
        let node = match entry.parse::<IpAddr>() {
            Ok(addr) => {
                let node = self
                    .config
                    .nodes
                    .iter()
                    .find(|node| node.xcf.iter().any(|xcf| xcf.value == addr));
                if node.is_none() {
                    self.report(entry.at, Invalid::UnknownXcfAddress { addr });
                }
                node
            }
            Err(_) => {
                let node = self.node(entry);
                if node.is_none() {
                    self.report(
                        entry.at,
                        Invalid::UnknownNode {
                            name: entry.value.clone(),
                            context: "DESTIP",
                        },
                    );
                }
                node
            }
        };
        if let Some(node) = node {
            if !node.has(Capability::Target) {
                self.report(
                    entry.at,
                    Invalid::NotTarget {
                        node: node.name.value.clone(),
                        dvipa: dvipa.name.value.clone(),
                    },
                );
            }
        }
    }

    fn backups(&mut self, dvipa: &DvipaConfig) {
        let mut ranks: FirstSeen<u32> = FirstSeen::default();
        let mut nodes: FirstSeen<&str> = FirstSeen::default();
        for backup in &dvipa.backups {
            if backup.node.value == dvipa.owner.value {
                self.report(
                    backup.node.at,
                    Invalid::BackupIsOwner {
                        node: backup.node.value.clone(),
                        dvipa: dvipa.name.value.clone(),
                    },
                );
            } else if let Some(first) = nodes.earlier(&backup.node, backup.node.at) {
                self.report(
                    backup.node.at,
                    Invalid::DuplicateBackup {
                        node: backup.node.value.clone(),
                        dvipa: dvipa.name.value.clone(),
                        first,
                    },
                );
            } else {
                self.routing_node("backup", &backup.node, dvipa);
            }
            let rank = &backup.rank;
            if !RANK_RANGE.contains(&rank.value) {
                self.report(rank.at, Invalid::RankOutOfRange { rank: rank.value });
            } else if let Some(first) = ranks.earlier(rank.value, rank.at) {
                self.report(
                    rank.at,
                    Invalid::DuplicateRank {
                        rank: rank.value,
                        dvipa: dvipa.name.value.clone(),
                        first,
                    },
                );
            }
            if let Some(distribute) = &backup.distribute {
                self.distribution(dvipa, distribute);
            }
        }
    }
}

// IPsec policy.
impl Validator<'_> {
    fn spd_entry(&mut self, dvipa: &DvipaConfig, entry: &SpdEntry) {
        let dvipa_address = dvipa.define.address.value;
        if let Some(local) = &entry.local {
            self.check_net_family("local selector", local, &dvipa_address);
        }
        self.check_net_family("remote selector", &entry.remote, &dvipa_address);
        self.selector_ports(entry);
        match entry.action.value {
            Action::Protect => self.protect_entry(dvipa, entry),
            action => self.plain_entry(entry, action_name(action)),
        }
    }

    fn selector_ports(&mut self, entry: &SpdEntry) {
        for ports in [&entry.local_ports, &entry.remote_ports] {
            self.check_port_set("port selector", ports);
            if matches!(ports.value, PortSet::List(_)) && !entry.protocol.has_ports() {
                self.report(
                    ports.at,
                    Invalid::PortsWithoutPortProtocol {
                        protocol: protocol_text(entry.protocol.value),
                    },
                );
            }
        }
    }

    fn protect_entry(&mut self, dvipa: &DvipaConfig, entry: &SpdEntry) {
        let needs = |field| Invalid::ProtectNeeds {
            entry: entry.name.value.clone(),
            field,
        };
        match &entry.peer {
            None => self.report(entry.action.at, needs("peer")),
            Some(peer) => self.spd_peer(dvipa, entry, peer),
        }
        if entry.mode.is_none() {
            self.report(entry.action.at, needs("mode"));
        }
        match &entry.proposals {
            None => self.report(entry.action.at, needs("proposals")),
            Some(proposals) => self.proposals(proposals),
        }
        if let Some(window) = &entry.replay_window {
            if !REPLAY_WINDOW_RANGE.contains(&window.value) {
                self.report(
                    window.at,
                    Invalid::ReplayWindowOutOfRange {
                        window: window.value,
                    },
                );
            }
        }
        if let Some(lifetime) = &entry.lifetime {
            self.lifetime(lifetime);
        }
    }

    fn spd_peer(&mut self, dvipa: &DvipaConfig, entry: &SpdEntry, peer_name: &Located<String>) {
        let peer = self
            .config
            .peers
            .iter()
            .find(|peer| peer.name.value == peer_name.value);
        match peer {
            None => self.report(
                peer_name.at,
                Invalid::UnknownPeer {
                    entry: entry.name.value.clone(),
                    name: peer_name.value.clone(),
                },
            ),
            Some(peer) => {
                let at_reference = Located::at(peer.address.value, peer_name.at);
                self.check_family("peer address", &at_reference, &dvipa.define.address);
            }
        }
    }

    fn proposals(&mut self, proposals: &Located<Vec<Located<crate::model::Proposal>>>) {
        self.check_nonempty("proposals", proposals);
        let mut seen = Vec::new();
        for proposal in proposals.iter() {
            if seen.contains(&proposal.value) {
                self.report(
                    proposal.at,
                    Invalid::DuplicateProposal {
                        proposal: proposal_text(proposal.value),
                    },
                );
            }
            seen.push(proposal.value);
        }
        let has_ah = seen.iter().any(|p| p.is_ah());
        let has_esp = seen.iter().any(|p| !p.is_ah());
        if has_ah && has_esp {
            self.report(proposals.at, Invalid::MixedAhEsp);
        }
    }

    fn lifetime(&mut self, lifetime: &Lifetime) {
        let kinds = [
            ("seconds", &lifetime.seconds),
            ("bytes", &lifetime.bytes),
            ("packets", &lifetime.packets),
        ];
        for (kind, limit) in kinds {
            if let Some(limit) = limit {
                self.limit(kind, limit);
            }
        }
    }

    fn limit(&mut self, kind: &'static str, limit: &Limit) {
        if limit.hard.value == 0 {
            self.report(
                limit.hard.at,
                Invalid::Zero {
                    what: "a hard limit",
                },
            );
        } else if limit.soft.value >= limit.hard.value {
            self.report(
                limit.soft.at,
                Invalid::SoftNotBelowHard {
                    kind,
                    soft: limit.soft.value,
                    hard: limit.hard.value,
                },
            );
        }
    }

    /// Bypass and discard entries carry no SA parameters.
    fn plain_entry(&mut self, entry: &SpdEntry, action: &'static str) {
        let esn_at = entry.esn.value.then_some(entry.esn.at);
        let present = [
            ("peer", entry.peer.as_ref().map(|v| v.at)),
            ("mode", entry.mode.as_ref().map(|v| v.at)),
            ("proposals", entry.proposals.as_ref().map(|v| v.at)),
            ("replay_window", entry.replay_window.as_ref().map(|v| v.at)),
            ("esn", esn_at),
            ("lifetime", entry.lifetime.as_ref().map(|_| entry.action.at)),
        ];
        for (field, at) in present {
            if let Some(at) = at {
                self.report(
                    at,
                    Invalid::OnlyForProtect {
                        entry: entry.name.value.clone(),
                        field,
                        action,
                    },
                );
            }
        }
    }
}

fn protocol_text(protocol: Protocol) -> String {
    match protocol {
        Protocol::Any => "any".into(),
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::Icmpv6 => "icmpv6".into(),
        Protocol::Number(number) => number.to_string(),
    }
}

fn proposal_text(proposal: crate::model::Proposal) -> String {
    serde_saphyr::to_string(&proposal)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| format!("{proposal:?}"))
}

// VIPARANGE, peers, coupling facility, XCF link, lifesize, logging.
impl Validator<'_> {
    fn logging(&mut self) {
        let Some(logging) = &self.config.logging else {
            return;
        };
        for (name, _) in &logging.modules.0 {
            if let Some(reason) = module_path_problem(name) {
                self.report(
                    name.at,
                    Invalid::InvalidName {
                        kind: "log module",
                        name: name.value.clone(),
                        reason,
                    },
                );
            }
        }
    }

    fn vipa_ranges(&mut self) {
        let config = self.config;
        for (index, range) in config.vipa_ranges.iter().enumerate() {
            self.check_nonempty("VIPARANGE nodes", &range.nodes);
            for name in range.nodes.iter() {
                if self.node(name).is_none() {
                    self.report(
                        name.at,
                        Invalid::UnknownNode {
                            name: name.value.clone(),
                            context: "VIPARANGE",
                        },
                    );
                }
            }
            for earlier in &config.vipa_ranges[..index] {
                if earlier.network.overlaps(&range.network) {
                    self.report(
                        range.network.at,
                        Invalid::RangesOverlap {
                            range: range.network.to_string(),
                            other: earlier.network.to_string(),
                            first: earlier.network.at,
                        },
                    );
                }
            }
            for dvipa in &config.dvipas {
                let address = &dvipa.define.address;
                if range.network.contains(address) {
                    self.report(
                        address.at,
                        Invalid::DvipaInRange {
                            dvipa: dvipa.name.value.clone(),
                            address: address.value,
                            range: range.network.to_string(),
                        },
                    );
                }
            }
        }
    }

    fn peers(&mut self) {
        let config = self.config;
        self.check_unique_names(
            NameKind::Other("peer"),
            config.peers.iter().map(|peer| &peer.name),
        );
    }

    fn coupling_facility(&mut self) {
        let cf = &self.config.coupling_facility;
        match &cf.backend.value {
            CfBackend::Shm(path) if !path.is_absolute() => self.report(
                cf.backend.at,
                Invalid::RelativeShmPath {
                    path: path.display().to_string(),
                },
            ),
            CfBackend::Network(addr) => {
                if addr.port() == 0 {
                    self.report(
                        cf.backend.at,
                        Invalid::Zero {
                            what: "the coupling facility port",
                        },
                    );
                }
                if let Some(reference) = self.xcf_reference() {
                    let located = Located::at(addr.ip(), cf.backend.at);
                    self.check_family("coupling facility address", &located, reference);
                }
            }
            CfBackend::Shm(_) => {}
        }
        if let SequenceAllocation::Lease(lease) = &cf.sequence_allocation.value {
            if lease.max.value == 0 {
                self.report(lease.max.at, Invalid::Zero { what: "lease max" });
            } else if lease.max.value > MAX_LEASE {
                self.report(
                    lease.max.at,
                    Invalid::LeaseTooLarge {
                        max: lease.max.value,
                    },
                );
            }
            if lease.timeout_us.value == 0 {
                self.report(
                    lease.timeout_us.at,
                    Invalid::Zero {
                        what: "lease timeout_us",
                    },
                );
            }
        }
    }

    fn xcf_link(&mut self) {
        let xcf = &self.config.xcf;
        let heartbeat = &xcf.heartbeat_ms;
        let takeover = &xcf.takeover_timeout_ms;
        if heartbeat.value == 0 {
            self.report(
                heartbeat.at,
                Invalid::Zero {
                    what: "heartbeat_ms",
                },
            );
        } else if u64::from(takeover.value) < 2 * u64::from(heartbeat.value) {
            self.report(
                takeover.at,
                Invalid::TakeoverTooShort {
                    takeover_ms: takeover.value,
                    heartbeat_ms: heartbeat.value,
                },
            );
        }
        if let XcfSecurity::Protected(protection) = &xcf.security.value {
            if protection.certificate.is_some() != protection.ca.is_some() {
                let at = protection
                    .certificate
                    .as_ref()
                    .or(protection.ca.as_ref())
                    .map_or(xcf.security.at, |path| path.at);
                self.report(at, Invalid::CertificateWithoutCa);
            }
        }
    }

    fn lifesize(&mut self) {
        let lifesize = &self.config.lifesize;
        let min = &lifesize.adaptive.min_percent;
        let threshold = &lifesize.threshold_percent;
        let max = &lifesize.adaptive.max_percent;
        // Point at the value that breaks 1 <= min <= threshold <= max <= 100; a threshold
        // outside its bounds is blamed on the threshold.
        let culprit = if min.value < 1 {
            Some(min)
        } else if max.value > 100 {
            Some(max)
        } else if min.value > max.value {
            Some(pick_known(max, min))
        } else if threshold.value < min.value {
            Some(pick_known(threshold, min))
        } else if threshold.value > max.value {
            Some(pick_known(threshold, max))
        } else {
            None
        };
        if let Some(culprit) = culprit {
            self.report(
                culprit.at,
                Invalid::LifesizeBounds {
                    min: min.value,
                    threshold: threshold.value,
                    max: max.value,
                },
            );
        }
    }
}

/// The first of two values that came from the file (defaults have no position).
fn pick_known<'v, T>(preferred: &'v Located<T>, other: &'v Located<T>) -> &'v Located<T> {
    if preferred.at.is_known() {
        preferred
    } else {
        other
    }
}

/// Where each key was first seen, for the "already defined at ..." errors.
struct FirstSeen<K>(HashMap<K, Position>);

impl<K> Default for FirstSeen<K> {
    fn default() -> Self {
        FirstSeen(HashMap::new())
    }
}

impl<K: Hash + Eq> FirstSeen<K> {
    /// The position `key` was first seen at if it is a repeat; otherwise records `at` for it.
    fn earlier(&mut self, key: K, at: Position) -> Option<Position> {
        match self.0.entry(key) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(at);
                None
            }
        }
    }
}
