//! The hot path allocates nothing per packet: once the site is warm, the distributor's and the
//! targets' polling rounds (dispatch, GRE, decap, CF, echo, seal, send) run without a single heap
//! allocation. Counted by an instrumented global allocator; this binary holds one test so no
//! other test thread allocates meanwhile.

use dvipsec_dataplane::poll::PollNode;
use dvipsec_dataplane::testbed::{Testbed, TestbedConfig};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn send_round(bed: &mut Testbed, round: u16) {
    for conn in 0..16u16 {
        bed.peer.send_udp(
            Testbed::peer_socket(50_000 + conn),
            Testbed::dvipa_socket(60),
            &[round as u8; 200],
        );
    }
    bed.peer.flush();
}

/// Runs the distributor and targets (not the peer, a test tool) with allocations counted.
fn counted_round(bed: &mut Testbed, now: u64, allocations: &mut usize) -> usize {
    let region = Region::new(GLOBAL);
    let mut handled = bed.distributor.poll(now);
    for target in &mut bed.targets {
        handled += target.poll(now);
    }
    let change = region.change();
    *allocations += change.allocations + change.reallocations;
    bed.peer.poll_rx();
    handled
}

#[test]
fn warm_hot_path_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).unwrap();
    // Warm up: the connections' DCT entries are made (within the table's preallocated room).
    send_round(&mut bed, 0);
    bed.settle(0, 20);
    bed.peer.take_received();
    // The counter works: a control allocation inside a region is seen.
    let control = Region::new(GLOBAL);
    let probe: Vec<u8> = std::hint::black_box(vec![1, 2, 3]);
    assert!(control.change().allocations >= 1);
    drop(probe);
    let mut allocations = 0;
    let mut handled = 0;
    for round in 1..50u16 {
        send_round(&mut bed, round);
        handled += counted_round(&mut bed, u64::from(round), &mut allocations);
        handled += counted_round(&mut bed, u64::from(round), &mut allocations);
    }
    assert!(handled >= 49 * 16 * 2, "traffic flowed: {handled}");
    assert_eq!(bed.peer.counters().packets_received, 50 * 16);
    assert_eq!(allocations, 0, "allocations on the hot path");
}
