//! Lifesize batching and the adaptive threshold, NEWCONN (seed figure 11) and the rule that
//! keys never cross an unprotected link, in the figure-4 cluster.

mod common;

use std::time::Duration;

use common::*;
use dvipsec_cluster::link::Link;
use dvipsec_cluster::wire::{Connection, Flow, Message, NewConnOutcome, SaRef, TargetLoad};
use dvipsec_cluster::{
    ConnStart, DistributorError, DistributorEvent, IkeEvent, LinkError, LinkSecurity, LinkTimers,
    Target, TargetError, TargetEvent,
};
use dvipsec_esp::Direction;

fn started() -> Cluster {
    Cluster::started(11)
}

fn install(cluster: &mut Cluster, dvipa: &str, direction: Direction, spi: u32) -> SaRef {
    let owner = if dvipa == DVA1 { "MVS1" } else { "MVS5" };
    cluster.install_sa(owner, dvipa, direction, spi)
}

fn events_of(cluster: &Cluster, wanted: fn(&DistributorEvent) -> bool) -> Vec<DistributorEvent> {
    cluster
        .distributor_events
        .iter()
        .filter(|(_, e)| wanted(e))
        .map(|(_, e)| e.clone())
        .collect()
}

#[test]
fn targets_report_in_batches_at_the_threshold_and_the_distributor_sums_them() {
    let mut cluster = started();
    let inbound = install(&mut cluster, DVA1, Direction::Inbound, 0x1001);
    let outbound = install(&mut cluster, DVA1, Direction::Outbound, 0x2001);
    assert!(cluster.settle(SETTLE));
    // 5% of the 1 000 000-byte hard limit: a report every 50 000 bytes.
    let mvs2 = cluster.target("MVS2");
    for _ in 0..12 {
        mvs2.count(&inbound, 4000, 1).unwrap();
    }
    mvs2.count(&outbound, 49_999, 7).unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.target("MVS2").counters().lifesize_entries_sent, 0);
    assert_eq!(
        cluster.distributor("MVS1").usage(&inbound).unwrap().bytes,
        0
    );

    // Both SAs cross the threshold before the next poll: one LIFESIZE message, two entries.
    let mvs2 = cluster.target("MVS2");
    mvs2.count(&inbound, 4000, 1).unwrap();
    mvs2.count(&outbound, 1, 1).unwrap();
    cluster.target("MVS4").count(&inbound, 30_000, 1).unwrap();
    cluster.target("MVS4").count(&inbound, 30_000, 1).unwrap();
    assert!(cluster.settle(SETTLE));
    let counters = cluster.target("MVS2").counters();
    assert_eq!(
        (
            counters.lifesize_messages_sent,
            counters.lifesize_entries_sent
        ),
        (1, 2)
    );
    let used = cluster.distributor("MVS1").usage(&inbound).unwrap();
    assert_eq!((used.bytes, used.packets), (52_000 + 60_000, 13 + 2));
    let used = cluster.distributor("MVS1").usage(&outbound).unwrap();
    assert_eq!((used.bytes, used.packets), (50_000, 8));
    assert_eq!(
        cluster.target("MVS2").shadow_sas(DVA1)[0].unreported.bytes,
        0
    );
}

/// Drives `sa`'s use from MVS2 in 10 000-byte steps until the summed use reaches `bytes`.
fn use_up(cluster: &mut Cluster, sa: &SaRef, bytes: u64) {
    let mut total = 0;
    while total < bytes {
        cluster.target("MVS2").count(sa, 10_000, 10).unwrap();
        total += 10_000;
        cluster.run_for(Duration::from_millis(2));
    }
    assert!(cluster.settle(SETTLE));
}

#[test]
fn soft_and_hard_limits_reach_ike_once_and_the_threshold_adapts() {
    let mut cluster = started();
    let first = install(&mut cluster, DVA1, Direction::Inbound, 0x1001);
    assert!(cluster.settle(SETTLE));
    use_up(&mut cluster, &first, 900_000);
    let soft = events_of(&cluster, |e| {
        matches!(e, DistributorEvent::SoftLimitReached(_))
    });
    assert_eq!(soft, [DistributorEvent::SoftLimitReached(first.clone())]);
    assert!(events_of(&cluster, |e| matches!(
        e,
        DistributorEvent::HardLimitReached(_)
    ))
    .is_empty());

    // IKE is late: the hard limit comes first, and the rekey after it lowers the threshold.
    use_up(&mut cluster, &first, 100_000);
    let hard = events_of(&cluster, |e| {
        matches!(e, DistributorEvent::HardLimitReached(_))
    });
    assert_eq!(hard, [DistributorEvent::HardLimitReached(first.clone())]);
    let dva1 = cluster.dvipa_address(DVA1);
    let second_sa = sa(DVA1, dva1, Direction::Inbound, 0x1002);
    let second = second_sa.sa_ref();
    cluster
        .ike(
            "MVS1",
            IkeEvent::Rekeyed {
                old: first,
                new: Box::new(second_sa),
            },
        )
        .unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.distributor("MVS1").threshold_percent(), 2);
    let changed = events_of(&cluster, |e| {
        matches!(e, DistributorEvent::ThresholdChanged { .. })
    });
    assert_eq!(changed, [DistributorEvent::ThresholdChanged { percent: 2 }]);
    let shadow = cluster.target("MVS4").shadow_sas(DVA1)[0].install.clone();
    assert_eq!(
        (shadow.sa_ref(), shadow.lifesize_percent),
        (second.clone(), 2)
    );

    // A rekey on time (soft reached, hard not) raises it again by one point.
    use_up(&mut cluster, &second, 900_000);
    let third_sa = sa(DVA1, dva1, Direction::Inbound, 0x1003);
    let third = third_sa.sa_ref();
    cluster
        .ike(
            "MVS1",
            IkeEvent::Rekeyed {
                old: second,
                new: Box::new(third_sa),
            },
        )
        .unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.distributor("MVS1").threshold_percent(), 3);
    let shadow = cluster.target("MVS4").shadow_sas(DVA1)[0].install.clone();
    assert_eq!(
        (shadow.sa_ref(), shadow.lifesize_percent),
        (third.clone(), 3)
    );
    // At 3% of 1 000 000 bytes the target reports every 30 000 bytes.
    cluster.target("MVS4").count(&third, 29_999, 1).unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.target("MVS4").counters().lifesize_entries_sent, 0);
    cluster.target("MVS4").count(&third, 1, 1).unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(cluster.target("MVS4").counters().lifesize_entries_sent, 1);
}

fn flow_to(cluster: &Cluster, dvipa: &str, remote: &str) -> Flow {
    Flow {
        local: cluster.dvipa_address(dvipa),
        remote: remote.parse().unwrap(),
        protocol: 6,
        local_port: 41000,
        remote_port: 60,
    }
}

#[test]
fn newconn_asks_ike_once_and_releases_every_waiting_connection() {
    let mut cluster = started();
    let flow = flow_to(&cluster, DVA1, "203.0.113.10");
    let now = cluster.now;
    let ConnStart::Pending { request_id: on_2 } =
        cluster.target("MVS2").open_connection(flow, now).unwrap()
    else {
        panic!("no SA yet, the connection must wait");
    };
    let ConnStart::Pending { request_id: on_4 } =
        cluster.target("MVS4").open_connection(flow, now).unwrap()
    else {
        panic!("no SA yet, the connection must wait");
    };
    assert!(cluster.settle(SETTLE));
    let asks = events_of(&cluster, |e| {
        matches!(e, DistributorEvent::NegotiateSa { .. })
    });
    assert_eq!(
        asks,
        [DistributorEvent::NegotiateSa {
            dvipa: DVA1.into(),
            flow
        }]
    );
    assert_eq!(cluster.target("MVS2").pending_connections(), 1);

    // IKE negotiates and installs the SA; both SYNs go.
    let out = install(&mut cluster, DVA1, Direction::Outbound, 0x2001);
    assert!(cluster.settle(SETTLE));
    let released: Vec<(String, TargetEvent)> = cluster
        .target_events
        .iter()
        .filter(|(_, e)| matches!(e, TargetEvent::ConnectionReleased { .. }))
        .cloned()
        .collect();
    assert_eq!(
        released,
        [
            (
                "MVS2".to_owned(),
                TargetEvent::ConnectionReleased {
                    request_id: on_2,
                    sa: out.clone()
                }
            ),
            (
                "MVS4".to_owned(),
                TargetEvent::ConnectionReleased {
                    request_id: on_4,
                    sa: out.clone()
                }
            ),
        ]
    );
    assert_eq!(cluster.target("MVS2").pending_connections(), 0);
    let now = cluster.now;
    assert_eq!(
        cluster.target("MVS2").open_connection(flow, now).unwrap(),
        ConnStart::Ready(out)
    );
}

#[test]
fn newconn_times_out_cleanly_or_fails_when_ike_fails() {
    let mut cluster = started();
    let flow = flow_to(&cluster, DVB1, "203.0.113.20");
    let now = cluster.now;
    let ConnStart::Pending { request_id: waits } =
        cluster.target("MVS3").open_connection(flow, now).unwrap()
    else {
        panic!("must wait");
    };
    cluster.run_for(Duration::from_millis(4900));
    assert_eq!(cluster.target("MVS3").pending_connections(), 1);
    cluster.run_for(Duration::from_millis(200));
    assert_eq!(cluster.target("MVS3").pending_connections(), 0);
    assert!(cluster.target_events.contains(&(
        "MVS3".into(),
        TargetEvent::ConnectionTimedOut { request_id: waits }
    )));

    let now = cluster.now;
    let ConnStart::Pending { request_id: fails } =
        cluster.target("MVS3").open_connection(flow, now).unwrap()
    else {
        panic!("must wait");
    };
    assert!(cluster.settle(SETTLE));
    cluster
        .ike(
            "MVS5",
            IkeEvent::NegotiationFailed {
                dvipa: DVB1.into(),
                flow,
            },
        )
        .unwrap();
    assert!(cluster.settle(SETTLE));
    assert!(cluster.target_events.contains(&(
        "MVS3".into(),
        TargetEvent::ConnectionFailed {
            request_id: fails,
            outcome: NewConnOutcome::NegotiationFailed
        }
    )));
    assert_eq!(cluster.target("MVS3").pending_connections(), 0);

    // MVS3 is not a DVA1 target (only MVS5's backup distribution lists it).
    let dva1_flow = flow_to(&cluster, DVA1, "203.0.113.10");
    let now = cluster.now;
    assert_eq!(
        cluster
            .target("MVS3")
            .open_connection(dva1_flow, now)
            .unwrap_err(),
        TargetError::NotADvipa {
            address: dva1_flow.local
        }
    );
}

#[test]
fn keys_are_not_sent_over_an_unprotected_link() {
    let mut cluster = Cluster::with_security(3, 0, LinkSecurity::Unprotected);
    assert!(cluster.settle(SETTLE));
    let address = cluster.dvipa_address(DVA1);
    let err = cluster
        .ike(
            "MVS1",
            IkeEvent::Installed(Box::new(sa(DVA1, address, Direction::Inbound, 0x1001))),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            DistributorError::Link {
                source: LinkError::KeysOnUnprotectedLink,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        cluster.distributor("MVS1").sas(DVA1).is_empty(),
        "nothing half-installed"
    );
    assert!(cluster.settle(SETTLE));
    assert!(cluster.targets.values().all(|t| t.all_sas().is_empty()));
}

#[test]
fn a_target_on_an_unprotected_link_refuses_sa_install_and_keeps_going() {
    let views = figure4_views();
    let view = views.iter().find(|v| v.node == "MVS2").unwrap();
    let timers = LinkTimers::with_heartbeat(Duration::from_millis(100));
    let now = Duration::ZERO;
    let mut target = Target::new(view, 5, LinkSecurity::Unprotected, now);
    // A sender that (wrongly) believes the link is trusted.
    let mut sender = Link::new("MVS1", 1, LinkSecurity::Trusted, timers, now);
    let hello = target.poll_transmit(now).unwrap();
    sender.handle(&hello.bytes, now).unwrap();
    let address = "198.51.100.10".parse().unwrap();
    let install = sa(DVA1, address, Direction::Inbound, 0x1001);
    let sa_ref = install.sa_ref();
    sender
        .send(Message::SaInstall(Box::new(install)), now)
        .unwrap();
    sender
        .send(
            Message::NewConnResponse {
                request_id: 77,
                outcome: NewConnOutcome::Refused,
            },
            now,
        )
        .unwrap();
    while let Some(bytes) = sender.poll_transmit(now) {
        target.handle("MVS1", &bytes, now).unwrap();
    }
    assert!(target.all_sas().is_empty());
    let stats = target.link("MVS1").unwrap().stats();
    assert_eq!(stats.refused_sa_installs, 1);
    assert_eq!(
        stats.delivered, 1,
        "the message after the refused install still arrives"
    );
    assert_eq!(target.counters().unexpected_messages, 0);
    assert_ne!(target.poll_event(), Some(TargetEvent::Installed(sa_ref)));
}

#[test]
fn connection_reports_and_load_reach_the_right_distributor() {
    let mut cluster = started();
    let flow = flow_to(&cluster, DVB1, "203.0.113.20");
    let now = cluster.now;
    let connections = vec![Connection { flow }];
    cluster
        .target("MVS3")
        .report_connections(DVB1, connections.clone(), now)
        .unwrap();
    let load = TargetLoad {
        cpu_percent: 40,
        connections: 1,
        shadow_sas: 0,
    };
    cluster.target("MVS3").report_load(load, now).unwrap();
    assert!(cluster.settle(SETTLE));
    assert_eq!(
        cluster.distributor("MVS5").connections("MVS3", DVB1),
        &connections[..]
    );
    assert_eq!(cluster.distributor("MVS5").load("MVS3"), Some(load));
    assert!(
        cluster.distributor("MVS1").load("MVS3").is_none(),
        "MVS3 is no DVA1 target of MVS1"
    );
    // The VIPALIST each target sent on first contact.
    let vipas = cluster
        .distributor("MVS1")
        .vipalist("MVS2")
        .unwrap()
        .to_vec();
    assert_eq!(vipas.len(), 1);
    assert_eq!(
        (vipas[0].dvipa.as_str(), vipas[0].ports.as_slice()),
        (DVA1, &[60u16][..])
    );
    assert_eq!(
        cluster
            .target("MVS3")
            .report_connections(DVA1, Vec::new(), now)
            .unwrap_err(),
        TargetError::NotServed { dvipa: DVA1.into() }
    );
}

#[test]
fn lifesize_from_a_node_that_does_not_serve_the_dvipa_is_ignored() {
    // The small site, with a second DVIPA that only target-1 serves.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/examples/one-distributor-two-targets.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let api = "dvipas:\n  - name: api\n    define:\n      address: \"2001:db8:100::81\"\n      prefix_len: 128\n    owner: dist\n    distribute:\n      ports: [8080]\n      destip: [target-1]\n";
    let text = text.replacen("dvipas:\n", api, 1);
    let site = dvipsec_config::SiteConfig::from_str_named(&text, path).unwrap();
    let now = Duration::ZERO;
    let mut distributor = dvipsec_cluster::Distributor::new(
        &site.node_view("dist").unwrap(),
        1,
        LinkSecurity::Protected,
        Box::new(dvipsec_cluster::SlotPool::new(4)),
        now,
    );
    let timers = LinkTimers::with_heartbeat(Duration::from_millis(50));
    let mut target_2 = Link::new("target-2", 2, LinkSecurity::Protected, timers, now);
    let hello = target_2.poll_transmit(now).unwrap();
    distributor.handle("target-2", &hello, now).unwrap();
    while let Some(t) = distributor.poll_transmit(now) {
        if t.to == "target-2" {
            target_2.handle(&t.bytes, now).unwrap();
        }
    }
    let install = sa(
        "api",
        "2001:db8:100::81".parse().unwrap(),
        Direction::Inbound,
        0x4001,
    );
    let api_sa = install.sa_ref();
    distributor
        .handle_ike(IkeEvent::Installed(Box::new(install)), now)
        .unwrap();
    let report = |sa: &SaRef| {
        Message::Lifesize(vec![dvipsec_cluster::wire::LifesizeEntry {
            sa: sa.clone(),
            bytes: 999_999,
            packets: 9,
        }])
    };
    target_2.send(report(&api_sa), now).unwrap();
    while let Some(bytes) = target_2.poll_transmit(now) {
        distributor.handle("target-2", &bytes, now).unwrap();
    }
    assert_eq!(distributor.usage(&api_sa).unwrap().bytes, 0);
    assert_eq!(distributor.counters().lifesize_not_served, 1);
    assert!(std::iter::from_fn(|| distributor.poll_event())
        .all(|e| !matches!(e, DistributorEvent::SoftLimitReached(_))));
}
