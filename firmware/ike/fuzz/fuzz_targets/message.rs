//! The message parser: header, payload chain and every payload body. Whatever decodes must
//! re-emit to bytes that decode to the same payloads.
#![no_main]

use dvipsec_ike::wire::{emit_chain, parse_chain, HeaderView, Payload};
use libfuzzer_sys::fuzz_target;

fn decode_all(buf: &[u8], first: u8) -> Option<Vec<Payload>> {
    let raws = parse_chain(buf, 0, first).ok()?;
    raws.iter()
        .map(|r| Payload::decode(r.kind, r.critical, r.body, r.offset + 4).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = HeaderView::new_checked(data) {
        let _ = view.header();
        if let Ok(raws) = view.payloads() {
            for raw in raws {
                let _ = Payload::decode(raw.kind, raw.critical, raw.body, raw.offset + 4);
            }
        }
    }
    // The same bytes as a bare payload chain whose first type is the first byte.
    if let Some((&first, rest)) = data.split_first() {
        if let Some(payloads) = decode_all(rest, first) {
            // SK and unknown kinds are kept opaque; they re-emit byte for byte too.
            let mut emitted = Vec::new();
            let first_again = emit_chain(&payloads, &mut emitted);
            if !payloads.is_empty() {
                let again = decode_all(&emitted, first_again).expect("re-emitted chain decodes");
                assert_eq!(again, payloads);
            }
        }
    }
});
