//! Walks a TPACKET_V3 receive block the way `AfPacketPort::rx_burst` does, on arbitrary
//! bytes: the first 4 bytes give the frame count, the next 4 the first offset, the rest is
//! the block. Every frame the parser accepts must lie inside the block.
#![no_main]

use dvipsec_ports::af_packet::parse_rx_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, block)) = data.split_first_chunk::<8>() else {
        return;
    };
    let count = u32::from_le_bytes([head[0], head[1], head[2], head[3]]).min(4096);
    let mut offset = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    for _ in 0..count {
        let Some(meta) = parse_rx_frame(block, offset) else {
            return;
        };
        let frame = &block[meta.data_start..meta.data_start + meta.captured];
        assert_eq!(frame.len(), meta.captured);
        let Some(next) = offset.checked_add(meta.next_offset) else {
            return;
        };
        offset = next;
    }
});
