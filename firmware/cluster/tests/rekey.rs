//! Make-before-break rekey in the distributor core: the SA a rekey replaces (and its CF slot)
//! stays on every target until each target has acknowledged the new SA, even when the link
//! loses frames; only then is the old one deleted and its slot reused.

mod common;

use std::time::Duration;

use common::*;
use dvipsec_cluster::wire::SaRef;
use dvipsec_cluster::{DistributorEvent, IkeEvent};
use dvipsec_esp::{Direction, IpsecProtocol};

const DVA1_TARGETS: [&str; 3] = ["MVS1", "MVS2", "MVS4"];
const OLD_SPI: u32 = 0x1001;
const NEW_SPI: u32 = 0x1002;

fn slot_of(cluster: &mut Cluster, sa: &SaRef) -> u64 {
    cluster
        .distributor("MVS1")
        .sas(DVA1)
        .into_iter()
        .find(|s| s.sa_ref() == *sa)
        .map(|s| s.cf_slot)
        .unwrap()
}

fn handle_ike(cluster: &mut Cluster, event: IkeEvent) {
    cluster.ike("MVS1", event).unwrap();
}

fn distributed(cluster: &Cluster, sa: &SaRef) -> bool {
    cluster
        .distributor_events
        .iter()
        .any(|(node, e)| node == "MVS1" && *e == DistributorEvent::Distributed(sa.clone()))
}

/// The remote peer sends one packet to every DVA1 target each millisecond, on the old SA
/// until the new one is reported distributed, then on the new one. Returns the packets that
/// found no SA.
fn traffic_until_settled(cluster: &mut Cluster, old: &SaRef, new: &SaRef) -> (u64, u64) {
    let mut sent = 0;
    let mut missing = 0;
    let end = cluster.now + Duration::from_secs(60);
    while cluster.now < end {
        cluster.step();
        let spi = if distributed(cluster, new) {
            new.spi
        } else {
            // Until then the old SA must still be installed everywhere.
            assert_eq!(cluster.holders(old), DVA1_TARGETS, "at {:?}", cluster.now);
            old.spi
        };
        for node in DVA1_TARGETS {
            sent += 1;
            if cluster
                .target(node)
                .inbound_lookup(spi, IpsecProtocol::Esp, peer_a())
                .is_err()
            {
                missing += 1;
            }
        }
        let retiring = cluster.distributor("MVS1").awaiting_retirement().len();
        if distributed(cluster, new) && retiring == 0 && cluster.holders(old).is_empty() {
            return (sent, missing);
        }
    }
    panic!("the rekey did not complete");
}

/// Installs the old SA on DVA1, lets it reach every target, then hands IKE's rekey to the
/// distributor. Returns (old, new, the old SA's CF slot).
fn installed_then_rekeyed(cluster: &mut Cluster) -> (SaRef, SaRef, u64) {
    assert!(cluster.settle(Duration::from_secs(60)), "links came up");
    let dva1 = cluster.dvipa_address(DVA1);
    let old_install = sa(DVA1, dva1, Direction::Inbound, OLD_SPI);
    let old = old_install.sa_ref();
    handle_ike(cluster, IkeEvent::Installed(Box::new(old_install)));
    assert!(
        cluster.settle(Duration::from_secs(60)),
        "old SA distributed"
    );
    let old_slot = slot_of(cluster, &old);
    let new_install = sa(DVA1, dva1, Direction::Inbound, NEW_SPI);
    let new = new_install.sa_ref();
    handle_ike(
        cluster,
        IkeEvent::Rekeyed {
            old: old.clone(),
            new: Box::new(new_install),
        },
    );
    (old, new, old_slot)
}

#[test]
fn a_rekey_over_a_lossy_link_keeps_the_old_sa_until_every_target_has_the_new_one() {
    let mut cluster = Cluster::figure4(11, 25);
    let (old, new, old_slot) = installed_then_rekeyed(&mut cluster);
    let lost_before = cluster.net.lost;
    let dva1 = cluster.dvipa_address(DVA1);
    // The old SA keeps its slot while it waits: another SA installed now gets a fresh one.
    let other = sa(DVA1, dva1, Direction::Outbound, 0x2001);
    let other_ref = other.sa_ref();
    handle_ike(&mut cluster, IkeEvent::Installed(Box::new(other)));
    assert_ne!(slot_of(&mut cluster, &other_ref), old_slot);
    assert_eq!(
        cluster.distributor("MVS1").awaiting_retirement(),
        [(&old, &new)]
    );

    let (sent, missing) = traffic_until_settled(&mut cluster, &old, &new);
    assert!(cluster.net.lost > lost_before, "the link lost nothing");
    assert!(sent > 10, "only {sent} packets");
    assert_eq!(missing, 0, "{missing} of {sent} packets found no SA");
    assert_eq!(
        cluster.distributor("MVS1").counters().replaced_sas_retired,
        1
    );
    let retired: Vec<&DistributorEvent> = cluster
        .distributor_events
        .iter()
        .filter(|(_, e)| matches!(e, DistributorEvent::Retired(_)))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(retired, [&DistributorEvent::Retired(old.clone())]);

    // Retired, the old SA's slot is free again.
    let next = sa(DVA1, dva1, Direction::Inbound, 0x1003);
    let next_ref = next.sa_ref();
    handle_ike(&mut cluster, IkeEvent::Installed(Box::new(next)));
    assert_eq!(slot_of(&mut cluster, &next_ref), old_slot);
}

#[test]
fn deleting_the_new_sa_before_it_is_everywhere_retires_the_old_one_too() {
    let mut cluster = Cluster::figure4(5, 0);
    let (old, new, _) = installed_then_rekeyed(&mut cluster);
    handle_ike(&mut cluster, IkeEvent::Deleted(new.clone()));
    assert!(cluster.distributor("MVS1").awaiting_retirement().is_empty());
    assert!(cluster.settle(Duration::from_secs(30)));
    assert!(cluster.holders(&old).is_empty());
    assert!(cluster.holders(&new).is_empty());
    assert!(cluster.distributor("MVS1").sas(DVA1).is_empty());
}
