//! An in-process site: one distributor, N targets, the CF (a shared-memory region) and a scripted
//! peer, joined by two in-memory switches (external and XCF). SAs are installed with known keys
//! (no IKE). Tests, the benchmark and the demo stand on it; time is passed in.

use crate::dct::{DctConfig, TargetId};
use crate::distributor::{DistributedPort, Distributor, DistributorConfig, TargetInfo};
use crate::node::{DistributorLink, DistributorNode, LocalService, Neighbours, TargetNode};
use crate::peer::ScriptedPeer;
use crate::poll::PollNode;
use crate::sa_table::{IpPrefix, ShadowSaTable, TrafficSelector};
use crate::target::{Target, TargetConfig};
use crate::wire::Mac;
use dvipsec_cf::{LeasePolicy, Region, RegionOwner, SlotId, SlotKey};
use dvipsec_esp::{Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap};
use dvipsec_ports::{FabricConfig, FabricPort, SwitchBuilder};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// SPI of the SA from the peer to the DVIPA.
pub const SPI_TO_DVIPA: u32 = 0x0000_1000;
/// SPI of the SA from the DVIPA to the peer.
pub const SPI_TO_PEER: u32 = 0x0000_2000;
/// The DVIPA.
pub const DVIPA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The peer's outer address.
pub const PEER_OUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The peer's inner address.
pub const PEER_INNER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The distributor's XCF address.
pub const DISTRIBUTOR_XCF: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The peer's MAC.
pub const PEER_MAC: Mac = [2, 0, 0, 0, 0, 1];
/// The distributor's external MAC.
pub const DISTRIBUTOR_MAC: Mac = [2, 0, 0, 0, 0, 0x10];
/// The distributor's XCF MAC.
pub const DISTRIBUTOR_XCF_MAC: Mac = [2, 0, 0, 0, 1, 0x10];
/// A MAC on the XCF switch that belongs to no stack (for spoofing tests).
pub const ROGUE_XCF_MAC: Mac = [2, 0, 0, 0, 1, 0x66];

/// Keys the testbed's SAs use (AES-128-GCM: 16 key bytes and 4 salt bytes).
pub const KEY_TO_DVIPA: [u8; 20] = [0x11; 20];
/// Keys of the SA toward the peer.
pub const KEY_TO_PEER: [u8; 20] = [0x22; 20];

/// The XCF address of target `index`.
pub fn target_xcf(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, 10 + index as u8)
}

/// The external MAC of target `index`.
pub fn target_mac(index: usize) -> Mac {
    [2, 0, 0, 0, 0, 0x20 + index as u8]
}

/// The XCF MAC of target `index`.
pub fn target_xcf_mac(index: usize) -> Mac {
    [2, 0, 0, 0, 1, 0x20 + index as u8]
}

/// How to build the site.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Number of targets.
    pub targets: usize,
    /// How targets take outbound sequence numbers.
    pub lease: LeasePolicy,
    /// Distributed UDP ports of the DVIPA.
    pub udp_ports: Vec<u16>,
    /// The DCT's limits.
    pub dct: DctConfig,
    /// Ports' pool and ring sizes.
    pub fabric: FabricConfig,
    /// The XCF switch's ports' when they differ from `fabric` (to give the external ports a
    /// layout of their own).
    pub xcf_fabric: Option<FabricConfig>,
    /// Distributors besides the testbed's own whose GRE every target also takes (a box that
    /// serves DVIPAs of several distributors).
    pub other_distributors: Vec<DistributorLink>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            targets: 2,
            lease: LeasePolicy::per_packet(),
            udp_ports: vec![crate::app::ECHO_PORT, 7000],
            dct: DctConfig::default(),
            fabric: FabricConfig::esp_default(),
            xcf_fabric: None,
            other_distributors: Vec::new(),
        }
    }
}

/// Why the site could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// The fabric could not be built.
    #[error("fabric: {0}")]
    Fabric(#[from] dvipsec_ports::FabricError),
    /// The CF region could not be made.
    #[error("CF: {0}")]
    Facility(#[from] dvipsec_cf::CfError),
    /// An SA could not be built.
    #[error("SA: {0}")]
    Sa(#[from] dvipsec_esp::SaError),
}

/// The distributor node type of the testbed.
pub type SiteDistributor = DistributorNode<FabricPort, ShadowSaTable, RegionOwner>;
/// The target node type of the testbed.
pub type SiteTarget = TargetNode<FabricPort, ShadowSaTable, Region>;

/// The site.
pub struct Testbed {
    /// The peer.
    pub peer: ScriptedPeer<FabricPort>,
    /// The distributor.
    pub distributor: SiteDistributor,
    /// The targets.
    pub targets: Vec<SiteTarget>,
    /// A port on the XCF switch that no stack owns.
    pub rogue_xcf: FabricPort,
    /// The CF slot of the inbound SA.
    pub inbound_slot: SlotId,
    /// The CF slot of the outbound SA.
    pub outbound_slot: SlotId,
}

/// The config every testbed SA shares: AES-128-GCM, tunnel mode from `tunnel.0` to `tunnel.1`,
/// NAT-T (UDP 4500) encapsulation; `key` is the 16 key bytes and 4 salt bytes.
pub fn tunnel_sa_config(
    spi: u32,
    direction: Direction,
    key: &[u8],
    tunnel: (Ipv4Addr, Ipv4Addr),
) -> SaConfig {
    let mut config = SaConfig::new(spi, direction, Suite::Aes128Gcm16, SaKeys::new(key, &[]));
    config.mode = Mode::Tunnel;
    config.tunnel = Some(TunnelEndpoints {
        src: IpAddr::V4(tunnel.0),
        dst: IpAddr::V4(tunnel.1),
    });
    config.udp_encap = Some(UdpEncap::NAT_T);
    config
}

/// The SA's filter rule: the peer's inner address to the DVIPA.
pub fn selector() -> TrafficSelector {
    TrafficSelector {
        local: IpPrefix::host(IpAddr::V4(DVIPA)),
        remote: IpPrefix::host(IpAddr::V4(PEER_INNER)),
    }
}

impl Testbed {
    /// Builds the site; the CF region file is created at `cf_path` (which must not exist).
    pub fn new(config: &TestbedConfig, cf_path: &Path) -> Result<Testbed, TestbedError> {
        let owner = RegionOwner::create(cf_path, 16)?;
        let dvipa = IpAddr::V4(DVIPA);
        let inbound_slot = owner.allocate(
            SlotKey {
                dvipa,
                spi: SPI_TO_DVIPA,
            },
            1024,
        )?;
        let outbound_slot = owner.allocate(
            SlotKey {
                dvipa,
                spi: SPI_TO_PEER,
            },
            128,
        )?;
        let mut external = SwitchBuilder::new(config.fabric)
            .port("peer", PEER_MAC)?
            .port("dist-ext", DISTRIBUTOR_MAC)?;
        let mut xcf = SwitchBuilder::new(config.xcf_fabric.unwrap_or(config.fabric))
            .port("dist-xcf", DISTRIBUTOR_XCF_MAC)?
            .port("rogue-xcf", ROGUE_XCF_MAC)?;
        for i in 0..config.targets {
            external = external.port(&format!("t{i}-ext"), target_mac(i))?;
            xcf = xcf.port(&format!("t{i}-xcf"), target_xcf_mac(i))?;
        }
        let mut external = external.build()?.into_iter();
        let mut xcf = xcf.build()?.into_iter();
        let (Some(peer_port), Some(dist_ext)) = (external.next(), external.next()) else {
            return Err(dvipsec_cf::CfError::InvalidArgument("switch ports missing").into());
        };
        let (Some(dist_xcf), Some(rogue_xcf)) = (xcf.next(), xcf.next()) else {
            return Err(dvipsec_cf::CfError::InvalidArgument("switch ports missing").into());
        };
        let peer = ScriptedPeer::new(
            peer_port,
            Sa::new(tunnel_sa_config(
                SPI_TO_DVIPA,
                Direction::Outbound,
                &KEY_TO_DVIPA,
                (PEER_OUTER, DVIPA),
            ))?,
            Sa::new(tunnel_sa_config(
                SPI_TO_PEER,
                Direction::Inbound,
                &KEY_TO_PEER,
                (DVIPA, PEER_OUTER),
            ))?,
            PEER_MAC,
            DISTRIBUTOR_MAC,
        );
        let target_ids: Vec<TargetId> = (0..config.targets).map(|i| TargetId(i as u16)).collect();
        let distributor_config = DistributorConfig {
            xcf_address: DISTRIBUTOR_XCF,
            targets: (0..config.targets)
                .map(|i| TargetInfo {
                    id: TargetId(i as u16),
                    xcf_address: target_xcf(i),
                })
                .collect(),
            ports: config
                .udp_ports
                .iter()
                .map(|&port| DistributedPort {
                    dvipa,
                    protocol: 17,
                    port,
                    targets: target_ids.clone(),
                })
                .chain(config.udp_ports.iter().map(|&port| DistributedPort {
                    dvipa,
                    protocol: 6,
                    port,
                    targets: target_ids.clone(),
                }))
                .collect(),
            dct: config.dct,
            load_stale_after_us: 10_000_000,
            distribute_udp: true,
        };
        let mut dist_sas = ShadowSaTable::new();
        let mut dist_inbound = tunnel_sa_config(
            SPI_TO_DVIPA,
            Direction::Inbound,
            &KEY_TO_DVIPA,
            (PEER_OUTER, DVIPA),
        );
        // Packets the box opens itself use the CF's shared window, like the targets.
        dist_inbound.replay_window = 0;
        dist_sas.install_inbound(
            Sa::new(dist_inbound)?,
            dvipa,
            IpAddr::V4(PEER_OUTER),
            selector(),
            inbound_slot,
        );
        let target_macs = Neighbours::new(
            (0..config.targets)
                .map(|i| (IpAddr::V4(target_xcf(i)), target_xcf_mac(i)))
                .collect(),
        );
        let region = owner.region().clone();
        let mut distributor = DistributorNode::new(
            Distributor::new(distributor_config),
            dist_sas,
            owner,
            dist_ext,
            dist_xcf,
            DISTRIBUTOR_XCF_MAC,
            target_macs,
            256,
        );
        distributor.serve_locally(LocalService {
            config: TargetConfig {
                xcf_address: DISTRIBUTOR_XCF,
                distributor_xcf: Vec::new(),
                dvipas: vec![dvipa],
            },
            external_mac: DISTRIBUTOR_MAC,
            peers: Neighbours::new(vec![(IpAddr::V4(PEER_OUTER), PEER_MAC)]),
            echo: true,
        });
        let own = DistributorLink {
            xcf: DISTRIBUTOR_XCF,
            mac: DISTRIBUTOR_XCF_MAC,
        };
        let distributor_links: Vec<DistributorLink> = std::iter::once(own)
            .chain(config.other_distributors.iter().copied())
            .collect();
        let mut targets = Vec::new();
        for i in 0..config.targets {
            let (Some(ext), Some(x)) = (external.next(), xcf.next()) else {
                return Err(dvipsec_cf::CfError::InvalidArgument("switch ports missing").into());
            };
            let mut sas = ShadowSaTable::new();
            let mut inbound_config = tunnel_sa_config(
                SPI_TO_DVIPA,
                Direction::Inbound,
                &KEY_TO_DVIPA,
                (PEER_OUTER, DVIPA),
            );
            // The shared window in the CF is the one that counts.
            inbound_config.replay_window = 0;
            sas.install_inbound(
                Sa::new(inbound_config)?,
                dvipa,
                IpAddr::V4(PEER_OUTER),
                selector(),
                inbound_slot,
            );
            sas.install_outbound(
                Sa::new(tunnel_sa_config(
                    SPI_TO_PEER,
                    Direction::Outbound,
                    &KEY_TO_PEER,
                    (DVIPA, PEER_OUTER),
                ))?,
                dvipa,
                IpAddr::V4(PEER_OUTER),
                selector(),
                outbound_slot,
                config.lease,
            );
            let target = Target::new(
                TargetConfig {
                    xcf_address: target_xcf(i),
                    distributor_xcf: distributor_links.iter().map(|l| l.xcf).collect(),
                    dvipas: vec![dvipa],
                },
                region.clone(),
            );
            let mut node = TargetNode::new(
                target,
                sas,
                ext,
                x,
                target_mac(i),
                Neighbours::new(vec![(IpAddr::V4(PEER_OUTER), PEER_MAC)]),
                true,
            );
            node.set_distributor_link(&distributor_links);
            targets.push(node);
        }
        Ok(Testbed {
            peer,
            distributor,
            targets,
            rogue_xcf,
            inbound_slot,
            outbound_slot,
        })
    }

    /// The peer's inner socket address with `port`.
    pub fn peer_socket(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(PEER_INNER), port)
    }

    /// The DVIPA's socket address with `port`.
    pub fn dvipa_socket(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(DVIPA), port)
    }

    /// One round of every box at `now_us`, single-threaded: the peer sends what it queued, the
    /// distributor dispatches, the targets process, the peer receives. Returns packets handled.
    pub fn step(&mut self, now_us: u64) -> usize {
        self.peer.flush();
        let mut handled = self.distributor.poll(now_us);
        for target in &mut self.targets {
            handled += target.poll(now_us);
        }
        handled + self.peer.poll_rx()
    }

    /// Steps until a round handles nothing (at most `max_rounds`).
    pub fn settle(&mut self, now_us: u64, max_rounds: usize) {
        for _ in 0..max_rounds {
            if self.step(now_us) == 0 {
                return;
            }
        }
    }

    /// Gives the distributor box the outbound SA too, so that what it serves itself (traffic it
    /// does not distribute) can be answered; it takes sequence numbers from the CF like the
    /// targets, under `lease`.
    pub fn install_distributor_outbound_sa(
        &mut self,
        lease: LeasePolicy,
    ) -> Result<(), TestbedError> {
        self.distributor.sas.install_outbound(
            Sa::new(tunnel_sa_config(
                SPI_TO_PEER,
                Direction::Outbound,
                &KEY_TO_PEER,
                (DVIPA, PEER_OUTER),
            ))?,
            IpAddr::V4(DVIPA),
            IpAddr::V4(PEER_OUTER),
            selector(),
            self.outbound_slot,
            lease,
        );
        Ok(())
    }

    /// Deletes the SA `spi` everywhere (what SA_DELETE from the cluster link does).
    pub fn delete_sa(&mut self, spi: u32) {
        self.distributor.sas.delete(spi);
        for target in &mut self.targets {
            target.sas.delete(spi);
        }
    }
}
