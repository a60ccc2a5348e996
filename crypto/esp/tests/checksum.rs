//! The ones' complement sum (`ip::ones_complement_sum`) against a plain reference: big-endian
//! 16-bit words one by one, as RFC 1071 defines it.

use dvipsec_esp::ip::ones_complement_sum;
use proptest::prelude::*;

fn reference(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    for pair in data.chunks(2) {
        let low = pair.get(1).copied().unwrap_or(0);
        sum += u64::from(u16::from_be_bytes([pair[0], low]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn the_rfc_1071_example() {
    // RFC 1071, section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
}

#[test]
fn zeros_sum_to_zero_and_a_checked_header_to_all_ones() {
    assert_eq!(ones_complement_sum(&[0; 41], 0), 0);
    // An IPv4 header with its checksum in place sums to 0xffff.
    let mut header = [
        0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 192, 0, 2, 1, 198, 51, 100, 10,
    ];
    let sum = !ones_complement_sum(&header, 0);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(ones_complement_sum(&header, 0), 0xffff);
    assert_eq!(reference(&header, 0), 0xffff);
}

proptest! {
    #[test]
    fn equals_the_word_by_word_sum(
        data in prop::collection::vec(any::<u8>(), 0..1600),
        initial in prop_oneof![Just(0u32), 0u32..0x2_0000, any::<u32>()],
        skip in 0usize..4,
    ) {
        // Odd lengths and starts that are not word-aligned in memory.
        let data = &data[skip.min(data.len())..];
        prop_assert_eq!(ones_complement_sum(data, initial), reference(data, initial));
    }

    #[test]
    fn all_ones_data_matches_too(len in 0usize..1600, initial in any::<u32>()) {
        let data = vec![0xff; len];
        prop_assert_eq!(ones_complement_sum(&data, initial), reference(&data, initial));
    }
}
