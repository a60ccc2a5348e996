//! ESP AES-128-GCM seal (UDP-encapsulated tunnel mode) through the crypto_aesni_gcm cryptodev
//! against the software path (aws-lc-rs), same SA shape and sizes, in one run: compare the two
//! as a ratio. Needs root (DPDK EAL); run with `--features dpdk`.

#[path = "../tests/common/ipv4.rs"]
mod ipv4;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dvipsec_dpdk::{Cryptodev, CryptodevProvider, Eal};
use dvipsec_esp::{
    AeadProvider, AwsLcProvider, Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints,
    UdpEncap, MAX_HEADROOM, MAX_TAILROOM,
};

fn outbound(provider: &dyn AeadProvider) -> Sa {
    let mut c = SaConfig::new(
        0x1234,
        Direction::Outbound,
        Suite::Aes128Gcm16,
        SaKeys::new(&[7u8; 20], &[]),
    );
    c.mode = Mode::Tunnel;
    c.tunnel = Some(TunnelEndpoints {
        src: "192.0.2.1".parse().unwrap(),
        dst: "192.0.2.2".parse().unwrap(),
    });
    c.udp_encap = Some(UdpEncap {
        src_port: 4500,
        dst_port: 4500,
    });
    Sa::with_provider(c, provider).unwrap()
}

fn inner(total: usize) -> Vec<u8> {
    let mut p = vec![0xa5u8; total];
    p[..20].copy_from_slice(&ipv4::ipv4_udp_header(total));
    p
}

fn seal_benches(c: &mut Criterion) {
    let prefix = format!("dvs_bench_{}", std::process::id());
    let eal = Eal::init(Eal::args_without_hugepages(&prefix, &["crypto_aesni_gcm0"]))
        .expect("EAL (needs root)");
    let device = Cryptodev::open(eal, "crypto_aesni_gcm0").expect("crypto_aesni_gcm0");
    let offload = CryptodevProvider::new(Arc::clone(&device));
    let mut group = c.benchmark_group("esp_seal_aes128gcm");
    for total in [64usize, 1420] {
        let packet = inner(total);
        group.throughput(Throughput::Bytes(total as u64));
        let providers: [(&str, &dyn AeadProvider); 2] =
            [("software", &AwsLcProvider), ("cryptodev", &offload)];
        for (name, provider) in providers {
            let mut sa = outbound(provider);
            let mut buf = vec![0u8; MAX_HEADROOM + total + MAX_TAILROOM];
            let range = MAX_HEADROOM..MAX_HEADROOM + total;
            let mut seq = 0u64;
            group.bench_with_input(BenchmarkId::new(name, total), &total, |b, _| {
                b.iter(|| {
                    seq += 1;
                    buf[range.clone()].copy_from_slice(&packet);
                    sa.seal_with_seq(&mut buf, range.clone(), seq).unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, seal_benches);
criterion_main!(benches);
