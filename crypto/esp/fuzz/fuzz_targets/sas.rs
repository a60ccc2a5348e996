//! Inbound SAs of every suite, mode and encapsulation, chosen by the first input byte.

use dvipsec_esp::{Direction, IpsecProtocol, Mode, Sa, SaConfig, SaKeys, Suite, UdpEncap};

/// Builds the inbound SA selected by `selector`; the SPI matches what the fuzzer's seeds use.
pub fn inbound_sa(selector: u8) -> Sa {
    let suites = Suite::ALL;
    let suite = suites[usize::from(selector) % suites.len()];
    let enc = vec![0x11; suite.enc_key_len()];
    let auth = vec![0x22; suite.auth_key_len()];
    let mut c = SaConfig::new(
        0x0102_0304,
        Direction::Inbound,
        suite,
        SaKeys::new(&enc, &auth),
    );
    if selector & 0x08 != 0 {
        c.mode = Mode::Tunnel;
    }
    if selector & 0x10 != 0 {
        c.udp_encap = Some(UdpEncap::NAT_T);
    }
    c.esn = selector & 0x20 != 0;
    if selector & 0x40 != 0 && suite == Suite::NullHmacSha256 {
        c.protocol = IpsecProtocol::Ah;
    }
    Sa::new(c).expect("valid fuzz SA configuration")
}
