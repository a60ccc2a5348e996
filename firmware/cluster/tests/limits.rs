//! Resource bounds (issue #12): pending NEWCONNs per target and globally, and CF slots in use.
//! Each limit refuses with a counter when hit.

mod common;

use common::*;
use dvipsec_cluster::distributor::DistributorLimits;
use dvipsec_cluster::target::TargetError;
use dvipsec_cluster::wire::{Flow, NewConnOutcome};
use dvipsec_cluster::{DistributorError, TargetEvent};
use dvipsec_esp::Direction;

fn flow(cluster: &Cluster, port: u16) -> Flow {
    Flow {
        local: cluster.dvipa_address(DVA1),
        remote: "203.0.113.10".parse().unwrap(),
        protocol: 6,
        local_port: port,
        remote_port: 60,
    }
}

fn refused(cluster: &Cluster, node: &str) -> usize {
    cluster
        .target_events
        .iter()
        .filter(|(n, e)| {
            n == node
                && matches!(
                    e,
                    TargetEvent::ConnectionFailed {
                        outcome: NewConnOutcome::Refused,
                        ..
                    }
                )
        })
        .count()
}

#[test]
fn waiting_newconns_are_bounded_per_target_and_in_all() {
    let mut cluster = Cluster::started(41);
    cluster.distributor("MVS1").set_limits(DistributorLimits {
        pending_newconn_per_target: 2,
        pending_newconn_total: 3,
        ..DistributorLimits::default()
    });
    let now = cluster.now;
    for port in 1..=3 {
        let f = flow(&cluster, 40000 + port);
        cluster.target("MVS2").open_connection(f, now).unwrap();
    }
    assert!(cluster.settle(SETTLE));
    let counters = cluster.distributor("MVS1").counters();
    assert_eq!(counters.newconn_refused_target_limit, 1);
    assert_eq!(counters.newconn_refused_global_limit, 0);
    assert_eq!(refused(&cluster, "MVS2"), 1);
    assert_eq!(cluster.distributor("MVS1").pending_newconns(), 2);

    // MVS4 may wait for one more: the fourth in all is refused by the global bound.
    let now = cluster.now;
    for port in 4..=5 {
        let f = flow(&cluster, 40000 + port);
        cluster.target("MVS4").open_connection(f, now).unwrap();
    }
    assert!(cluster.settle(SETTLE));
    let counters = cluster.distributor("MVS1").counters();
    assert_eq!(counters.newconn_refused_global_limit, 1);
    assert_eq!(refused(&cluster, "MVS4"), 1);
    assert_eq!(cluster.distributor("MVS1").pending_newconns(), 3);
}

#[test]
fn a_target_bounds_its_own_waiting_connections() {
    let mut cluster = Cluster::started(42);
    cluster.target("MVS2").set_pending_limit(2);
    let now = cluster.now;
    for port in 1..=2 {
        let f = flow(&cluster, 40000 + port);
        cluster.target("MVS2").open_connection(f, now).unwrap();
    }
    let f = flow(&cluster, 40003);
    assert_eq!(
        cluster.target("MVS2").open_connection(f, now),
        Err(TargetError::TooManyPending { pending: 2 })
    );
    assert_eq!(cluster.target("MVS2").counters().newconn_refused_limit, 1);
    assert_eq!(cluster.target("MVS2").pending_connections(), 2);
}

#[test]
fn cf_slots_in_use_are_bounded() {
    let mut cluster = Cluster::started(43);
    cluster.distributor("MVS1").set_limits(DistributorLimits {
        cf_slots: 2,
        ..DistributorLimits::default()
    });
    let first = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x100);
    cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x101);
    let address = cluster.dvipa_address(DVA1);
    let third = sa(DVA1, address, Direction::Inbound, 0x102);
    let result = cluster.ike(
        "MVS1",
        dvipsec_cluster::IkeEvent::Installed(Box::new(third.clone())),
    );
    assert!(
        matches!(result, Err(DistributorError::SlotLimit { limit: 2 })),
        "{result:?}"
    );
    assert_eq!(
        cluster.distributor("MVS1").counters().slot_limit_refusals,
        1
    );
    assert_eq!(cluster.distributor("MVS1").sas(DVA1).len(), 2);
    // A slot freed makes room again.
    cluster
        .ike("MVS1", dvipsec_cluster::IkeEvent::Deleted(first))
        .unwrap();
    cluster
        .ike(
            "MVS1",
            dvipsec_cluster::IkeEvent::Installed(Box::new(third)),
        )
        .unwrap();
    assert_eq!(cluster.distributor("MVS1").sas(DVA1).len(), 2);
}
