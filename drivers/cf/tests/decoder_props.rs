//! Properties of the request decoder: never panics, round-trips everything it accepts, and
//! rejects every strict prefix of a valid request.

use dvipsec_cf::proto::{decode_request, encode_request, Op, Request};
use dvipsec_cf::{Direction, SlotId, SlotKey};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let key = (any::<[u8; 4]>(), any::<u32>()).prop_map(|(a, spi)| SlotKey {
        dvipa: std::net::IpAddr::from(a),
        spi,
    });
    let slot = any::<u64>().prop_map(SlotId);
    prop_oneof![
        Just(Op::Hello),
        Just(Op::Stats),
        (key.clone(), any::<u32>()).prop_map(|(key, window)| Op::Allocate { key, window }),
        key.prop_map(|key| Op::Lookup { key }),
        slot.clone().prop_map(|slot| Op::Release { slot }),
        (slot.clone(), any::<u32>()).prop_map(|(slot, count)| Op::FetchAdd { slot, count }),
        (slot.clone(), any::<u64>()).prop_map(|(slot, seq)| Op::ReplayCheck { slot, seq }),
        (slot.clone(), any::<u64>()).prop_map(|(slot, seq)| Op::ReplayCheckAndSet { slot, seq }),
        (slot.clone(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
            |(slot, inbound, bytes, packets)| {
                let direction = if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                Op::LifesizeAdd {
                    slot,
                    direction,
                    bytes,
                    packets,
                }
            }
        ),
        slot.prop_map(|slot| Op::LifesizeRead { slot }),
        any::<u64>().prop_map(|new_epoch| Op::BumpEpoch { new_epoch }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
    }

    #[test]
    fn requests_round_trip_and_prefixes_fail(epoch in any::<u64>(), ops in proptest::collection::vec(op(), 0..20)) {
        let request = Request { epoch, ops };
        let frame = encode_request(&request);
        prop_assert_eq!(decode_request(&frame[4..]).unwrap(), request);
        for cut in 4..frame.len() {
            prop_assert!(decode_request(&frame[4..cut]).is_err());
        }
    }
}
