//! A whole figure-4 cluster in one process: every distributor and target core of the site,
//! joined by the in-memory network, with simulated time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use dvipsec_cluster::sim::Network;
use dvipsec_cluster::wire::{FilterRule, PortRange, Prefix, SaInstall, SaRef, WireKeys};
use dvipsec_cluster::{
    Distributor, DistributorError, DistributorEvent, IkeEvent, LinkSecurity, SlotPool, Target,
    TargetEvent,
};
use dvipsec_config::{NodeView, SiteConfig};
use dvipsec_esp::{Direction, IpsecProtocol, LifetimeLimits, Mode, Suite, TunnelEndpoints};

pub const MS: Duration = Duration::from_millis(1);
/// How long a test lets the cluster settle before it counts as stuck.
pub const SETTLE: Duration = Duration::from_secs(30);
pub const DVA1: &str = "DVA1";
pub const DVB1: &str = "DVB1";

pub fn figure4_views() -> Vec<NodeView> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/figure4.yaml");
    SiteConfig::load(&path)
        .expect("figure 4 loads")
        .node_views()
}

pub struct Cluster {
    pub views: Vec<NodeView>,
    pub distributors: BTreeMap<String, Distributor>,
    pub targets: BTreeMap<String, Target>,
    pub net: Network,
    pub now: Duration,
    pub distributor_events: Vec<(String, DistributorEvent)>,
    pub target_events: Vec<(String, TargetEvent)>,
    pub link_errors: u64,
    incarnations: u64,
}

impl Cluster {
    pub fn figure4(seed: u64, loss_percent: u8) -> Cluster {
        Cluster::with_security(seed, loss_percent, LinkSecurity::Trusted)
    }

    pub fn with_security(seed: u64, loss_percent: u8, security: LinkSecurity) -> Cluster {
        let views = figure4_views();
        let mut cluster = Cluster {
            views: views.clone(),
            distributors: BTreeMap::new(),
            targets: BTreeMap::new(),
            net: Network::new(seed, loss_percent, MS),
            now: Duration::ZERO,
            distributor_events: Vec::new(),
            target_events: Vec::new(),
            link_errors: 0,
            incarnations: 100,
        };
        for view in &views {
            if !view.owns.is_empty() {
                let distributor = Distributor::new(
                    view,
                    cluster.next_incarnation(),
                    security,
                    Box::new(SlotPool::new(1024)),
                    Duration::ZERO,
                );
                cluster.distributors.insert(view.node.clone(), distributor);
            }
            if view.serves.iter().any(|s| !s.standby) {
                let target =
                    Target::new(view, cluster.next_incarnation(), security, Duration::ZERO);
                cluster.targets.insert(view.node.clone(), target);
            }
        }
        cluster
    }

    fn next_incarnation(&mut self) -> u64 {
        self.incarnations += 1;
        self.incarnations
    }

    /// One millisecond of the cluster's life.
    pub fn step(&mut self) {
        let now = self.now;
        for (node, distributor) in &mut self.distributors {
            while let Some(t) = distributor.poll_transmit(now) {
                self.net
                    .send(&format!("{node}/d"), &format!("{}/t", t.to), t.bytes, now);
            }
        }
        for (node, target) in &mut self.targets {
            target.handle_timeout(now);
            while let Some(t) = target.poll_transmit(now) {
                self.net
                    .send(&format!("{node}/t"), &format!("{}/d", t.to), t.bytes, now);
            }
        }
        for frame in self.net.arrivals(now) {
            let from = frame.from.split('/').next().unwrap_or_default().to_owned();
            let (to, role) = frame.to.split_once('/').unwrap();
            // A node that is not running loses what is sent to it.
            let ok = match role {
                "d" => self
                    .distributors
                    .get_mut(to)
                    .is_none_or(|d| d.handle(&from, &frame.bytes, now).is_ok()),
                _ => self
                    .targets
                    .get_mut(to)
                    .is_none_or(|t| t.handle(&from, &frame.bytes, now).is_ok()),
            };
            if !ok {
                self.link_errors += 1;
            }
        }
        self.collect_events();
        self.now += MS;
    }

    fn collect_events(&mut self) {
        for (node, d) in &mut self.distributors {
            while let Some(e) = d.poll_event() {
                self.distributor_events.push((node.clone(), e));
            }
        }
        for (node, t) in &mut self.targets {
            while let Some(e) = t.poll_event() {
                self.target_events.push((node.clone(), e));
            }
        }
    }

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until every link has nothing unacknowledged (or `limit` passes); returns whether it settled.
    pub fn settle(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            let quiet = self.distributors.values().all(|d| {
                self.targets.keys().all(|t| {
                    d.link(t)
                        .is_none_or(|l| l.unacked() == 0 && l.peer_incarnation().is_some())
                })
            }) && self.targets.values().all(|t| {
                self.distributors.keys().all(|d| {
                    t.link(d)
                        .is_none_or(|l| l.unacked() == 0 && l.peer_incarnation().is_some())
                })
            });
            if quiet && self.net.is_idle() {
                return true;
            }
        }
        false
    }

    /// A loss-free figure-4 cluster with every link up.
    pub fn started(seed: u64) -> Cluster {
        let mut cluster = Cluster::figure4(seed, 0);
        assert!(cluster.settle(SETTLE), "links came up");
        cluster
    }

    /// Hands `owner`'s distributor an SA of `dvipa` as IKE would; returns its reference.
    pub fn install_sa(
        &mut self,
        owner: &str,
        dvipa: &str,
        direction: Direction,
        spi: u32,
    ) -> SaRef {
        let address = self.dvipa_address(dvipa);
        let install = sa(dvipa, address, direction, spi);
        let sa_ref = install.sa_ref();
        self.ike(owner, IkeEvent::Installed(Box::new(install)))
            .unwrap();
        sa_ref
    }

    /// Hands `event` from IKE to `owner`'s distributor at the cluster's current time.
    pub fn ike(&mut self, owner: &str, event: IkeEvent) -> Result<(), DistributorError> {
        let now = self.now;
        self.distributor(owner).handle_ike(event, now)
    }

    pub fn distributor(&mut self, node: &str) -> &mut Distributor {
        self.distributors.get_mut(node).unwrap()
    }

    pub fn target(&mut self, node: &str) -> &mut Target {
        self.targets.get_mut(node).unwrap()
    }

    /// Which targets hold `sa` in their shadow cache.
    pub fn holders(&self, sa: &SaRef) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, t)| t.all_sas().contains(sa))
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Replaces `node`'s target by a freshly started one (new incarnation, empty cache).
    pub fn restart_target(&mut self, node: &str) {
        let view = self.views.iter().find(|v| v.node == node).unwrap().clone();
        let incarnation = self.next_incarnation();
        self.net.discard_to(&format!("{node}/t"));
        let target = Target::new(&view, incarnation, LinkSecurity::Trusted, self.now);
        self.targets.insert(node.to_owned(), target);
    }

    /// Replaces `node`'s distributor by a freshly started one (new incarnation, no SAs).
    pub fn restart_distributor(&mut self, node: &str) {
        let view = self.views.iter().find(|v| v.node == node).unwrap().clone();
        let incarnation = self.next_incarnation();
        self.net.discard_to(&format!("{node}/d"));
        let distributor = Distributor::new(
            &view,
            incarnation,
            LinkSecurity::Trusted,
            Box::new(SlotPool::new(1024)),
            self.now,
        );
        self.distributors.insert(node.to_owned(), distributor);
    }

    pub fn dvipa_address(&self, dvipa: &str) -> IpAddr {
        self.views
            .iter()
            .flat_map(|v| v.owns.iter())
            .find(|o| o.dvipa == dvipa)
            .unwrap()
            .address
    }
}

pub fn peer_a() -> IpAddr {
    "203.0.113.10".parse().unwrap()
}

/// The dynamic filter of policy app-a/app-b: the DVIPA to the peer network, TCP.
pub fn app_filter(dvipa: IpAddr) -> FilterRule {
    FilterRule {
        local: Prefix::host(dvipa),
        remote: Prefix {
            addr: "203.0.113.0".parse().unwrap(),
            len: 24,
        },
        protocol: 6,
        local_ports: PortRange::ANY,
        remote_ports: PortRange::ANY,
    }
}

/// An SA as IKE would hand it over (slot and threshold are the distributor's to fill).
pub fn sa(dvipa: &str, dvipa_address: IpAddr, direction: Direction, spi: u32) -> SaInstall {
    let (src, dst) = match direction {
        Direction::Outbound => (dvipa_address, peer_a()),
        Direction::Inbound => (peer_a(), dvipa_address),
    };
    SaInstall {
        dvipa: dvipa.to_owned(),
        peer: peer_a(),
        cf_slot: 0,
        lifesize_percent: 5,
        spi,
        direction,
        protocol: IpsecProtocol::Esp,
        suite: Suite::Aes128Gcm16,
        mode: Mode::Tunnel,
        tunnel: Some(TunnelEndpoints { src, dst }),
        udp_encap: None,
        replay_window: 128,
        esn: false,
        lifetime: LifetimeLimits {
            soft_bytes: Some(900_000),
            hard_bytes: Some(1_000_000),
            soft_packets: None,
            hard_packets: None,
        },
        keys: WireKeys::new(&[spi as u8; 20], &[]),
        filters: vec![app_filter(dvipa_address)],
    }
}
