//! The box's answers to control requests, computed between loop rounds from the running
//! [`Runtime`]: its distributor core (the SAD: what was distributed, with the use the targets
//! reported), its IKE endpoint, its data plane (the SA table the packets use, the DCT, the
//! ports), the target core and the CF region. The site's configuration (the node's view and
//! every other node's) says what the box may own, back and serve and who its XCF peers are.
//!
//! Nothing here carries keys except `keys export`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use dvipsec_cluster::membership::MemberState;
use dvipsec_cluster::wire::SaInstall;
use dvipsec_config::NodeView;
use dvipsec_control::keys::{ExportedSa, KeyExport};
use dvipsec_control::metrics::{
    self, CoreMetric, DropMetric, MetricsSnapshot, PortMetric, StageMetric,
};
use dvipsec_control::protocol::{
    CfReport, ConnEntry, ConnListReport, DctReport, DvipaRelation, DvipaStatus, IkeListReport,
    LinkStatus, MetricsText, PeerStatus, Role, SaListReport, StatusReport, TakeoverReport,
};
use dvipsec_control::report::{
    dct_report, distributor_drops, distributor_stages, held_cf_slots, node_drops, port_status,
    prefix_text, sa_metric, stage_drops, target_drops, target_stages,
};
use dvipsec_control::{ControlError, Request, Response};
use dvipsec_ike::wire::TrafficSelector;

use crate::answers_common::{
    self as common, backups_text, exported, failed, ike_sa_entry, sad_entries, sad_slots,
    site_dvipa, unsupported,
};

use super::plane::Plane;
use super::runtime::Runtime;

/// The answer of the box to `request`. Only `takeover` changes the box (it plans a move).
pub fn respond(runtime: &mut Runtime, request: Request) -> Result<Response, ControlError> {
    // An operator's requests are part of the box's story; scrapes make them frequent, hence debug.
    tracing::debug!(
        target: "dvipsec::control",
        node = %runtime.node(),
        request = request.name(),
        uptime_s = runtime.uptime().as_secs(),
        "control request"
    );
    Ok(match request {
        Request::Status => Response::Status(status(runtime)),
        Request::SaList => Response::SaList(sa_list(runtime)),
        Request::DctList => Response::DctList(dct_list(runtime)?),
        Request::IkeList => Response::IkeList(ike_list(runtime)?),
        Request::ConnList => Response::ConnList(conn_list(runtime)?),
        Request::CfShow => Response::CfShow(cf_show(runtime)?),
        Request::Takeover { dvipa } => Response::Takeover(takeover(runtime, dvipa)?),
        Request::KeysExport => Response::KeysExport(keys_export(runtime)),
        Request::Metrics => Response::Metrics(MetricsText {
            text: metrics::render(&[snapshot(runtime)]),
        }),
        other => {
            return Err(unsupported(
                other.name(),
                format!("{} does not know this request", runtime.node()),
            ))
        }
    })
}

/// The DVIPAs the box distributes now (owned, or taken over): name and address.
fn owned_now(runtime: &Runtime) -> Vec<(String, IpAddr)> {
    let Some(core) = runtime.distributor_core() else {
        return Vec::new();
    };
    let view = &runtime.view;
    core.dvipas()
        .into_iter()
        .filter_map(|name| {
            let owned = view
                .owns
                .iter()
                .find(|o| o.dvipa == name)
                .map(|o| o.address);
            let backed = || {
                view.backs
                    .iter()
                    .find(|b| b.dvipa == name)
                    .map(|b| b.address)
            };
            Some((name.to_owned(), owned.or_else(backed)?))
        })
        .collect()
}

/// The nodes that distribute now, as this box knows: its takeover core (a box in some chain),
/// else the distributor its target core follows, else the site's configured owner.
fn distributors(runtime: &Runtime) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for view in &runtime.site {
        for owned in &view.owns {
            let dvipa = owned.dvipa.as_str();
            let now = runtime
                .takeover()
                .and_then(|t| t.owner(dvipa))
                .or_else(|| runtime.target_core().and_then(|t| t.distributor_of(dvipa)));
            nodes.insert(now.unwrap_or(&view.node).to_owned());
        }
    }
    nodes
}

fn role_of(view: &NodeView, distributing: &BTreeSet<String>) -> Role {
    if distributing.contains(&view.node) {
        Role::Distributor
    } else if !view.backs.is_empty() || !view.owns.is_empty() {
        Role::Backup
    } else {
        Role::Target
    }
}

fn status(runtime: &Runtime) -> StatusReport {
    let view = &runtime.view;
    let owned = owned_now(runtime);
    let relation = |dvipa: IpAddr, relation| DvipaStatus { dvipa, relation };
    let mut dvipas: Vec<DvipaStatus> = owned
        .iter()
        .map(|(_, address)| relation(*address, DvipaRelation::Owns))
        .collect();
    // A configured owner that does not distribute its DVIPA now (another took it) backs it.
    let waiting = view.owns.iter().map(|o| (&o.dvipa, o.address));
    let backed = view.backs.iter().map(|b| (&b.dvipa, b.address));
    dvipas.extend(
        waiting
            .chain(backed)
            .filter(|(name, _)| !owned.iter().any(|(o, _)| o == *name))
            .map(|(_, address)| relation(address, DvipaRelation::Backs)),
    );
    // Served now: the DVIPAs the target core follows a distributor for (a standby entry, for
    // after a takeover, is listed once the takeover happened).
    let target = runtime.target_core();
    let served: BTreeSet<IpAddr> = runtime
        .served()
        .iter()
        .filter(|(name, _)| target.is_some_and(|t| t.distributor_of(name).is_some()))
        .map(|(_, address)| *address)
        .collect();
    dvipas.extend(
        served
            .into_iter()
            .map(|address| relation(address, DvipaRelation::Serves)),
    );
    let distributing = distributors(runtime);
    // The box joins the XCF link of every other node of the site.
    let peers = runtime
        .site
        .iter()
        .filter(|other| other.node != view.node)
        .map(|other| PeerStatus {
            name: other.node.clone(),
            xcf_address: other
                .xcf
                .first()
                .copied()
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            role: role_of(other, &distributing),
            // Membership watches the nodes this box shares a DVIPA with; of the others, and of
            // one not heard from yet, the box cannot tell.
            link_up: match runtime.membership().state(&other.node) {
                Some(MemberState::Alive) => Some(true),
                Some(MemberState::Down(_)) => Some(false),
                _ => None,
            },
        })
        .collect();
    StatusReport {
        name: runtime.node().to_owned(),
        role: role_of(view, &distributing),
        dvipas,
        peers,
        links: ports(runtime).into_iter().map(|(link, _)| link).collect(),
    }
}

/// The box's packet ports: status line and metric of each.
fn ports(runtime: &Runtime) -> Vec<(LinkStatus, PortMetric)> {
    match runtime.plane() {
        None => Vec::new(),
        Some(Plane::Distributor(node)) => {
            vec![
                port_status(node.external_port()),
                port_status(node.xcf_port()),
            ]
        }
        Some(Plane::Target(node)) => {
            vec![
                port_status(node.external_port()),
                port_status(node.xcf_port()),
            ]
        }
        Some(Plane::Idle(ports)) => vec![port_status(&ports.0), port_status(&ports.1)],
    }
}

/// The SAD (what the distributor core distributed, with the use its targets reported) and the
/// SA table of the box's own data path (the shadow SAs its packets use).
fn sa_list(runtime: &Runtime) -> SaListReport {
    let table = runtime.plane().and_then(Plane::sa_table);
    let mut sad = Vec::new();
    if let Some(core) = runtime.distributor_core() {
        for (name, address) in owned_now(runtime) {
            sad.extend(sad_entries(core, &name, address, table));
        }
    }
    common::sa_list(sad, table)
}

/// Why a box without the distributor's state cannot answer `request`.
fn not_distributing(runtime: &Runtime, request: &str) -> ControlError {
    let owners: Vec<String> = distributors(runtime).into_iter().collect();
    unsupported(
        request,
        format!(
            "{} distributes no DVIPA now and holds no IKE SAs, SAD or DCT; ask a distributor ({})",
            runtime.node(),
            owners.join(", ")
        ),
    )
}

fn dct_list(runtime: &Runtime) -> Result<DctReport, ControlError> {
    let Some(Plane::Distributor(node)) = runtime.plane() else {
        return Err(not_distributing(runtime, "dct list"));
    };
    Ok(dct_report(node.distributor.dct()))
}

fn ike_list(runtime: &Runtime) -> Result<IkeListReport, ControlError> {
    let Some(endpoint) = runtime.ike() else {
        return Err(not_distributing(runtime, "ike list"));
    };
    let ike_sas = endpoint
        .ike_sas()
        .into_iter()
        .map(|info| {
            // The configured peer's name; a responder learns it only at IKE_AUTH.
            let name = info
                .peer
                .clone()
                .unwrap_or_else(|| "(unauthenticated)".into());
            ike_sa_entry(name, &info)
        })
        .collect();
    Ok(IkeListReport { ike_sas })
}

/// A selector as strongSwan writes it: `10.0.0.1/32[udp/60]`.
fn selector_text(ts: &TrafficSelector) -> String {
    let addresses = match child_prefix(ts) {
        Some(prefix) => prefix,
        None => format!("{}..{}", ts.start_addr, ts.end_addr),
    };
    let protocol = match ts.ip_protocol {
        0 => None,
        6 => Some("tcp".to_owned()),
        17 => Some("udp".to_owned()),
        other => Some(other.to_string()),
    };
    let ports = match (ts.start_port, ts.end_port) {
        (0, u16::MAX) => None,
        (start, end) if start == end => Some(start.to_string()),
        (start, end) => Some(format!("{start}-{end}")),
    };
    match (protocol, ports) {
        (None, None) => addresses,
        (Some(protocol), None) => format!("{addresses}[{protocol}]"),
        (protocol, Some(ports)) => {
            format!("{addresses}[{}/{ports}]", protocol.unwrap_or_default())
        }
    }
}

fn child_prefix(ts: &TrafficSelector) -> Option<String> {
    super::child::range_prefix(ts.start_addr, ts.end_addr)
        .ok()
        .map(|p| prefix_text(&p))
}

/// The IKE connections the box would serve: the peers of every DVIPA it owns or backs.
fn conn_list(runtime: &Runtime) -> Result<ConnListReport, ControlError> {
    let Some(side) = runtime.distributor.as_ref() else {
        return Err(unsupported(
            "conn list",
            format!(
                "{} neither owns nor backs a DVIPA: it runs no IKE",
                runtime.node()
            ),
        ));
    };
    let conns = side
        .dvipas
        .iter()
        .flat_map(|dvipa| {
            dvipa.peers.iter().map(|peer| ConnEntry {
                name: format!("{}/{}", dvipa.dvipa, peer.name),
                local: dvipa.address,
                remote: peer
                    .remote_addr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "%any".into()),
                local_ts: peer.local_ts.iter().map(selector_text).collect(),
                remote_ts: peer.remote_ts.iter().map(selector_text).collect(),
                esp_proposals: peer
                    .esp_suites
                    .iter()
                    .map(|s| match super::child::esp_suite(s) {
                        Ok(suite) => suite.name().to_owned(),
                        Err(_) => format!("{s:?}"),
                    })
                    .collect(),
                mode: match peer.mode {
                    dvipsec_ike::Mode::Tunnel => "tunnel",
                    dvipsec_ike::Mode::Transport => "transport",
                }
                .into(),
            })
        })
        .collect();
    Ok(ConnListReport { conns })
}

/// The SAs this box holds as (CF slot, DVIPA, SPI): those it distributes and those its data
/// path uses.
fn held_slots(runtime: &Runtime) -> Vec<(u64, IpAddr, u32)> {
    let mut sad = Vec::new();
    if let Some(core) = runtime.distributor_core() {
        for (name, address) in owned_now(runtime) {
            sad.extend(sad_slots(core, &name, address));
        }
    }
    common::held_slots(sad, runtime.plane().and_then(Plane::sa_table))
}

fn cf_show(runtime: &Runtime) -> Result<CfReport, ControlError> {
    let request = "cf show";
    let facility = runtime.facility();
    let (epoch, incarnation, capacity) = match runtime.region_owner() {
        Some(owner) => {
            let region = owner.region();
            (region.epoch(), region.incarnation(), region.slot_count())
        }
        None => match facility.region_identity() {
            Some(identity) => identity,
            None => {
                return Err(failed(
                    request,
                    format!(
                        "{} is not attached to the CF region yet (its distributor has not said where it is)",
                        runtime.node()
                    ),
                ))
            }
        },
    };
    let slots = held_cf_slots(facility, held_slots(runtime))
        .map_err(|(slot, e)| failed(request, format!("slot {slot}: {e}")))?;
    Ok(CfReport {
        epoch,
        incarnation,
        slot_capacity: capacity,
        slots,
    })
}

/// A planned move of `dvipa` to this box. Refused, with the reason, when the address is no
/// DVIPA, the box owns it already or is not in its chain (owner or backup); else the takeover
/// core moves it here (the owner lets go when it hears the newer claim).
fn takeover(runtime: &mut Runtime, dvipa: IpAddr) -> Result<TakeoverReport, ControlError> {
    let request = "takeover";
    let node = runtime.node().to_owned();
    let owner = site_dvipa(&runtime.site, dvipa)?.clone();
    if owned_now(runtime).iter().any(|(_, a)| *a == dvipa) {
        return Err(failed(
            request,
            format!("{node} already owns {} ({dvipa})", owner.dvipa),
        ));
    }
    let view = &runtime.view;
    let in_chain = view.owns.iter().any(|o| o.address == dvipa)
        || view.backs.iter().any(|b| b.address == dvipa);
    if !in_chain {
        let backups = backups_text(&owner);
        return Err(failed(
            request,
            format!(
                "{node} is neither the owner nor a backup of {}; its backups: {backups}",
                owner.dvipa
            ),
        ));
    }
    let name = runtime
        .plan_move_here(dvipa)
        .map_err(|reason| failed(request, reason))?;
    tracing::info!(target: "dvipsec::security", %node, dvipa = %name, "planned move requested by the operator");
    Ok(TakeoverReport {
        dvipa,
        outcome: format!(
            "{node} takes {name} over (planned move); its owner lets go when it hears the claim"
        ),
    })
}

/// The keys of the SAs this box holds: those it distributes and the shadow SAs its target core
/// keeps (both carry the keys as distributed). The only answer with keys in it.
fn keys_export(runtime: &Runtime) -> KeyExport {
    let mut installs: Vec<&SaInstall> = Vec::new();
    if let Some(core) = runtime.distributor_core() {
        for (name, _) in owned_now(runtime) {
            installs.extend(core.sas(&name));
        }
    }
    if let Some(core) = runtime.target_core() {
        for (name, _) in runtime.served() {
            installs.extend(core.shadow_sas(name).into_iter().map(|s| &s.install));
        }
    }
    let mut seen = BTreeSet::new();
    let sas = installs
        .into_iter()
        .filter(|install| seen.insert((install.peer, install.spi)))
        .map(exported_sa)
        .collect();
    KeyExport { sas }
}

/// One SA's keys and the outer addresses its packets carry (without a tunnel: the DVIPA, as
/// its first filter's local side, and the peer).
fn exported_sa(install: &SaInstall) -> ExportedSa {
    let dvipa = install
        .filters
        .first()
        .map(|f| f.local.addr)
        .unwrap_or(install.peer);
    exported(install, dvipa)
}

/// The data plane's stage costs: a distributor's forwarding, a target's decap and encap.
fn plane_stages(plane: &Plane) -> Vec<StageMetric> {
    match plane {
        Plane::Distributor(node) => distributor_stages(node.stage_costs()),
        Plane::Target(node) => target_stages(node.stage_costs()),
        Plane::Idle(_) => Vec::new(),
    }
}

/// The data plane's packets and drops: (packets handled, drops by cause).
fn plane_counts(plane: &Plane) -> (u64, Vec<DropMetric>) {
    match plane {
        Plane::Distributor(node) => {
            let counters = node.distributor.counters();
            let mut drops = distributor_drops(&node.distributor);
            drops.extend(node_drops(node.counters()));
            let mut packets = counters.peeked;
            // The flows the distributor keeps for itself run through its local target.
            if let Some(local) = node.local_counters() {
                packets += local.inbound_packets + local.outbound_packets;
                drops.extend(target_drops(&local));
            }
            (packets, drops)
        }
        Plane::Target(node) => {
            let counters = node.target.counters();
            let mut drops = target_drops(&counters);
            drops.extend(node_drops(node.counters()));
            (counters.inbound_packets + counters.outbound_packets, drops)
        }
        Plane::Idle(_) => (0, Vec::new()),
    }
}

/// IKE's refusals, as drops of the `ike` stage.
fn ike_drops(runtime: &Runtime) -> Vec<DropMetric> {
    let Some(endpoint) = runtime.ike() else {
        return Vec::new();
    };
    let stats = endpoint.stats();
    stage_drops(
        "ike",
        [
            ("Malformed", stats.malformed),
            ("UnknownSpi", stats.unknown_spi),
            ("SpiMismatch", stats.spi_mismatch),
            ("IntegrityFailure", stats.integrity_failures),
            ("AuthenticationFailure", stats.authentication_failures),
            ("HalfOpenPeerLimit", stats.half_open_peer_drops),
            ("HalfOpenGlobalLimit", stats.half_open_global_drops),
        ],
    )
}

fn snapshot(runtime: &Runtime) -> MetricsSnapshot {
    let (packets, mut drops) = runtime.plane().map(plane_counts).unwrap_or_default();
    drops.extend(ike_drops(runtime));
    let counters = runtime.counters();
    let received = runtime
        .distributor_core()
        .map(|core| core.counters().lifesize_reports);
    let sent = runtime
        .target_core()
        .map(|core| core.counters().lifesize_messages_sent);
    let lifesize_reports = match (received, sent) {
        (None, None) => None,
        (r, s) => Some(r.unwrap_or(0) + s.unwrap_or(0)),
    };
    MetricsSnapshot {
        node: runtime.node().to_owned(),
        sas: sa_list(runtime).sas.iter().map(sa_metric).collect(),
        ports: ports(runtime)
            .into_iter()
            .map(|(_, metric)| metric)
            .collect(),
        // The loop runs on one thread, pinned to the node's first polling core if it names one.
        cores: vec![CoreMetric {
            core: runtime.view.polling_cores.first().copied().unwrap_or(0),
            packets,
        }],
        drops,
        stages: runtime.plane().map(plane_stages).unwrap_or_default(),
        cf_operations: runtime.facility().operations(),
        lifesize_reports,
        rekeys: Some(counters.rekeys),
        takeovers: Some(counters.takeovers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(protocol: u8, ports: (u16, u16), from: [u8; 4], to: [u8; 4]) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: protocol,
            start_port: ports.0,
            end_port: ports.1,
            start_addr: IpAddr::from(from),
            end_addr: IpAddr::from(to),
        }
    }

    #[test]
    fn selectors_read_like_strongswans() {
        let host = [198, 51, 100, 10];
        assert_eq!(
            selector_text(&ts(17, (60, 60), host, host)),
            "198.51.100.10/32[udp/60]"
        );
        assert_eq!(
            selector_text(&ts(0, (0, u16::MAX), [203, 0, 113, 0], [203, 0, 113, 255])),
            "203.0.113.0/24"
        );
        assert_eq!(
            selector_text(&ts(6, (0, u16::MAX), host, host)),
            "198.51.100.10/32[tcp]"
        );
        assert_eq!(
            selector_text(&ts(50, (1000, 2000), [10, 0, 0, 1], [10, 0, 0, 6])),
            "10.0.0.1..10.0.0.6[50/1000-2000]"
        );
    }
}
