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

/// Usage errors need no scapy: they never reach the engine's packet code.
#[test]
fn bad_flags_exit_2_without_showing_keys() {
    let secret = "00112233445566778899aabbccddeeff0011223Z";
    let gcm = |key: &str| -> Vec<String> {
        [
            "esp",
            "seal",
            "--hex",
            "--spi",
            "0x1234",
            "--suite",
            "aes128gcm16",
            "--key",
            key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let packet = b"4500001c0001000040110000 0a0000010a000002 00350035 00080000\n";
    let table: Vec<(&str, Vec<String>, &str)> = vec![
        ("key not hex", gcm(secret), "--key"),
        (
            "key too short",
            gcm("00112233445566778899aabbccddeeff"),
            "20",
        ),
        (
            "no key for gcm",
            gcm("x").into_iter().take(7).collect(),
            "--key",
        ),
        (
            "spi not a number",
            {
                let mut args = gcm("00112233445566778899aabbccddeeff00112233");
                args[4] = "0xqq".to_owned();
                args
            },
            "--spi",
        ),
        (
            "tunnel without endpoints",
            {
                let mut args = gcm("00112233445566778899aabbccddeeff00112233");
                args.extend(["--mode".to_owned(), "tunnel".to_owned()]);
                args
            },
            "tunnel",
        ),
    ];
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
