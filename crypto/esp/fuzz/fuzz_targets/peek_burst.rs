//! Burst peek over arbitrary packets and SAs: never panics, and every packet's result equals
//! what `Sa::peek` returns for it alone.
//!
//! Input: eight bytes choosing the SAs of the pool (suite, mode, encapsulation, ESN, AH), then
//! repeated records of [selector, length, bytes...]; the selector picks an SA of the pool (several
//! packets may share one), the length byte how many following bytes form the packet.
#![no_main]

use dvipsec_esp::{peek_burst, EspError, Sa};
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
});
