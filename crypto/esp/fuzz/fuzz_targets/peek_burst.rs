//! Burst peek over arbitrary packets and SAs: never panics, and every packet's result equals
//! what `Sa::peek` returns for it alone; the compact burst (`peek_burst_flows`) reports the same
//! fields and fails on the same packets with the same error.
//!
//! Input: eight bytes choosing the SAs of the pool (suite, mode, encapsulation, ESN, AH), then
//! repeated records of [selector, length, bytes...]; the selector picks an SA of the pool (several
//! packets may share one), the length byte how many following bytes form the packet.
#![no_main]

use dvipsec_esp::{peek_burst, peek_burst_flows, EspError, PeekFlow, PeekInfo, Sa};
use libfuzzer_sys::fuzz_target;

#[path = "sas.rs"]
mod sas;

/// More than one pass of the burst.
const MAX_PACKETS: usize = 40;

fuzz_target!(|data: &[u8]| {
    let Some((choices, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pool: Vec<Sa> = choices.iter().map(|&c| sas::inbound_sa(c)).collect();
    let mut burst: Vec<(&Sa, &[u8])> = Vec::new();
    while let [selector, length, tail @ ..] = rest {
        if burst.len() == MAX_PACKETS {
            break;
        }
        // A length byte of 0xff takes the whole rest, so packets can be longer than 254 bytes.
        let take = if *length == 0xff {
            tail.len()
        } else {
            usize::from(*length).min(tail.len())
        };
        let (packet, after) = tail.split_at(take);
        burst.push((&pool[usize::from(*selector) % pool.len()], packet));
        rest = after;
    }
    let mut results: Vec<_> = (0..burst.len())
        .map(|_| Err(EspError::DummyPacket))
        .collect();
    assert_eq!(peek_burst(&burst, &mut results), burst.len());
    for (&(sa, packet), result) in burst.iter().zip(&results) {
        assert_eq!(result, &sa.peek(packet));
    }
    let mut flows: Vec<_> = (0..burst.len())
        .map(|_| Err(EspError::DummyPacket))
        .collect();
    assert_eq!(peek_burst_flows(&burst, &mut flows), burst.len());
    for (flow, full) in flows.iter().zip(&results) {
        match (flow, full) {
            (Ok(flow), Ok(full)) => assert_same_fields(flow.unverified(), full.unverified()),
            (Err(flow), Err(full)) => assert_eq!(flow, full),
            (flow, full) => panic!("flows gave {flow:?}, peek gave {full:?}"),
        }
    }
});

fn assert_same_fields(flow: &PeekFlow, full: &PeekInfo) {
    assert_eq!(
        (flow.src(), flow.dst(), flow.protocol, flow.src_port, flow.dst_port),
        (full.src, full.dst, full.protocol, full.src_port, full.dst_port)
    );
    assert_eq!((flow.tcp_flags, flow.syn()), (full.tcp_flags, full.syn));
    assert_eq!(u64::from(flow.seq_lo), full.seq & 0xffff_ffff);
}
