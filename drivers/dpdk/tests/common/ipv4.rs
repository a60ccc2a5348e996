//! The IPv4 header of the plaintext packets the cryptodev tests and benchmark seal; shared by
//! `tests/common` and (through `#[path]`) `benches/cryptodev_seal.rs`.

/// A 20-byte IPv4 header for a UDP packet of `total` bytes (header included) from 10.0.0.1 to
/// 10.0.0.2, TTL 64, identification 1, checksum left zero (ESP does not look at it).
pub fn ipv4_udp_header(total: usize) -> [u8; 20] {
    let [len_hi, len_lo] = (total as u16).to_be_bytes();
    [
        0x45, 0, len_hi, len_lo, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]
}
