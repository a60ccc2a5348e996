//! The report builders of `dvipsec_control::report` against the data plane's in-process
//! testbed after echo traffic: CF slot listings, the DCT listing, shadow SA entries and the
//! `sa list` order, and the drops of each role.

mod support;

use std::net::IpAddr;

use dvipsec_cf::SequenceFacility;
use dvipsec_control::protocol::SaLocation;
use dvipsec_control::report::{
    cf_slot, dct_report, distributor_drops, held_cf_slots, shadow_entries, sort_sa_entries,
    table_slots, target_drops,
};
use dvipsec_dataplane::distributor::DropCause;
use dvipsec_dataplane::target::TargetDrop;
use dvipsec_dataplane::testbed::{DVIPA, SPI_TO_DVIPA, SPI_TO_PEER};

#[test]
fn cf_slots_read_the_held_ones_and_pass_over_released_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bed = support::echoed_testbed(dir.path(), 4);
    let owner = &bed.distributor.facility;
    let dvipa = IpAddr::V4(DVIPA);
    let held = vec![
        (bed.inbound_slot.0, dvipa, SPI_TO_DVIPA),
        (bed.outbound_slot.0, dvipa, SPI_TO_PEER),
    ];
    let both = held_cf_slots(owner.region(), held.clone()).unwrap();
    assert_eq!(both.len(), 2);
    let read = owner.region().lifesize_read(bed.inbound_slot).unwrap();
    assert_eq!(
        both[0],
        cf_slot(bed.inbound_slot.0, dvipa, SPI_TO_DVIPA, &read)
    );
    owner.release(bed.outbound_slot).unwrap();
    let left = held_cf_slots(owner.region(), held).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spi, SPI_TO_DVIPA);
}

#[test]
fn the_dct_listing_counts_and_sorts_every_flow() {
    let dir = tempfile::tempdir().unwrap();
    let bed = support::echoed_testbed(dir.path(), 6);
    let report = dct_report(bed.distributor.distributor.dct());
    assert_eq!(report.flows.len(), 6);
    assert_eq!(report.entries, 6);
    assert!(report.capacity >= report.entries);
    let order: Vec<_> = report
        .flows
        .iter()
        .map(|f| (f.dst, f.dst_port, f.src, f.src_port, f.protocol))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

#[test]
fn shadow_tables_list_inbound_then_outbound_and_the_sad_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let bed = support::echoed_testbed(dir.path(), 2);
    let table = &bed.targets[0].sas;
    let mut sas = shadow_entries(table);
    let spis: Vec<u32> = sas.iter().map(|e| e.spi).collect();
    assert_eq!(spis, [SPI_TO_DVIPA, SPI_TO_PEER]);
    assert!(sas.iter().all(|e| e.location == SaLocation::Shadow));
    let slots: Vec<u64> = table_slots(table).iter().map(|s| s.0).collect();
    assert_eq!(slots, [bed.inbound_slot.0, bed.outbound_slot.0]);
    let mut sad = sas[1].clone();
    sad.location = SaLocation::Sad;
    sas.push(sad);
    sort_sa_entries(&mut sas);
    assert_eq!(sas[0].location, SaLocation::Sad);
    assert_eq!(sas[0].spi, SPI_TO_PEER);
}

#[test]
fn role_drops_name_every_cause_under_their_stage() {
    let dir = tempfile::tempdir().unwrap();
    let bed = support::echoed_testbed(dir.path(), 1);
    let drops = distributor_drops(&bed.distributor.distributor);
    assert_eq!(drops.len(), DropCause::ALL.len() + 1);
    assert!(drops[..DropCause::ALL.len()]
        .iter()
        .all(|d| d.stage == "distributor" && !d.cause.contains(char::is_uppercase)));
    let dct = drops.last().unwrap();
    assert_eq!((dct.stage.as_str(), dct.cause.as_str()), ("dct", "full"));
    let target = target_drops(&bed.targets[0].target.counters());
    assert_eq!(target.len(), TargetDrop::ALL.len());
    assert!(target.iter().all(|d| d.stage == "target" && d.count == 0));
}
