//! A [`ControlHandler`] for one box of the data plane's in-process testbed (the demo and the
//! tests use it). The testbed installs SAs with known keys and runs no IKE, so `ike list`,
//! `conn list` and `takeover` answer [`ControlError::Unsupported`].
//!
//! The data plane's tables cannot be enumerated yet, so the SAs listed are the testbed's two
//! (looked up live: a deleted SA disappears from the listing) and `dct list` reports counts.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use dvipsec_cf::SequenceFacility;
use dvipsec_dataplane::sa_table::SaTable;
use dvipsec_dataplane::testbed::{
    self, Testbed, DISTRIBUTOR_XCF, DVIPA, KEY_TO_DVIPA, KEY_TO_PEER, PEER_INNER, PEER_OUTER,
    SPI_TO_DVIPA, SPI_TO_PEER,
};
use dvipsec_esp::IpsecProtocol;

use crate::handler::ControlHandler;
use crate::keys::{ExportedSa, KeyExport, SecretBytes};
use crate::metrics::{self, CoreMetric, MetricsSnapshot, PortMetric};
use crate::protocol::{
    CfReport, ConnListReport, ControlError, DctReport, DvipaRelation, DvipaStatus, IkeListReport,
    LinkStatus, PeerStatus, Role, SaEntry, SaListReport, SaLocation, StatusReport, TakeoverReport,
};
use crate::report::{
    cf_slot, distributor_drops, distributor_stages, node_drops, port_status, sa_entry, sa_metric,
    target_drops, target_stages, SaView,
};

/// Which box of the testbed a handler speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestbedBox {
    /// The distributor.
    Distributor,
    /// Target `n`.
    Target(usize),
}

impl TestbedBox {
    /// The box's name ("distributor", "t0", ...).
    pub fn name(self) -> String {
        match self {
            TestbedBox::Distributor => "distributor".into(),
            TestbedBox::Target(i) => format!("t{i}"),
        }
    }
}

/// Answers control requests from one box of a shared testbed.
#[derive(Clone)]
pub struct TestbedHandler {
    site: Arc<Mutex<Testbed>>,
    which: TestbedBox,
}

impl std::fmt::Debug for TestbedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestbedHandler")
            .field("which", &self.which)
            .finish_non_exhaustive()
    }
}

fn failed(request: &str, reason: impl std::fmt::Display) -> ControlError {
    ControlError::Failed {
        request: request.into(),
        reason: reason.to_string(),
    }
}

fn unsupported(request: &str, reason: &str) -> ControlError {
    ControlError::Unsupported {
        request: request.into(),
        reason: reason.into(),
    }
}

/// The testbed's SAs present in `table`.
fn list_sas(table: &mut dyn SaTable, location: SaLocation) -> Vec<SaEntry> {
    let mut sas = Vec::new();
    if let Some(entry) = table.inbound(SPI_TO_DVIPA, IpsecProtocol::Esp, IpAddr::V4(PEER_OUTER)) {
        sas.push(sa_entry(SaView::from(&*entry), location));
    }
    if let Some(entry) = table.outbound(IpAddr::V4(DVIPA), IpAddr::V4(PEER_INNER)) {
        sas.push(sa_entry(SaView::from(&*entry), location));
    }
    sas
}

impl TestbedHandler {
    /// A handler for `which` in `site`.
    pub fn new(site: Arc<Mutex<Testbed>>, which: TestbedBox) -> Self {
        TestbedHandler { site, which }
    }

    fn lock(&self, request: &str) -> Result<MutexGuard<'_, Testbed>, ControlError> {
        self.site.lock().map_err(|_| {
            failed(
                request,
                "the testbed lock is poisoned (a data-plane thread panicked)",
            )
        })
    }

    fn target_index(&self, site: &Testbed, request: &str) -> Result<Option<usize>, ControlError> {
        match self.which {
            TestbedBox::Distributor => Ok(None),
            TestbedBox::Target(i) if i < site.targets.len() => Ok(Some(i)),
            TestbedBox::Target(i) => Err(failed(request, format!("the testbed has no target {i}"))),
        }
    }

    fn links(
        &self,
        site: &Testbed,
        request: &str,
    ) -> Result<(Vec<LinkStatus>, Vec<PortMetric>), ControlError> {
        let pairs = match self.target_index(site, request)? {
            None => [
                port_status(site.distributor.external_port()),
                port_status(site.distributor.xcf_port()),
            ],
            Some(i) => [
                port_status(site.targets[i].external_port()),
                port_status(site.targets[i].xcf_port()),
            ],
        };
        Ok(pairs.into_iter().unzip())
    }

    /// The counters of this box as a metrics snapshot.
    pub fn snapshot(&self) -> Result<MetricsSnapshot, ControlError> {
        let request = "metrics";
        let mut site = self.lock(request)?;
        let (_, ports) = self.links(&site, request)?;
        let index = self.target_index(&site, request)?;
        // The testbed never rekeys or moves a DVIPA, so those counts are truly zero; lifesize
        // reports and CF operations happen in the caller's loop, which this handler cannot see.
        let mut snapshot = MetricsSnapshot {
            node: self.which.name(),
            ports,
            rekeys: Some(0),
            takeovers: Some(0),
            ..MetricsSnapshot::default()
        };
        let sas = match index {
            None => {
                let node = &mut site.distributor;
                snapshot.cores.push(CoreMetric {
                    core: 0,
                    packets: node.distributor.counters().peeked,
                });
                snapshot.drops = distributor_drops(&node.distributor);
                snapshot.drops.extend(node_drops(node.counters()));
                snapshot.stages = distributor_stages(node.stage_costs());
                list_sas(&mut node.sas, SaLocation::Sad)
            }
            Some(i) => {
                let target = &mut site.targets[i];
                let counters = target.target.counters();
                snapshot.cores.push(CoreMetric {
                    core: 0,
                    packets: counters.inbound_packets + counters.outbound_packets,
                });
                snapshot.drops = target_drops(&counters);
                snapshot.drops.extend(node_drops(target.counters()));
                snapshot.stages = target_stages(target.stage_costs());
                list_sas(&mut target.sas, SaLocation::Shadow)
            }
        };
        snapshot.sas = sas.iter().map(sa_metric).collect();
        Ok(snapshot)
    }
}

fn exported(spi: u32, from: Ipv4Addr, to: Ipv4Addr, key: &[u8]) -> ExportedSa {
    ExportedSa {
        src: IpAddr::V4(from),
        dst: IpAddr::V4(to),
        spi,
        suite: dvipsec_esp::Suite::Aes128Gcm16.name().into(),
        enc_key: SecretBytes::new(key),
        auth_key: SecretBytes::default(),
    }
}

impl ControlHandler for TestbedHandler {
    fn status(&mut self) -> Result<StatusReport, ControlError> {
        let request = "status";
        let site = self.lock(request)?;
        let (links, _) = self.links(&site, request)?;
        let dvipa = IpAddr::V4(DVIPA);
        let (role, relation, peers) = match self.target_index(&site, request)? {
            None => (
                Role::Distributor,
                DvipaRelation::Owns,
                (0..site.targets.len())
                    .map(|i| PeerStatus {
                        name: TestbedBox::Target(i).name(),
                        xcf_address: IpAddr::V4(testbed::target_xcf(i)),
                        role: Role::Target,
                        link_up: None,
                    })
                    .collect(),
            ),
            Some(_) => (
                Role::Target,
                DvipaRelation::Serves,
                vec![PeerStatus {
                    name: TestbedBox::Distributor.name(),
                    xcf_address: IpAddr::V4(DISTRIBUTOR_XCF),
                    role: Role::Distributor,
                    link_up: None,
                }],
            ),
        };
        Ok(StatusReport {
            name: self.which.name(),
            role,
            dvipas: vec![DvipaStatus { dvipa, relation }],
            peers,
            links,
        })
    }

    fn sa_list(&mut self) -> Result<SaListReport, ControlError> {
        let request = "sa list";
        let mut site = self.lock(request)?;
        let sas = match self.target_index(&site, request)? {
            None => list_sas(&mut site.distributor.sas, SaLocation::Sad),
            Some(i) => list_sas(&mut site.targets[i].sas, SaLocation::Shadow),
        };
        Ok(SaListReport { sas })
    }

    fn dct_list(&mut self) -> Result<DctReport, ControlError> {
        let request = "dct list";
        let site = self.lock(request)?;
        if self.target_index(&site, request)?.is_some() {
            return Err(unsupported(
                request,
                "a target holds no DCT; ask the distributor",
            ));
        }
        let dct = site.distributor.distributor.dct();
        let counters = dct.counters();
        Ok(DctReport {
            entries: dct.len() as u64,
            capacity: 0,
            added: counters.added,
            full_drops: counters.full_drops,
            expired: counters.expired,
            closed: counters.closed,
            flows: Vec::new(),
        })
    }

    fn ike_list(&mut self) -> Result<IkeListReport, ControlError> {
        Err(unsupported(
            "ike list",
            "the in-process testbed installs SAs with known keys and runs no IKE",
        ))
    }

    fn conn_list(&mut self) -> Result<ConnListReport, ControlError> {
        Err(unsupported(
            "conn list",
            "the in-process testbed has no configured connections (no IKE)",
        ))
    }

    fn cf_show(&mut self) -> Result<CfReport, ControlError> {
        let request = "cf show";
        let site = self.lock(request)?;
        let region = site.distributor.facility.region();
        let dvipa = IpAddr::V4(DVIPA);
        let mut slots = Vec::new();
        for (slot, spi) in [
            (site.inbound_slot, SPI_TO_DVIPA),
            (site.outbound_slot, SPI_TO_PEER),
        ] {
            let lifesize = region
                .lifesize_read(slot)
                .map_err(|e| failed(request, format!("slot {}: {e}", slot.0)))?;
            slots.push(cf_slot(slot.0, dvipa, spi, &lifesize));
        }
        Ok(CfReport {
            epoch: region.epoch(),
            incarnation: region.incarnation(),
            slot_capacity: region.slot_count(),
            slots,
        })
    }

    fn takeover(&mut self, _dvipa: IpAddr) -> Result<TakeoverReport, ControlError> {
        Err(unsupported(
            "takeover",
            "the in-process testbed has no backup distributor to move the DVIPA to",
        ))
    }

    fn keys_export(&mut self) -> Result<KeyExport, ControlError> {
        let request = "keys export";
        let mut site = self.lock(request)?;
        let present: Vec<u32> = match self.target_index(&site, request)? {
            None => list_sas(&mut site.distributor.sas, SaLocation::Sad),
            Some(i) => list_sas(&mut site.targets[i].sas, SaLocation::Shadow),
        }
        .into_iter()
        .map(|sa| sa.spi)
        .collect();
        let known = [
            exported(SPI_TO_DVIPA, PEER_OUTER, DVIPA, &KEY_TO_DVIPA),
            exported(SPI_TO_PEER, DVIPA, PEER_OUTER, &KEY_TO_PEER),
        ];
        Ok(KeyExport {
            sas: known
                .into_iter()
                .filter(|sa| present.contains(&sa.spi))
                .collect(),
        })
    }

    fn metrics(&mut self) -> Result<String, ControlError> {
        Ok(metrics::render(&[self.snapshot()?]))
    }
}
