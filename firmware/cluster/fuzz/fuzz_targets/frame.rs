//! Feeds arbitrary bytes to the XCF frame decoder. A frame that decodes must encode back
//! to the same bytes (the encoding is canonical).
#![no_main]

use dvipsec_cluster::wire::{frame_len, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data);
    if let Ok(frame) = Frame::decode(data) {
        let encoded = frame.encode().expect("a decoded frame encodes");
        assert_eq!(&encoded[..], data);
    }
});
