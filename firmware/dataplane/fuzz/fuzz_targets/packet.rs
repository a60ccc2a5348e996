//! Any bytes as a received packet: the distributor's dispatch (outer IP, UDP 4500, SPI, peek,
//! DCT) and the wire helpers (Ethernet, inner flow, echo turnaround) answer with a decision or an
//! error, never a panic.
#![no_main]

use dvipsec_cf::{CfError, Lifesize, ReplayVerdict, SeqRange, SequenceFacility, SlotId};
use dvipsec_dataplane::dct::{DctConfig, TargetId};
use dvipsec_dataplane::distributor::{
    DistributedPort, Distributor, DistributorConfig, TargetInfo,
};
use dvipsec_dataplane::sa_table::ShadowSaTable;
use dvipsec_dataplane::testbed::{
    selector, tunnel_sa_config, DVIPA, KEY_TO_DVIPA, PEER_OUTER, SPI_TO_DVIPA,
};
use dvipsec_dataplane::wire;
use dvipsec_esp::{Direction, Sa};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

/// A facility that accepts everything (the fuzz target exercises parsing, not the CF).
struct Accepting;

impl SequenceFacility for Accepting {
    fn fetch_add(&self, _: SlotId, n: u32) -> Result<SeqRange, CfError> {
        Ok(SeqRange { first: 1, count: n })
    }
    fn replay_check(&self, _: SlotId, _: u64) -> Result<ReplayVerdict, CfError> {
        Ok(ReplayVerdict::Accepted)
    }
    fn replay_check_and_set(&self, _: SlotId, _: u64) -> Result<ReplayVerdict, CfError> {
        Ok(ReplayVerdict::Accepted)
    }
    fn lifesize_add(&self, _: SlotId, _: dvipsec_cf::Direction, _: u64, _: u64) -> Result<(), CfError> {
        Ok(())
    }
    fn lifesize_read(&self, _: SlotId) -> Result<Lifesize, CfError> {
        Ok(Lifesize::default())
    }
}

fn setup() -> (Distributor, ShadowSaTable) {
    let config = tunnel_sa_config(
        SPI_TO_DVIPA,
        Direction::Inbound,
        &KEY_TO_DVIPA,
        (PEER_OUTER, DVIPA),
    );
    let mut sas = ShadowSaTable::new();
    let sa = Sa::new(config).expect("fixed SA config");
    sas.install_inbound(sa, IpAddr::V4(DVIPA), IpAddr::V4(PEER_OUTER), selector(), SlotId(1));
    let distributor = Distributor::new(DistributorConfig {
        xcf_address: Ipv4Addr::new(10, 9, 0, 1),
        targets: vec![TargetInfo {
            id: TargetId(0),
            xcf_address: Ipv4Addr::new(10, 9, 0, 10),
        }],
        ports: vec![DistributedPort {
            dvipa: IpAddr::V4(DVIPA),
            protocol: 17,
            port: 60,
            targets: vec![TargetId(0)],
        }],
        dct: DctConfig {
            capacity: 64,
            ..DctConfig::default()
        },
        load_stale_after_us: 1_000,
        distribute_udp: true,
    });
    (distributor, sas)
}

thread_local! {
    static STATE: RefCell<(Distributor, ShadowSaTable, u64)> = {
        let (d, s) = setup();
        RefCell::new((d, s, 0))
    };
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let (distributor, sas, now) = &mut *state.borrow_mut();
        *now += 1;
        let _ = distributor.dispatch(sas, &Accepting, data, *now);
    });
    let _ = wire::ip_payload(data);
    if let Ok(flow) = wire::flow(data) {
        assert!(flow.payload.start <= flow.payload.end && flow.payload.end <= data.len());
    }
    let mut copy = data.to_vec();
    let _ = wire::reverse_udp(&mut copy);
});
