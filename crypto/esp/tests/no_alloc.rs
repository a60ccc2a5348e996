//! The per-packet calls (seal, open, peek) never touch the heap: dhat's counting allocator sees
//! no new allocation across many packets of every suite. Built with `harness = false`, so no
//! test-runner thread allocates while it counts.

mod common;

use common::*;
use dvipsec_esp::{peek_burst, peek_burst_flows, EspError, IpsecProtocol, Mode, Sa, Suite};
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() {
    seal_open_and_peek_do_not_allocate();
    burst_peek_does_not_allocate();
    println!("seal, open, peek and burst peek made no heap allocation");
}

fn seal_open_and_peek_do_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for suite in Suite::ALL {
        for mode in [Mode::Transport, Mode::Tunnel] {
            for protocol in [IpsecProtocol::Esp, IpsecProtocol::Ah] {
                if protocol == IpsecProtocol::Ah && suite != Suite::NullHmacSha256 {
                    continue;
                }
                let mut shape = Shape::esp(suite, mode);
                shape.protocol = protocol;
                shape.esn = true;
                shape.udp_encap = protocol == IpsecProtocol::Esp;
                let (mut out, mut inb) = pair(shape);
                let packet = ipv4(TCP, 1, 2, 0x02, 600);
                let mut buf = vec![0u8; HEAD + packet.len() + TAIL];
                let before = dhat::HeapStats::get().total_blocks;
                for _ in 0..50 {
                    buf[HEAD..HEAD + packet.len()].copy_from_slice(&packet);
                    let sealed = out.seal(&mut buf, HEAD..HEAD + packet.len()).unwrap();
                    let flow = inb.peek(&buf[sealed.packet.clone()]).unwrap();
                    assert!(flow.unverified().syn);
                    let opened = inb.open(&mut buf, sealed.packet).unwrap();
                    assert_eq!(opened.packet.len(), packet.len());
                }
                let after = dhat::HeapStats::get().total_blocks;
                assert_eq!(after, before, "{suite} {mode:?} {protocol:?}");
            }
        }
    }
}

/// A 40-packet burst over three SAs (two passes): nothing on the heap.
fn burst_peek_does_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let suites = [
        Suite::Aes128Gcm16,
        Suite::Aes256Gcm16,
        Suite::ChaCha20Poly1305,
    ];
    let mut pairs: Vec<(Sa, Sa)> = suites
        .iter()
        .map(|&suite| pair(Shape::esp(suite, Mode::Tunnel)))
        .collect();
    let wires: Vec<Vec<u8>> = (0..40)
        .map(|i| seal(&mut pairs[i % 3].0, &ipv4(TCP, 7, 8, 0x02, 1300)))
        .collect();
    let burst: Vec<(&Sa, &[u8])> = wires
        .iter()
        .enumerate()
        .map(|(i, w)| (&pairs[i % 3].1, w.as_slice()))
        .collect();
    let mut results: Vec<_> = (0..burst.len())
        .map(|_| Err(EspError::DummyPacket))
        .collect();
    let mut flows: Vec<_> = (0..burst.len())
        .map(|_| Err(EspError::DummyPacket))
        .collect();
    let before = dhat::HeapStats::get().total_blocks;
    for _ in 0..20 {
        assert_eq!(peek_burst(&burst, &mut results), burst.len());
        assert_eq!(peek_burst_flows(&burst, &mut flows), burst.len());
    }
    let after = dhat::HeapStats::get().total_blocks;
    assert_eq!(after, before, "burst peek allocated");
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_ok_and(|f| f.unverified().syn)));
    assert!(flows
        .iter()
        .all(|r| r.as_ref().is_ok_and(|f| f.unverified().syn())));
}
