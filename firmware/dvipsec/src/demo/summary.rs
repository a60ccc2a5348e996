//! What the demo shows: the live progress line and the final summary (text or JSON).

use super::site::Site;
use dvipsec_dataplane::distributor::DropCause;
use dvipsec_dataplane::peer::PeerCounters;
use dvipsec_dataplane::target::TargetDrop;
use dvipsec_ports::PacketPort;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

pub struct TargetRow {
    pub node: String,
    pub inbound_packets: u64,
    pub outbound_packets: u64,
    /// Drops by cause (only causes that occurred).
    pub drops: BTreeMap<String, u64>,
}

pub struct DistributorRow {
    pub node: String,
    pub peeked: u64,
    pub forwarded: u64,
    /// Frames the distributor sent toward peers (outbound must bypass it: always 0).
    pub outbound_sent: u64,
    pub lifesize_reports: u64,
    /// Drops by cause (only causes that occurred).
    pub drops: BTreeMap<String, u64>,
}

pub struct PeerRow {
    pub dvipa: String,
    pub opened_by_target: bool,
    pub counters: PeerCounters,
}

/// A snapshot of the site's counters.
pub struct Summary {
    pub seconds: f64,
    pub simulated_ms: u128,
    pub targets: Vec<TargetRow>,
    pub distributors: Vec<DistributorRow>,
    pub peers: Vec<PeerRow>,
    pub connections: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub replay_drops: u64,
    pub auth_failures: u64,
    pub duplicate_seq: u64,
    pub numbers_issued: u64,
    pub rekeys: u64,
    pub child_sas: u64,
    pub errors: u64,
    pub newconn_requests: u64,
    pub newconn_released: u64,
    pub newconn_failed: u64,
}

fn add_drops(drops: &mut BTreeMap<String, u64>, cause: String, count: u64) {
    if count > 0 {
        *drops.entry(cause).or_default() += count;
    }
}

impl Summary {
    pub fn of(site: &Site, seconds: f64) -> Summary {
        let targets = site
            .targets
            .iter()
            .map(|t| {
                let mut row = TargetRow {
                    node: t.name.clone(),
                    inbound_packets: 0,
                    outbound_packets: 0,
                    drops: BTreeMap::new(),
                };
                let c = t.node.target.counters();
                row.inbound_packets += c.inbound_packets;
                row.outbound_packets += c.outbound_packets;
                for cause in TargetDrop::ALL {
                    add_drops(&mut row.drops, format!("{cause:?}"), c.dropped(cause));
                }
                row
            })
            .collect();
        let distributors = site
            .distributors
            .iter()
            .map(|d| {
                let c = d.node.distributor.counters();
                DistributorRow {
                    node: d.name.clone(),
                    peeked: c.peeked,
                    forwarded: c.forwarded,
                    outbound_sent: d.node.external_port().counters().tx_packets,
                    lifesize_reports: d.core.counters().lifesize_reports,
                    drops: DropCause::ALL
                        .iter()
                        .map(|cause| (format!("{cause:?}"), c.dropped(*cause)))
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                }
            })
            .collect();
        let peers = site.peers.iter().map(|p| p.peer.counters());
        let sum = |f: fn(&PeerCounters) -> u64| peers.clone().map(|c| f(&c)).sum();
        Summary {
            seconds,
            simulated_ms: site.now().as_millis(),
            targets,
            distributors,
            peers: site
                .peers
                .iter()
                .map(|p| PeerRow {
                    dvipa: p.dvipa.clone(),
                    opened_by_target: Site::opened_by_target(p),
                    counters: p.peer.counters(),
                })
                .collect(),
            connections: site.peers.iter().map(|p| p.connections.len() as u64).sum(),
            packets_sent: sum(|c| c.packets_sent),
            packets_received: sum(|c| c.packets_received),
            replay_drops: sum(|c| c.replay_drops),
            auth_failures: sum(|c| c.auth_failures),
            duplicate_seq: sum(|c| c.duplicate_seq),
            numbers_issued: site.numbers_issued.load(Ordering::Relaxed),
            rekeys: site.counters.rekeys,
            child_sas: site.counters.child_sas,
            errors: site.counters.errors,
            newconn_requests: site.counters.newconn_requests,
            newconn_released: site.counters.newconn_released,
            newconn_failed: site.counters.newconn_failed,
        }
    }

    pub fn lifesize_reports(&self) -> u64 {
        self.distributors.iter().map(|d| d.lifesize_reports).sum()
    }

    /// One progress line for stderr.
    pub fn progress_line(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{} {}/{}", t.node, t.inbound_packets, t.outbound_packets))
            .collect();
        let distributors: Vec<String> = self
            .distributors
            .iter()
            .map(|d| format!("{} {}/{}", d.node, d.forwarded, d.peeked))
            .collect();
        format!(
            "[{:5.1}s] targets in/out: {} | distributors fwd/peeked: {} | CF numbers {} | lifesize {} | rekeys {}",
            self.seconds,
            targets.join(", "),
            distributors.join(", "),
            self.numbers_issued,
            self.lifesize_reports(),
            self.rekeys
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "simulated_ms": self.simulated_ms as u64,
            "targets": self.targets.iter().map(|t| json!({
                "node": t.node,
                "inbound_packets": t.inbound_packets,
                "outbound_packets": t.outbound_packets,
                "drops": t.drops,
            })).collect::<Vec<_>>(),
            "distributors": self.distributors.iter().map(|d| json!({
                "node": d.node,
                "peeked": d.peeked,
                "forwarded": d.forwarded,
                "outbound_sent": d.outbound_sent,
                "lifesize_reports": d.lifesize_reports,
                "drops": d.drops,
            })).collect::<Vec<_>>(),
            "peer": {
                "connections": self.connections,
                "packets_sent": self.packets_sent,
                "packets_received": self.packets_received,
                "replay_drops": self.replay_drops,
                "auth_failures": self.auth_failures,
                "duplicate_seq": self.duplicate_seq,
            },
            "peers": self.peers.iter().map(|p| json!({
                "dvipa": p.dvipa,
                "first_connection_from": if p.opened_by_target { "target" } else { "peer" },
                "packets_sent": p.counters.packets_sent,
                "packets_received": p.counters.packets_received,
                "replay_drops": p.counters.replay_drops,
                "auth_failures": p.counters.auth_failures,
                "duplicate_seq": p.counters.duplicate_seq,
                "unrecognised": p.counters.other,
                "send_failures": p.counters.send_failures,
            })).collect::<Vec<_>>(),
            "cf": { "numbers_issued": self.numbers_issued },
            "lifesize_reports": self.lifesize_reports(),
            "rekeys": self.rekeys,
            "child_sas": self.child_sas,
            "newconn": self.newconn_released,
            "newconn_requests": self.newconn_requests,
            "newconn_failed": self.newconn_failed,
            "errors": self.errors,
        })
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "dvipsec demo: {:.1} s wall, {} ms simulated\n\ntargets:\n",
            self.seconds, self.simulated_ms
        ));
        for t in &self.targets {
            out.push_str(&format!(
                "  {:6} inbound {:>9}  outbound {:>9}\n",
                t.node, t.inbound_packets, t.outbound_packets
            ));
        }
        out.push_str("distributors:\n");
        for d in &self.distributors {
            out.push_str(&format!(
                "  {:6} peeked {:>9}  forwarded {:>9}  sent outbound {}  lifesize reports {}\n",
                d.node, d.peeked, d.forwarded, d.outbound_sent, d.lifesize_reports
            ));
        }
        out.push_str(&format!(
            "peer: {} connections, {} sent, {} received, {} replay drops, {} auth failures, {} duplicate sequence numbers\n",
            self.connections, self.packets_sent, self.packets_received, self.replay_drops,
            self.auth_failures, self.duplicate_seq
        ));
        out.push_str(&format!(
            "CF numbers issued {}, lifesize reports {}, child SAs {}, rekeys {}, errors {}\n",
            self.numbers_issued,
            self.lifesize_reports(),
            self.child_sas,
            self.rekeys,
            self.errors
        ));
        out.push_str(&format!(
            "target-originated connections (NEWCONN): {} requested, {} released, {} failed\n",
            self.newconn_requests, self.newconn_released, self.newconn_failed
        ));
        out
    }
}
