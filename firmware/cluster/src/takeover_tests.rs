//! The takeover rule on one node's core, with membership fed by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dvipsec_config::{BackupRef, NodeView, SiteConfig};

use super::*;
use crate::membership::{MemberRoles, Membership, MembershipConfig};
use crate::wire::{Frame, HeartbeatView, Message};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn figure4_views() -> Vec<NodeView> {
    SiteConfig::load(figure4_path()).unwrap().node_views()
}

fn figure4_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/figure4.yaml")
}

/// Figure 4's site with `take_back: true` on DVA1 (the first DVIPA) only.
fn figure4_views_taking_back_dva1() -> Vec<NodeView> {
    let text = std::fs::read_to_string(figure4_path()).unwrap();
    let first = "      moveable: immediate\n";
    let text = text.replacen(first, &format!("{first}      take_back: true\n"), 1);
    SiteConfig::from_str_named(&text, "figure4-take-back.yaml")
        .unwrap()
        .node_views()
}

fn flow(port: u16) -> Flow {
    Flow {
        local: "198.51.100.10".parse().unwrap(),
        remote: "203.0.113.10".parse().unwrap(),
        protocol: 6,
        local_port: 60,
        remote_port: port,
    }
}

/// One node: its membership (members heard by hand) and its takeover core.
struct Node {
    membership: Membership,
    core: Takeover,
    now: Duration,
    actions: Vec<TakeoverAction>,
    /// Members that beat each tick, with what they claim.
    beating: BTreeMap<String, Vec<OwnerClaim>>,
}

impl Node {
    fn new(local: &str, members: &[&str], plans: Vec<DvipaPlan>, config: TakeoverConfig) -> Node {
        let roles = members
            .iter()
            .map(|m| (m.to_string(), MemberRoles::default()))
            .collect();
        let membership = Membership::new(
            roles,
            1,
            MembershipConfig {
                heartbeat: 100 * MS,
                missed_beats: 10,
            },
            Duration::ZERO,
        );
        Node {
            membership,
            core: Takeover::new(local, plans, config),
            now: Duration::ZERO,
            actions: Vec::new(),
            beating: members
                .iter()
                .map(|m| (m.to_string(), Vec::new()))
                .collect(),
        }
    }

    fn figure4(local: &str, config: TakeoverConfig) -> Node {
        Node::figure4_from(local, &figure4_views(), config)
    }

    fn figure4_from(local: &str, views: &[NodeView], config: TakeoverConfig) -> Node {
        let members: Vec<&str> = ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]
            .into_iter()
            .filter(|m| *m != local)
            .collect();
        Node::new(local, &members, plans_from_views(views), config)
    }

    fn claim(&mut self, node: &str, dvipa: &str, cf_epoch: u64) {
        self.beating
            .entry(node.to_owned())
            .or_default()
            .push(OwnerClaim {
                dvipa: dvipa.to_owned(),
                cf_epoch,
            });
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            if self.now.as_millis().is_multiple_of(100) {
                for (node, claims) in &self.beating {
                    let bytes = Frame {
                        from_incarnation: 1,
                        to_incarnation: 0,
                        seq: 0,
                        message: Message::HeartbeatView(HeartbeatView {
                            seen: Vec::new(),
                            owns: claims.clone(),
                        }),
                    }
                    .encode()
                    .unwrap();
                    self.membership.handle(node, &bytes, self.now).unwrap();
                }
            }
            self.membership.handle_timeout(self.now);
            while self.membership.poll_event().is_some() {}
            self.core.update(&mut self.membership, self.now);
            self.actions
                .extend(std::iter::from_fn(|| self.core.poll_action()));
            self.now += MS;
        }
    }

    /// The runtime fenced `dvipa` in `epoch`; returns the actions that follow.
    fn fence(&mut self, dvipa: &str, epoch: u64) -> Vec<TakeoverAction> {
        self.core.fenced(dvipa, epoch, self.now).unwrap();
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    fn take_actions(&mut self) -> Vec<TakeoverAction> {
        std::mem::take(&mut self.actions)
    }

    fn adopted(&self) -> Vec<(String, MoveReason)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                TakeoverAction::Adopt { dvipa, reason, .. } => Some((dvipa.clone(), *reason)),
                _ => None,
            })
            .collect()
    }
}

fn plan(dvipa: &str, home: &str, backups: &[(&str, u32)]) -> DvipaPlan {
    let mut targets = BTreeMap::new();
    targets.insert(home.to_owned(), vec!["T1".to_owned()]);
    for (node, _) in backups {
        targets.insert(node.to_string(), vec!["T2".to_owned()]);
    }
    DvipaPlan {
        dvipa: dvipa.to_owned(),
        address: "198.51.100.30".parse().unwrap(),
        prefix_len: 24,
        home: home.to_owned(),
        backups: backups
            .iter()
            .map(|(node, rank)| BackupRef {
                node: node.to_string(),
                rank: *rank,
            })
            .collect(),
        targets,
        peers: vec![("peer".into(), "203.0.113.9".parse().unwrap())],
        take_back: false,
    }
}

#[test]
fn the_chain_is_owner_then_rank_then_name() {
    let p = plan("X", "A", &[("B", 100), ("D", 200), ("C", 200)]);
    assert_eq!(p.chain(), ["A", "C", "D", "B"]);
}

#[test]
fn plans_come_from_the_whole_site() {
    let plans = plans_from_views(&figure4_views());
    let dva1 = plans.iter().find(|p| p.dvipa == "DVA1").unwrap();
    assert_eq!(dva1.home, "MVS1");
    assert_eq!(dva1.chain(), ["MVS1", "MVS5"]);
    assert_eq!(dva1.targets["MVS1"], ["MVS1", "MVS2", "MVS4"]);
    assert_eq!(dva1.targets["MVS5"], ["MVS2", "MVS3", "MVS4"]);
    assert_eq!(dva1.peers.len(), 1);
    assert_eq!(dva1.peers[0].0, "branch-a");
    let dvb1 = plans.iter().find(|p| p.dvipa == "DVB1").unwrap();
    assert_eq!(dvb1.chain(), ["MVS5"]);
}

#[test]
fn the_backup_takes_a_failed_owners_dvipa_and_does_its_work_in_order() {
    let mut mvs5 = Node::figure4("MVS5", TakeoverConfig::default());
    mvs5.claim("MVS1", "DVA1", 1);
    mvs5.run_for(2 * SEC);
    // Nobody claimed DVB1: its owner takes it at startup; DVA1 stays with MVS1.
    assert_eq!(mvs5.adopted(), [("DVB1".to_owned(), MoveReason::Startup)]);
    // Nobody owned it before: attach to the CF, fence nobody.
    assert!(mvs5.actions.contains(&TakeoverAction::AttachCf {
        dvipa: "DVB1".into()
    }));
    assert!(!mvs5
        .actions
        .iter()
        .any(|a| matches!(a, TakeoverAction::FenceCf { .. })));
    assert_eq!(mvs5.core.owner("DVA1"), Some("MVS1"));
    mvs5.fence("DVB1", 2);
    mvs5.take_actions();

    mvs5.beating.remove("MVS1");
    let silent_from = mvs5.now;
    mvs5.run_for(1200 * MS);
    let actions = mvs5.take_actions();
    assert_eq!(
        actions[..3],
        [
            TakeoverAction::OwnerChanged {
                dvipa: "DVA1".into(),
                owner: "MVS5".into(),
                reason: MoveReason::OwnerFailed
            },
            TakeoverAction::Adopt {
                dvipa: "DVA1".into(),
                address: "198.51.100.10".parse().unwrap(),
                targets: vec!["MVS2".into(), "MVS3".into(), "MVS4".into()],
                reason: MoveReason::OwnerFailed
            },
            TakeoverAction::FenceCf {
                dvipa: "DVA1".into()
            },
        ]
    );
    let decided = mvs5.core.times("DVA1").unwrap().decided;
    assert!(decided - silent_from <= 1000 * MS, "{decided:?}");
    // Not claimed before the fence: a claim with an old epoch would lose to nobody.
    assert!(mvs5.core.claims().iter().all(|c| c.dvipa != "DVA1"));

    let actions = mvs5.fence("DVA1", 3);
    assert_eq!(
        actions,
        [
            TakeoverAction::Announce {
                dvipa: "DVA1".into(),
                address: "198.51.100.10".parse().unwrap(),
                prefix_len: 24
            },
            TakeoverAction::NotifyTargets {
                dvipa: "DVA1".into(),
                cf_epoch: 3,
                targets: vec!["MVS2".into(), "MVS3".into(), "MVS4".into()]
            },
            TakeoverAction::Renegotiate {
                dvipa: "DVA1".into(),
                peer: "branch-a".into(),
                address: "203.0.113.10".parse().unwrap()
            },
        ]
    );
    assert!(!mvs5.core.is_serving("DVA1"));
    let report = [
        Connection { flow: flow(1000) },
        Connection { flow: flow(1001) },
    ];
    assert!(!mvs5.core.conn_report("MVS1", "DVA1", &report, mvs5.now));
    assert!(!mvs5.core.conn_report("MVS2", "DVB9", &report, mvs5.now));
    for target in ["MVS2", "MVS3", "MVS4"] {
        let connections = if target == "MVS3" { &report[..] } else { &[] };
        assert!(mvs5.core.conn_report(target, "DVA1", connections, mvs5.now));
    }
    let actions: Vec<_> = std::iter::from_fn(|| mvs5.core.poll_action()).collect();
    assert_eq!(
        actions[1],
        TakeoverAction::RestoreConnections {
            dvipa: "DVA1".into(),
            target: "MVS3".into(),
            flows: vec![flow(1000), flow(1001)]
        }
    );
    assert_eq!(
        actions.last(),
        Some(&TakeoverAction::Rebuilt {
            dvipa: "DVA1".into(),
            connections: 2,
            missing: Vec::new()
        })
    );
    assert!(mvs5.core.is_serving("DVA1"));
    assert_eq!(
        mvs5.core.claims(),
        [
            OwnerClaim {
                dvipa: "DVA1".into(),
                cf_epoch: 3
            },
            OwnerClaim {
                dvipa: "DVB1".into(),
                cf_epoch: 2
            }
        ]
    );
}

#[test]
fn different_dvipas_go_to_different_backups() {
    let plans = || {
        vec![
            plan("X", "A", &[("B", 200), ("C", 100)]),
            plan("Y", "A", &[("C", 200), ("B", 100)]),
        ]
    };
    let mut b = Node::new("B", &["A", "C"], plans(), TakeoverConfig::default());
    let mut c = Node::new("C", &["A", "B"], plans(), TakeoverConfig::default());
    for node in [&mut b, &mut c] {
        node.claim("A", "X", 1);
        node.claim("A", "Y", 1);
        node.run_for(2 * SEC);
        node.beating.remove("A");
        node.run_for(1500 * MS);
    }
    assert_eq!(b.adopted(), [("X".to_owned(), MoveReason::OwnerFailed)]);
    assert_eq!(c.adopted(), [("Y".to_owned(), MoveReason::OwnerFailed)]);
    assert_eq!(b.core.owner("Y"), Some("C"));
    assert_eq!(c.core.owner("X"), Some("B"));
}

#[test]
fn the_next_backup_takes_over_when_the_first_is_down_too() {
    let plans = vec![plan("X", "A", &[("B", 200), ("C", 100)])];
    let mut c = Node::new("C", &["A", "B", "D"], plans, TakeoverConfig::default());
    c.claim("A", "X", 1);
    c.run_for(2 * SEC);
    c.beating.remove("A");
    c.beating.remove("B");
    c.run_for(1500 * MS);
    assert_eq!(c.adopted(), [("X".to_owned(), MoveReason::OwnerFailed)]);
}

#[test]
fn a_partitioned_owner_keeps_its_dvipa_and_an_isolated_node_takes_nothing() {
    let plans = vec![plan("X", "A", &[("B", 200)])];
    let mut b = Node::new("B", &["A", "T"], plans.clone(), TakeoverConfig::default());
    b.claim("A", "X", 1);
    b.run_for(2 * SEC);
    // A goes silent to B, but T keeps hearing it: a partition.
    b.beating.remove("A");
    let end = b.now + 2 * SEC;
    while b.now < end {
        if b.now.as_millis().is_multiple_of(100) {
            let bytes = Frame {
                from_incarnation: 1,
                to_incarnation: 0,
                seq: 0,
                message: Message::HeartbeatView(HeartbeatView {
                    seen: vec![crate::wire::MemberSeen {
                        node: "A".into(),
                        heard_ms_ago: 0,
                    }],
                    owns: Vec::new(),
                }),
            }
            .encode()
            .unwrap();
            b.membership.handle("T", &bytes, b.now).unwrap();
        }
        b.membership.handle_timeout(b.now);
        b.core.update(&mut b.membership, b.now);
        b.actions
            .extend(std::iter::from_fn(|| b.core.poll_action()));
        b.now += MS;
    }
    assert!(b.adopted().is_empty(), "{:?}", b.actions);
    assert_eq!(b.core.owner("X"), Some("A"));

    // Everyone silent: B is isolated and must not take X.
    let mut lonely = Node::new("B", &["A", "T"], plans, TakeoverConfig::default());
    lonely.claim("A", "X", 1);
    lonely.run_for(2 * SEC);
    lonely.beating.clear();
    lonely.run_for(2 * SEC);
    assert!(lonely.membership.is_isolated());
    assert!(lonely.adopted().is_empty(), "{:?}", lonely.actions);
}

#[test]
fn a_returning_owner_waits_for_the_claims_of_a_member_it_heard_only_through_other_frames() {
    // MVS1 comes back; MVS5 (DVA1's owner now) reaches it first with frames that are not
    // heartbeats, then its heartbeat claims DVA1.
    let mut mvs1 = Node::figure4("MVS1", TakeoverConfig::default());
    mvs1.beating.remove("MVS5");
    for _ in 0..20 {
        mvs1.membership.heard("MVS5", mvs1.now);
        mvs1.run_for(100 * MS);
    }
    assert!(
        !mvs1.adopted().iter().any(|(dvipa, _)| dvipa == "DVA1"),
        "{:?}",
        mvs1.actions
    );
    mvs1.claim("MVS5", "DVA1", 3);
    mvs1.run_for(SEC);
    assert_eq!(mvs1.core.owner("DVA1"), Some("MVS5"));
    assert!(!mvs1.adopted().iter().any(|(dvipa, _)| dvipa == "DVA1"));
}

#[test]
fn a_returning_owner_does_not_take_back_unless_configured() {
    // MVS1 comes back and hears MVS5 claim DVA1 in epoch 3.
    let mut mvs1 = Node::figure4("MVS1", TakeoverConfig::default());
    mvs1.claim("MVS5", "DVA1", 3);
    mvs1.claim("MVS5", "DVB1", 2);
    mvs1.run_for(3 * SEC);
    assert!(mvs1.adopted().is_empty(), "{:?}", mvs1.actions);
    assert_eq!(mvs1.core.owner("DVA1"), Some("MVS5"));

    // The site sets `take_back` on DVA1: MVS1 takes it home.
    let views = figure4_views_taking_back_dva1();
    let config = TakeoverConfig::default();
    let mut mvs1 = Node::figure4_from("MVS1", &views, config);
    mvs1.claim("MVS5", "DVA1", 3);
    mvs1.run_for(3 * SEC);
    assert_eq!(mvs1.adopted(), [("DVA1".to_owned(), MoveReason::TakeBack)]);
    // And the backup, reading the same site, lets it go once the owner claims it.
    let mut mvs5 = backup_holding_dva1(&views);
    mvs5.beating.insert("MVS1".into(), Vec::new());
    mvs5.run_for(300 * MS);
    mvs5.claim("MVS1", "DVA1", 4);
    mvs5.run_for(300 * MS);
    assert!(mvs5.actions.contains(&TakeoverAction::Release {
        dvipa: "DVA1".into(),
        to: "MVS1".into()
    }));
    assert_eq!(mvs5.core.owner("DVA1"), Some("MVS1"));
    assert!(mvs5.core.claims().iter().all(|c| c.dvipa != "DVA1"));
}

/// MVS5 of `views` after MVS1 failed: it took DVA1 over in epoch 3 and serves it; MVS1 is
/// silent. Its actions so far are taken.
fn backup_holding_dva1(views: &[NodeView]) -> Node {
    let mut mvs5 = Node::figure4_from("MVS5", views, TakeoverConfig::default());
    mvs5.run_for(2 * SEC);
    mvs5.beating.remove("MVS1");
    mvs5.run_for(1500 * MS);
    mvs5.fence("DVA1", 3);
    mvs5.run_for(3 * SEC);
    mvs5.take_actions();
    assert!(mvs5.core.is_serving("DVA1"));
    mvs5
}

#[test]
fn a_backup_keeps_claiming_until_the_returning_owner_with_take_back_claims() {
    // MVS1 is back and MVS5 hears it before MVS1 heard MVS5's claim (XCF streams come up
    // in either order). Were MVS5 to let DVA1 go now, MVS1 would hear no claim at all and
    // start DVA1 afresh, without fence or renegotiation: MVS5 must keep claiming it.
    let views = figure4_views_taking_back_dva1();
    let mut mvs5 = backup_holding_dva1(&views);
    mvs5.beating.insert("MVS1".into(), Vec::new());
    mvs5.run_for(2 * SEC);
    assert!(
        !mvs5
            .actions
            .iter()
            .any(|a| matches!(a, TakeoverAction::Release { .. })),
        "{:?}",
        mvs5.actions
    );
    assert_eq!(mvs5.core.owner("DVA1"), Some("MVS5"));
    assert_eq!(
        mvs5.core.claims(),
        [OwnerClaim {
            dvipa: "DVA1".into(),
            cf_epoch: 3
        }]
    );

    // MVS1, once it hears that claim, takes DVA1 back with a fence (not as a fresh start).
    let mut mvs1 = Node::figure4_from("MVS1", &views, TakeoverConfig::default());
    mvs1.claim("MVS5", "DVA1", 3);
    mvs1.run_for(2 * SEC);
    assert_eq!(mvs1.adopted(), [("DVA1".to_owned(), MoveReason::TakeBack)]);
    assert!(mvs1.actions.contains(&TakeoverAction::FenceCf {
        dvipa: "DVA1".into()
    }));
}

#[test]
fn a_planned_move_back_releases_on_one_side_and_takes_over_on_the_other() {
    // MVS5 owns DVA1 after a takeover; MVS1 is back.
    let mut mvs5 = Node::figure4("MVS5", TakeoverConfig::default());
    mvs5.run_for(2 * SEC);
    mvs5.beating.remove("MVS1");
    mvs5.run_for(1500 * MS);
    mvs5.fence("DVA1", 3);
    mvs5.beating.insert("MVS1".into(), Vec::new());
    mvs5.run_for(500 * MS);
    mvs5.take_actions();
    let mut mvs1 = Node::figure4("MVS1", TakeoverConfig::default());
    mvs1.claim("MVS5", "DVA1", 3);
    mvs1.run_for(2 * SEC);
    mvs1.take_actions();

    assert_eq!(
        mvs5.core
            .plan_move("DVA9", "MVS1", &mvs5.membership, mvs5.now),
        Err(TakeoverError::UnknownDvipa {
            dvipa: "DVA9".into()
        })
    );
    assert_eq!(
        mvs5.core
            .plan_move("DVA1", "MVS3", &mvs5.membership, mvs5.now),
        Err(TakeoverError::NotACandidate {
            dvipa: "DVA1".into(),
            node: "MVS3".into()
        })
    );
    mvs5.core
        .plan_move("DVA1", "MVS1", &mvs5.membership, mvs5.now)
        .unwrap();
    mvs1.core
        .plan_move("DVA1", "MVS1", &mvs1.membership, mvs1.now)
        .unwrap();
    let released: Vec<_> = std::iter::from_fn(|| mvs5.core.poll_action()).collect();
    assert_eq!(
        released[0],
        TakeoverAction::Release {
            dvipa: "DVA1".into(),
            to: "MVS1".into()
        }
    );
    let taken: Vec<_> = std::iter::from_fn(|| mvs1.core.poll_action()).collect();
    assert!(taken.contains(&TakeoverAction::Adopt {
        dvipa: "DVA1".into(),
        address: "198.51.100.10".parse().unwrap(),
        targets: vec!["MVS1".into(), "MVS2".into(), "MVS4".into()],
        reason: MoveReason::Planned
    }));
    assert_eq!(mvs5.core.owner("DVA1"), Some("MVS1"));
    assert!(mvs5.core.claims().iter().all(|c| c.dvipa != "DVA1"));

    // A move to a node that is down is refused.
    let mut lonely = Node::figure4("MVS5", TakeoverConfig::default());
    lonely.run_for(2 * SEC);
    lonely.beating.remove("MVS1");
    lonely.run_for(1500 * MS);
    assert_eq!(
        lonely
            .core
            .plan_move("DVA1", "MVS1", &lonely.membership, lonely.now),
        Err(TakeoverError::NotAlive {
            dvipa: "DVA1".into(),
            node: "MVS1".into()
        })
    );
}

#[test]
fn a_stale_owner_that_hears_a_newer_claim_lets_go_and_rejoins_the_cf() {
    // MVS1 owns DVA1 (epoch 1), was cut off, and hears MVS5 claim it in epoch 3.
    // A owns X and Y (epoch 1), was cut off, and hears B claim X in epoch 3.
    let plans = vec![plan("X", "A", &[("B", 200)]), plan("Y", "A", &[])];
    let mut a = Node::new("A", &["B", "T"], plans, TakeoverConfig::default());
    a.run_for(2 * SEC);
    a.fence("X", 1);
    a.fence("Y", 1);
    a.take_actions();
    a.claim("B", "X", 3);
    a.run_for(200 * MS);
    let actions = a.take_actions();
    let release = TakeoverAction::Release {
        dvipa: "X".into(),
        to: "B".into(),
    };
    let rejoin = TakeoverAction::RejoinCf { cf_epoch: 3 };
    let position = |wanted: &TakeoverAction| actions.iter().position(|a| a == wanted);
    // X goes first; then the rejoin, which tells Y's targets the epoch and says nothing of X.
    let (Some(released_at), Some(rejoined_at)) = (position(&release), position(&rejoin)) else {
        panic!("both a release and a rejoin are expected: {actions:?}");
    };
    assert!(released_at < rejoined_at, "{actions:?}");
    assert!(actions.contains(&TakeoverAction::NotifyTargets {
        dvipa: "Y".into(),
        cf_epoch: 3,
        targets: vec!["T1".into()]
    }));
    assert!(!actions
        .iter()
        .any(|a| matches!(a, TakeoverAction::NotifyTargets { dvipa, .. } if dvipa == "X")));
    assert_eq!(a.core.owner("X"), Some("B"));
    assert_eq!(
        a.core.claims(),
        [OwnerClaim {
            dvipa: "Y".into(),
            cf_epoch: 1
        }]
    );
    // An older claim does not take it from a newer owner.
    let mut mvs5 = Node::figure4("MVS5", TakeoverConfig::default());
    mvs5.run_for(2 * SEC);
    mvs5.beating.remove("MVS1");
    mvs5.run_for(1500 * MS);
    mvs5.fence("DVA1", 3);
    mvs5.beating.insert("MVS1".into(), Vec::new());
    mvs5.claim("MVS1", "DVA1", 1);
    mvs5.run_for(500 * MS);
    assert_eq!(mvs5.core.owner("DVA1"), Some("MVS5"));
}

#[test]
fn missing_reports_end_the_rebuild_at_its_deadline() {
    let mut mvs5 = Node::figure4("MVS5", TakeoverConfig::default());
    mvs5.run_for(2 * SEC);
    mvs5.beating.remove("MVS1");
    mvs5.run_for(1500 * MS);
    mvs5.fence("DVA1", 3);
    assert_eq!(
        mvs5.core.fenced("DVA1", 4, mvs5.now),
        Err(TakeoverError::NotTakingOver {
            dvipa: "DVA1".into()
        })
    );
    mvs5.core.conn_report("MVS2", "DVA1", &[], mvs5.now);
    assert_eq!(mvs5.core.poll_timeout(), Some(mvs5.now + 2 * SEC));
    mvs5.take_actions();
    mvs5.run_for(2100 * MS);
    assert!(mvs5.actions.contains(&TakeoverAction::Rebuilt {
        dvipa: "DVA1".into(),
        connections: 0,
        missing: vec!["MVS3".into(), "MVS4".into()]
    }));
    assert!(mvs5.core.is_serving("DVA1"));
}
