//! The distributor puts each SA's sequence state in a real coupling-facility region
//! (dvipsec-cf), and targets reach it through the slot named in SA_INSTALL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dvipsec_cf::{Region, RegionOwner, SequenceFacility, SlotId, SlotKey};
use dvipsec_cluster::cf::CfSlots;
use dvipsec_cluster::{Distributor, DistributorError, IkeEvent, LinkSecurity};
use dvipsec_esp::Direction;

/// A loss-free figure-4 cluster whose distributor MVS1 takes its slots from the CF region of
/// `owner`, settled.
fn settled_with_cf_slots(seed: u64, owner: Arc<RegionOwner>) -> Cluster {
    let mut cluster = Cluster::figure4(seed, 0);
    let mvs1 = cluster
        .views
        .iter()
        .find(|v| v.node == "MVS1")
        .unwrap()
        .clone();
    let distributor = Distributor::new(
        &mvs1,
        999,
        LinkSecurity::Trusted,
        Box::new(CfSlots::new(owner)),
        Duration::ZERO,
    );
    cluster.distributors.insert("MVS1".into(), distributor);
    assert!(cluster.settle(SETTLE));
    cluster
}

#[test]
fn sa_install_names_a_live_cf_slot_that_delete_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cf-region");
    let owner = Arc::new(RegionOwner::create(&path, 8).unwrap());
    let mut cluster = settled_with_cf_slots(5, owner.clone());

    let dva1 = cluster.dvipa_address(DVA1);
    let inbound = sa(DVA1, dva1, Direction::Inbound, 0x1001);
    let inbound_ref = inbound.sa_ref();
    cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(inbound)))
        .unwrap();
    let outbound = sa(DVA1, dva1, Direction::Outbound, 0x2001);
    cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(outbound)))
        .unwrap();
    assert!(cluster.settle(SETTLE));

    // A target attaches to the region and uses the slot it was told.
    let target_view =
        Region::attach(&path, owner.region().epoch(), owner.region().incarnation()).unwrap();
    let shadows = cluster.target("MVS4").shadow_sas(DVA1);
    let out_slot = shadows
        .iter()
        .find(|s| s.install.direction == Direction::Outbound)
        .unwrap()
        .install
        .cf_slot;
    let in_slot = shadows
        .iter()
        .find(|s| s.install.direction == Direction::Inbound)
        .unwrap()
        .install
        .cf_slot;
    assert_eq!(
        target_view
            .lookup(SlotKey {
                dvipa: dva1,
                spi: 0x2001
            })
            .unwrap(),
        SlotId(out_slot)
    );
    assert_eq!(
        target_view
            .lookup(SlotKey {
                dvipa: dva1,
                spi: 0x1001
            })
            .unwrap(),
        SlotId(in_slot)
    );
    let first = target_view.fetch_add(SlotId(out_slot), 4).unwrap();
    let next = target_view.fetch_add(SlotId(out_slot), 1).unwrap();
    assert_eq!((first.first, first.count, next.first), (1, 4, 5));

    // IKE deletes the SA: its slot stops working for everyone.
    cluster.ike("MVS1", IkeEvent::Deleted(inbound_ref)).unwrap();
    assert!(cluster.settle(SETTLE));
    assert!(target_view.fetch_add(SlotId(in_slot), 1).is_err());
    assert!(target_view.fetch_add(SlotId(out_slot), 1).is_ok());
    assert_eq!(
        cluster.distributor("MVS1").counters().slot_release_failures,
        0
    );
}

#[test]
fn an_sa_whose_window_no_slot_can_hold_is_refused_and_not_distributed() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Arc::new(RegionOwner::create(&dir.path().join("cf-region"), 3).unwrap());
    let mut cluster = settled_with_cf_slots(6, owner);
    let dva1 = cluster.dvipa_address(DVA1);
    let mut widest = sa(DVA1, dva1, Direction::Inbound, 0x1000);
    widest.replay_window = 4096;
    cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(widest)))
        .expect("4096, the ESP engine's widest window, fits a CF slot");
    let mut wide = sa(DVA1, dva1, Direction::Inbound, 0x1001);
    wide.replay_window = 4097;
    let err = cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(wide)))
        .unwrap_err();
    assert!(
        matches!(err, DistributorError::WindowTooWide { window: 4097 }),
        "{err}"
    );
    // Three slots, one taken by the widest window: the fourth SA finds none.
    for spi in [0x2001, 0x2002] {
        cluster
            .ike(
                "MVS1",
                IkeEvent::Installed(Box::new(sa(DVA1, dva1, Direction::Outbound, spi))),
            )
            .unwrap();
    }
    let err = cluster
        .ike(
            "MVS1",
            IkeEvent::Installed(Box::new(sa(DVA1, dva1, Direction::Outbound, 0x2003))),
        )
        .unwrap_err();
    assert!(matches!(err, DistributorError::Cf { .. }), "{err}");
    assert!(cluster.settle(SETTLE));
    // The widest-window SA and the two that found slots; neither refused SA got anywhere.
    assert_eq!(cluster.target("MVS2").all_sas().len(), 3);
    assert_eq!(cluster.distributor("MVS1").sas(DVA1).len(), 3);
}
