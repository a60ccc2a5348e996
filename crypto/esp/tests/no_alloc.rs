//! The per-packet calls (seal, open, peek) never touch the heap: dhat's counting allocator sees
//! no new allocation across many packets of every suite. Built with `harness = false`, so no
//! test-runner thread allocates while it counts.

mod common;

use common::*;
use dvipsec_esp::{IpsecProtocol, Mode, Suite};
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() {
    seal_open_and_peek_do_not_allocate();
    println!("seal, open and peek made no heap allocation");
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
