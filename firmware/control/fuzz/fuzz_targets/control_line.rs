//! Arbitrary bytes as a control-socket line: the server's request parser and the client's
//! response parser must answer with a value or an error, never panic. A request that parses
//! must survive a round trip through its own encoding.
#![no_main]

use dvipsec_control::protocol::{
    parse_request, RequestEnvelope, ResponseEnvelope, PROTOCOL_VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_request(data) {
        let line = serde_json::to_vec(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            request: request.clone(),
        })
        .expect("a parsed request encodes");
        assert_eq!(
            parse_request(&line).expect("its own encoding parses"),
            request
        );
    }
    if let Ok(response) = serde_json::from_slice::<ResponseEnvelope>(data) {
        let _ = serde_json::to_vec(&response).expect("a parsed response encodes");
    }
});
