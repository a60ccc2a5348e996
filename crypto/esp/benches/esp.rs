//! Seal/open per suite at 64, 576 and 1420 bytes and IMIX, the raw aws-lc-rs AEAD on the same
//! sizes as the baseline, and peek against a full open at 1420 bytes: for AES-GCM (issue 3) in
//! one group with every peek variant (single, each of a 32-packet burst over four SAs,
//! `peek_burst`, `peek_burst_flows`) and the ratios printed per packet; for the other suites
//! single peek against single open. `cargo bench -p dvipsec-esp --bench esp -- peek` runs both.
//!
//! Every seal iteration first copies the plaintext into the buffer (seal works in place), and so
//! does the raw AEAD baseline, so the ratio compares like with like.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use interleaved::{interleave, Variant};
#[path = "support/interleaved.rs"]
mod interleaved;

use dvipsec_esp::{
    peek_burst, peek_burst_flows, Direction, EspError, Mode, Sa, SaConfig, SaKeys, Suite,
    TunnelEndpoints, MAX_HEADROOM, MAX_TAILROOM,
};

const SIZES: [usize; 3] = [64, 576, 1420];
/// Simple IMIX: 7 x 64, 4 x 576, 1 x 1420 bytes.
const IMIX: [usize; 12] = [64, 64, 64, 576, 64, 64, 576, 64, 576, 64, 576, 1420];

fn udp_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..24].copy_from_slice(&[0x30, 0x39, 0x01, 0xbb]);
    p
}

fn config(suite: Suite, direction: Direction) -> SaConfig {
    let enc = vec![0x42; suite.enc_key_len()];
    let auth = vec![0x24; suite.auth_key_len()];
    let mut c = SaConfig::new(0x1234_5678, direction, suite, SaKeys::new(&enc, &auth));
    c.mode = Mode::Tunnel;
    c.tunnel = Some(TunnelEndpoints {
        src: "192.0.2.1".parse().unwrap(),
        dst: "192.0.2.2".parse().unwrap(),
    });
    // Benchmarks open the same packet many times: no anti-replay on the receiver.
    c.replay_window = 0;
    c
}

struct Frames {
    packets: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Frames {
    fn new(sizes: &[usize]) -> Self {
        Frames {
            packets: sizes.iter().map(|&s| udp_packet(s)).collect(),
            buf: vec![0u8; MAX_HEADROOM + 1500 + MAX_TAILROOM],
        }
    }

    fn total_bytes(&self) -> u64 {
        self.packets.iter().map(|p| p.len() as u64).sum()
    }

    fn seal_all(&mut self, sa: &mut Sa) {
        for p in &self.packets {
            self.buf[MAX_HEADROOM..MAX_HEADROOM + p.len()].copy_from_slice(p);
            let sealed = sa
                .seal(&mut self.buf, MAX_HEADROOM..MAX_HEADROOM + p.len())
                .unwrap();
            black_box(&self.buf[sealed.packet]);
        }
    }
}

fn bench_seal(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut group = c.benchmark_group(format!("seal/{suite}"));
        for (name, sizes) in size_sets() {
            let mut frames = Frames::new(&sizes);
            let mut sa = Sa::new(config(suite, Direction::Outbound)).unwrap();
            group.throughput(Throughput::Bytes(frames.total_bytes()));
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| frames.seal_all(&mut sa))
            });
        }
        group.finish();
    }
}

fn size_sets() -> Vec<(String, Vec<usize>)> {
    let mut sets: Vec<(String, Vec<usize>)> =
        SIZES.iter().map(|&s| (s.to_string(), vec![s])).collect();
    sets.push(("imix".to_string(), IMIX.to_vec()));
    sets
}

/// Sealed copies of the packets and an inbound SA to open them.
fn sealed_frames(suite: Suite, sizes: &[usize]) -> (Vec<Vec<u8>>, Sa) {
    let mut out = Sa::new(config(suite, Direction::Outbound)).unwrap();
    let mut frames = Frames::new(sizes);
    let mut wires = Vec::new();
    for p in &frames.packets {
        frames.buf[MAX_HEADROOM..MAX_HEADROOM + p.len()].copy_from_slice(p);
        let sealed = out
            .seal(&mut frames.buf, MAX_HEADROOM..MAX_HEADROOM + p.len())
            .unwrap();
        wires.push(frames.buf[sealed.packet].to_vec());
    }
    (wires, Sa::new(config(suite, Direction::Inbound)).unwrap())
}

fn open_all(wires: &[Vec<u8>], buf: &mut [u8], sa: &mut Sa) {
    for w in wires {
        buf[..w.len()].copy_from_slice(w);
        let opened = sa.open(buf, 0..w.len()).unwrap();
        black_box(&buf[opened.packet]);
    }
}

fn bench_open(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut group = c.benchmark_group(format!("open/{suite}"));
        for (name, sizes) in size_sets() {
            let (wires, mut sa) = sealed_frames(suite, &sizes);
            let mut buf = vec![0u8; 2048];
            group.throughput(Throughput::Bytes(sizes.iter().map(|&s| s as u64).sum()));
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| open_all(&wires, &mut buf, &mut sa))
            });
        }
        group.finish();
    }
}

/// The raw AEAD on a buffer of the packet's size, with the same copy-in as seal.
fn bench_raw_aead(c: &mut Criterion) {
    let algorithms: [(&str, &'static aead::Algorithm); 3] = [
        ("aes128gcm", &aead::AES_128_GCM),
        ("aes256gcm", &aead::AES_256_GCM),
        ("chacha20poly1305", &aead::CHACHA20_POLY1305),
    ];
    for (name, algorithm) in algorithms {
        let key =
            LessSafeKey::new(UnboundKey::new(algorithm, &vec![0x42; algorithm.key_len()]).unwrap());
        let mut group = c.benchmark_group(format!("raw-aead/{name}"));
        for (set, sizes) in size_sets() {
            let packets: Vec<Vec<u8>> = sizes.iter().map(|&s| udp_packet(s)).collect();
            let mut buf = vec![0u8; 1500];
            let mut counter = 0u64;
            group.throughput(Throughput::Bytes(sizes.iter().map(|&s| s as u64).sum()));
            group.bench_function(BenchmarkId::from_parameter(&set), |b| {
                b.iter(|| {
                    for p in &packets {
                        counter += 1;
                        let mut nonce = [0u8; 12];
                        nonce[4..].copy_from_slice(&counter.to_be_bytes());
                        let data = &mut buf[..p.len()];
                        data.copy_from_slice(p);
                        let tag = key
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(nonce),
                                Aad::from([0u8; 8]),
                                data,
                            )
                            .unwrap();
                        black_box(&tag);
                    }
                })
            });
        }
        group.finish();
    }
}

/// Packets per second at 64 bytes: one element per iteration.
fn bench_pps(c: &mut Criterion) {
    let mut group = c.benchmark_group("pps-64B");
    group.throughput(Throughput::Elements(1));
    for suite in [
        Suite::Aes128Gcm16,
        Suite::Aes256Gcm16,
        Suite::ChaCha20Poly1305,
    ] {
        let mut frames = Frames::new(&[64]);
        let mut sa = Sa::new(config(suite, Direction::Outbound)).unwrap();
        group.bench_function(BenchmarkId::new("seal", suite.name()), |b| {
            b.iter(|| frames.seal_all(&mut sa))
        });
        let (wires, mut inb) = sealed_frames(suite, &[64]);
        let mut buf = vec![0u8; 2048];
        group.bench_function(BenchmarkId::new("open", suite.name()), |b| {
            b.iter(|| open_all(&wires, &mut buf, &mut inb))
        });
    }
    group.finish();
}

/// Single peek against single open of the same 1420-byte packet, for the suites the ratio group
/// below does not cover.
fn bench_peek(c: &mut Criterion) {
    let group_name = "peek-vs-open-1420B";
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    let suites: Vec<Suite> = Suite::ALL
        .into_iter()
        .filter(|s| !RATIO_SUITES.contains(s))
        .collect();
    for &suite in &suites {
        let (wires, mut sa) = sealed_frames(suite, &[1420]);
        group.bench_function(BenchmarkId::new("peek", suite.name()), |b| {
            b.iter(|| distributor_peek(&sa, &wires[0]))
        });
        let mut buf = vec![0u8; 2048];
        group.bench_function(BenchmarkId::new("open", suite.name()), |b| {
            b.iter(|| open_all(&wires, &mut buf, &mut sa))
        });
    }
    group.finish();
    for suite in suites {
        print_ratios(group_name, suite, &[("open", 1), ("peek", 1)]);
    }
}

/// What the distributor reads from a single peek: the flow key and whether it is a SYN.
fn distributor_peek(sa: &Sa, wire: &[u8]) {
    let flow = sa.peek(black_box(wire)).unwrap().into_unverified();
    black_box((
        flow.src,
        flow.src_port,
        flow.dst_port,
        flow.protocol,
        flow.syn,
    ));
}

/// Suites of the issue-3 target (peek at most a tenth of a full open at 1420 bytes).
const RATIO_SUITES: [Suite; 2] = [Suite::Aes128Gcm16, Suite::Aes256Gcm16];

/// Packets of a distributor burst and how many SAs they are spread over.
const BURST: usize = 32;
const BURST_SAS: usize = 4;

/// Configuration of SA `n` (0..4) of the burst, in `direction`.
fn burst_config(suite: Suite, n: usize, direction: Direction) -> SaConfig {
    let mut c = config(suite, direction);
    c.spi += n as u32;
    c.keys = SaKeys::new(
        &vec![0x42 + n as u8; suite.enc_key_len()],
        &vec![0x24; suite.auth_key_len()],
    );
    c
}

/// The burst's four inbound SAs (built again for each user: open needs them mutable).
fn burst_receivers(suite: Suite) -> Vec<Sa> {
    (0..BURST_SAS)
        .map(|n| Sa::new(burst_config(suite, n, Direction::Inbound)).unwrap())
        .collect()
}

/// A burst of 32 sealed 1420-byte packets over four SAs of `suite` (packet i from SA i % 4).
fn sealed_burst(suite: Suite) -> Vec<Vec<u8>> {
    let mut senders: Vec<Sa> = (0..BURST_SAS)
        .map(|n| Sa::new(burst_config(suite, n, Direction::Outbound)).unwrap())
        .collect();
    let mut frames = Frames::new(&[1420]);
    let packet = frames.packets[0].clone();
    (0..BURST)
        .map(|i| {
            frames.buf[MAX_HEADROOM..MAX_HEADROOM + packet.len()].copy_from_slice(&packet);
            let range = MAX_HEADROOM..MAX_HEADROOM + packet.len();
            let sealed = senders[i % BURST_SAS].seal(&mut frames.buf, range).unwrap();
            frames.buf[sealed.packet].to_vec()
        })
        .collect()
}

/// The issue-3 ratio group: for AES-GCM, in one run and one group, every way to peek against a
/// full open, all on 1420-byte tunnel packets and all reported per packet (criterion's elem/s).
/// `open` and `peek` take one packet; the `_each` and burst variants take the same 32 packets
/// over four SAs. After the group the medians are printed as ns per packet and as peek/open, and
/// the same variants are timed once more interleaved (see `support/interleaved.rs`), whose
/// ratios hold when the machine's load changes between criterion's measurements.
fn bench_peek_ratio(c: &mut Criterion) {
    let group_name = "peek-ratio-1420B";
    for suite in RATIO_SUITES {
        let (wires, mut opener) = sealed_frames(suite, &[1420]);
        let peeker = Sa::new(config(suite, Direction::Inbound)).unwrap();
        let burst = sealed_burst(suite);
        let mut burst_openers = burst_receivers(suite);
        let burst_peekers = burst_receivers(suite);
        let pairs: Vec<(&Sa, &[u8])> = burst
            .iter()
            .enumerate()
            .map(|(i, w)| (&burst_peekers[i % BURST_SAS], w.as_slice()))
            .collect();
        let mut variants =
            ratio_variants(&wires[0], &mut opener, &peeker, &pairs, &mut burst_openers);
        let mut group = c.benchmark_group(group_name);
        for variant in &mut variants {
            group.throughput(Throughput::Elements(variant.packets as u64));
            group.bench_function(BenchmarkId::new(variant.name, suite.name()), |b| {
                b.iter(|| (variant.run)())
            });
        }
        group.finish();
        let names: Vec<(&str, usize)> = variants.iter().map(|v| (v.name, v.packets)).collect();
        print_ratios(group_name, suite, &names);
        // Only when criterion ran this group (a filter may have left it out).
        if median_ns(group_name, "open", suite.name()).is_some() {
            for t in interleave(&mut variants, 300) {
                println!(
                    "interleaved {group_name} {suite}: {} {:.1} ns/pkt (= {:.3} of its open)",
                    t.name, t.ns_per_packet, t.ratio
                );
            }
        }
    }
}

/// The variants of the ratio group: single open and peek of one packet, then open, peek, burst
/// peek and compact burst peek of the same 32 packets; each peek is compared with the open of
/// the same packets.
fn ratio_variants<'a>(
    wire: &'a [u8],
    opener: &'a mut Sa,
    peeker: &'a Sa,
    pairs: &'a [(&'a Sa, &'a [u8])],
    burst_openers: &'a mut [Sa],
) -> Vec<Variant<'a>> {
    let mut buf = vec![0u8; 2048];
    let mut burst_buf = vec![0u8; 2048];
    let mut infos: Vec<_> = (0..BURST).map(|_| Err(EspError::DummyPacket)).collect();
    let mut flows: Vec<_> = (0..BURST).map(|_| Err(EspError::DummyPacket)).collect();
    vec![
        Variant {
            name: "open",
            packets: 1,
            base: 0,
            run: Box::new(move || {
                buf[..wire.len()].copy_from_slice(black_box(wire));
                let opened = opener.open(&mut buf, 0..wire.len()).unwrap();
                black_box(&buf[opened.packet]);
            }),
        },
        Variant {
            name: "peek",
            packets: 1,
            base: 0,
            run: Box::new(move || distributor_peek(peeker, wire)),
        },
        Variant {
            name: "open_each",
            packets: BURST,
            base: 2,
            run: Box::new(move || {
                for (i, &(_, w)) in black_box(pairs).iter().enumerate() {
                    burst_buf[..w.len()].copy_from_slice(w);
                    let opened = burst_openers[i % BURST_SAS]
                        .open(&mut burst_buf, 0..w.len())
                        .unwrap();
                    black_box(&burst_buf[opened.packet]);
                }
            }),
        },
        Variant {
            name: "peek_each",
            packets: BURST,
            base: 2,
            run: Box::new(move || {
                for &(sa, packet) in black_box(pairs) {
                    distributor_peek(sa, packet);
                }
            }),
        },
        Variant {
            name: "peek_burst",
            packets: BURST,
            base: 2,
            run: Box::new(move || {
                peek_burst(black_box(pairs), &mut infos);
                black_box(&infos);
            }),
        },
        Variant {
            name: "peek_burst_flows",
            packets: BURST,
            base: 2,
            run: Box::new(move || {
                peek_burst_flows(black_box(pairs), &mut flows);
                black_box(&flows);
            }),
        },
    ]
}

/// Prints, for the benchmarks of `group` that ran in this process, the median ns per packet and
/// each peek's share of a full open: single peek against single open, the 32-packet variants
/// against `open_each` of the same packets. `variants` pairs a benchmark with its packets per
/// iteration. Criterion keeps no results in memory, so this reads the estimates it just wrote.
fn print_ratios(group: &str, suite: Suite, variants: &[(&str, usize)]) {
    let per_packet = |name: &str, packets: usize| {
        median_ns(group, name, suite.name()).map(|ns| ns / packets as f64)
    };
    if per_packet("open", 1).is_none() {
        // The group did not run (filtered out).
        return;
    }
    let mut line = format!("ratio {group} {suite}:");
    for &(name, packets) in variants {
        let Some(ns) = per_packet(name, packets) else {
            continue;
        };
        line += &format!(" {name} {ns:.1} ns/pkt");
        let base = if name.starts_with("peek_") {
            "open_each"
        } else {
            "open"
        };
        let base_packets = if base == "open" { 1 } else { BURST };
        if let (true, Some(open)) = (name.starts_with("peek"), per_packet(base, base_packets)) {
            line += &format!(" (= {:.3} of {base})", ns / open);
        }
        line += ";";
    }
    println!("{line}");
}

/// Criterion's median for one benchmark, if this process wrote it.
fn median_ns(group: &str, function: &str, parameter: &str) -> Option<f64> {
    let path = criterion_home()?
        .join(group)
        .join(function)
        .join(parameter)
        .join("new/estimates.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if written < *STARTED.get()? {
        return None;
    }
    let json = std::fs::read_to_string(path).ok()?;
    // {"mean":{...},"median":{"confidence_interval":{...},"point_estimate":N,...},...}
    let median = &json[json.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

/// Where criterion writes: $CRITERION_HOME, $CARGO_TARGET_DIR/criterion, or the target
/// directory the bench executable lives in (target/release/deps/esp-...).
fn criterion_home() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(std::path::PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

fn note_start(_: &mut Criterion) {
    STARTED.get_or_init(std::time::SystemTime::now);
}

criterion_group!(
    benches,
    note_start,
    bench_raw_aead,
    bench_seal,
    bench_open,
    bench_pps,
    bench_peek,
    bench_peek_ratio
);
criterion_main!(benches);
