//! Interoperability of `dvipsecctl esp` with scapy's ESP implementation (code we did not write):
//! we open what scapy sealed, scapy opens what we sealed, and peek agrees with the packet scapy
//! built. Each test runs python once per batch for its whole table of cases.

mod support;

use serde_json::{json, Value};
use support::{
    dvipsecctl, exit_code, hex_field, hex_lines, interop_matrix, python_helper, require_scapy,
    scapy_encrypt, stderr_text, Case, Failures, Inner, Shape,
};

/// The receiver's --seq (highest number already accepted): one below the packet's own number,
/// so with ESN the receiver must infer the packet's high half from its window.
fn receiver_seq(case: &Case) -> u64 {
    case.seq - 1
}

fn hex_line(packet: &[u8]) -> Vec<u8> {
    format!("{}\n", hex::encode(packet)).into_bytes()
}

/// Opens each scapy-sealed packet with the CLI and compares with scapy's plaintext.
fn check_we_open(cases: &[Case], packets: &[(Vec<u8>, Vec<u8>)], failures: &mut Failures) {
    for (case, (plain, sealed)) in cases.iter().zip(packets) {
        let output = dvipsecctl(
            &case.cli_args("open", receiver_seq(case)),
            &hex_line(sealed),
        );
        if !output.status.success() {
            let code = exit_code(&output);
            failures.add(
                &case.name,
                format!("open exited {code}: {}", stderr_text(&output)),
            );
            continue;
        }
        let opened = hex_lines(&output);
        failures.check(opened.len() == 1 && opened[0] == *plain, &case.name, || {
            format!(
                "opened\n    {}\n  scapy's plaintext\n    {}",
                opened.first().map(hex::encode).unwrap_or_default(),
                hex::encode(plain)
            )
        });
    }
}

/// Seals each plaintext with the CLI; scapy must decrypt it to the same bytes, parse the same
/// ESP header and compute the same outer header fields.
fn check_scapy_opens(cases: &[Case], packets: &[(Vec<u8>, Vec<u8>)], failures: &mut Failures) {
    let mut sealed_cases = Vec::new();
    for (case, (plain, _)) in cases.iter().zip(packets) {
        let output = dvipsecctl(&case.cli_args("seal", case.seq), &hex_line(plain));
        let sealed = hex_lines(&output);
        if !output.status.success() || sealed.len() != 1 {
            let code = exit_code(&output);
            failures.add(
                &case.name,
                format!("seal exited {code}: {}", stderr_text(&output)),
            );
            continue;
        }
        let mut question = case.to_json();
        question["sealed"] = json!(hex::encode(&sealed[0]));
        sealed_cases.push((case, plain, question));
    }
    let input = Value::Array(sealed_cases.iter().map(|(_, _, q)| q.clone()).collect());
    let answers = python_helper("decrypt", &input);
    let answers = answers.as_array().expect("decrypt answers a list");
    assert_eq!(answers.len(), sealed_cases.len(), "one answer per packet");
    for ((case, plain, _), answer) in sealed_cases.iter().zip(answers) {
        check_esp_header(case, &answer["esp"], failures);
        let outer_problems = answer["outer_problems"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("decrypt answered without outer_problems: {answer}"));
        failures.check(outer_problems.is_empty(), &case.name, || {
            format!("outer header is not what scapy computes: {outer_problems:?}")
        });
        if let Some(error) = answer.get("error") {
            failures.add(&case.name, format!("scapy rejected our packet: {error}"));
            continue;
        }
        let decrypted = hex_field(answer, "plain");
        failures.check(decrypted == **plain, &case.name, || {
            format!(
                "scapy decrypted\n    {}\n  our input was\n    {}",
                hex::encode(&decrypted),
                hex::encode(plain)
            )
        });
    }
}

/// The ESP header scapy parsed from our packet: our SPI, the low half of the sequence number,
/// and for the AEADs an explicit IV equal to the 64-bit sequence number (RFC 4106 section 3.1).
fn check_esp_header(case: &Case, esp: &Value, failures: &mut Failures) {
    if esp.is_null() {
        failures.add(
            &case.name,
            "scapy finds no ESP header in our packet".to_owned(),
        );
        return;
    }
    failures.check(esp["spi"] == json!(case.spi), &case.name, || {
        format!("scapy reads SPI {}", esp["spi"])
    });
    failures.check(
        esp["seq"] == json!(case.seq & 0xffff_ffff),
        &case.name,
        || format!("scapy reads sequence number {}", esp["seq"]),
    );
    let aead = case.suite.contains("gcm") || case.suite.contains("chacha");
    let iv = hex::encode(case.seq.to_be_bytes());
    failures.check(!aead || esp["head"] == json!(iv), &case.name, || {
        format!(
            "explicit IV {} is not the sequence number {iv}",
            esp["head"]
        )
    });
}

/// Peeks at each scapy-sealed packet and compares the JSON with what scapy was asked to build.
fn check_peek(cases: &[Case], packets: &[(Vec<u8>, Vec<u8>)], failures: &mut Failures) {
    for (case, (_, sealed)) in cases.iter().zip(packets) {
        let output = dvipsecctl(
            &case.cli_args("peek", receiver_seq(case)),
            &hex_line(sealed),
        );
        if !output.status.success() {
            let code = exit_code(&output);
            failures.add(
                &case.name,
                format!("peek exited {code}: {}", stderr_text(&output)),
            );
            continue;
        }
        let printed: Result<Value, _> = serde_json::from_slice(&output.stdout);
        let expected = expected_peek(case);
        failures.check(printed.as_ref().ok() == Some(&expected), &case.name, || {
            format!(
                "peek printed {} expected {expected}",
                String::from_utf8_lossy(&output.stdout).trim()
            )
        });
    }
}

fn expected_peek(case: &Case) -> Value {
    let (src, dst) = case.inner_addresses();
    let (sport, dport) = case.ports();
    let (proto, ports, syn) = match case.inner {
        // A connection request: SYN set, ACK clear.
        Inner::Tcp(flags) => (6, true, flags.contains('S') && !flags.contains('A')),
        Inner::Udp => (17, true, false),
        Inner::Icmp if case.inner_v6 => (58, false, false),
        Inner::Icmp => (1, false, false),
    };
    let port = |p: u16| if ports { json!(p) } else { Value::Null };
    json!({"src": src, "dst": dst, "proto": proto, "sport": port(sport), "dport": port(dport), "syn": syn})
}

/// One check over the scapy-encrypted packets of a table of cases.
type PacketCheck = fn(&[Case], &[(Vec<u8>, Vec<u8>)], &mut Failures);

/// Has scapy encrypt every case, runs `checks` over the packets and fails `test` on any
/// failure they recorded.
fn check_cases(test: &str, cases: &[Case], checks: &[PacketCheck]) {
    let packets = scapy_encrypt(cases);
    let mut failures = Failures::default();
    for check in checks {
        check(cases, &packets, &mut failures);
    }
    failures.assert_none(test, cases.len());
}

#[test]
fn we_open_scapys_packets_to_its_exact_plaintext() {
    let test = "we_open_scapys_packets_to_its_exact_plaintext";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases = interop_matrix(checkers);
    check_cases(test, &cases, &[check_we_open]);
}

#[test]
fn scapy_opens_our_packets_to_the_exact_input() {
    let test = "scapy_opens_our_packets_to_the_exact_input";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases = interop_matrix(checkers);
    check_cases(test, &cases, &[check_scapy_opens]);
}

#[test]
fn peek_reports_the_inner_header_scapy_built() {
    let test = "peek_reports_the_inner_header_scapy_built";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let mut cases = interop_matrix(checkers);
    // Add non-SYN TCP segments so `syn` must really be read from the flags.
    let extra: Vec<Case> = cases
        .iter()
        .filter(|c| !c.esn && !c.natt && c.inner_v6 == c.outer_v6)
        .map(|c| Case {
            name: format!("{}/tcp-ack", c.name),
            spi: c.spi + 0x100,
            inner: Inner::Tcp("A"),
            ..c.clone()
        })
        .collect();
    cases.extend(extra);
    check_cases(test, &cases, &[check_peek]);
}

/// IPv4 options, IPv6 extension headers, ICMP, a NAT that changed the source port and
/// full-size packets, in both directions and through peek.
#[test]
fn unusual_packets_interoperate() {
    let test = "unusual_packets_interoperate";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases = unusual_cases(checkers);
    check_cases(
        test,
        &cases,
        &[check_we_open, check_scapy_opens, check_peek],
    );
}

fn unusual_cases(checkers: support::Checkers) -> Vec<Case> {
    // (name, tunnel, inner IPv6, outer IPv6, NAT-T, inner, payload, shape)
    type Row = (&'static str, bool, bool, bool, bool, Inner, usize, Shape);
    #[rustfmt::skip]
    let rows: [Row; 8] = [
        ("ipv4-options", false, false, false, false, Inner::Tcp("S"), 10, Shape::Ipv4Options),
        ("ipv4-options-tunnel", true, false, false, true, Inner::Udp, 10, Shape::Ipv4Options),
        ("ipv6-hop-by-hop", false, true, true, false, Inner::Tcp("S"), 10, Shape::Ipv6Extension("hbh")),
        ("ipv6-dest-options", false, true, true, false, Inner::Udp, 10, Shape::Ipv6Extension("dstopt")),
        // Not with NAT-T: scapy then leaves the routing header's next header saying ESP.
        ("ipv6-routing", false, true, true, false, Inner::Tcp("S"), 10, Shape::Ipv6Extension("routing")),
        ("icmp-tunnel", true, false, false, false, Inner::Icmp, 30, Shape::Plain),
        ("icmpv6-transport-nat-port", false, true, true, true, Inner::Icmp, 30, Shape::NatPortChanged),
        ("full-size-udp", false, false, false, true, Inner::Udp, 1400, Shape::Plain),
    ];
    let suites = support::SUITES
        .into_iter()
        .filter(|s| *s != "chacha20poly1305" || checkers.scapy_chacha);
    let mut cases = Vec::new();
    let mut spi = 0x3000;
    for suite in suites {
        for (name, tunnel, inner_v6, outer_v6, natt, inner, payload_len, shape) in rows {
            spi += 1;
            cases.push(Case {
                name: format!("{suite}/{name}"),
                suite,
                tunnel,
                inner_v6,
                outer_v6,
                natt,
                esn: false,
                spi,
                seq: 1,
                inner,
                payload_len,
                shape,
            });
        }
    }
    cases
}

/// Without --hex: one binary packet from a file or stdin, binary results to a file or stdout.
#[test]
fn binary_packets_through_files_and_pipes() {
    let test = "binary_packets_through_files_and_pipes";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases: Vec<Case> = interop_matrix(checkers)
        .into_iter()
        .filter(|c| c.natt && c.inner_v6 == c.outer_v6)
        .collect();
    let packets = scapy_encrypt(&cases);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut failures = Failures::default();
    let mut sealed_cases = Vec::new();
    for (index, (case, (plain, sealed))) in cases.iter().zip(&packets).enumerate() {
        let sealed_path = dir.path().join(format!("sealed-{index}.bin"));
        let opened_path = dir.path().join(format!("opened-{index}.bin"));
        std::fs::write(&sealed_path, sealed).expect("write the sealed packet");
        let mut open_args = case.sa_flags(receiver_seq(case));
        open_args.splice(
            0..0,
            [
                "esp".to_owned(),
                "open".to_owned(),
                "--in".to_owned(),
                sealed_path.display().to_string(),
                "--out".to_owned(),
                opened_path.display().to_string(),
            ],
        );
        let output = dvipsecctl(&open_args, b"");
        let opened = std::fs::read(&opened_path).unwrap_or_default();
        failures.check(
            output.status.success() && output.stdout.is_empty() && opened == *plain,
            &case.name,
            || {
                format!(
                    "open --in/--out: exit {}: {}",
                    exit_code(&output),
                    stderr_text(&output)
                )
            },
        );
        let mut seal_args = case.sa_flags(case.seq);
        seal_args.splice(0..0, ["esp".to_owned(), "seal".to_owned()]);
        let output = dvipsecctl(&seal_args, plain);
        if !output.status.success() {
            failures.add(&case.name, format!("binary seal: {}", stderr_text(&output)));
            continue;
        }
        let mut question = case.to_json();
        question["sealed"] = json!(hex::encode(&output.stdout));
        sealed_cases.push((case, plain, question));
    }
    let input = Value::Array(sealed_cases.iter().map(|(_, _, q)| q.clone()).collect());
    let answers = python_helper("decrypt", &input);
    for ((case, plain, _), answer) in sealed_cases.iter().zip(answers.as_array().expect("list")) {
        let decrypted = answer.get("plain").map(|_| hex_field(answer, "plain"));
        failures.check(decrypted.as_ref() == Some(*plain), &case.name, || {
            format!("scapy could not recover the binary seal's input: {answer}")
        });
    }
    failures.assert_none(test, cases.len());
}
