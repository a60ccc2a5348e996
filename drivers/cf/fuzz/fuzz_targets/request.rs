//! Fuzzes what the CF server does with a frame from the network: the length prefix, the request
//! decoder, and the core answering whatever decodes.

#![no_main]

use dvipsec_cf::proto::{decode_request, encode_request, frame_length};
use dvipsec_cf::server::{BlockSizes, ServerCore, StateStore};
use libfuzzer_sys::fuzz_target;

/// Keeps nothing; the fuzzer is about decoding and answering, not about files.
struct NoStore;

impl StateStore for NoStore {
    fn save(&mut self, _image: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let _ = frame_length(*prefix);
    let Ok(request) = decode_request(body) else {
        return;
    };
    // What decodes re-encodes to the same bytes.
    let encoded = encode_request(&request);
    assert_eq!(&encoded[4..], body);
    let mut core = ServerCore::fresh(
        NoStore,
        BlockSizes {
            outbound: 8,
            replay: 8,
        },
        1,
    )
    .expect("core");
    // Twice, so that later operations meet the slots the first pass allocated.
    for _ in 0..2 {
        assert_eq!(core.handle(&request).len(), request.ops.len());
    }
});
