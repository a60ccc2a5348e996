//! Fixed work for instruction counting under callgrind (repeatable where timings are not):
//! 10 000 rounds over the benchmark's burst of 32 1420-byte tunnel packets over four SAs.
//!
//! `valgrind --tool=callgrind target/release/examples/peek_cost burst|flows|each|open [null|tcp]`
//! runs peek_burst, peek_burst_flows, Sa::peek per packet or a full open per packet; `null` uses
//! ESP-null instead of AES-128-GCM, `tcp` an inner TCP segment (ACK) instead of UDP. Divide the collected instructions by 320 000 for a per-packet
//! figure. `peek_cost ratio` (without valgrind) instead times all four interleaved and prints
//! wall-clock ns per packet and peek/open ratios.
use dvipsec_esp::*;
use std::hint::black_box;
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

/// Wall-clock ratios that survive a noisy machine: 400 rounds, each timing every variant over the
/// same 32 packets for about 50 microseconds back to back, so a load change hits all of them
/// alike; prints the median ns per packet and the median of the per-round peek/open ratios.
fn ratio(receivers: &[Sa], opener: &mut [Sa], wires: &[Vec<u8>]) {
    use std::time::Instant;
    let pairs: Vec<(&Sa, &[u8])> = wires
        .iter()
        .enumerate()
        .map(|(i, w)| (&receivers[i % 4], w.as_slice()))
        .collect();
    let mut buf = vec![0u8; 2048];
    let mut infos: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
    let mut flows: Vec<_> = (0..32).map(|_| Err(EspError::DummyPacket)).collect();
    const NAMES: [&str; 4] = ["open_each", "peek_each", "peek_burst", "peek_burst_flows"];
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..400 {
        for (variant, sample) in samples.iter_mut().enumerate() {
            let reps = if variant == 0 { 8 } else { 64 };
            let start = Instant::now();
            for _ in 0..reps {
                match variant {
                    0 => {
                        for (i, w) in black_box(wires).iter().enumerate() {
                            buf[..w.len()].copy_from_slice(w);
                            let o = opener[i % 4].open(&mut buf, 0..w.len()).unwrap();
                            black_box(&buf[o.packet]);
                        }
                    }
                    1 => {
                        for &(sa, w) in black_box(&pairs) {
                            black_box(sa.peek(w).unwrap());
                        }
                    }
                    2 => {
                        peek_burst(black_box(&pairs), &mut infos);
                        black_box(&infos);
                    }
                    _ => {
                        peek_burst_flows(black_box(&pairs), &mut flows);
                        black_box(&flows);
                    }
                }
            }
            sample.push(start.elapsed().as_nanos() as f64 / (reps * 32) as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let opens = samples[0].clone();
    println!(
        "ns per packet, median of 400 interleaved rounds (ratio: median of per-round peek/open)"
    );
    for (name, sample) in NAMES.iter().zip(&mut samples) {
        let mut ratios: Vec<f64> = sample.iter().zip(&opens).map(|(p, o)| p / o).collect();
        let ns = median(sample);
        println!("{name:>17} {ns:7.1} ns  ratio {:.3}", median(&mut ratios));
    }
}
