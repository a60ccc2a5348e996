//! Reliable delivery over a lossy in-memory link, with simulated time.

use std::time::Duration;

use crate::link::{Link, LinkSecurity, LinkTimers, PeerChange};
use crate::sim::Network;
use crate::wire::{Frame, Message, SaRef, WireDirection};
use crate::LinkError;

const MS: Duration = Duration::from_millis(1);

fn timers() -> LinkTimers {
    LinkTimers::with_heartbeat(Duration::from_millis(100))
}

fn link(node: &str, incarnation: u64) -> Link {
    Link::new(
        node,
        incarnation,
        LinkSecurity::Trusted,
        timers(),
        Duration::ZERO,
    )
}

/// Two trusted links `a` (incarnation 10) and `b` (incarnation 20), not yet connected.
fn pair() -> (Link, Link) {
    (link("a", 10), link("b", 20))
}

fn delete(spi: u32) -> Message {
    Message::SaDelete(SaRef {
        dvipa: "DVA1".into(),
        direction: WireDirection::Inbound,
        spi,
    })
}

/// Runs both links over `net` until `until`, returning what each side delivered.
fn run(
    a: &mut Link,
    b: &mut Link,
    net: &mut Network,
    from: Duration,
    until: Duration,
) -> (Vec<Message>, Vec<Message>) {
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let mut now = from;
    while now <= until {
        while let Some(bytes) = a.poll_transmit(now) {
            net.send("a", "b", bytes, now);
        }
        while let Some(bytes) = b.poll_transmit(now) {
            net.send("b", "a", bytes, now);
        }
        for frame in net.arrivals(now) {
            let (link, got) = if frame.to == "a" {
                (&mut *a, &mut got_a)
            } else {
                (&mut *b, &mut got_b)
            };
            if let Ok(received) = link.handle(&frame.bytes, now) {
                got.extend(received.messages);
            }
        }
        now += MS;
    }
    (got_a, got_b)
}

#[test]
fn messages_arrive_once_and_in_order_over_a_clean_link() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(1, 0, MS);
    for spi in 256..266 {
        a.send(delete(spi), Duration::ZERO).unwrap();
    }
    let (_, got_b) = run(
        &mut a,
        &mut b,
        &mut net,
        Duration::ZERO,
        Duration::from_millis(50),
    );
    let expected: Vec<Message> = (256..266).map(delete).collect();
    assert_eq!(got_b, expected);
    assert_eq!(a.unacked(), 0);
    assert_eq!(a.stats().retransmitted, 0);
    assert_eq!(a.peer_incarnation(), Some(20));
    assert_eq!(b.peer_incarnation(), Some(10));
}

#[test]
fn ten_percent_loss_still_delivers_everything_once_in_order() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(0x5EED, 10, 2 * MS);
    for spi in 256..756 {
        a.send(delete(spi), Duration::ZERO).unwrap();
    }
    for spi in 1000..1100 {
        b.send(delete(spi), Duration::ZERO).unwrap();
    }
    let (got_a, got_b) = run(
        &mut a,
        &mut b,
        &mut net,
        Duration::ZERO,
        Duration::from_secs(20),
    );
    assert_eq!(got_b, (256..756).map(delete).collect::<Vec<_>>());
    assert_eq!(got_a, (1000..1100).map(delete).collect::<Vec<_>>());
    assert_eq!((a.unacked(), b.unacked()), (0, 0));
    assert!(net.lost > 0, "the network dropped nothing");
    assert!(a.stats().retransmitted > 0);
}

#[test]
fn a_replayed_frame_is_acknowledged_but_not_delivered_again() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(1, 0, MS);
    run(&mut a, &mut b, &mut net, Duration::ZERO, 10 * MS);
    a.send(delete(300), 10 * MS).unwrap();
    let bytes = a.poll_transmit(10 * MS).unwrap();
    assert_eq!(
        b.handle(&bytes, 11 * MS).unwrap().messages,
        vec![delete(300)]
    );
    assert!(b.handle(&bytes, 12 * MS).unwrap().messages.is_empty());
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.stats().delivered, 1);
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(1, 0, MS);
    run(&mut a, &mut b, &mut net, Duration::ZERO, 5 * MS);
    let start = 10 * MS;
    a.send(delete(300), start).unwrap();
    // Nothing comes back: record when the frame is sent again.
    let mut sends = Vec::new();
    let mut now = start;
    while now < start + Duration::from_secs(5) {
        while let Some(bytes) = a.poll_transmit(now) {
            if Frame::decode(&bytes).unwrap().seq != 0 {
                sends.push(now - start);
            }
        }
        now += MS;
    }
    let gaps: Vec<u128> = sends
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(&gaps[..7], &[20, 40, 80, 160, 320, 640, 1000]);
    assert!(gaps[7..].iter().all(|&g| g == 1000));
}

#[test]
fn a_restarted_peer_starts_afresh_and_its_old_frames_are_refused() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(1, 0, MS);
    run(&mut a, &mut b, &mut net, Duration::ZERO, 10 * MS);
    b.send(delete(400), 10 * MS).unwrap();
    let old_frame = b.poll_transmit(10 * MS).unwrap();
    // a queues something b never acknowledges, then b restarts.
    a.send(delete(500), 10 * MS).unwrap();
    let mut b2 = link("b", 21);
    let hello = b2.poll_transmit(20 * MS).unwrap();
    let received = a.handle(&hello, 20 * MS).unwrap();
    assert_eq!(
        received.peer,
        Some(PeerChange::Restarted { incarnation: 21 })
    );
    assert_eq!(a.unacked(), 0, "state for the old incarnation is dropped");
    assert_eq!(
        a.handle(&old_frame, 21 * MS).unwrap_err(),
        LinkError::StaleSender {
            from: 20,
            known: 21
        }
    );
    // The new incarnation learns a from a's HELLO reply and traffic flows again.
    a.send(delete(600), 22 * MS).unwrap();
    let (_, got) = run(&mut a, &mut b2, &mut net, 22 * MS, 60 * MS);
    assert_eq!(got, vec![delete(600)]);
}

#[test]
fn frames_for_an_old_incarnation_of_us_are_refused() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(1, 0, MS);
    run(&mut a, &mut b, &mut net, Duration::ZERO, 10 * MS);
    a.send(delete(300), 10 * MS).unwrap();
    let bytes = a.poll_transmit(10 * MS).unwrap();
    let mut b2 = link("b", 21);
    assert_eq!(
        b2.handle(&bytes, 11 * MS).unwrap_err(),
        LinkError::NotForThisIncarnation { to: 20, local: 21 }
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Whatever the loss pattern, both directions deliver exactly once and in order.
    #[test]
    fn any_loss_pattern_delivers_exactly_once_in_order(
        seed in proptest::prelude::any::<u64>(),
        loss in 0u8..=25,
        a_count in 1u32..80,
        b_count in 0u32..40,
    ) {
        let (mut a, mut b) = pair();
        let mut net = Network::new(seed, loss, 3 * MS);
        for spi in 0..a_count {
            a.send(delete(256 + spi), Duration::ZERO).unwrap();
        }
        for spi in 0..b_count {
            b.send(delete(5000 + spi), Duration::ZERO).unwrap();
        }
        let (got_a, got_b) = run(&mut a, &mut b, &mut net, Duration::ZERO, Duration::from_secs(10));
        proptest::prop_assert_eq!(got_b, (0..a_count).map(|s| delete(256 + s)).collect::<Vec<_>>());
        proptest::prop_assert_eq!(got_a, (0..b_count).map(|s| delete(5000 + s)).collect::<Vec<_>>());
    }
}

#[test]
fn a_heartbeat_view_is_passed_on_not_sequenced() {
    let (mut a, mut b) = pair();
    let mut net = Network::new(3, 0, MS);
    run(&mut a, &mut b, &mut net, Duration::ZERO, 20 * MS);
    let seen = crate::wire::HeartbeatView {
        seen: vec![crate::wire::MemberSeen {
            node: "c".into(),
            heard_ms_ago: 12,
        }],
        owns: Vec::new(),
    };
    let bytes = Frame {
        from_incarnation: 10,
        to_incarnation: 20,
        seq: 0,
        message: Message::HeartbeatView(seen.clone()),
    }
    .encode()
    .unwrap();
    let received = b.handle(&bytes, 30 * MS).unwrap();
    assert!(
        received.messages.is_empty(),
        "a view is no sequenced message"
    );
    assert_eq!(received.view, Some(seen));
    assert_eq!(b.stats().duplicates, 0);
    assert_eq!(b.stats().delivered, 0);
    assert_eq!(b.last_heard(), Some(30 * MS));
}
