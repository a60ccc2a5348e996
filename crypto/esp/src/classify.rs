//! The seed's table of IPsec combinations: which inbound packets may be distributed (sysplex
//! distribution of the connection, and distribution of the crypto work to the target) and which
//! need a peek to find out. Rows are kept exactly as the table prints them.

use crate::sa::Mode;

/// Which IPsec headers protect the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// IP, AH, payload.
    Ah,
    /// IP, ESP, payload.
    Esp,
    /// IP, AH, ESP, payload.
    AhEsp,
}

/// The inputs of one table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combination {
    /// AH, ESP or both.
    pub protection: Protection,
    /// Transport or tunnel.
    pub mode: Mode,
    /// The (inner) payload is TCP.
    pub payload_is_tcp: bool,
    /// The local DVIPA is the outer destination.
    pub dvipa_in_outer: bool,
    /// The local DVIPA is the inner destination (tunnel mode only; ignored in transport mode).
    pub dvipa_in_inner: bool,
    /// The ESP transform is ESP-null (no encryption).
    pub esp_null: bool,
}

/// The table's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distribution {
    /// "Sysplex Dist?": the connection may be distributed to a target.
    pub sysplex_distributable: bool,
    /// "Crypto Dist?": the target may do the IPsec work (shadow SA).
    pub crypto_distributable: bool,
    /// "Peek Req'd for inbound": the distributor must peek to read the inner 5-tuple.
    pub peek_required: bool,
    /// Note 2 of the table: distributable but not expected in practice.
    pub unexpected: bool,
}

struct Row {
    protection: Protection,
    mode: Mode,
    tcp: bool,
    outer: bool,
    /// `None` in transport mode ("N/A").
    inner: Option<bool>,
    sysplex: bool,
    crypto: bool,
    peek: bool,
    note2: bool,
}

const fn row(
    protection: Protection,
    mode: Mode,
    (tcp, outer, inner): (bool, bool, Option<bool>),
    (sysplex, crypto, peek, note2): (bool, bool, bool, bool),
) -> Row {
    Row {
        protection,
        mode,
        tcp,
        outer,
        inner,
        sysplex,
        crypto,
        peek,
        note2,
    }
}

use Mode::{Transport as TR, Tunnel as TU};
use Protection::{Ah, AhEsp, Esp};
const Y: bool = true;
const N: bool = false;

/// The table, top to bottom: (payload TCP?, DVIPA outer?, DVIPA inner?) -> (sysplex, crypto, peek, note 2).
/// "note 1" rows are the non-TCP payloads of ESP combinations.
const TABLE: [Row; 18] = [
    row(Ah, TR, (Y, Y, None), (Y, Y, N, N)),
    row(Ah, TR, (N, Y, None), (N, N, N, N)),
    row(Ah, TU, (Y, Y, Some(Y)), (Y, Y, N, N)),
    row(Ah, TU, (Y, Y, Some(N)), (N, N, N, N)),
    row(Ah, TU, (Y, N, Some(Y)), (Y, N, N, Y)),
    row(Ah, TU, (N, Y, Some(N)), (N, N, N, N)),
    row(Esp, TR, (Y, Y, None), (Y, Y, Y, N)),
    row(Esp, TR, (N, Y, None), (N, N, Y, N)),
    row(Esp, TU, (Y, Y, Some(Y)), (Y, Y, Y, N)),
    row(Esp, TU, (N, Y, Some(Y)), (N, N, Y, N)),
    row(Esp, TU, (Y, Y, Some(N)), (Y, N, Y, Y)),
    row(Esp, TU, (N, Y, Some(N)), (N, N, Y, N)),
    row(AhEsp, TR, (Y, Y, None), (Y, Y, N, N)),
    row(AhEsp, TR, (N, Y, None), (N, N, Y, N)),
    row(AhEsp, TU, (Y, Y, Some(Y)), (Y, Y, Y, N)),
    row(AhEsp, TU, (N, Y, Some(Y)), (N, N, Y, N)),
    row(AhEsp, TU, (Y, Y, Some(N)), (Y, N, Y, Y)),
    row(AhEsp, TU, (N, Y, Some(N)), (N, N, Y, N)),
];

impl Row {
    fn matches(&self, c: &Combination) -> bool {
        let inner_ok = match self.inner {
            None => c.mode == Mode::Transport,
            Some(inner) => c.mode == Mode::Tunnel && inner == c.dvipa_in_inner,
        };
        self.protection == c.protection
            && self.mode == c.mode
            && self.tcp == c.payload_is_tcp
            && self.outer == c.dvipa_in_outer
            && inner_ok
    }
}

/// Looks a combination up in the seed's table. Note 1 applies on top: with ESP-null nothing is
/// encrypted, so no peek (decryption) is needed. Combinations the table does not list are not
/// distributable.
pub fn classify(combination: &Combination) -> Distribution {
    let uses_esp = combination.protection != Protection::Ah;
    match TABLE.iter().find(|r| r.matches(combination)) {
        Some(r) => Distribution {
            sysplex_distributable: r.sysplex,
            crypto_distributable: r.crypto,
            peek_required: r.peek && !(uses_esp && combination.esp_null),
            unexpected: r.note2,
        },
        None => Distribution {
            sysplex_distributable: false,
            crypto_distributable: false,
            peek_required: false,
            unexpected: false,
        },
    }
}
