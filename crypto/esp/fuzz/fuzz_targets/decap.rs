//! Opens arbitrary bytes as an ESP/AH packet: must return an error or a range inside the
//! buffer, never panic, and count every drop.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "sas.rs"]
mod sas;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let mut sa = sas::inbound_sa(selector);
    let mut buf = packet.to_vec();
    let len = buf.len();
    let before = *sa.counters();
    match sa.open(&mut buf, 0..len) {
        Ok(opened) => assert!(opened.packet.end <= len),
        Err(_) => {
            let after = sa.counters();
            let drops = |c: &dvipsec_esp::SaCounters| {
                c.replays + c.auth_failures + c.bad_trailer + c.malformed + c.dummies
            };
            assert_eq!(drops(after), drops(&before) + 1);
        }
    }
});
