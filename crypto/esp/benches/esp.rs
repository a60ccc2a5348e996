//! Seal/open per suite at 64, 576 and 1420 bytes and IMIX, the raw aws-lc-rs AEAD on the same
//! sizes as the baseline, peek against a full open at 1420 bytes, and burst peek against a full
//! open of the same 32-packet burst over four SAs.
//!
//! Every seal iteration first copies the plaintext into the buffer (seal works in place), and so
//! does the raw AEAD baseline, so the ratio compares like with like.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

fn bench_peek(c: &mut Criterion) {
    let mut group = c.benchmark_group("peek-vs-open-1420B");
    group.throughput(Throughput::Elements(1));
    for suite in Suite::ALL {
        let (wires, mut sa) = sealed_frames(suite, &[1420]);
        group.bench_function(BenchmarkId::new("peek", suite.name()), |b| {
            b.iter(|| {
                // What the distributor uses: the flow key and whether it is a SYN.
                let flow = sa.peek(black_box(&wires[0])).unwrap().into_unverified();
                black_box((
                    flow.src,
                    flow.src_port,
                    flow.dst_port,
                    flow.protocol,
                    flow.syn,
                ))
            })
        });
        let mut buf = vec![0u8; 2048];
        group.bench_function(BenchmarkId::new("open", suite.name()), |b| {
            b.iter(|| open_all(&wires, &mut buf, &mut sa))
        });
    }
    group.finish();
}

/// Packets of a distributor burst and how many SAs they are spread over.
const BURST: usize = 32;
const BURST_SAS: usize = 4;

/// A burst of 32 sealed 1420-byte packets over four SAs of `suite` (packet i from SA i % 4) and
/// the four inbound SAs.
fn sealed_burst(suite: Suite) -> (Vec<Vec<u8>>, Vec<Sa>) {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for n in 0..BURST_SAS as u32 {
        let mut out = config(suite, Direction::Outbound);
        out.spi += n;
        out.keys = SaKeys::new(
            &vec![0x42 + n as u8; suite.enc_key_len()],
            &vec![0x24; suite.auth_key_len()],
        );
        let mut inb = out.clone();
        inb.direction = Direction::Inbound;
        senders.push(Sa::new(out).unwrap());
        receivers.push(Sa::new(inb).unwrap());
    }
    let mut frames = Frames::new(&[1420]);
    let packet = frames.packets[0].clone();
    let wires = (0..BURST)
        .map(|i| {
            frames.buf[MAX_HEADROOM..MAX_HEADROOM + packet.len()].copy_from_slice(&packet);
            let range = MAX_HEADROOM..MAX_HEADROOM + packet.len();
            let sealed = senders[i % BURST_SAS].seal(&mut frames.buf, range).unwrap();
            frames.buf[sealed.packet].to_vec()
        })
        .collect();
    (wires, receivers)
}

/// Per packet, same 32 packets in each: burst peek (full and compact result), peek one by one,
/// and a full open of each.
fn bench_burst_peek(c: &mut Criterion) {
    let mut group = c.benchmark_group("burst32-4sa-1420B");
    group.throughput(Throughput::Elements(BURST as u64));
    for suite in [Suite::Aes128Gcm16, Suite::Aes256Gcm16] {
        let (wires, mut sas) = sealed_burst(suite);
        let pairs: Vec<(&Sa, &[u8])> = wires
            .iter()
            .enumerate()
            .map(|(i, w)| (&sas[i % BURST_SAS], w.as_slice()))
            .collect();
        let mut results: Vec<_> = (0..BURST).map(|_| Err(EspError::DummyPacket)).collect();
        group.bench_function(BenchmarkId::new("peek_burst", suite.name()), |b| {
            b.iter(|| {
                peek_burst(black_box(&pairs), &mut results);
                black_box(&results);
            })
        });
        let mut flows: Vec<_> = (0..BURST).map(|_| Err(EspError::DummyPacket)).collect();
        group.bench_function(BenchmarkId::new("peek_burst_flows", suite.name()), |b| {
            b.iter(|| {
                peek_burst_flows(black_box(&pairs), &mut flows);
                black_box(&flows);
            })
        });
        group.bench_function(BenchmarkId::new("peek_each", suite.name()), |b| {
            b.iter(|| {
                for &(sa, packet) in black_box(&pairs) {
                    black_box(sa.peek(packet).unwrap());
                }
            })
        });
        drop(pairs);
        let mut buf = vec![0u8; 2048];
        group.bench_function(BenchmarkId::new("open_each", suite.name()), |b| {
            b.iter(|| {
                for (i, w) in black_box(&wires).iter().enumerate() {
                    buf[..w.len()].copy_from_slice(w);
                    let opened = sas[i % BURST_SAS].open(&mut buf, 0..w.len()).unwrap();
                    black_box(&buf[opened.packet]);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_raw_aead,
    bench_seal,
    bench_open,
    bench_pps,
    bench_peek,
    bench_burst_peek
);
criterion_main!(benches);
