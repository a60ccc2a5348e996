//! One test per row of the seed's table of IPsec combinations ("Crypto Dist"), top to bottom.

use dvipsec_esp::classify::Protection::{self, Ah, AhEsp, Esp};
use dvipsec_esp::{classify, Combination, Distribution, Mode};

const Y: bool = true;
const N: bool = false;

fn lookup(protection: Protection, mode: Mode, tcp: bool, outer: bool, inner: bool) -> Distribution {
    classify(&Combination {
        protection,
        mode,
        payload_is_tcp: tcp,
        dvipa_in_outer: outer,
        dvipa_in_inner: inner,
        esp_null: false,
    })
}

fn expect(d: Distribution, sysplex: bool, crypto: bool, peek: bool, note2: bool) {
    assert_eq!(
        d,
        Distribution {
            sysplex_distributable: sysplex,
            crypto_distributable: crypto,
            peek_required: peek,
            unexpected: note2,
        }
    );
}

#[test]
fn row_ah_transport_tcp() {
    expect(lookup(Ah, Mode::Transport, Y, Y, N), Y, Y, N, N);
}

#[test]
fn row_ah_transport_not_tcp() {
    expect(lookup(Ah, Mode::Transport, N, Y, N), N, N, N, N);
}

#[test]
fn row_ah_tunnel_tcp_dvipa_both() {
    expect(lookup(Ah, Mode::Tunnel, Y, Y, Y), Y, Y, N, N);
}

#[test]
fn row_ah_tunnel_tcp_inner_not_dvipa() {
    expect(lookup(Ah, Mode::Tunnel, Y, Y, N), N, N, N, N);
}

#[test]
fn row_ah_tunnel_tcp_outer_not_dvipa_note2() {
    expect(lookup(Ah, Mode::Tunnel, Y, N, Y), Y, N, N, Y);
}

#[test]
fn row_ah_tunnel_not_tcp_inner_not_dvipa() {
    expect(lookup(Ah, Mode::Tunnel, N, Y, N), N, N, N, N);
}

#[test]
fn row_esp_transport_tcp() {
    expect(lookup(Esp, Mode::Transport, Y, Y, N), Y, Y, Y, N);
}

#[test]
fn row_esp_transport_note1() {
    expect(lookup(Esp, Mode::Transport, N, Y, N), N, N, Y, N);
}

#[test]
fn row_esp_tunnel_tcp_dvipa_both() {
    expect(lookup(Esp, Mode::Tunnel, Y, Y, Y), Y, Y, Y, N);
}

#[test]
fn row_esp_tunnel_note1() {
    expect(lookup(Esp, Mode::Tunnel, N, Y, Y), N, N, Y, N);
}

#[test]
fn row_esp_tunnel_tcp_inner_not_dvipa_note2() {
    expect(lookup(Esp, Mode::Tunnel, Y, Y, N), Y, N, Y, Y);
}

#[test]
fn row_esp_tunnel_not_tcp_inner_not_dvipa() {
    expect(lookup(Esp, Mode::Tunnel, N, Y, N), N, N, Y, N);
}

#[test]
fn row_ah_esp_transport_tcp() {
    expect(lookup(AhEsp, Mode::Transport, Y, Y, N), Y, Y, N, N);
}

#[test]
fn row_ah_esp_transport_note1() {
    expect(lookup(AhEsp, Mode::Transport, N, Y, N), N, N, Y, N);
}

#[test]
fn row_ah_esp_tunnel_tcp_dvipa_both() {
    expect(lookup(AhEsp, Mode::Tunnel, Y, Y, Y), Y, Y, Y, N);
}

#[test]
fn row_ah_esp_tunnel_note1() {
    expect(lookup(AhEsp, Mode::Tunnel, N, Y, Y), N, N, Y, N);
}

#[test]
fn row_ah_esp_tunnel_tcp_inner_not_dvipa_note2() {
    expect(lookup(AhEsp, Mode::Tunnel, Y, Y, N), Y, N, Y, Y);
}

#[test]
fn row_ah_esp_tunnel_not_tcp_inner_not_dvipa() {
    expect(lookup(AhEsp, Mode::Tunnel, N, Y, N), N, N, Y, N);
}

/// Note 1: with ESP-null nothing is encrypted, so no ESP row needs a peek; AH rows are unchanged.
#[test]
fn note1_esp_null_needs_no_peek() {
    for protection in [Esp, AhEsp] {
        for mode in [Mode::Transport, Mode::Tunnel] {
            let mut c = Combination {
                protection,
                mode,
                payload_is_tcp: true,
                dvipa_in_outer: true,
                dvipa_in_inner: true,
                esp_null: false,
            };
            assert!(classify(&c).peek_required || (protection == AhEsp && mode == Mode::Transport));
            c.esp_null = true;
            let d = classify(&c);
            assert!(!d.peek_required, "{c:?}");
            assert!(d.sysplex_distributable, "{c:?}");
        }
    }
}

#[test]
fn combinations_not_in_the_table_are_not_distributable() {
    // Transport mode with the DVIPA not in the outer header: not for this stack at all.
    expect(lookup(Esp, Mode::Transport, Y, N, N), N, N, N, N);
    expect(lookup(Esp, Mode::Tunnel, Y, N, N), N, N, N, N);
}
