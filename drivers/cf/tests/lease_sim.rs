//! Simulation (sans-io, seeded, simulated time) of K targets sending on one SA through a peer
//! with replay window W: the derived lease bound gives no replay drops; a naive large batch does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use dvipsec_cf::replay::ReplayState;
use dvipsec_cf::{LeaseHolder, LeaseParams, LeasePolicy, ReplayVerdict, SeqRange};

/// SplitMix64: small, deterministic, good enough for jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    replay_drops: u64,
    unused: u64,
}

/// Runs `packets_per_target` packets from every target. Each target sends no faster than
/// `params.max_target_rate_pps`, with gaps stretched by up to `extra_gap_us`; each packet reaches
/// the peer after a delay drawn from `0..=params.delay_jitter_us`.
fn simulate(
    params: &LeaseParams,
    policy: LeasePolicy,
    packets_per_target: u64,
    extra_gap_us: u64,
    seed: u64,
) -> Outcome {
    let mut rng = Rng(seed);
    let min_gap_us = 1_000_000 / params.max_target_rate_pps.max(1);
    let mut counter = 1u64;
    let mut holders: Vec<LeaseHolder> = (0..params.targets)
        .map(|_| LeaseHolder::new(policy))
        .collect();
    let mut sent_count = vec![0u64; params.targets as usize];
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..params.targets as usize)
        .map(|target| Reverse((rng.up_to(min_gap_us + extra_gap_us), target)))
        .collect();
    // (arrival time, tie-breaker, sequence number)
    let mut arrivals = Vec::new();
    while let Some(Reverse((now, target))) = ready.pop() {
        let seq = holders[target]
            .next(now, |n| {
                let range = SeqRange {
                    first: counter,
                    count: n,
                };
                counter += u64::from(n);
                Ok(range)
            })
            .unwrap();
        arrivals.push((now + rng.up_to(params.delay_jitter_us), rng.next(), seq));
        sent_count[target] += 1;
        if sent_count[target] < packets_per_target {
            ready.push(Reverse((
                now + min_gap_us + rng.up_to(extra_gap_us),
                target,
            )));
        }
    }
    arrivals.sort_unstable();
    let mut peer = ReplayState::default();
    let mut outcome = Outcome {
        sent: arrivals.len() as u64,
        ..Outcome::default()
    };
    for (_, _, seq) in arrivals {
        match peer.check_and_set(seq, params.peer_window) {
            ReplayVerdict::Accepted => {}
            ReplayVerdict::TooOld | ReplayVerdict::Replayed | ReplayVerdict::Zero => {
                outcome.replay_drops += 1
            }
        }
    }
    outcome.unused = holders.iter().map(LeaseHolder::dropped).sum();
    outcome
}

fn params(
    window: u32,
    targets: u32,
    rate_pps: u64,
    lifetime_us: u64,
    jitter_us: u64,
) -> LeaseParams {
    LeaseParams {
        peer_window: window,
        targets,
        lease_lifetime_us: lifetime_us,
        delay_jitter_us: jitter_us,
        max_target_rate_pps: rate_pps,
    }
}

#[test]
fn the_derived_bound_gives_no_replay_drops() {
    let cases = [
        // strongSwan's window, four targets at 100 kpps each
        params(128, 4, 100_000, 50, 50),
        params(128, 8, 50_000, 100, 20),
        params(64, 2, 200_000, 20, 10),
        params(32, 4, 20_000, 200, 100),
        params(1024, 16, 100_000, 100, 100),
    ];
    for (case, p) in cases.iter().enumerate() {
        let policy = LeasePolicy::bounded(p).unwrap();
        assert!(policy.size >= 1);
        for seed in 0..3u64 {
            // Gaps from the minimum up to 5x it: leases run out and also expire.
            let min_gap = 1_000_000 / p.max_target_rate_pps;
            let outcome = simulate(p, policy, 20_000, 4 * min_gap, seed * 7919 + case as u64);
            assert_eq!(
                outcome.replay_drops, 0,
                "case {case} {p:?} lease {} seed {seed}: {outcome:?}",
                policy.size
            );
            assert_eq!(outcome.sent, 20_000 * u64::from(p.targets));
        }
    }
}

#[test]
fn per_packet_allocation_is_safe_within_the_bound() {
    let p = params(32, 8, 50_000, 20, 20);
    assert!(p.is_replay_safe(1));
    let outcome = simulate(&p, LeasePolicy::per_packet(), 20_000, 60, 11);
    assert_eq!(outcome.replay_drops, 0, "{outcome:?}");
    assert_eq!(outcome.unused, 0);
}

#[test]
fn a_naive_large_batch_loses_packets_at_the_peer() {
    let p = params(128, 4, 100_000, 50, 50);
    // A batch of 1024 numbers per target, kept for as long as it lasts.
    let naive = LeasePolicy::unchecked(1024, u64::MAX);
    let outcome = simulate(&p, naive, 20_000, 40, 3);
    assert!(outcome.replay_drops > 0, "{outcome:?}");
    // Leases just above the bound already lose packets under the same traffic.
    let bound = LeasePolicy::bounded(&p).unwrap();
    let oversized = LeasePolicy::unchecked(bound.size * 8, p.lease_lifetime_us);
    let outcome = simulate(&p, oversized, 20_000, 40, 3);
    assert!(
        outcome.replay_drops > 0,
        "lease of {}: {outcome:?}",
        oversized.size
    );
}
