//! Peeks into arbitrary bytes: must return an error or a flow, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "sas.rs"]
mod sas;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let sa = sas::inbound_sa(selector);
    if let Ok(flow) = sa.peek(packet) {
        let flow = flow.into_unverified();
        assert_eq!(flow.spi, 0x0102_0304);
        assert!(!flow.syn || flow.tcp_flags.is_some());
    }
});
