//! The answers of one simulated box, computed from the demo's live [`Site`]: its distributor's
//! cluster core (the SAD), IKE endpoint and DCT, its target's shadow SA table, its ports and the
//! shared CF region. Nothing here carries keys except `keys export`.

use crate::demo::site::{DistributorBox, DvipaPeer, TargetBox};
use crate::demo::Site;
use dvipsec_cf::{CfError, SequenceFacility, SlotId};
use dvipsec_cluster::lifesize::Usage;
use dvipsec_cluster::wire::SaInstall;
use dvipsec_config::NodeView;
use dvipsec_control::keys::{ExportedSa, KeyExport, SecretBytes};
use dvipsec_control::metrics::{self, CoreMetric, DropMetric, MetricsSnapshot, PortMetric};
use dvipsec_control::protocol::{
    CfReport, CfSlot, ConnEntry, ConnListReport, ControlError, DctFlow, DctReport, DvipaRelation,
    DvipaStatus, IkeListReport, IkeSaEntry, LifetimeLeft, LinkStatus, PeerStatus, Role, SaEntry,
    SaListReport, SaLocation, StatusReport, TakeoverReport,
};
use dvipsec_control::report::{
    direction_name, mode_name, port_status, prefix_text, protocol_name, sa_entry, sa_metric,
    snake_case, SaView,
};
use dvipsec_dataplane::distributor::DropCause;
use dvipsec_dataplane::target::TargetDrop;
use dvipsec_esp::{Direction, LifetimeLimits};
use dvipsec_ike::State;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// One node of the site: its configured view and whichever boxes the demo runs for it.
pub struct NodeBoxes<'s> {
    site: &'s Site,
    views: &'s [NodeView],
    view: &'s NodeView,
    distributor: Option<&'s DistributorBox>,
    target: Option<&'s TargetBox>,
}

fn unsupported(request: &str, reason: String) -> ControlError {
    ControlError::Unsupported {
        request: request.into(),
        reason,
    }
}

fn failed(request: &str, reason: String) -> ControlError {
    ControlError::Failed {
        request: request.into(),
        reason,
    }
}

impl<'s> NodeBoxes<'s> {
    /// The boxes of `view`'s node; `None` when the site runs none for it.
    pub fn find(
        site: &'s Site,
        views: &'s [NodeView],
        view: &'s NodeView,
    ) -> Option<NodeBoxes<'s>> {
        let distributor = site.distributors.iter().find(|d| d.name == view.node);
        let target = site.targets.iter().find(|t| t.name == view.node);
        (distributor.is_some() || target.is_some()).then_some(NodeBoxes {
            site,
            views,
            view,
            distributor,
            target,
        })
    }

    fn name(&self) -> &str {
        &self.view.node
    }

    /// The DVIPA peers whose distributor is this node.
    fn owned(&self) -> impl Iterator<Item = &'s DvipaPeer> + '_ {
        let name = self.view.node.clone();
        self.site
            .peers
            .iter()
            .filter(move |p| p.distributor == name)
    }

    fn distributor_for(&self, request: &str) -> Result<&'s DistributorBox, ControlError> {
        self.distributor.ok_or_else(|| {
            let owners: Vec<&str> = self
                .site
                .distributors
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            unsupported(
                request,
                format!(
                    "{} is a target here and runs no IKE, SAD or DCT; ask a distributor ({})",
                    self.name(),
                    owners.join(", ")
                ),
            )
        })
    }

    pub fn status(&self) -> StatusReport {
        let mut dvipas: Vec<DvipaStatus> = self
            .owned()
            .map(|p| DvipaStatus {
                dvipa: p.address,
                relation: DvipaRelation::Owns,
            })
            .collect();
        dvipas.extend(self.view.backs.iter().map(|b| DvipaStatus {
            dvipa: b.address,
            relation: DvipaRelation::Backs,
        }));
        if let Some(target) = self.target {
            dvipas.extend(target.dvipas.iter().map(|(_, address)| DvipaStatus {
                dvipa: *address,
                relation: DvipaRelation::Serves,
            }));
        }
        let (links, _) = self.ports();
        StatusReport {
            name: self.name().to_owned(),
            role: if self.distributor.is_some() {
                Role::Distributor
            } else {
                Role::Target
            },
            dvipas,
            peers: self.cluster_peers(),
            links,
        }
    }

    /// The nodes at the other end of this node's XCF links, and whether each link is up (hello
    /// answered and not silent for the site's takeover timeout).
    fn cluster_peers(&self) -> Vec<PeerStatus> {
        let now = self.site.now();
        let silence =
            Duration::from_millis(u64::from(self.view.xcf_link.takeover_timeout_ms.value));
        let up = |link: Option<&dvipsec_cluster::link::Link>| {
            link.map(|l| l.peer_incarnation().is_some() && !l.is_silent(now, silence))
        };
        let mut peers = Vec::new();
        if let Some(distributor) = self.distributor {
            let owned: BTreeSet<&str> = self.owned().map(|p| p.dvipa.as_str()).collect();
            for target in &self.site.targets {
                if target
                    .dvipas
                    .iter()
                    .any(|(n, _)| owned.contains(n.as_str()))
                {
                    peers.push(self.peer_status(
                        &target.name,
                        Role::Target,
                        up(distributor.core.link(&target.name)),
                    ));
                }
            }
        }
        if let Some(target) = self.target {
            for distributor in &self.site.distributors {
                let serves = self.site.peers.iter().any(|p| {
                    p.distributor == distributor.name
                        && target.dvipas.iter().any(|(n, _)| *n == p.dvipa)
                });
                if serves {
                    peers.push(self.peer_status(
                        &distributor.name,
                        Role::Distributor,
                        up(target.core.link(&distributor.name)),
                    ));
                }
            }
        }
        peers
    }

    fn peer_status(&self, name: &str, role: Role, link_up: Option<bool>) -> PeerStatus {
        let xcf_address = self
            .site_views()
            .iter()
            .find(|v| v.node == name)
            .and_then(|v| v.xcf.first().copied())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        PeerStatus {
            name: name.to_owned(),
            xcf_address,
            role,
            link_up,
        }
    }

    fn site_views(&self) -> &'s [NodeView] {
        self.views
    }

    fn ports(&self) -> (Vec<LinkStatus>, Vec<PortMetric>) {
        let mut pairs = Vec::new();
        if let Some(d) = self.distributor {
            pairs.push(port_status(d.node.external_port()));
            pairs.push(port_status(d.node.xcf_port()));
        }
        if let Some(t) = self.target {
            pairs.push(port_status(t.node.external_port()));
            pairs.push(port_status(t.node.xcf_port()));
        }
        pairs.into_iter().unzip()
    }

    /// The distributor's SAD (from its cluster core) and the target's shadow SA table.
    pub fn sa_list(&self) -> SaListReport {
        let mut sas = Vec::new();
        if let Some(distributor) = self.distributor {
            for peer in self.owned() {
                for install in distributor.core.sas(&peer.dvipa) {
                    let usage = distributor
                        .core
                        .usage(&install.sa_ref())
                        .unwrap_or_default();
                    let mut entry = sad_entry(install, peer.address, usage);
                    // The distributor's own data path holds the inbound half (to peek); its
                    // replay and ICV failures are the SAD's.
                    if let Some(held) = distributor
                        .node
                        .sas
                        .inbound_sas()
                        .find(|s| s.sa.params().spi == install.spi)
                    {
                        let counters = held.sa.counters();
                        entry.replays = counters.replays;
                        entry.auth_failures = counters.auth_failures;
                    }
                    sas.push(entry);
                }
            }
        }
        if let Some(target) = self.target {
            let table = &target.node.sas;
            sas.extend(
                table
                    .inbound_sas()
                    .map(|s| sa_entry(SaView::from(s), SaLocation::Shadow)),
            );
            sas.extend(
                table
                    .outbound_sas()
                    .map(|s| sa_entry(SaView::from(s), SaLocation::Shadow)),
            );
        }
        sas.sort_by(|a, b| {
            let key = |e: &SaEntry| {
                (
                    e.location == SaLocation::Shadow,
                    e.dvipa,
                    e.direction.clone(),
                    e.spi,
                )
            };
            key(a).cmp(&key(b))
        });
        SaListReport { sas }
    }

    pub fn dct_list(&self) -> Result<DctReport, ControlError> {
        let distributor = self.distributor_for("dct list")?;
        let dct = distributor.node.distributor.dct();
        let counters = dct.counters();
        let mut flows: Vec<DctFlow> = dct
            .entries()
            .map(|(key, target)| DctFlow {
                src: key.src,
                src_port: key.src_port,
                dst: key.dst,
                dst_port: key.dst_port,
                protocol: key.protocol,
                target: target.0,
            })
            .collect();
        flows.sort_by_key(|f| (f.dst, f.dst_port, f.src, f.src_port, f.protocol));
        Ok(DctReport {
            entries: dct.len() as u64,
            capacity: dct.capacity() as u64,
            added: counters.added,
            full_drops: counters.full_drops,
            expired: counters.expired,
            closed: counters.closed,
            flows,
        })
    }

    pub fn ike_list(&self) -> Result<IkeListReport, ControlError> {
        self.distributor_for("ike list")?;
        let mut ike_sas = Vec::new();
        for peer in self.owned() {
            for info in peer.key_exchange().dvipa_ike_sas() {
                ike_sas.push(IkeSaEntry {
                    name: peer.dvipa.clone(),
                    state: state_name(info.state).into(),
                    local: info.local.ip(),
                    remote: info.remote.ip(),
                    initiator_spi: format!("{:016x}", info.spi_i),
                    responder_spi: format!("{:016x}", info.spi_r),
                    children: info
                        .children
                        .iter()
                        .map(|c| (c.inbound_spi, c.outbound_spi))
                        .collect(),
                });
            }
        }
        Ok(IkeListReport { ike_sas })
    }

    pub fn conn_list(&self) -> Result<ConnListReport, ControlError> {
        self.distributor_for("conn list")?;
        let conns = self
            .owned()
            .map(|peer| {
                let conn = peer.key_exchange().connection();
                ConnEntry {
                    name: peer.dvipa.clone(),
                    local: conn.local,
                    remote: conn.remote.to_string(),
                    local_ts: conn.local_ts.clone(),
                    remote_ts: conn.remote_ts.clone(),
                    esp_proposals: conn.esp_proposals.clone(),
                    mode: conn.mode.into(),
                }
            })
            .collect();
        Ok(ConnListReport { conns })
    }

    /// The SAs this node holds as (CF slot, DVIPA, SPI).
    fn held_slots(&self) -> Vec<(u64, IpAddr, u32)> {
        let mut slots = Vec::new();
        if let Some(distributor) = self.distributor {
            for peer in self.owned() {
                for install in distributor.core.sas(&peer.dvipa) {
                    slots.push((install.cf_slot, peer.address, install.spi));
                }
            }
        }
        if let Some(target) = self.target {
            let table = &target.node.sas;
            slots.extend(
                table
                    .inbound_sas()
                    .map(|s| (s.slot.0, s.dvipa, s.sa.params().spi)),
            );
            slots.extend(
                table
                    .outbound_sas()
                    .map(|s| (s.slot.0, s.dvipa, s.sa.params().spi)),
            );
        }
        slots.sort();
        slots.dedup_by_key(|s| s.0);
        slots
    }

    pub fn cf_show(&self) -> Result<CfReport, ControlError> {
        let region = self.site.region();
        let mut slots = Vec::new();
        for (slot, dvipa, spi) in self.held_slots() {
            let lifesize = match region.lifesize_read(SlotId(slot)) {
                Ok(lifesize) => lifesize,
                // A retired SA's slot is released before every target has dropped the SA: it
                // has no CF state left to show.
                Err(CfError::UnknownSlot(_)) => continue,
                Err(e) => return Err(failed("cf show", format!("slot {slot}: {e}"))),
            };
            slots.push(CfSlot {
                slot,
                dvipa,
                spi,
                bytes_in: lifesize.bytes_in,
                packets_in: lifesize.packets_in,
                bytes_out: lifesize.bytes_out,
                packets_out: lifesize.packets_out,
            });
        }
        Ok(CfReport {
            epoch: region.epoch(),
            incarnation: region.incarnation(),
            slot_capacity: region.slot_count(),
            slots,
        })
    }

    /// A planned move needs the takeover path (the backup's distributor adopting the DVIPA's
    /// SAs, CF slots and connections), which the in-process demo does not run: every request is
    /// refused with the reason that applies.
    pub fn takeover(&self, dvipa: IpAddr) -> Result<TakeoverReport, ControlError> {
        let request = "takeover";
        let views = self.site_views();
        let Some(owner) = views
            .iter()
            .find_map(|v| v.owns.iter().find(|o| o.address == dvipa))
        else {
            return Err(failed(
                request,
                format!("{dvipa} is not a DVIPA of this site"),
            ));
        };
        if self.view.owns.iter().any(|o| o.address == dvipa) {
            return Err(failed(
                request,
                format!("{} already owns {} ({dvipa})", self.name(), owner.dvipa),
            ));
        }
        match self.view.backs.iter().find(|b| b.address == dvipa) {
            Some(backed) => Err(unsupported(
                request,
                format!(
                    "{} backs {} at rank {}, but the in-process demo has no takeover path: {} keeps it",
                    self.name(),
                    backed.dvipa,
                    backed.rank,
                    backed.owner
                ),
            )),
            None => {
                let backups: Vec<String> = owner.backups.iter().map(|b| format!("{} (rank {})", b.node, b.rank)).collect();
                Err(failed(
                    request,
                    format!(
                        "{} is not a backup of {}; its backups: {}",
                        self.name(),
                        owner.dvipa,
                        if backups.is_empty() { "none".to_owned() } else { backups.join(", ") }
                    ),
                ))
            }
        }
    }

    /// Keys of the SAs this node holds right now: its SAD and its shadow cache, each SA once.
    pub fn keys_export(&self) -> KeyExport {
        let mut sas: Vec<ExportedSa> = Vec::new();
        let mut add = |install: &SaInstall, dvipa: IpAddr| {
            let exported = exported(install, dvipa);
            if !sas
                .iter()
                .any(|sa| sa.spi == exported.spi && sa.dst == exported.dst)
            {
                sas.push(exported);
            }
        };
        if let Some(distributor) = self.distributor {
            for peer in self.owned() {
                for install in distributor.core.sas(&peer.dvipa) {
                    add(install, peer.address);
                }
            }
        }
        if let Some(target) = self.target {
            for (name, address) in &target.dvipas {
                for shadow in target.core.shadow_sas(name) {
                    add(&shadow.install, *address);
                }
            }
        }
        KeyExport { sas }
    }

    pub fn metrics(&self) -> String {
        metrics::render(&[self.snapshot()])
    }

    fn snapshot(&self) -> MetricsSnapshot {
        let (_, ports) = self.ports();
        let mut snapshot = MetricsSnapshot {
            node: self.name().to_owned(),
            sas: self.sa_list().sas.iter().map(sa_metric).collect(),
            ports,
            cf_operations: self.site.cf_operations(self.name()),
            ..MetricsSnapshot::default()
        };
        let mut packets = 0;
        if let Some(distributor) = self.distributor {
            let counters = distributor.node.distributor.counters();
            packets += counters.peeked;
            for cause in DropCause::ALL {
                snapshot.drops.push(drop_metric(
                    "distributor",
                    &format!("{cause:?}"),
                    counters.dropped(cause),
                ));
            }
            let dct = distributor.node.distributor.dct_counters();
            snapshot
                .drops
                .push(drop_metric("dct", "Full", dct.full_drops));
            snapshot
                .drops
                .extend(node_drops(distributor.node.counters()));
            // Reports the distributor received from its targets.
            snapshot.lifesize_reports = Some(distributor.core.counters().lifesize_reports);
            snapshot.rekeys = Some(self.owned().map(|p| p.rekeys).sum());
            // The demo never moves a DVIPA.
            snapshot.takeovers = Some(0);
        }
        if let Some(target) = self.target {
            let counters = target.node.target.counters();
            packets += counters.inbound_packets + counters.outbound_packets;
            for cause in TargetDrop::ALL {
                snapshot.drops.push(drop_metric(
                    "target",
                    &format!("{cause:?}"),
                    counters.dropped(cause),
                ));
            }
            snapshot.drops.extend(node_drops(target.node.counters()));
            // A box that is also a target counts the reports it sent.
            let sent = target.core.counters().lifesize_messages_sent;
            snapshot.lifesize_reports = Some(snapshot.lifesize_reports.unwrap_or(0) + sent);
        }
        snapshot.cores.push(CoreMetric { core: 0, packets });
        snapshot
    }
}

fn drop_metric(stage: &str, cause: &str, count: u64) -> DropMetric {
    DropMetric {
        stage: stage.into(),
        cause: snake_case(cause),
        count,
    }
}

fn node_drops(counters: dvipsec_dataplane::node::NodeCounters) -> Vec<DropMetric> {
    [
        ("NotIp", counters.not_ip),
        ("NoRoomOrRoute", counters.no_room_or_route),
        ("LocalOverflow", counters.local_overflow),
    ]
    .into_iter()
    .map(|(cause, count)| drop_metric("node", cause, count))
    .collect()
}

/// strongSwan's names for IKE SA states.
fn state_name(state: State) -> &'static str {
    match state {
        State::InitSent | State::AuthSent | State::InitReplied => "CONNECTING",
        State::Established => "ESTABLISHED",
        State::Deleting => "DELETING",
        State::Dead => "DESTROYING",
    }
}

/// Where an SA stands against its limits, from the use the targets reported.
fn lifetime_state(limits: &LifetimeLimits, usage: Usage) -> &'static str {
    let reached = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
    if reached(limits.hard_packets, usage.packets) || reached(limits.hard_bytes, usage.bytes) {
        "hard"
    } else if reached(limits.soft_packets, usage.packets) || reached(limits.soft_bytes, usage.bytes)
    {
        "soft"
    } else {
        "fresh"
    }
}

/// The key export record of an SA of `dvipa`: its outer addresses (the tunnel's, else the DVIPA
/// and the peer in the SA's direction) and its keys.
fn exported(install: &SaInstall, dvipa: IpAddr) -> ExportedSa {
    let (src, dst) = match (install.tunnel, install.direction) {
        (Some(tunnel), _) => (tunnel.src, tunnel.dst),
        (None, Direction::Inbound) => (install.peer, dvipa),
        (None, Direction::Outbound) => (dvipa, install.peer),
    };
    ExportedSa {
        src,
        dst,
        spi: install.spi,
        suite: install.suite.name().into(),
        enc_key: SecretBytes::new(install.keys.expose_enc()),
        auth_key: SecretBytes::new(install.keys.expose_auth()),
    }
}

/// A SAD entry: the SA as distributed (never its keys) and the use the targets reported.
fn sad_entry(install: &SaInstall, dvipa: IpAddr, usage: Usage) -> SaEntry {
    let limits = &install.lifetime;
    let filter = install.filters.first();
    SaEntry {
        spi: install.spi,
        direction: direction_name(install.direction).into(),
        protocol: protocol_name(install.protocol).into(),
        suite: install.suite.name().into(),
        mode: mode_name(install.mode).into(),
        dvipa,
        peer: install.peer,
        tunnel: install.tunnel.map(|t| (t.src, t.dst)),
        udp_encap: install.udp_encap.map(|u| (u.src_port, u.dst_port)),
        local_ts: filter.map(|f| prefix_text(&f.local)).unwrap_or_default(),
        remote_ts: filter.map(|f| prefix_text(&f.remote)).unwrap_or_default(),
        bytes: usage.bytes,
        packets: usage.packets,
        replays: 0,
        auth_failures: 0,
        lifetime_state: lifetime_state(limits, usage).into(),
        lifetime_left: LifetimeLeft {
            packets: limits.hard_packets.map(|h| h.saturating_sub(usage.packets)),
            bytes: limits.hard_bytes.map(|h| h.saturating_sub(usage.bytes)),
            seconds: None,
        },
        cf_slot: install.cf_slot,
        location: SaLocation::Sad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LifetimeLimits = LifetimeLimits {
        soft_packets: Some(3_000),
        hard_packets: Some(20_000),
        soft_bytes: None,
        hard_bytes: Some(1_000_000),
    };

    fn used(packets: u64, bytes: u64) -> Usage {
        Usage { bytes, packets }
    }

    #[test]
    fn lifetime_state_follows_the_reported_use() {
        assert_eq!(lifetime_state(&LIMITS, used(0, 0)), "fresh");
        assert_eq!(lifetime_state(&LIMITS, used(2_999, 0)), "fresh");
        assert_eq!(lifetime_state(&LIMITS, used(3_000, 0)), "soft");
        assert_eq!(lifetime_state(&LIMITS, used(20_000, 0)), "hard");
        // Any hard limit reached makes the SA hard, whatever the soft ones say.
        assert_eq!(lifetime_state(&LIMITS, used(10, 1_000_000)), "hard");
        let unlimited = LifetimeLimits {
            soft_packets: None,
            hard_packets: None,
            soft_bytes: None,
            hard_bytes: None,
        };
        assert_eq!(
            lifetime_state(&unlimited, used(u64::MAX, u64::MAX)),
            "fresh"
        );
    }

    #[test]
    fn ike_states_use_strongswans_words() {
        assert_eq!(state_name(State::Established), "ESTABLISHED");
        for connecting in [State::InitSent, State::AuthSent, State::InitReplied] {
            assert_eq!(state_name(connecting), "CONNECTING");
        }
        assert_eq!(state_name(State::Deleting), "DELETING");
    }
}
