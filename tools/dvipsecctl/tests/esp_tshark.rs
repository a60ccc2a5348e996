//! tshark (Wireshark's ESP dissector, code we did not write) verifies the ICV of packets that
//! `dvipsecctl esp seal` produced, decrypts them and finds the inner header we sealed.

mod support;

use serde_json::{json, Value};
use support::{
    dvipsecctl, exit_code, hex_lines, interop_matrix, missing, python_helper, require_scapy,
    scapy_encrypt, stderr_text, Case, Failures, Inner,
};

/// tshark 4.0's ESP dissector has no ChaCha20-Poly1305 decoder.
fn tshark_can_check(case: &Case) -> bool {
    case.suite != "chacha20poly1305" && !case.esn
}

#[test]
fn tshark_verifies_the_icv_of_our_packets() {
    let test = "tshark_verifies_the_icv_of_our_packets";
    let Some(checkers) = require_scapy(test) else {
        return;
    };
    if !checkers.tshark {
        missing(test, "tshark is not on PATH");
        return;
    }
    let cases: Vec<Case> = interop_matrix(checkers)
        .into_iter()
        .filter(tshark_can_check)
        .collect();
    let plaintexts = scapy_encrypt(&cases);
    let mut failures = Failures::default();
    let mut frames = Vec::new();
    for (case, (plain, _)) in cases.iter().zip(&plaintexts) {
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
        let mut frame = case.to_json();
        frame["sealed"] = json!(hex::encode(&sealed[0]));
        frames.push((case.clone(), frame, true));
    }
    // A tampered copy of the first packet proves tshark's check can fail here.
    let (first, first_frame, _) = frames.first().cloned().expect("at least one sealed packet");
    let mut tampered_frame = first_frame;
    let mut tampered = hex::decode(tampered_frame["sealed"].as_str().expect("hex")).expect("hex");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    tampered_frame["sealed"] = json!(hex::encode(&tampered));
    tampered_frame["name"] = json!(format!("{} (tampered)", first.name));
    frames.push((first, tampered_frame, false));

    let input = Value::Array(frames.iter().map(|(_, f, _)| f.clone()).collect());
    let answer = python_helper("tshark", &input);
    assert!(
        answer.get("error").is_none(),
        "tshark failed: {}",
        answer["error"]
    );
    let verdicts = answer["frames"].as_array().expect("frames");
    assert_eq!(verdicts.len(), frames.len(), "one tshark line per frame");
    for ((case, frame, authentic), verdict) in frames.iter().zip(verdicts) {
        let name = frame["name"].as_str().unwrap_or("?");
        if !authentic {
            failures.check(verdict["esp.icv_bad"] == json!("1"), name, || {
                format!("tshark did not flag the tampered ICV: {verdict}")
            });
            continue;
        }
        check_verdict(case, name, verdict, &mut failures);
    }
    failures.assert_none(test, frames.len());
}

/// tshark must say the ICV is good, see the next header we sealed and the inner ports.
fn check_verdict(case: &Case, name: &str, verdict: &Value, failures: &mut Failures) {
    let field = |f: &str| verdict[f].as_str().unwrap_or("").to_owned();
    failures.check(field("esp.icv_good") == "1", name, || {
        format!(
            "tshark: icv_good={:?} icv_bad={:?}",
            field("esp.icv_good"),
            field("esp.icv_bad")
        )
    });
    failures.check(
        field("esp.spi") == format!("{:#010x}", case.spi),
        name,
        || format!("tshark read SPI {}", field("esp.spi")),
    );
    let next_header = match (case.tunnel, case.inner_v6, case.inner) {
        (true, false, _) => "0x04",
        (true, true, _) => "0x29",
        (false, _, Inner::Tcp(_)) => "0x06",
        (false, _, Inner::Udp) => "0x11",
        (false, false, Inner::Icmp) => "0x01",
        (false, true, Inner::Icmp) => "0x3a",
    };
    failures.check(field("esp.protocol") == next_header, name, || {
        format!(
            "tshark read next header {:?}, sealed {next_header}",
            field("esp.protocol")
        )
    });
    let (sport, _) = case.ports();
    let ports = match case.inner {
        Inner::Tcp(_) => field("tcp.srcport"),
        Inner::Udp => field("udp.srcport"),
        Inner::Icmp => return,
    };
    failures.check(
        ports.split(',').any(|p| p == sport.to_string()),
        name,
        || format!("tshark did not decode the inner source port {sport}: {ports:?}"),
    );
}
