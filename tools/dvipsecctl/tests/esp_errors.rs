//! `dvipsecctl esp open` on damaged, foreign and replayed packets: exit 1 when the ICV fails,
//! exit 2 with a clear message for every other rejection, and keys never in any message.

mod support;

use std::process::Output;

use support::{
    dvipsecctl, exit_code, hex_lines, require_scapy, scapy_encrypt, stderr_text, Case, Failures,
    Inner, Shape,
};

/// One SA per suite family (AEAD, CBC + HMAC, null + HMAC), in different modes and families.
fn error_cases() -> Vec<Case> {
    let base = |name: &str, suite: &'static str, spi: u32, tunnel: bool, v6: bool| Case {
        name: name.to_owned(),
        suite,
        tunnel,
        inner_v6: v6,
        outer_v6: v6,
        natt: false,
        esn: false,
        spi,
        seq: 100,
        inner: Inner::Tcp("S"),
        payload_len: 48,
        shape: Shape::Plain,
    };
    vec![
        base(
            "aes128gcm16/transport/ipv4",
            "aes128gcm16",
            0x2001,
            false,
            false,
        ),
        base(
            "aes256cbc-sha256/tunnel/ipv6",
            "aes256cbc-sha256",
            0x2002,
            true,
            true,
        ),
        base(
            "null-sha256/transport/ipv6",
            "null-sha256",
            0x2003,
            false,
            true,
        ),
        Case {
            natt: true,
            ..base(
                "aes256gcm16/tunnel/ipv4/natt",
                "aes256gcm16",
                0x2004,
                true,
                false,
            )
        },
    ]
}

/// A damage done to a sealed packet or to the receiving SA, and the outcome it must have.
struct Damage {
    name: &'static str,
    exit: i32,
    /// The error message must contain one of these (compared in lowercase).
    message: &'static [&'static str],
}

const REPLAY_WINDOW: u64 = 64;

/// The same SA and packet, sealed `REPLAY_WINDOW + 5` numbers later.
fn advanced(case: &Case) -> Case {
    Case {
        name: format!("{} (advanced)", case.name),
        seq: case.seq + REPLAY_WINDOW + 5,
        ..case.clone()
    }
}

/// `later` is the same packet sealed by scapy `REPLAY_WINDOW + 5` numbers later.
fn open_damaged(case: &Case, sealed: &[u8], later: &[u8], damage: &Damage) -> Output {
    let receiver_seq = case.seq - 1;
    let line = |bytes: &[u8]| format!("{}\n", hex::encode(bytes));
    let mut packet = sealed.to_vec();
    let last = packet.len() - 1;
    let mut args = case.cli_args("open", receiver_seq);
    let input = match damage.name {
        "ciphertext bit flipped" => {
            packet[last - 20] ^= 0x04;
            line(&packet)
        }
        "icv bit flipped" => {
            packet[last] ^= 0x80;
            line(&packet)
        }
        "wrong key" => {
            let (flag, key) = if case.suite.contains("sha256") {
                ("--auth-key", case.auth_key_hex())
            } else {
                ("--key", case.key_hex())
            };
            let wrong = format!(
                "{}{}",
                if key.starts_with('0') { "1" } else { "0" },
                &key[1..]
            );
            let at = args.iter().position(|a| a == flag).expect("key flag") + 1;
            args[at] = wrong;
            line(&packet)
        }
        "truncated inside the esp header" => {
            packet.truncate(esp_header_end(case) - 2);
            line(&packet)
        }
        "truncated by one byte" => {
            packet.truncate(last);
            line(&packet)
        }
        "wrong spi" => {
            let at = args.iter().position(|a| a == "--spi").expect("spi flag") + 1;
            args[at] = format!("{:#x}", case.spi + 1);
            line(&packet)
        }
        "replayed in the same run" => format!("{}{}", line(&packet), line(&packet)),
        "older than the window" => {
            args.extend(["--replay-window".to_owned(), REPLAY_WINDOW.to_string()]);
            format!("{}{}", line(later), line(&packet))
        }
        "already accepted by the receiver" => {
            let at = args.iter().position(|a| a == "--seq").expect("seq flag") + 1;
            args[at] = case.seq.to_string();
            line(&packet)
        }
        "left of the receiver's window" => {
            let at = args.iter().position(|a| a == "--seq").expect("seq flag") + 1;
            args[at] = (case.seq + REPLAY_WINDOW).to_string();
            args.extend(["--replay-window".to_owned(), REPLAY_WINDOW.to_string()]);
            line(&packet)
        }
        other => panic!("unknown damage {other}"),
    };
    dvipsecctl(&args, input.as_bytes())
}

/// End of the ESP header (SPI + sequence) in a sealed case packet without extension headers.
fn esp_header_end(case: &Case) -> usize {
    let outer_v6 = if case.tunnel {
        case.outer_v6
    } else {
        case.inner_v6
    };
    let ip = if outer_v6 { 40 } else { 20 };
    ip + if case.natt { 8 } else { 0 } + 8
}

const DAMAGES: [Damage; 10] = [
    Damage {
        name: "ciphertext bit flipped",
        exit: 1,
        message: &["icv"],
    },
    Damage {
        name: "icv bit flipped",
        exit: 1,
        message: &["icv"],
    },
    Damage {
        name: "wrong key",
        exit: 1,
        message: &["icv"],
    },
    Damage {
        name: "truncated inside the esp header",
        exit: 2,
        message: &["truncated", "length"],
    },
    Damage {
        name: "truncated by one byte",
        exit: 2,
        message: &["icv", "truncated", "length"],
    },
    Damage {
        name: "wrong spi",
        exit: 2,
        message: &["spi"],
    },
    Damage {
        name: "replayed in the same run",
        exit: 2,
        message: &["replay"],
    },
    Damage {
        name: "older than the window",
        exit: 2,
        message: &["replay"],
    },
    Damage {
        name: "already accepted by the receiver",
        exit: 2,
        message: &["replay"],
    },
    Damage {
        name: "left of the receiver's window",
        exit: 2,
        message: &["replay"],
    },
];

fn keys_in(case: &Case) -> Vec<String> {
    [case.key_hex(), case.auth_key_hex()]
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn damaged_and_replayed_packets_get_the_right_exit_code() {
    let test = "damaged_and_replayed_packets_get_the_right_exit_code";
    if require_scapy(test).is_none() {
        return;
    }
    let cases = error_cases();
    let mut table = cases.clone();
    table.extend(cases.iter().map(advanced));
    let packets = scapy_encrypt(&table);
    let (packets, later_packets) = packets.split_at(cases.len());
    let mut failures = Failures::default();
    let mut total = 0;
    for ((case, (plain, sealed)), (_, later)) in cases.iter().zip(packets).zip(later_packets) {
        for damage in &DAMAGES {
            total += 1;
            let name = format!("{} / {}", case.name, damage.name);
            let output = open_damaged(case, sealed, later, damage);
            let stderr = stderr_text(&output);
            let code = exit_code(&output);
            // A one-byte truncation is caught either by the length checks or by the ICV.
            let code_ok = if damage.name == "truncated by one byte" {
                code == 1 || code == 2
            } else {
                code == damage.exit
            };
            failures.check(code_ok, &name, || {
                format!("exit {code}, expected {}: {stderr}", damage.exit)
            });
            let lowercase = stderr.to_lowercase();
            failures.check(
                damage.message.iter().any(|m| lowercase.contains(m)),
                &name,
                || format!("message {stderr:?} mentions none of {:?}", damage.message),
            );
            for key in keys_in(case) {
                failures.check(!stderr.contains(&key[..16]), &name, || {
                    "the error message shows key material".to_owned()
                });
            }
            if damage.name == "replayed in the same run" || damage.name == "older than the window" {
                // The first packet is genuine and must still be delivered.
                let opened = hex_lines(&output);
                failures.check(opened == vec![plain.clone()], &name, || {
                    format!("{} packets delivered before the replay", opened.len())
                });
            }
        }
    }
    failures.assert_none(test, total);
}

#[test]
fn authentic_packet_with_bad_padding_is_rejected() {
    let test = "authentic_packet_with_bad_padding_is_rejected";
    if require_scapy(test).is_none() {
        return;
    }
    let cases = error_cases();
    let mut inputs: Vec<serde_json::Value> = cases.iter().map(Case::to_json).collect();
    for input in &mut inputs {
        input["bad_padding"] = serde_json::json!(true);
    }
    let answers = support::python_helper("encrypt", &serde_json::Value::Array(inputs));
    let mut failures = Failures::default();
    for (case, answer) in cases.iter().zip(answers.as_array().expect("a list")) {
        let sealed = support::hex_field(answer, "sealed");
        let output = dvipsecctl(
            &case.cli_args("open", case.seq - 1),
            format!("{}\n", hex::encode(&sealed)).as_bytes(),
        );
        let stderr = stderr_text(&output);
        failures.check(
            exit_code(&output) == 2 && stderr.to_lowercase().contains("padding"),
            &case.name,
            || format!("exit {}: {stderr}", exit_code(&output)),
        );
        failures.check(output.stdout.is_empty(), &case.name, || {
            "a packet with bad padding was delivered".to_owned()
        });
    }
    failures.assert_none(test, cases.len());
}

const GOOD_KEY: &str = "00112233445566778899aabbccddeeff00112233";

/// `esp seal --hex` with an AES-128-GCM SA, with `flag value` pairs replaced (an empty value
/// drops the flag) and `extra` arguments appended.
fn seal_args(replace: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let base = [
        ("--spi", "0x1234"),
        ("--suite", "aes128gcm16"),
        ("--key", GOOD_KEY),
    ];
    let mut args: Vec<String> = vec!["esp".into(), "seal".into(), "--hex".into()];
    for (flag, value) in base {
        let value = replace
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(value, |(_, v)| *v);
        if !value.is_empty() {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Usage errors need no scapy: they never reach the engine's packet code.
#[test]
fn bad_flags_exit_2_without_showing_keys() {
    let not_hex = "00112233445566778899aabbccddeeff0011223Z";
    let auth_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    // (case, arguments, text the message must contain)
    let table: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "key not hex",
            seal_args(&[("--key", not_hex)], &[]),
            "--key: character 40",
        ),
        (
            "key too short",
            seal_args(&[("--key", &GOOD_KEY[..32])], &[]),
            "needs 20 bytes",
        ),
        (
            "no key for gcm",
            seal_args(&[("--key", "")], &[]),
            "--key: suite aes128gcm16 needs 20",
        ),
        (
            "auth key for gcm",
            seal_args(&[], &["--auth-key", auth_key]),
            "--auth-key is not used",
        ),
        (
            "no auth key for cbc",
            seal_args(&[("--suite", "aes256cbc-sha256"), ("--key", auth_key)], &[]),
            "--auth-key: suite aes256cbc-sha256 needs 32 bytes (HMAC-SHA-256 key), missing",
        ),
        (
            "unknown suite",
            seal_args(&[("--suite", "aes128gcm8")], &[]),
            "unknown suite",
        ),
        (
            "spi not a number",
            seal_args(&[("--spi", "0xqq")], &[]),
            "--spi",
        ),
        (
            "reserved spi",
            seal_args(&[("--spi", "255")], &[]),
            "reserved",
        ),
        (
            "tunnel without endpoints",
            seal_args(&[], &["--mode", "tunnel"]),
            "--tunnel-src",
        ),
        (
            "endpoints without tunnel",
            seal_args(
                &[],
                &["--tunnel-src", "192.0.2.1", "--tunnel-dst", "192.0.2.2"],
            ),
            "--mode tunnel",
        ),
        (
            "mixed tunnel families",
            seal_args(
                &[],
                &[
                    "--mode",
                    "tunnel",
                    "--tunnel-src",
                    "192.0.2.1",
                    "--tunnel-dst",
                    "2001:db8::2",
                ],
            ),
            "different address families",
        ),
        (
            "udp-encap without colon",
            seal_args(&[], &["--udp-encap", "4500"]),
            "SPORT:DPORT",
        ),
        (
            "sequence number 0",
            seal_args(&[], &["--seq", "0"]),
            "--seq 0",
        ),
        (
            "64-bit sequence without esn",
            seal_args(&[], &["--seq", "0x100000000"]),
            "--esn",
        ),
        (
            "window too small",
            seal_args(&[], &["--replay-window", "16"]),
            "replay window 16",
        ),
    ];
    let packet = b"4500001c0001000040110000 0a0000010a000002 00350035 00080000\n";
    let mut failures = Failures::default();
    for (name, args, mention) in &table {
        let output = dvipsecctl(args, packet);
        let stderr = stderr_text(&output);
        failures.check(exit_code(&output) == 2, name, || {
            format!("exit {}: {stderr}", exit_code(&output))
        });
        failures.check(stderr.contains(mention), name, || {
            format!("message {stderr:?} does not mention {mention:?}")
        });
        failures.check(!stderr.contains("00112233445566"), name, || {
            "the error message shows key material".to_owned()
        });
        failures.check(output.stdout.is_empty(), name, || "wrote output".to_owned());
    }
    failures.assert_none("bad_flags_exit_2_without_showing_keys", table.len());
}

/// Input that is not an ESP packet for the SA: exit 2 with the packet's location, never a
/// panic (which would exit 101), for every action.
#[test]
fn garbage_input_is_rejected_cleanly() {
    let ipv4_claims_more = "4500 0400 0001 0000 4032 0000 0a000001 0a000002 00001234 00000001";
    let esp_too_short =
        "4500 0020 0001 0000 4032 0000 0a000001 0a000002 00001234 00000001 0000 0000";
    let not_esp = "4500001c0001000040110000 0a0000010a000002 00350035 00080000";
    let inputs: [(&str, &str, &str); 7] = [
        ("empty", "", "holds no packet"),
        ("one byte", "45", "line 1"),
        ("version 5", "5500001c0001000040110000", "line 1"),
        ("length beyond the data", ipv4_claims_more, "line 1"),
        ("esp without room for an icv", esp_too_short, "line 1"),
        ("udp, not esp", not_esp, "line 1"),
        ("ipv6 header cut short", "6000000000083240200100", "line 1"),
    ];
    let mut failures = Failures::default();
    for action in ["seal", "open", "peek"] {
        for (name, hex_text, mention) in inputs {
            // These two are well-formed IP packets: sealing them is legitimate.
            let valid_ip = name == "udp, not esp" || name == "esp without room for an icv";
            if action == "seal" && valid_ip {
                continue;
            }
            let mut args = seal_args(&[], &[]);
            args[1] = action.to_owned();
            let output = dvipsecctl(&args, format!("{hex_text}\n").as_bytes());
            let stderr = stderr_text(&output);
            let case = format!("{action} / {name}");
            failures.check(exit_code(&output) == 2, &case, || {
                format!("exit {}: {stderr}", exit_code(&output))
            });
            failures.check(stderr.contains(mention), &case, || {
                format!("message {stderr:?} does not mention {mention:?}")
            });
        }
    }
    failures.assert_none("garbage_input_is_rejected_cleanly", 3 * inputs.len() - 2);
}

/// The key flags have no default value that --help could show, and help names the exit codes.
#[test]
fn help_shows_no_key_values() {
    for action in ["seal", "open", "peek"] {
        let output = dvipsecctl(&["esp".into(), action.into(), "--help".into()], b"");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "esp {action} --help failed");
        for flag in ["--key <HEX>", "--auth-key <HEX>"] {
            let line_at = help
                .find(flag)
                .unwrap_or_else(|| panic!("esp {action} --help lacks {flag}"));
            let entry: String = help[line_at..].lines().take(3).collect();
            assert!(
                !entry.contains("[default"),
                "esp {action} --help shows a default for {flag}: {entry}"
            );
        }
    }
    let output = dvipsecctl(&["esp".into(), "--help".into()], b"");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("1 an ICV did not verify"),
        "esp --help does not name the exit codes: {help}"
    );
}
