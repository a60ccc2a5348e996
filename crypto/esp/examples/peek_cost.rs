//! Fixed work for instruction counting under callgrind (repeatable where timings are not):
//! 10 000 rounds over the benchmark's burst of 32 1420-byte tunnel packets over four SAs.
//!
//! `valgrind --tool=callgrind target/release/examples/peek_cost burst|flows|each|open [null|tcp]`
//! runs peek_burst, peek_burst_flows, Sa::peek per packet or a full open per packet; `null` uses
//! ESP-null instead of AES-128-GCM, `tcp` an inner TCP segment (ACK) instead of UDP. Divide the collected instructions by 320 000 for a per-packet
//! figure. `peek_cost ratio` (without valgrind) instead times all four interleaved and prints
//! wall-clock ns per packet and peek/open ratios.
use dvipsec_esp::*;
use interleaved::{interleave, Variant};
use std::hint::black_box;

#[path = "../benches/support/interleaved.rs"]
mod interleaved;
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let option = std::env::args().nth(2).unwrap_or_default();
    let suite = if option == "null" {
        Suite::NullHmacSha256
    } else {
        Suite::Aes128Gcm16
    };
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    // A second inbound copy of each SA: `ratio` opens with these while it peeks with the others.
    let mut openers = Vec::new();
    for n in 0..4u32 {
        let mut c = SaConfig::new(
            0x1000 + n,
            Direction::Outbound,
            suite,
            SaKeys::new(
                &vec![0x42 + n as u8; suite.enc_key_len()],
                &vec![1; suite.auth_key_len()],
            ),
        );
        c.mode = Mode::Tunnel;
        c.tunnel = Some(TunnelEndpoints {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
        });
        c.replay_window = 0;
        let mut i = c.clone();
        i.direction = Direction::Inbound;
        senders.push(Sa::new(c).unwrap());
        openers.push(Sa::new(i.clone()).unwrap());
        receivers.push(Sa::new(i).unwrap());
    }
    let mut p = vec![0u8; 1420];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&1420u16.to_be_bytes());
    if option == "tcp" {
        p[9] = 6;
        p[33] = 0x10;
    } else {
        p[9] = 17;
    }
    let mut wires = Vec::new();
    for i in 0..32 {
        let mut buf = vec![0u8; MAX_HEADROOM + 1420 + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + 1420].copy_from_slice(&p);
        let s = senders[i % 4]
            .seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + 1420)
            .unwrap();
        wires.push(buf[s.packet].to_vec());
    }
    let iters = 10000;
    match mode.as_str() {
        "burst" => {
            let pairs: Vec<(&Sa, &[u8])> = wires
                .iter()
                .enumerate()
                .map(|(i, w)| (&receivers[i % 4], w.as_slice()))
                .collect();
            let mut results: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
            for _ in 0..iters {
                peek_burst(black_box(&pairs), &mut results);
                black_box(&results);
            }
        }
        "flows" => {
            let pairs: Vec<(&Sa, &[u8])> = wires
                .iter()
                .enumerate()
                .map(|(i, w)| (&receivers[i % 4], w.as_slice()))
                .collect();
            let mut results: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
            for _ in 0..iters {
                peek_burst_flows(black_box(&pairs), &mut results);
                black_box(&results);
            }
        }
        "each" => {
            for _ in 0..iters {
                for (i, w) in black_box(&wires).iter().enumerate() {
                    black_box(receivers[i % 4].peek(w).unwrap());
                }
            }
        }
        "open" => {
            let mut buf = vec![0u8; 2048];
            for _ in 0..iters {
                for (i, w) in black_box(&wires).iter().enumerate() {
                    buf[..w.len()].copy_from_slice(w);
                    let o = receivers[i % 4].open(&mut buf, 0..w.len()).unwrap();
                    black_box(&buf[o.packet]);
                }
            }
        }
        "ratio" => ratio(&receivers, &mut openers, &wires),
        other => eprintln!("unknown mode {other:?}: use burst, flows, each, open or ratio"),
    }
}

/// Wall-clock ratios that survive a noisy machine: the four variants over the same 32 packets,
/// interleaved in short slices for 400 rounds (see `benches/support/interleaved.rs`).
fn ratio(receivers: &[Sa], openers: &mut [Sa], wires: &[Vec<u8>]) {
    let pairs: Vec<(&Sa, &[u8])> = wires
        .iter()
        .enumerate()
        .map(|(i, w)| (&receivers[i % 4], w.as_slice()))
        .collect();
    let mut buf = vec![0u8; 2048];
    let mut infos: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
    let mut flows: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
    let pairs = &pairs;
    let mut variants = [
        Variant {
            name: "open_each",
            packets: 32,
            base: 0,
            run: Box::new(|| {
                for (i, w) in black_box(wires).iter().enumerate() {
                    buf[..w.len()].copy_from_slice(w);
                    let o = openers[i % 4].open(&mut buf, 0..w.len()).unwrap();
                    black_box(&buf[o.packet]);
                }
            }),
        },
        Variant {
            name: "peek_each",
            packets: 32,
            base: 0,
            run: Box::new(|| {
                for &(sa, w) in black_box(pairs) {
                    black_box(sa.peek(w).unwrap());
                }
            }),
        },
        Variant {
            name: "peek_burst",
            packets: 32,
            base: 0,
            run: Box::new(|| {
                peek_burst(black_box(pairs), &mut infos);
                black_box(&infos);
            }),
        },
        Variant {
            name: "peek_burst_flows",
            packets: 32,
            base: 0,
            run: Box::new(|| {
                peek_burst_flows(black_box(pairs), &mut flows);
                black_box(&flows);
            }),
        },
    ];
    println!("ns per packet, median of 400 interleaved rounds; ratio: median of per-round peek/open_each");
    for t in interleave(&mut variants, 400) {
        println!(
            "{:>17} {:7.1} ns  ratio {:.3}",
            t.name, t.ns_per_packet, t.ratio
        );
    }
}
