//! The in-memory fabric: delivery, order, drops and buffer accounting.

use dvipsec_ports::{
    wire, BufLayout, Burst, DropCause, FabricConfig, FabricError, FabricPort, Mac, PacketPort,
    SwitchBuilder,
};
use proptest::prelude::*;

fn config(pool_size: usize, ring_size: usize) -> FabricConfig {
    FabricConfig {
        layout: BufLayout::esp_udp_tunnel_ipv4(),
        pool_size,
        ring_size,
    }
}

/// An Ethernet frame to `dst` carrying `seq` and `len` bytes in total.
fn frame_bytes(dst: Mac, seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len.max(18)];
    bytes[..6].copy_from_slice(&dst);
    bytes[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xee]);
    bytes[12..14].copy_from_slice(&[0x88, 0xb5]);
    bytes[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, byte) in bytes.iter_mut().enumerate().skip(18) {
        *byte = (i as u32 ^ seq) as u8;
    }
    bytes
}

fn send(port: &mut FabricPort, frames: &[Vec<u8>]) -> usize {
    let mut burst = Burst::with_capacity(frames.len());
    for bytes in frames {
        let mut buf = port.alloc_tx().expect("pool has room");
        buf.set_frame(bytes).unwrap();
        burst.push(buf).unwrap();
    }
    let sent = port.tx_burst(&mut burst);
    assert!(burst.is_empty(), "tx_burst consumes the whole burst");
    sent
}

fn receive_all(port: &mut FabricPort) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut burst = Burst::with_capacity(32);
    while port.rx_burst(&mut burst) > 0 {
        out.extend(burst.drain().map(|buf| buf.data().to_vec()));
    }
    out
}

const B_MAC: Mac = [2, 0, 0, 0, 0, 0xb];

#[test]
fn a_wire_delivers_in_order_and_counts() {
    let (mut a, mut b) = wire("a", "b", config(64, 64)).unwrap();
    let frames: Vec<_> = (0..40)
        .map(|seq| frame_bytes(B_MAC, seq, 60 + seq as usize))
        .collect();
    assert_eq!(send(&mut a, &frames), 40);
    assert_eq!(receive_all(&mut b), frames);
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let (ca, cb) = (a.counters(), b.counters());
    assert_eq!(
        (ca.tx_packets, ca.tx_bytes, ca.total_drops()),
        (40, bytes, 0)
    );
    assert_eq!(
        (cb.rx_packets, cb.rx_bytes, cb.total_drops()),
        (40, bytes, 0)
    );
    assert_eq!((ca.rx_packets, cb.tx_packets), (0, 0));
    assert_eq!(
        a.pool().available(),
        64,
        "received frames went back to the sender's pool"
    );
}

#[test]
fn a_wire_carries_traffic_both_ways() {
    let (mut a, mut b) = wire("a", "b", config(8, 8)).unwrap();
    send(&mut a, &[frame_bytes(B_MAC, 1, 64)]);
    send(&mut b, &[frame_bytes(B_MAC, 2, 64)]);
    assert_eq!(receive_all(&mut b), vec![frame_bytes(B_MAC, 1, 64)]);
    assert_eq!(receive_all(&mut a), vec![frame_bytes(B_MAC, 2, 64)]);
}

#[test]
fn a_full_ring_drops_and_counts_at_the_sender() {
    let (mut a, mut b) = wire("a", "b", config(16, 4)).unwrap();
    let frames: Vec<_> = (0..6).map(|seq| frame_bytes(B_MAC, seq, 64)).collect();
    assert_eq!(send(&mut a, &frames), 4);
    let c = a.counters();
    assert_eq!(c.drops(DropCause::PeerRingFull), 2);
    assert_eq!(c.tx_packets, 4);
    assert_eq!(
        a.pool().available(),
        12,
        "dropped frames are back in the pool"
    );
    assert_eq!(receive_all(&mut b), frames[..4].to_vec());
    assert_eq!(a.pool().available(), 16);
}

#[test]
fn frames_move_without_a_copy() {
    let (mut a, mut b) = wire("a", "b", config(4, 4)).unwrap();
    let mut buf = a.alloc_tx().unwrap();
    buf.set_frame(&frame_bytes(B_MAC, 7, 100)).unwrap();
    let sent_at = buf.data().as_ptr();
    let mut burst = Burst::with_capacity(1);
    burst.push(buf).unwrap();
    a.tx_burst(&mut burst);
    b.rx_burst(&mut burst);
    assert_eq!(burst.frames()[0].data().as_ptr(), sent_at);
}

#[test]
fn received_frames_keep_room_to_seal_esp_in_place() {
    let (mut a, mut b) = wire("a", "b", config(4, 4)).unwrap();
    send(&mut a, &[frame_bytes(B_MAC, 1, 1514)]);
    let mut burst = Burst::with_capacity(1);
    b.rx_burst(&mut burst);
    let frame = &mut burst.frames_mut()[0];
    assert!(frame.headroom() >= 44, "{}", frame.headroom());
    assert!(frame.tailroom() >= 32, "{}", frame.tailroom());
    frame.prepend(44).unwrap();
    frame.append(32).unwrap();
    assert_eq!(frame.len(), 1514 + 44 + 32);
}

#[test]
fn an_empty_pool_fails_allocation_and_counts() {
    let (mut a, _b) = wire("a", "b", config(1, 4)).unwrap();
    let held = a.alloc_tx().unwrap();
    assert!(a.alloc_tx().is_none());
    assert_eq!(a.counters().drops(DropCause::PoolEmpty), 1);
    drop(held);
    assert!(a.alloc_tx().is_some());
}

#[test]
fn bad_fabric_sizes_are_refused() {
    assert!(matches!(
        wire("a", "b", config(4, 0)),
        Err(FabricError::EmptyRing { .. })
    ));
    assert!(matches!(
        wire("a", "b", config(0, 4)),
        Err(FabricError::Pool { .. })
    ));
    let dup = SwitchBuilder::new(config(4, 4))
        .port("x", B_MAC)
        .unwrap()
        .port("y", B_MAC);
    assert!(matches!(dup, Err(FabricError::DuplicateMac { .. })));
}

fn three_port_switch() -> Vec<FabricPort> {
    SwitchBuilder::new(config(16, 16))
        .port("p0", [2, 0, 0, 0, 0, 0])
        .unwrap()
        .port("p1", [2, 0, 0, 0, 0, 1])
        .unwrap()
        .port("p2", [2, 0, 0, 0, 0, 2])
        .unwrap()
        .build()
        .unwrap()
}

#[test]
fn a_switch_forwards_by_destination_mac() {
    let mut ports = three_port_switch();
    let to_p2 = frame_bytes([2, 0, 0, 0, 0, 2], 1, 64);
    let to_p1 = frame_bytes([2, 0, 0, 0, 0, 1], 2, 64);
    assert_eq!(send(&mut ports[0], &[to_p2.clone(), to_p1.clone()]), 2);
    assert_eq!(receive_all(&mut ports[2]), vec![to_p2]);
    assert_eq!(receive_all(&mut ports[1]), vec![to_p1]);
    assert!(receive_all(&mut ports[0]).is_empty());
}

#[test]
fn a_switch_drops_unknown_destinations_and_runts() {
    let mut ports = three_port_switch();
    let unknown = frame_bytes([2, 9, 9, 9, 9, 9], 1, 64);
    assert_eq!(send(&mut ports[0], &[unknown]), 0);
    let mut runt = ports[0].alloc_tx().unwrap();
    runt.set_frame(&[2, 0, 0, 0, 0, 1, 0, 0]).unwrap();
    let mut burst = Burst::with_capacity(1);
    burst.push(runt).unwrap();
    assert_eq!(ports[0].tx_burst(&mut burst), 0);
    let c = ports[0].counters();
    assert_eq!(c.drops(DropCause::NoRoute), 1);
    assert_eq!(c.drops(DropCause::Runt), 1);
    assert_eq!(c.tx_packets, 0);
    assert_eq!(ports[0].pool().available(), 16);
    assert!(receive_all(&mut ports[1]).is_empty());
    assert!(receive_all(&mut ports[2]).is_empty());
}

#[test]
fn a_switch_floods_broadcasts_to_every_other_port() {
    let mut ports = three_port_switch();
    let broadcast = frame_bytes([0xff; 6], 5, 80);
    assert_eq!(send(&mut ports[1], std::slice::from_ref(&broadcast)), 2);
    assert_eq!(receive_all(&mut ports[0]), vec![broadcast.clone()]);
    assert_eq!(receive_all(&mut ports[2]), vec![broadcast]);
    assert!(receive_all(&mut ports[1]).is_empty());
    assert_eq!(ports[1].pool().available(), 16);
}

#[test]
fn a_switch_never_sends_a_frame_back_to_its_sender() {
    let mut ports = three_port_switch();
    let to_self = frame_bytes([2, 0, 0, 0, 0, 0], 1, 64);
    assert_eq!(send(&mut ports[0], &[to_self]), 0);
    assert_eq!(ports[0].counters().drops(DropCause::NoRoute), 1);
    assert!(receive_all(&mut ports[0]).is_empty());

    let mut lonely = SwitchBuilder::new(config(4, 4))
        .port("only", B_MAC)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(send(&mut lonely[0], &[frame_bytes([0xff; 6], 1, 64)]), 0);
    assert_eq!(lonely[0].counters().drops(DropCause::NoRoute), 1);
    assert_eq!(lonely[0].pool().available(), 4);
}

#[test]
fn a_switch_port_serves_its_senders_in_turn_and_keeps_each_in_order() {
    let mut ports = three_port_switch();
    let p2 = [2, 0, 0, 0, 0, 2];
    let from_p0: Vec<_> = (0..6).map(|seq| frame_bytes(p2, seq, 64)).collect();
    let from_p1: Vec<_> = (100..106).map(|seq| frame_bytes(p2, seq, 64)).collect();
    send(&mut ports[0], &from_p0);
    send(&mut ports[1], &from_p1);
    let mut firsts = Vec::new();
    let mut got = Vec::new();
    let mut burst = Burst::with_capacity(4);
    while ports[2].rx_burst(&mut burst) > 0 {
        let seqs: Vec<u32> = burst
            .drain()
            .map(|f| u32::from_be_bytes(f.data()[14..18].try_into().unwrap()))
            .collect();
        firsts.push(seqs[0]);
        got.extend(seqs);
    }
    let seqs_from = |low: u32| -> Vec<u32> {
        got.iter()
            .copied()
            .filter(|s| (*s >= 100) == (low >= 100))
            .collect()
    };
    assert_eq!(
        seqs_from(0),
        (0..6).collect::<Vec<_>>(),
        "p0's frames in order"
    );
    assert_eq!(
        seqs_from(100),
        (100..106).collect::<Vec<_>>(),
        "p1's frames in order"
    );
    assert!(
        firsts.iter().any(|s| *s >= 100) && firsts.iter().any(|s| *s < 100),
        "{firsts:?}"
    );
}

#[test]
fn frames_cross_threads_in_order() {
    const COUNT: u32 = 20_000;
    let (mut a, mut b) = wire("a", "b", config(256, 64)).unwrap();
    let sender = std::thread::spawn(move || {
        let mut burst = Burst::with_capacity(32);
        let mut seq = 0;
        while seq < COUNT {
            while !burst.is_full() && seq < COUNT {
                let Some(mut buf) = a.alloc_tx() else { break };
                buf.set_frame(&frame_bytes(B_MAC, seq, 64)).unwrap();
                burst.push(buf).unwrap();
                seq += 1;
            }
            a.tx_burst(&mut burst);
            std::thread::yield_now();
        }
        a
    });
    let mut received = Vec::new();
    let mut burst = Burst::with_capacity(32);
    loop {
        let done = sender.is_finished();
        b.rx_burst(&mut burst);
        for buf in burst.drain() {
            received.push(u32::from_be_bytes(buf.data()[14..18].try_into().unwrap()));
        }
        if done && b.rx_queued() == 0 {
            break;
        }
    }
    let a = sender.join().unwrap();
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "out of order or duplicated"
    );
    let dropped = a.counters().drops(DropCause::PeerRingFull);
    assert_eq!(received.len() as u64 + dropped, u64::from(COUNT));
    assert_eq!(a.counters().tx_packets, received.len() as u64);
    assert_eq!(b.counters().rx_packets, received.len() as u64);
    assert!(!received.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Send { count: usize, len: usize },
    Receive { max: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..12, 14usize..300).prop_map(|(count, len)| Op::Send { count, len }),
        (1usize..12).prop_map(|max| Op::Receive { max }),
    ]
}

proptest! {
    /// Whatever goes in comes out once, in order; what the ring could not take is counted.
    #[test]
    fn fabric_delivers_in_order_without_duplicates(ops in prop::collection::vec(op(), 1..40), ring in 1usize..16) {
        let (mut a, mut b) = wire("a", "b", config(64, ring)).unwrap();
        let mut model = std::collections::VecDeque::new();
        let (mut next_seq, mut model_drops) = (0u32, 0u64);
        for op in ops {
            match op {
                Op::Send { count, len } => {
                    let frames: Vec<_> = (0..count).map(|i| frame_bytes(B_MAC, next_seq + i as u32, len)).collect();
                    next_seq += count as u32;
                    for frame in &frames {
                        if model.len() < ring { model.push_back(frame.clone()) } else { model_drops += 1 }
                    }
                    send(&mut a, &frames);
                }
                Op::Receive { max } => {
                    let mut burst = Burst::with_capacity(max);
                    b.rx_burst(&mut burst);
                    let expected: Vec<_> = model.drain(..max.min(model.len())).collect();
                    let got: Vec<_> = burst.drain().map(|f| f.data().to_vec()).collect();
                    prop_assert_eq!(got, expected);
                }
            }
        }
        prop_assert_eq!(receive_all(&mut b), model.into_iter().collect::<Vec<_>>());
        let ca = a.counters();
        prop_assert_eq!(ca.drops(DropCause::PeerRingFull), model_drops);
        prop_assert_eq!(ca.tx_packets + model_drops, u64::from(next_seq));
        prop_assert_eq!(b.counters().rx_packets, ca.tx_packets);
        prop_assert_eq!(a.pool().available(), 64, "no buffer leaked");
    }
}

#[derive(Debug, Clone)]
enum SwitchOp {
    /// `count` frames from port `from` to: port 0..=2 by MAC, 3 broadcast, 4 an unknown MAC.
    Send {
        from: usize,
        to: usize,
        count: usize,
    },
    Receive {
        port: usize,
        max: usize,
    },
}

fn switch_op() -> impl Strategy<Value = SwitchOp> {
    prop_oneof![
        (0usize..3, 0usize..5, 1usize..6).prop_map(|(from, to, count)| SwitchOp::Send {
            from,
            to,
            count
        }),
        (0usize..3, 1usize..8).prop_map(|(port, max)| SwitchOp::Receive { port, max }),
    ]
}

/// What the switch should do: one bounded FIFO per (sender, receiver), served round-robin.
struct SwitchModel {
    rings: Vec<Vec<std::collections::VecDeque<Vec<u8>>>>,
    rx_next: Vec<usize>,
    capacity: usize,
    drops: [u64; 3],
    no_route: [u64; 3],
}

impl SwitchModel {
    fn new(capacity: usize) -> Self {
        SwitchModel {
            rings: (0..3)
                .map(|_| (0..3).map(|_| Default::default()).collect())
                .collect(),
            rx_next: vec![0; 3],
            capacity,
            drops: [0; 3],
            no_route: [0; 3],
        }
    }

    fn send(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        let receivers: Vec<usize> = match to {
            3 => (0..3).filter(|&p| p != from).collect(),
            p if p < 3 && p != from => vec![p],
            _ => vec![],
        };
        if receivers.is_empty() {
            self.no_route[from] += 1;
        }
        for receiver in receivers {
            let ring = &mut self.rings[from][receiver];
            if ring.len() < self.capacity {
                ring.push_back(frame.clone());
            } else {
                self.drops[from] += 1;
            }
        }
    }

    fn receive(&mut self, port: usize, max: usize) -> Vec<Vec<u8>> {
        let senders: Vec<usize> = (0..3).filter(|&p| p != port).collect();
        let mut got = Vec::new();
        for step in 0..senders.len() {
            let sender = senders[(self.rx_next[port] + step) % senders.len()];
            while got.len() < max {
                let Some(frame) = self.rings[sender][port].pop_front() else {
                    break;
                };
                got.push(frame);
            }
        }
        self.rx_next[port] = (self.rx_next[port] + 1) % senders.len();
        got
    }
}

proptest! {
    /// Unicast, broadcast and unknown destinations through a switch: each receiver gets
    /// exactly what the model says, in that order, and the drops match.
    #[test]
    fn switch_matches_its_model(ops in prop::collection::vec(switch_op(), 1..40), ring in 1usize..8) {
        let mut ports = SwitchBuilder::new(config(64, ring))
            .port("p0", [2, 0, 0, 0, 0, 0]).unwrap()
            .port("p1", [2, 0, 0, 0, 0, 1]).unwrap()
            .port("p2", [2, 0, 0, 0, 0, 2]).unwrap()
            .build().unwrap();
        let mut model = SwitchModel::new(ring);
        let mut seq = 0u32;
        for op in ops {
            match op {
                SwitchOp::Send { from, to, count } => {
                    let dst = match to {
                        3 => [0xff; 6],
                        4 => [2, 9, 9, 9, 9, 9],
                        p => [2, 0, 0, 0, 0, p as u8],
                    };
                    let frames: Vec<_> = (0..count).map(|i| frame_bytes(dst, seq + i as u32, 64)).collect();
                    seq += count as u32;
                    for f in &frames {
                        model.send(from, to, f.clone());
                    }
                    send(&mut ports[from], &frames);
                }
                SwitchOp::Receive { port, max } => {
                    let mut burst = Burst::with_capacity(max);
                    ports[port].rx_burst(&mut burst);
                    let got: Vec<_> = burst.drain().map(|f| f.data().to_vec()).collect();
                    prop_assert_eq!(got, model.receive(port, max));
                }
            }
        }
        for (index, port) in ports.iter_mut().enumerate() {
            let c = port.counters();
            prop_assert_eq!(c.drops(DropCause::PeerRingFull), model.drops[index]);
            prop_assert_eq!(c.drops(DropCause::NoRoute), model.no_route[index]);
            prop_assert_eq!(c.drops(DropCause::PoolEmpty), 0);
        }
        for port in ports.iter_mut() {
            receive_all(port);
        }
        for port in &ports {
            prop_assert_eq!(port.pool().available(), 64, "no buffer leaked");
        }
    }
}
