//! Targets and TAKEOVER on the figure-4 cluster: who may take a DVIPA over, what the targets
//! drop and keep, and a late delete from the old owner.

mod common;

use std::net::IpAddr;

use common::*;
use dvipsec_cluster::target::OwnerChange;
use dvipsec_esp::Direction;

fn dva1_targets_of_mvs5() -> Vec<String> {
    ["MVS2", "MVS3", "MVS4"].map(String::from).to_vec()
}

fn owner_changes(cluster: &mut Cluster, node: &str) -> Vec<OwnerChange> {
    std::iter::from_fn(|| cluster.target(node).poll_owner_change()).collect()
}

#[test]
fn the_backup_takes_dva1_and_the_targets_drop_only_its_old_sas() {
    let mut cluster = Cluster::started(51);
    let old_in = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x10);
    let old_out = cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x11);
    let dvb1 = cluster.install_sa("MVS5", DVB1, Direction::Outbound, 0x12);
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.holders(&old_out), ["MVS1", "MVS2", "MVS4"]);

    let address: IpAddr = cluster.dvipa_address(DVA1);
    let now = cluster.now;
    let mvs5 = cluster.distributor("MVS5");
    mvs5.adopt(DVA1, address, dva1_targets_of_mvs5(), now);
    mvs5.send_takeover(DVA1, 7, now).unwrap();
    assert!(cluster.settle(SETTLE));

    for node in ["MVS2", "MVS3", "MVS4"] {
        assert_eq!(cluster.target(node).distributor_of(DVA1), Some("MVS5"));
        let changes = owner_changes(&mut cluster, node);
        assert_eq!(
            changes,
            [OwnerChange {
                dvipa: DVA1.into(),
                distributor: "MVS5".into(),
                cf_epoch: 7,
                switched: true
            }],
            "{node}"
        );
        assert_eq!(cluster.target(node).counters().takeovers, 1);
    }
    // The old owner's SAs are gone from the targets that followed; DVB1's stay.
    assert_eq!(cluster.holders(&old_out), ["MVS1"]);
    assert_eq!(cluster.holders(&old_in), ["MVS1"]);
    assert_eq!(cluster.holders(&dvb1).len(), 5);
    // MVS3 serves DVA1 now and told MVS5 so.
    assert!(cluster
        .distributor("MVS5")
        .vipalist("MVS3")
        .unwrap()
        .iter()
        .any(|v| v.dvipa == DVA1));

    // The new owner's SAs go to its targets, MVS3 included.
    // (Same SPI as MVS1's old SA, which MVS1's own target still holds.)
    let new_out = cluster.install_sa("MVS5", DVA1, Direction::Outbound, 0x11);
    assert!(cluster.settle(SETTLE));
    let on_new_targets = |cluster: &Cluster| {
        let holders = cluster.holders(&new_out);
        ["MVS2", "MVS3", "MVS4"]
            .iter()
            .all(|n| holders.contains(&n.to_string()))
    };
    assert!(on_new_targets(&cluster));

    // A late delete from the old owner must not remove the new SA with the same SPI.
    cluster
        .ike("MVS1", dvipsec_cluster::IkeEvent::Deleted(old_out.clone()))
        .unwrap();
    assert!(cluster.settle(SETTLE));
    assert!(on_new_targets(&cluster));
    assert_eq!(cluster.holders(&old_out), ["MVS2", "MVS3", "MVS4"]);
    assert_eq!(cluster.target("MVS2").counters().refused_deletes, 1);
    assert_eq!(cluster.target("MVS4").counters().refused_deletes, 1);
}

#[test]
fn a_takeover_from_a_node_that_may_not_own_the_dvipa_is_ignored() {
    let mut cluster = Cluster::started(52);
    let dvb1 = cluster.install_sa("MVS5", DVB1, Direction::Outbound, 0x21);
    assert!(cluster.settle(SETTLE));
    // MVS1 is neither DVB1's owner nor one of its backups.
    let address = cluster.dvipa_address(DVB1);
    let now = cluster.now;
    let mvs1 = cluster.distributor("MVS1");
    mvs1.adopt(DVB1, address, vec!["MVS2".into()], now);
    mvs1.send_takeover(DVB1, 9, now).unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.target("MVS2").counters().refused_takeovers, 1);
    assert_eq!(cluster.target("MVS2").distributor_of(DVB1), Some("MVS5"));
    assert!(owner_changes(&mut cluster, "MVS2").is_empty());
    assert_eq!(cluster.holders(&dvb1).len(), 5);
}

#[test]
fn a_new_epoch_from_the_same_owner_keeps_the_shadow_sas() {
    let mut cluster = Cluster::started(53);
    let dvb1 = cluster.install_sa("MVS5", DVB1, Direction::Outbound, 0x31);
    assert!(cluster.settle(SETTLE));
    let now = cluster.now;
    cluster
        .distributor("MVS5")
        .send_takeover(DVB1, 4, now)
        .unwrap();
    assert!(cluster.settle(SETTLE));
    for node in ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"] {
        let changes = owner_changes(&mut cluster, node);
        assert_eq!(changes.len(), 1, "{node}");
        assert!(!changes[0].switched);
        assert_eq!(changes[0].cf_epoch, 4);
    }
    assert_eq!(cluster.holders(&dvb1).len(), 5);
}

#[test]
fn a_released_dvipa_is_deleted_from_its_targets_and_refused_afterwards() {
    let mut cluster = Cluster::started(54);
    let sa = cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x41);
    assert!(cluster.settle(SETTLE));
    let now = cluster.now;
    cluster.distributor("MVS1").release(DVA1, now).unwrap();
    assert!(cluster.settle(SETTLE));
    assert!(cluster.holders(&sa).is_empty());
    assert!(!cluster.distributor("MVS1").dvipas().contains(&DVA1));
    let address = cluster.dvipa_address(DVA1);
    let again = common::sa(DVA1, address, Direction::Outbound, 0x42);
    assert!(cluster
        .ike(
            "MVS1",
            dvipsec_cluster::IkeEvent::Installed(Box::new(again))
        )
        .is_err());
}

#[test]
fn a_takeover_older_than_one_followed_is_stale() {
    let mut cluster = Cluster::started(55);
    let address = cluster.dvipa_address(DVA1);
    let now = cluster.now;
    let mvs5 = cluster.distributor("MVS5");
    mvs5.adopt(DVA1, address, dva1_targets_of_mvs5(), now);
    mvs5.send_takeover(DVA1, 6, now).unwrap();
    assert!(cluster.settle(SETTLE));
    // MVS1, fenced in epoch 5 but not yet aware, still announces itself.
    let now = cluster.now;
    cluster
        .distributor("MVS1")
        .send_takeover(DVA1, 5, now)
        .unwrap();
    assert!(cluster.settle(SETTLE));
    for node in ["MVS2", "MVS4"] {
        assert_eq!(cluster.target(node).distributor_of(DVA1), Some("MVS5"));
        assert_eq!(cluster.target(node).counters().refused_takeovers, 1);
    }
    // Each epoch has one fencer: the same epoch from another node is stale too.
    let now = cluster.now;
    cluster
        .distributor("MVS1")
        .send_takeover(DVA1, 6, now)
        .unwrap();
    assert!(cluster.settle(SETTLE));
    for node in ["MVS2", "MVS4"] {
        assert_eq!(cluster.target(node).distributor_of(DVA1), Some("MVS5"));
        assert_eq!(cluster.target(node).counters().refused_takeovers, 2);
    }
}
