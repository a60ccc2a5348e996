//! SA distribution in the seed's figure-4 cluster: install, delete and rekey reach exactly
//! the targets listed for the DVIPA; a restarted target gets the current SAs again; a lossy
//! link still converges.

mod common;

use std::time::Duration;

use common::*;
use dvipsec_cluster::link::Link;
use dvipsec_cluster::wire::Message;
use dvipsec_cluster::wire::SaRef;
use dvipsec_cluster::{DistributorEvent, IkeEvent, LinkSecurity, LinkTimers, NoSa, Target};
use dvipsec_esp::{Direction, IpsecProtocol};

fn started() -> Cluster {
    Cluster::started(7)
}

#[test]
fn figure4_targets_are_resolved_from_the_site_file() {
    let cluster = Cluster::figure4(1, 0);
    assert_eq!(
        cluster.distributors.keys().collect::<Vec<_>>(),
        ["MVS1", "MVS5"]
    );
    assert_eq!(
        cluster.targets.keys().collect::<Vec<_>>(),
        ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]
    );
}

#[test]
fn install_reaches_exactly_the_listed_targets() {
    let mut cluster = started();
    let a_in = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    let a_out = cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x2001);
    let b_in = cluster.install_sa("MVS5", DVB1, Direction::Inbound, 0x3001);
    assert!(cluster.settle(SETTLE));
    // DVA1: DESTIP XCF1, XCF2, XCF4. MVS3 serves DVA1 only after MVS5 takes over.
    assert_eq!(cluster.holders(&a_in), ["MVS1", "MVS2", "MVS4"]);
    assert_eq!(cluster.holders(&a_out), ["MVS1", "MVS2", "MVS4"]);
    // DVB1: DESTIP ALL.
    assert_eq!(
        cluster.holders(&b_in),
        ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]
    );
    assert_eq!(
        cluster.distributor("MVS1").acked_by(&a_in),
        ["MVS1", "MVS2", "MVS4"]
    );
    let distributed: Vec<_> = cluster
        .distributor_events
        .iter()
        .filter(|(_, e)| matches!(e, DistributorEvent::Distributed(_)))
        .collect();
    assert_eq!(distributed.len(), 3, "{distributed:?}");
    // Each SA got its own CF slot, named in the SA_INSTALL the targets hold.
    let slots: Vec<u64> = cluster
        .target("MVS2")
        .shadow_sas(DVA1)
        .iter()
        .map(|s| s.install.cf_slot)
        .collect();
    assert_eq!(slots.len(), 2);
    assert_ne!(slots[0], slots[1]);
    // The shadow SA carries the keys: the ESP engine builds a working SA from it.
    let shadow = cluster.target("MVS4").shadow_sas(DVA1)[0].install.clone();
    dvipsec_esp::Sa::new(shadow.to_sa_config()).expect("an ESP SA from the shadow entry");
}

#[test]
fn lookups_find_the_shadow_sa_and_deleted_sas_drop_their_packets() {
    let mut cluster = started();
    let a_in = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    let a_out = cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x2001);
    assert!(cluster.settle(SETTLE));
    let dva1 = cluster.dvipa_address(DVA1);
    let flow = dvipsec_cluster::wire::Flow {
        local: dva1,
        remote: "203.0.113.77".parse().unwrap(),
        protocol: 6,
        local_port: 60,
        remote_port: 40000,
    };
    let target = cluster.target("MVS2");
    assert_eq!(
        target
            .inbound_lookup(0x1001, IpsecProtocol::Esp, peer_a())
            .unwrap()
            .install
            .sa_ref(),
        a_in
    );
    assert_eq!(
        target
            .inbound_lookup(0x1001, IpsecProtocol::Ah, peer_a())
            .unwrap_err(),
        NoSa::Unknown
    );
    assert_eq!(
        target
            .inbound_lookup(0x1001, IpsecProtocol::Esp, "203.0.113.99".parse().unwrap())
            .unwrap_err(),
        NoSa::Unknown
    );
    assert_eq!(
        target.outbound_lookup(&flow).unwrap().install.sa_ref(),
        a_out
    );
    let udp = dvipsec_cluster::wire::Flow {
        protocol: 17,
        ..flow
    };
    assert_eq!(target.outbound_lookup(&udp).unwrap_err(), NoSa::Unknown);

    cluster
        .ike("MVS1", IkeEvent::Deleted(a_in.clone()))
        .unwrap();
    assert!(cluster.settle(SETTLE));
    assert!(cluster.holders(&a_in).is_empty());
    assert_eq!(cluster.holders(&a_out), ["MVS1", "MVS2", "MVS4"]);
    let target = cluster.target("MVS2");
    let before = target.counters().drops_deleted_sa;
    for _ in 0..3 {
        assert_eq!(
            target
                .inbound_lookup(0x1001, IpsecProtocol::Esp, peer_a())
                .unwrap_err(),
            NoSa::Deleted
        );
    }
    assert_eq!(target.counters().drops_deleted_sa, before + 3);
    assert_eq!(target.count(&a_in, 100, 1).unwrap_err(), NoSa::Deleted);
}

#[test]
fn delete_and_rekey_reach_exactly_the_listed_targets() {
    let mut cluster = started();
    let a_old = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    let b_old = cluster.install_sa("MVS5", DVB1, Direction::Inbound, 0x3001);
    assert!(cluster.settle(SETTLE));
    let dva1 = cluster.dvipa_address(DVA1);
    cluster
        .ike(
            "MVS1",
            IkeEvent::Rekeyed {
                old: a_old.clone(),
                new: Box::new(sa(DVA1, dva1, Direction::Inbound, 0x1002)),
            },
        )
        .unwrap();
    cluster
        .ike("MVS5", IkeEvent::Deleted(b_old.clone()))
        .unwrap();
    assert!(cluster.settle(SETTLE));
    let a_new = SaRef {
        spi: 0x1002,
        ..a_old.clone()
    };
    assert_eq!(cluster.holders(&a_new), ["MVS1", "MVS2", "MVS4"]);
    assert!(cluster.holders(&a_old).is_empty());
    assert!(cluster.holders(&b_old).is_empty());
    // Deleting what is not there is an error, not a silent success.
    assert!(cluster.ike("MVS5", IkeEvent::Deleted(b_old)).is_err());
    // A DVIPA MVS1 does not own is refused.
    let dvb1 = cluster.dvipa_address(DVB1);
    let wrong = sa(DVB1, dvb1, Direction::Inbound, 0x5000);
    assert!(cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(wrong)))
        .is_err());
}

#[test]
fn installing_the_same_sa_twice_changes_nothing() {
    let mut cluster = started();
    let a_in = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    assert!(cluster.settle(SETTLE));
    let sent = cluster.distributor("MVS1").counters().installs_sent;
    cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.distributor("MVS1").counters().installs_sent, sent);

    // A target that is handed the same SA_INSTALL again (as a new message, not a link-level
    // duplicate) keeps its entry and its counts.
    cluster.target("MVS2").count(&a_in, 1000, 3).unwrap();
    let stored = cluster.target("MVS2").shadow_sas(DVA1)[0].install.clone();
    let mut fake_mvs1 = Link::new(
        "MVS1",
        1,
        LinkSecurity::Trusted,
        LinkTimers::with_heartbeat(Duration::from_millis(100)),
        cluster.now,
    );
    let mut mvs2 = Target::new(
        cluster.views.iter().find(|v| v.node == "MVS2").unwrap(),
        9,
        LinkSecurity::Trusted,
        cluster.now,
    );
    let now = cluster.now;
    let hello = mvs2.poll_transmit(now).unwrap();
    fake_mvs1.handle(&hello.bytes, now).unwrap();
    for _ in 0..2 {
        fake_mvs1
            .send(Message::SaInstall(Box::new(stored.clone())), now)
            .unwrap();
    }
    while let Some(bytes) = fake_mvs1.poll_transmit(now) {
        mvs2.handle("MVS1", &bytes, now).unwrap();
    }
    mvs2.count(&a_in, 500, 2).unwrap();
    let again = Message::SaInstall(Box::new(stored));
    fake_mvs1.send(again, now).unwrap();
    while let Some(bytes) = fake_mvs1.poll_transmit(now) {
        mvs2.handle("MVS1", &bytes, now).unwrap();
    }
    assert_eq!(mvs2.counters().installs, 1);
    assert_eq!(mvs2.counters().duplicate_installs, 2);
    assert_eq!(mvs2.shadow_sas(DVA1).len(), 1);
    assert_eq!(
        mvs2.shadow_sas(DVA1)[0].total.packets,
        2,
        "counts survive the re-install"
    );
}

#[test]
fn a_restarted_target_receives_the_current_sas_again() {
    let mut cluster = started();
    let a_in = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    let a_gone = cluster.install_sa("MVS1", DVA1, Direction::Outbound, 0x2001);
    let b_in = cluster.install_sa("MVS5", DVB1, Direction::Inbound, 0x3001);
    assert!(cluster.settle(SETTLE));
    cluster.restart_target("MVS2");
    assert!(cluster.target("MVS2").all_sas().is_empty());
    cluster
        .ike("MVS1", IkeEvent::Deleted(a_gone.clone()))
        .unwrap();
    assert!(cluster.settle(SETTLE));
    let mut held = cluster.target("MVS2").all_sas();
    held.sort();
    assert_eq!(held, [a_in, b_in]);
    let restarts: Vec<_> = cluster
        .distributor_events
        .iter()
        .filter(|(_, e)| matches!(e, DistributorEvent::TargetUp { node, restarted: true } if node == "MVS2"))
        .map(|(d, _)| d.as_str())
        .collect();
    assert_eq!(restarts, ["MVS1", "MVS5"]);
}

#[test]
fn a_link_that_drops_ten_percent_still_converges() {
    let mut cluster = Cluster::figure4(0xD1CE, 10);
    cluster.run_for(Duration::from_millis(5));
    let mut expect_a = Vec::new();
    let mut expect_b = Vec::new();
    for i in 0..20u32 {
        expect_a.push(cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1000 + i));
        expect_b.push(cluster.install_sa("MVS5", DVB1, Direction::Inbound, 0x3000 + i));
        cluster.run_for(Duration::from_millis(3));
    }
    // Delete a few, rekey a few, while frames are still being lost.
    let dva1 = cluster.dvipa_address(DVA1);
    for i in 0..5 {
        let old = expect_a.remove(0);
        cluster.ike("MVS1", IkeEvent::Deleted(old)).unwrap();
        let old_b = expect_b.remove(0);
        cluster.ike("MVS5", IkeEvent::Deleted(old_b)).unwrap();
        let replaced = expect_a.remove(0);
        let new = sa(DVA1, dva1, Direction::Inbound, 0x7000 + i);
        expect_a.push(new.sa_ref());
        cluster
            .ike(
                "MVS1",
                IkeEvent::Rekeyed {
                    old: replaced,
                    new: Box::new(new),
                },
            )
            .unwrap();
        cluster.run_for(Duration::from_millis(2));
    }
    assert!(cluster.settle(Duration::from_secs(60)), "did not converge");
    assert!(
        cluster.net.lost > 50,
        "only {} frames lost",
        cluster.net.lost
    );
    expect_a.sort();
    expect_b.sort();
    for node in ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"] {
        let target = cluster.target(node);
        let mut a: Vec<SaRef> = target
            .shadow_sas(DVA1)
            .iter()
            .map(|s| s.install.sa_ref())
            .collect();
        let mut b: Vec<SaRef> = target
            .shadow_sas(DVB1)
            .iter()
            .map(|s| s.install.sa_ref())
            .collect();
        a.sort();
        b.sort();
        let serves_a = ["MVS1", "MVS2", "MVS4"].contains(&node);
        assert_eq!(
            a,
            if serves_a {
                expect_a.clone()
            } else {
                Vec::new()
            },
            "{node} DVA1"
        );
        assert_eq!(b, expect_b, "{node} DVB1");
    }
    let retransmitted: u64 = cluster
        .targets
        .keys()
        .filter_map(|t| cluster.distributors["MVS5"].link(t))
        .map(|l| l.stats().retransmitted)
        .sum();
    assert!(retransmitted > 0);
}

#[test]
fn a_restarted_distributor_has_its_shadow_sas_rebuilt() {
    let mut cluster = started();
    let a_old = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    let b_in = cluster.install_sa("MVS5", DVB1, Direction::Inbound, 0x3001);
    assert!(cluster.settle(SETTLE));
    cluster.restart_distributor("MVS1");
    assert!(cluster.settle(SETTLE));
    // The old SAs of MVS1's DVIPA are gone everywhere; MVS5's stay.
    assert!(cluster.holders(&a_old).is_empty());
    assert_eq!(
        cluster.holders(&b_in),
        ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]
    );
    // IKE on the new MVS1 negotiates again and the caches fill.
    let a_new = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1101);
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.holders(&a_new), ["MVS1", "MVS2", "MVS4"]);
    let target = cluster.target("MVS2");
    assert_eq!(
        target
            .inbound_lookup(0x1001, dvipsec_esp::IpsecProtocol::Esp, peer_a())
            .unwrap_err(),
        NoSa::Deleted
    );
}

#[test]
fn a_target_that_stops_talking_is_noticed_after_the_takeover_timeout() {
    let mut cluster = started();
    cluster.run_for(Duration::from_secs(2));
    let now = cluster.now;
    assert!(cluster.distributor("MVS5").silent_targets(now).is_empty());
    // MVS3 goes dark: it no longer runs, and frames to it are lost.
    let stopped = cluster.targets.remove("MVS3").unwrap();
    cluster.run_for(Duration::from_millis(900));
    let now = cluster.now;
    assert!(
        cluster.distributor("MVS5").silent_targets(now).is_empty(),
        "heard within 1 s"
    );
    cluster.run_for(Duration::from_millis(200));
    let now = cluster.now;
    assert_eq!(cluster.distributor("MVS5").silent_targets(now), ["MVS3"]);
    assert!(cluster.distributor("MVS1").silent_targets(now).is_empty());
    drop(stopped);
}

#[test]
fn an_sa_the_codec_cannot_carry_is_refused_before_anything_is_stored() {
    let mut cluster = started();
    let dva1 = cluster.dvipa_address(DVA1);
    let mut huge = sa(DVA1, dva1, Direction::Inbound, 0x1001);
    huge.keys = dvipsec_cluster::wire::WireKeys::new(&vec![1; 70_000], &[]);
    let err = cluster
        .ike("MVS1", IkeEvent::Installed(Box::new(huge)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            dvipsec_cluster::DistributorError::Link {
                source: dvipsec_cluster::LinkError::Wire(
                    dvipsec_cluster::WireError::FieldTooLong { .. }
                ),
                ..
            }
        ),
        "{err}"
    );
    assert!(cluster.distributor("MVS1").sas(DVA1).is_empty());
    // The slot went back: the next SA gets slot 0.
    let good = cluster.install_sa("MVS1", DVA1, Direction::Inbound, 0x1001);
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.holders(&good), ["MVS1", "MVS2", "MVS4"]);
    assert_eq!(
        cluster.target("MVS2").shadow_sas(DVA1)[0].install.cf_slot,
        0
    );
}
