//! Interoperability of `dvipsecctl esp` with scapy's ESP implementation (code we did not write):
//! we open what scapy sealed, scapy opens what we sealed, and peek agrees with the packet scapy
//! built. Each test runs python once for the whole table of cases.

mod support;

use serde_json::{json, Value};
use support::{
    dvipsecctl, exit_code, hex_field, hex_lines, interop_matrix, python_helper, require_scapy,
    scapy_encrypt, stderr_text, Case, Failures, Inner,
};

/// The receiver's --seq (highest number already accepted): one below the packet's own number,
/// so with ESN the receiver must infer the packet's high half from its window.
fn receiver_seq(case: &Case) -> u64 {
    case.seq - 1
}

#[test]
fn we_open_scapys_packets_to_its_exact_plaintext() {
    let test = "we_open_scapys_packets_to_its_exact_plaintext";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases = interop_matrix(checkers);
    let packets = scapy_encrypt(&cases);
    let mut failures = Failures::default();
    for (case, (plain, sealed)) in cases.iter().zip(&packets) {
        let output = dvipsecctl(
            &case.cli_args("open", receiver_seq(case)),
            format!("{}\n", hex::encode(sealed)).as_bytes(),
        );
        if !output.status.success() {
            failures.add(
                &case.name,
                format!(
                    "open exited {}: {}",
                    exit_code(&output),
                    stderr_text(&output)
                ),
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
    failures.assert_none(test, cases.len());
}

#[test]
fn scapy_opens_our_packets_to_the_exact_input() {
    let test = "scapy_opens_our_packets_to_the_exact_input";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    let cases = interop_matrix(checkers);
    let packets = scapy_encrypt(&cases);
    let mut failures = Failures::default();
    let mut sealed_cases = Vec::new();
    for (case, (plain, _)) in cases.iter().zip(&packets) {
        let output = dvipsecctl(
            &case.cli_args("seal", case.seq),
            format!("{}\n", hex::encode(plain)).as_bytes(),
        );
        let sealed = hex_lines(&output);
        if !output.status.success() || sealed.len() != 1 {
            failures.add(
                &case.name,
                format!(
                    "seal exited {}: {}",
                    exit_code(&output),
                    stderr_text(&output)
                ),
            );
            continue;
        }
        check_esp_header(case, &sealed[0], &mut failures);
        let mut answer_case = case.to_json();
        answer_case["sealed"] = json!(hex::encode(&sealed[0]));
        sealed_cases.push((case, plain, answer_case));
    }
    let input = Value::Array(sealed_cases.iter().map(|(_, _, j)| j.clone()).collect());
    let answers = python_helper("decrypt", &input);
    let answers = answers.as_array().expect("decrypt answers a list");
    for ((case, plain, _), answer) in sealed_cases.iter().zip(answers) {
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
    failures.assert_none(test, cases.len());
}

/// Checks the ESP header of a packet we sealed: SPI, the low 32 bits of the sequence number on
/// the wire, and for the AEADs the explicit IV equal to the 64-bit sequence number (RFC 4106).
fn check_esp_header(case: &Case, sealed: &[u8], failures: &mut Failures) {
    let Some(esp) = esp_offset(case, sealed) else {
        failures.add(
            &case.name,
            "sealed packet too short for an ESP header".into(),
        );
        return;
    };
    let field = |at: usize, len: usize| sealed.get(esp + at..esp + at + len).unwrap_or(&[]);
    failures.check(field(0, 4) == case.spi.to_be_bytes(), &case.name, || {
        format!("SPI on the wire is {}", hex::encode(field(0, 4)))
    });
    let seq_lo = (case.seq as u32).to_be_bytes();
    failures.check(field(4, 4) == seq_lo, &case.name, || {
        format!("sequence on the wire is {}", hex::encode(field(4, 4)))
    });
    if case.suite.contains("gcm") || case.suite.contains("chacha") {
        failures.check(field(8, 8) == case.seq.to_be_bytes(), &case.name, || {
            format!(
                "explicit IV {} is not the sequence number",
                hex::encode(field(8, 8))
            )
        });
    }
}

/// Offset of the ESP header in a sealed packet (no IPv6 extension headers in these cases).
fn esp_offset(case: &Case, sealed: &[u8]) -> Option<usize> {
    let outer_v6 = if case.tunnel {
        case.outer_v6
    } else {
        case.inner_v6
    };
    let ip_len = if outer_v6 {
        40
    } else {
        usize::from(sealed.first()? & 0x0f) * 4
    };
    let offset = ip_len + if case.natt { 8 } else { 0 };
    (sealed.len() >= offset + 16).then_some(offset)
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
    let packets = scapy_encrypt(&cases);
    let mut failures = Failures::default();
    for (case, (_, sealed)) in cases.iter().zip(&packets) {
        let output = dvipsecctl(
            &case.cli_args("peek", receiver_seq(case)),
            format!("{}\n", hex::encode(sealed)).as_bytes(),
        );
        if !output.status.success() {
            failures.add(
                &case.name,
                format!(
                    "peek exited {}: {}",
                    exit_code(&output),
                    stderr_text(&output)
                ),
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
    failures.assert_none(test, cases.len());
}

fn expected_peek(case: &Case) -> Value {
    let (src, dst) = case.inner_addresses();
    let (sport, dport) = case.ports();
    let (proto, syn) = match case.inner {
        // A connection request: SYN set, ACK clear.
        Inner::Tcp(flags) => (6, flags.contains('S') && !flags.contains('A')),
        Inner::Udp => (17, false),
    };
    json!({"src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport, "syn": syn})
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
        let mut answer_case = case.to_json();
        answer_case["sealed"] = json!(hex::encode(&output.stdout));
        sealed_cases.push((case, plain, answer_case));
    }
    let input = Value::Array(sealed_cases.iter().map(|(_, _, j)| j.clone()).collect());
    let answers = python_helper("decrypt", &input);
    for ((case, plain, _), answer) in sealed_cases.iter().zip(answers.as_array().expect("list")) {
        let decrypted = answer.get("plain").map(|_| hex_field(answer, "plain"));
        failures.check(decrypted.as_ref() == Some(*plain), &case.name, || {
            format!("scapy could not recover the binary seal's input: {answer}")
        });
    }
    failures.assert_none(test, cases.len());
}
