//! The answers of one simulated box, computed from the demo's live [`Site`]: its distributor's
//! cluster core (the SAD), IKE endpoint and DCT, its target's shadow SA table, its ports and the
//! shared CF region. Nothing here carries keys except `keys export`.

use crate::answers_common::{
    self as common, backups_text, exported, failed, ike_sa_entry, sad_entries, sad_slots,
    site_dvipa, unsupported,
};
use crate::demo::site::{DistributorBox, DvipaPeer, TargetBox};
use crate::demo::Site;
use dvipsec_cluster::wire::SaInstall;
use dvipsec_config::NodeView;
use dvipsec_control::keys::{ExportedSa, KeyExport};
use dvipsec_control::metrics::{self, CoreMetric, MetricsSnapshot, PortMetric};
use dvipsec_control::protocol::{
    CfReport, ConnEntry, ConnListReport, ControlError, DctReport, DvipaRelation, DvipaStatus,
    IkeListReport, LinkStatus, PeerStatus, Role, SaListReport, StatusReport, TakeoverReport,
};
use dvipsec_control::report::{
    dct_report, distributor_drops, distributor_stages, held_cf_slots, node_drops, port_status,
    sa_metric, target_drops, target_stages,
};
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
        let mut sad = Vec::new();
        if let Some(distributor) = self.distributor {
            for peer in self.owned() {
                let held = Some(&distributor.node.sas);
                sad.extend(sad_entries(
                    &distributor.core,
                    &peer.dvipa,
                    peer.address,
                    held,
                ));
            }
        }
        common::sa_list(sad, self.target.map(|t| &t.node.sas))
    }

    pub fn dct_list(&self) -> Result<DctReport, ControlError> {
        let distributor = self.distributor_for("dct list")?;
        Ok(dct_report(distributor.node.distributor.dct()))
    }

    pub fn ike_list(&self) -> Result<IkeListReport, ControlError> {
        self.distributor_for("ike list")?;
        let mut ike_sas = Vec::new();
        for peer in self.owned() {
            for info in peer.key_exchange().dvipa_ike_sas() {
                ike_sas.push(ike_sa_entry(peer.dvipa.clone(), &info));
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
        let mut sad = Vec::new();
        if let Some(distributor) = self.distributor {
            for peer in self.owned() {
                sad.extend(sad_slots(&distributor.core, &peer.dvipa, peer.address));
            }
        }
        common::held_slots(sad, self.target.map(|t| &t.node.sas))
    }

    pub fn cf_show(&self) -> Result<CfReport, ControlError> {
        let region = self.site.region();
        let slots = held_cf_slots(region, self.held_slots())
            .map_err(|(slot, e)| failed("cf show", format!("slot {slot}: {e}")))?;
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
        let owner = site_dvipa(self.site_views(), dvipa)?;
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
            None => Err(failed(
                request,
                format!(
                    "{} is not a backup of {}; its backups: {}",
                    self.name(),
                    owner.dvipa,
                    backups_text(owner)
                ),
            )),
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
            packets += distributor.node.distributor.counters().peeked;
            snapshot
                .drops
                .extend(distributor_drops(&distributor.node.distributor));
            snapshot
                .drops
                .extend(node_drops(distributor.node.counters()));
            snapshot
                .stages
                .extend(distributor_stages(distributor.node.stage_costs()));
            // Reports the distributor received from its targets.
            snapshot.lifesize_reports = Some(distributor.core.counters().lifesize_reports);
            snapshot.rekeys = Some(self.owned().map(|p| p.rekeys).sum());
            // The demo never moves a DVIPA.
            snapshot.takeovers = Some(0);
        }
        if let Some(target) = self.target {
            let counters = target.node.target.counters();
            packets += counters.inbound_packets + counters.outbound_packets;
            snapshot.drops.extend(target_drops(&counters));
            snapshot.drops.extend(node_drops(target.node.counters()));
            snapshot
                .stages
                .extend(target_stages(target.node.stage_costs()));
            // A box that is also a target counts the reports it sent.
            let sent = target.core.counters().lifesize_messages_sent;
            snapshot.lifesize_reports = Some(snapshot.lifesize_reports.unwrap_or(0) + sent);
        }
        snapshot.cores.push(CoreMetric { core: 0, packets });
        snapshot
    }
}
