//! In-memory fabric throughput for bursts of 32 frames, against copying the same bytes.
//!
//! For each frame size, three measurements in one run, all reported as frames/s:
//! - `memcpy_baseline`: copy 32 frames' bytes into 32 preallocated buffers (the floor any
//!   port that copies must pay);
//! - `alloc_fill_send_receive_free`: what a sender and receiver do per burst: take 32 buffers
//!   from the pool, write each frame (one copy), send, receive, drop them back to the pool;
//! - `pool_alloc_free_only`: take 32 buffers from the pool and drop them back;
//! - `send_receive_only`: 32 ready frames moved through the wire and back into the burst,
//!   touching no frame bytes (the forwarding path).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dvipsec_ports::{wire, Burst, FabricConfig, PacketPort};

const BURST: usize = 32;

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn bench_size(c: &mut Criterion, len: usize) {
    let mut group = c.benchmark_group(format!("fabric_burst32_{len}B"));
    group.throughput(Throughput::Elements(BURST as u64));
    let bytes = frame(len);

    let mut targets: Vec<Vec<u8>> = (0..BURST).map(|_| vec![0u8; 2048]).collect();
    group.bench_function(BenchmarkId::new("memcpy_baseline", len), |b| {
        b.iter(|| {
            for target in targets.iter_mut() {
                target[..len].copy_from_slice(black_box(&bytes));
            }
            black_box(&targets);
        })
    });

    let (mut tx, mut rx) = wire("a", "b", FabricConfig::esp_default()).expect("fabric");
    let mut burst = Burst::with_capacity(BURST);
    group.bench_function(BenchmarkId::new("alloc_fill_send_receive_free", len), |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let mut buf = tx.alloc_tx().expect("pool");
                buf.set_frame(black_box(&bytes)).expect("fits");
                let _ = burst.push(buf);
            }
            tx.tx_burst(&mut burst);
            rx.rx_burst(&mut burst);
            black_box(burst.frames());
            burst.clear();
        })
    });

    group.bench_function(BenchmarkId::new("pool_alloc_free_only", len), |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let _ = burst.push(tx.alloc_tx().expect("pool"));
            }
            black_box(burst.frames());
            burst.clear();
        })
    });

    for _ in 0..BURST {
        let mut buf = tx.alloc_tx().expect("pool");
        buf.set_frame(&bytes).expect("fits");
        let _ = burst.push(buf);
    }
    group.bench_function(BenchmarkId::new("send_receive_only", len), |b| {
        b.iter(|| {
            tx.tx_burst(&mut burst);
            rx.rx_burst(&mut burst);
            black_box(burst.frames());
        })
    });
    assert_eq!(tx.counters().total_drops(), 0, "the bench must not drop");
    group.finish();
}

fn fabric(c: &mut Criterion) {
    bench_size(c, 64);
    bench_size(c, 1420);
}

criterion_group!(benches, fabric);
criterion_main!(benches);
