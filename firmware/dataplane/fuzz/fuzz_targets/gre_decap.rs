//! Any bytes given to the GRE parser: an error or a payload range inside the packet, never a panic.
#![no_main]

use dvipsec_dataplane::gre;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = gre::decapsulate(data) {
        assert!(d.payload.start <= d.payload.end && d.payload.end <= data.len());
        assert!(gre::family_of(&data[d.payload.clone()]).is_some());
    }
    if let Ok(h) = gre::parse_header(data, 0) {
        assert!(h.len <= data.len());
    }
});
