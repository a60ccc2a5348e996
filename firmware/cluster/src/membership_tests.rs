//! Failure detection over the simulated network: failures, partitions, isolation, loss.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use dvipsec_config::{NodeView, SiteConfig};

use super::*;
use crate::sim::Network;
use crate::wire::HeartbeatView;

const MS: Duration = Duration::from_millis(1);

fn figure4_views() -> Vec<NodeView> {
    // Loaded once: the property test asks for it on every case.
    static VIEWS: std::sync::OnceLock<Vec<NodeView>> = std::sync::OnceLock::new();
    VIEWS
        .get_or_init(|| {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../config/examples/figure4.yaml");
            SiteConfig::load(&path).unwrap().node_views()
        })
        .clone()
}

/// Every figure-4 node's membership on one network; `dead` nodes neither send nor receive and
/// frames between a `cut` pair are lost.
struct Nodes {
    members: BTreeMap<String, Membership>,
    net: Network,
    now: Duration,
    dead: BTreeSet<String>,
    cut: BTreeSet<(String, String)>,
    events: Vec<(Duration, String, MembershipEvent)>,
}

impl Nodes {
    fn figure4(loss_percent: u8) -> Nodes {
        let members = figure4_views()
            .iter()
            .enumerate()
            .map(|(i, view)| {
                let membership = Membership::for_view(view, 10 + i as u64, Duration::ZERO);
                (view.node.clone(), membership)
            })
            .collect();
        Nodes {
            members,
            net: Network::new(7, loss_percent, MS),
            now: Duration::ZERO,
            dead: BTreeSet::new(),
            cut: BTreeSet::new(),
            events: Vec::new(),
        }
    }

    fn cut(&mut self, a: &str, b: &str) {
        self.cut.insert((a.to_owned(), b.to_owned()));
        self.cut.insert((b.to_owned(), a.to_owned()));
    }

    fn step(&mut self) {
        let now = self.now;
        for (node, membership) in &mut self.members {
            while let Some(t) = membership.poll_transmit(now) {
                let blocked =
                    self.dead.contains(node) || self.cut.contains(&(node.clone(), t.to.clone()));
                if !blocked {
                    self.net.send(node, &t.to, t.bytes, now);
                }
            }
        }
        for frame in self.net.arrivals(now) {
            if self.dead.contains(&frame.to) {
                continue;
            }
            if let Some(membership) = self.members.get_mut(&frame.to) {
                assert!(is_membership_frame(&frame.bytes));
                membership.handle(&frame.from, &frame.bytes, now).unwrap();
            }
        }
        for (node, membership) in &mut self.members {
            membership.handle_timeout(now);
            while let Some(event) = membership.poll_event() {
                self.events.push((now, node.clone(), event));
            }
        }
        self.now += MS;
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    fn downs_seen_by(&self, observer: &str, node: &str) -> Vec<(Duration, DownCause)> {
        self.events
            .iter()
            .filter_map(|(at, who, event)| match event {
                MembershipEvent::Down { node: n, cause } if who == observer && n == node => {
                    Some((*at, cause.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn any_down(&self) -> bool {
        self.events
            .iter()
            .any(|(_, _, e)| matches!(e, MembershipEvent::Down { .. }))
    }
}

#[test]
fn timers_and_members_come_from_the_site() {
    let views = figure4_views();
    let mvs5 = views.iter().find(|v| v.node == "MVS5").unwrap();
    let config = MembershipConfig::from_view(mvs5);
    assert_eq!(config.heartbeat, 100 * MS);
    assert_eq!(config.missed_beats, 10);
    assert_eq!(config.silence_limit(), 1000 * MS);
    let members = members_of(mvs5);
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        ["MVS1", "MVS2", "MVS3", "MVS4"]
    );
    assert_eq!(
        members["MVS1"],
        MemberRoles {
            distributor: true,
            target: true
        }
    );
    assert_eq!(
        members["MVS3"],
        MemberRoles {
            distributor: false,
            target: true
        }
    );
}

#[test]
fn a_healthy_cluster_stays_up_even_with_ten_percent_loss() {
    let mut nodes = Nodes::figure4(10);
    nodes.run_for(Duration::from_secs(10));
    assert!(!nodes.any_down(), "{:?}", nodes.events);
    for membership in nodes.members.values() {
        assert!(membership.members.keys().all(|n| membership.is_alive(n)));
        // A beat every 100 ms from each member, 10% lost.
        let expected = 100 * membership.members.len() as u64;
        assert!(membership.counters().views_received > expected * 8 / 10);
    }
}

#[test]
fn a_silent_distributor_is_failed_within_the_limit_and_comes_back_up() {
    let mut nodes = Nodes::figure4(0);
    nodes.run_for(Duration::from_secs(2));
    let killed_at = nodes.now;
    nodes.dead.insert("MVS1".into());
    nodes.run_for(Duration::from_secs(2));
    for observer in ["MVS2", "MVS4", "MVS5"] {
        let downs = nodes.downs_seen_by(observer, "MVS1");
        assert_eq!(downs.len(), 1, "{observer}: {downs:?}");
        let (at, cause) = &downs[0];
        let detection = *at - killed_at;
        // The last beat left at most one interval before the kill; the limit runs from it.
        assert!(
            detection > 900 * MS && detection <= 1001 * MS,
            "{observer}: {detection:?}"
        );
        // Each observer knows the roles the site shows it: MVS5 sends DVB1 to MVS1 too.
        let target = observer == "MVS5";
        assert_eq!(
            *cause,
            DownCause::Failed {
                roles: MemberRoles {
                    distributor: true,
                    target
                }
            }
        );
        assert!(nodes.members[observer].has_failed("MVS1"));
    }
    nodes.dead.clear();
    nodes.run_for(300 * MS);
    assert!(nodes.members["MVS5"].is_alive("MVS1"));
    assert!(nodes.events.iter().any(|(_, who, e)| who == "MVS5"
        && *e
            == MembershipEvent::Up {
                node: "MVS1".into()
            }));
}

#[test]
fn a_failed_target_is_told_from_a_failed_distributor() {
    let mut nodes = Nodes::figure4(0);
    nodes.run_for(Duration::from_secs(1));
    nodes.dead.insert("MVS3".into());
    nodes.run_for(Duration::from_secs(2));
    let downs = nodes.downs_seen_by("MVS5", "MVS3");
    assert_eq!(
        downs.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
        [DownCause::Failed {
            roles: MemberRoles {
                distributor: false,
                target: true
            }
        }]
    );
}

#[test]
fn a_cut_link_is_a_partition_not_a_failure() {
    let mut nodes = Nodes::figure4(0);
    nodes.run_for(Duration::from_secs(1));
    nodes.cut("MVS1", "MVS5");
    nodes.run_for(Duration::from_secs(3));
    let downs = nodes.downs_seen_by("MVS5", "MVS1");
    assert_eq!(downs.len(), 1, "{downs:?}");
    let DownCause::Partitioned { heard_by } = &downs[0].1 else {
        panic!("MVS1 should be partitioned from MVS5, not failed: {downs:?}");
    };
    // MVS2 and MVS4 are members of both; they keep hearing MVS1.
    assert!(heard_by.contains(&"MVS2".to_owned()), "{heard_by:?}");
    assert!(!nodes.members["MVS5"].has_failed("MVS1"));
    assert!(nodes.members["MVS2"].is_alive("MVS1"));
    assert!(!nodes.members["MVS5"].is_isolated());
    // Both sides see it the same way.
    assert!(matches!(
        nodes.downs_seen_by("MVS1", "MVS5")[..],
        [(_, DownCause::Partitioned { .. })]
    ));
}

#[test]
fn a_partition_whose_member_then_dies_becomes_a_failure() {
    let mut nodes = Nodes::figure4(0);
    nodes.run_for(Duration::from_secs(1));
    nodes.cut("MVS1", "MVS5");
    nodes.run_for(Duration::from_secs(2));
    nodes.dead.insert("MVS1".into());
    nodes.run_for(Duration::from_secs(2));
    let causes: Vec<DownCause> = nodes
        .downs_seen_by("MVS5", "MVS1")
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert!(matches!(causes[0], DownCause::Partitioned { .. }));
    assert!(matches!(causes.last(), Some(DownCause::Failed { .. })));
    assert!(nodes.members["MVS5"].has_failed("MVS1"));
}

#[test]
fn a_node_cut_from_everyone_knows_it_is_isolated() {
    let mut nodes = Nodes::figure4(0);
    nodes.run_for(Duration::from_secs(1));
    for other in ["MVS1", "MVS2", "MVS3", "MVS4"] {
        nodes.cut("MVS5", other);
    }
    nodes.run_for(Duration::from_secs(2));
    assert!(nodes.members["MVS5"].is_isolated());
    assert!(nodes
        .events
        .iter()
        .any(|(_, who, e)| who == "MVS5" && *e == MembershipEvent::Isolated));
    // The others, who still hear each other, see MVS5 failed.
    assert!(nodes.members["MVS1"].has_failed("MVS5"));
    nodes.cut.clear();
    nodes.run_for(300 * MS);
    assert!(!nodes.members["MVS5"].is_isolated());
    assert!(nodes
        .events
        .iter()
        .any(|(_, who, e)| who == "MVS5" && *e == MembershipEvent::Rejoined));
}

#[test]
fn a_dead_member_is_failed_even_when_its_last_beats_to_us_were_lost() {
    // With loss, MVS5 may miss MVS1's last beats that MVS2 got: that is no partition.
    for seed in 0..20 {
        let mut nodes = Nodes::figure4(30);
        nodes.net = Network::new(seed, 30, MS);
        nodes.run_for(Duration::from_secs(1));
        nodes.dead.insert("MVS1".into());
        nodes.run_for(Duration::from_secs(3));
        assert!(nodes.members["MVS5"].has_failed("MVS1"), "seed {seed}");
    }
}

#[test]
fn restarts_stale_incarnations_and_strangers_are_told_apart() {
    let views = figure4_views();
    let mvs5 = views.iter().find(|v| v.node == "MVS5").unwrap();
    let mut membership = Membership::for_view(mvs5, 1, Duration::ZERO);
    let beat = |incarnation: u64| {
        Frame {
            from_incarnation: incarnation,
            to_incarnation: 0,
            seq: 0,
            message: Message::HeartbeatView(HeartbeatView::default()),
        }
        .encode()
        .unwrap()
    };
    membership.handle("MVS1", &beat(5), MS).unwrap();
    membership.handle("MVS1", &beat(6), 2 * MS).unwrap();
    assert_eq!(
        membership.handle("MVS1", &beat(5), 3 * MS),
        Err(MembershipError::StaleIncarnation {
            node: "MVS1".into(),
            from: 5,
            known: 6
        })
    );
    assert!(matches!(
        membership.handle("MVS9", &beat(1), 3 * MS),
        Err(MembershipError::UnknownMember { .. })
    ));
    let plain = crate::wire_tests::heartbeat_between(6, 1);
    assert!(!is_membership_frame(&plain));
    assert!(matches!(
        membership.handle("MVS1", &plain, 3 * MS),
        Err(MembershipError::NotAHeartbeat { .. })
    ));
    assert!(matches!(
        membership.handle("MVS1", &[1, 10, 0], 3 * MS),
        Err(MembershipError::Wire(_))
    ));
    assert_eq!(membership.counters().refused_frames, 4);
    let events: Vec<MembershipEvent> = std::iter::from_fn(|| membership.poll_event()).collect();
    assert_eq!(
        events,
        [
            MembershipEvent::Up {
                node: "MVS1".into()
            },
            MembershipEvent::Restarted {
                node: "MVS1".into(),
                incarnation: 6
            }
        ]
    );
}

#[test]
fn a_view_reports_ages_and_never() {
    let views = figure4_views();
    let mvs5 = views.iter().find(|v| v.node == "MVS5").unwrap();
    let mut membership = Membership::for_view(mvs5, 1, Duration::ZERO);
    membership.heard("MVS2", 100 * MS);
    let view = membership.view(350 * MS);
    let of = |node: &str| view.iter().find(|s| s.node == node).unwrap().heard_ms_ago;
    assert_eq!(of("MVS2"), 250);
    assert_eq!(of("MVS1"), MemberSeen::NEVER);
    assert_eq!(view.len(), 4);
}

#[test]
fn claims_ride_in_heartbeats_and_vanish_with_their_member() {
    let mut nodes = Nodes::figure4(0);
    let claim = OwnerClaim {
        dvipa: "DVB1".into(),
        cf_epoch: 3,
    };
    nodes
        .members
        .get_mut("MVS5")
        .unwrap()
        .set_claims(vec![claim.clone()]);
    nodes.run_for(300 * MS);
    assert_eq!(nodes.members["MVS1"].claims_of("MVS5"), [claim]);
    assert!(nodes.members["MVS1"].claims_of("MVS2").is_empty());
    nodes.dead.insert("MVS5".into());
    nodes.run_for(Duration::from_secs(2));
    assert!(nodes.members["MVS1"].claims_of("MVS5").is_empty());
}

proptest::proptest! {
    #[test]
    fn any_bytes_from_any_node_are_refused_or_taken_never_a_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
        node in "MVS[0-9]",
    ) {
        let views = figure4_views();
        let mvs5 = views.iter().find(|v| v.node == "MVS5").unwrap();
        let mut membership = Membership::for_view(mvs5, 1, Duration::ZERO);
        let _ = membership.handle(&node, &bytes, MS);
        membership.handle_timeout(2 * MS);
        let _ = is_membership_frame(&bytes);
    }
}
