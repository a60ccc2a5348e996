//! Shared helpers for the `dvipsecctl` integration tests: running the built binary (with input,
//! or against a control socket), its output, running the scapy/tshark helper script,
//! prerequisite checks and the table of ESP interop cases.
#![allow(dead_code)] // each test crate uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// Runs `dvipsecctl` with `args`, feeding `stdin`.
pub fn dvipsecctl(args: &[String], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dvipsecctl"));
    command.args(args);
    // A command that fails early may close stdin first; its exit status tells the story.
    let (output, _written) = run_feeding(&mut command, stdin);
    output
}

/// Runs `command` with `stdin` written to it and then closed, and collects its output; the
/// second value says whether all of `stdin` was written.
fn run_feeding(command: &mut Command, stdin: &[u8]) -> (Output, std::io::Result<()>) {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {program}: {err}"));
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let written = pipe.write_all(stdin);
    drop(pipe);
    let output = child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("wait for {program}: {err}"));
    (output, written)
}

/// Runs `dvipsecctl` with `args` and no input, as an operator types it.
pub fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvipsecctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("run dvipsecctl {args:?}: {err}"))
}

/// Runs `dvipsecctl ARGS --socket SOCKET`: one command against one box.
pub fn ctl_at(args: &[&str], socket: &Path) -> Output {
    let socket = socket
        .to_str()
        .expect("socket paths of the tests are UTF-8");
    let mut with_socket = args.to_vec();
    with_socket.extend(["--socket", socket]);
    ctl(&with_socket)
}

/// The stdout of a command that must have succeeded; else the test fails with its exit code
/// and stderr.
pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("dvipsecctl writes UTF-8")
}

/// Exit code of a finished process (-1 when killed by a signal).
pub fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Text of a process's stderr.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn helper_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/esp_interop.py")
}

/// Runs `esp_interop.py COMMAND` with `input` as JSON on stdin; returns its JSON answer.
pub fn python_helper(command: &str, input: &Value) -> Value {
    let mut python = Command::new("python3");
    python.arg(helper_script()).arg(command);
    let (output, written) = run_feeding(&mut python, input.to_string().as_bytes());
    written.expect("write cases to the python helper");
    assert!(
        output.status.success(),
        "esp_interop.py {command} failed: {}",
        stderr_text(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "esp_interop.py {command} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// What the independent checkers on this machine can do.
#[derive(Debug, Clone, Copy)]
pub struct Checkers {
    /// scapy's ESP implementation knows ChaCha20-Poly1305.
    pub scapy_chacha: bool,
    /// tshark is on PATH.
    pub tshark: bool,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a missing prerequisite: a failure under CI=true, a printed skip otherwise.
pub fn missing(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: prerequisite missing under CI=true: {reason} (run scripts/install-test-deps.sh)");
    }
    // Straight to stderr, not eprintln!: the test harness would capture that and hide the reason.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason} (run scripts/install-test-deps.sh)"
    );
}

/// Checks that python3 and scapy are usable. `None` means the caller must return (skipped).
pub fn require_scapy(test: &str) -> Option<Checkers> {
    let probe = Command::new("python3")
        .arg(helper_script())
        .arg("probe")
        .stdin(Stdio::null())
        .output();
    let output = match probe {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            missing(
                test,
                &format!("python3 helper probe failed: {}", stderr_text(&output)),
            );
            return None;
        }
        Err(err) => {
            missing(test, &format!("python3 cannot be run: {err}"));
            return None;
        }
    };
    let answer: Value = serde_json::from_slice(&output.stdout).expect("probe prints JSON");
    if answer["scapy"] != json!(true) {
        missing(
            test,
            &format!("scapy is not importable: {}", answer["reason"]),
        );
        return None;
    }
    Some(Checkers {
        scapy_chacha: answer["chacha20poly1305"] == json!(true),
        tshark: answer["tshark"] == json!(true),
    })
}

/// Inner transport protocol of a case's plaintext packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// TCP with these flags (scapy notation, e.g. "S" or "PA").
    Tcp(&'static str),
    /// UDP.
    Udp,
    /// ICMP (IPv4) or ICMPv6 echo request: no ports.
    Icmp,
}

/// Less common packet shapes that must interoperate too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A bare IP header.
    Plain,
    /// IPv4 with a record-route option (header longer than 20 bytes).
    Ipv4Options,
    /// IPv6 with this extension header before the transport header: "hbh", "dstopt", "routing".
    Ipv6Extension(&'static str),
    /// NAT-T whose source port a NAT changed (31337 -> 4500).
    NatPortChanged,
}

/// One interop case: an SA and the plaintext packet to carry.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub suite: &'static str,
    pub tunnel: bool,
    /// Address family of the plaintext packet.
    pub inner_v6: bool,
    /// Address family of the tunnel header (tunnel mode only).
    pub outer_v6: bool,
    pub natt: bool,
    pub esn: bool,
    pub spi: u32,
    pub seq: u64,
    pub inner: Inner,
    pub payload_len: usize,
    pub shape: Shape,
}

/// The suites of the issue; scapy supports every one (ChaCha20 only in recent versions).
pub const SUITES: [&str; 5] = [
    "aes128gcm16",
    "aes256gcm16",
    "chacha20poly1305",
    "aes256cbc-sha256",
    "null-sha256",
];

impl Case {
    /// Encryption key material for the suite (AEAD: key then 4-byte salt), derived from the SPI.
    pub fn key_hex(&self) -> String {
        let len = match self.suite {
            "aes128gcm16" => 20,
            "aes256gcm16" | "chacha20poly1305" => 36,
            "aes256cbc-sha256" => 32,
            _ => 0,
        };
        pattern_hex(len, self.spi.to_be_bytes()[3])
    }

    /// HMAC-SHA-256 key for the non-AEAD suites.
    pub fn auth_key_hex(&self) -> String {
        match self.suite {
            "aes256cbc-sha256" | "null-sha256" => pattern_hex(32, self.spi.to_be_bytes()[3] ^ 0x5a),
            _ => String::new(),
        }
    }

    pub fn inner_addresses(&self) -> (&'static str, &'static str) {
        if self.inner_v6 {
            ("2001:db8:10::1", "2001:db8:10::2")
        } else {
            ("10.1.0.1", "10.1.0.2")
        }
    }

    pub fn tunnel_addresses(&self) -> (&'static str, &'static str) {
        if self.outer_v6 {
            ("2001:db8:ff::1", "2001:db8:ff::2")
        } else {
            ("192.0.2.1", "192.0.2.2")
        }
    }

    pub fn ports(&self) -> (u16, u16) {
        (40000 + (self.spi % 1000) as u16, 443)
    }

    /// UDP encapsulation ports, if the case uses NAT-T.
    pub fn udp_encap_ports(&self) -> Option<(u16, u16)> {
        match (self.natt, self.shape) {
            (false, _) => None,
            (true, Shape::NatPortChanged) => Some((31337, 4500)),
            (true, _) => Some((4500, 4500)),
        }
    }

    /// The case as the python helper reads it.
    pub fn to_json(&self) -> Value {
        let (src, dst) = self.inner_addresses();
        let (tunnel_src, tunnel_dst) = self.tunnel_addresses();
        let (sport, dport) = self.ports();
        let (proto, flags) = match self.inner {
            Inner::Tcp(flags) => ("tcp", flags),
            Inner::Udp => ("udp", ""),
            Inner::Icmp => ("icmp", ""),
        };
        let (ip_options, ipv6_extension) = match self.shape {
            Shape::Ipv4Options => (true, Value::Null),
            Shape::Ipv6Extension(name) => (false, json!(name)),
            Shape::Plain | Shape::NatPortChanged => (false, Value::Null),
        };
        json!({
            "name": self.name,
            "suite": self.suite,
            "key": self.key_hex(),
            "auth_key": self.auth_key_hex(),
            "spi": self.spi,
            "seq": self.seq,
            "esn": self.esn,
            "mode": if self.tunnel { "tunnel" } else { "transport" },
            "tunnel_src": tunnel_src,
            "tunnel_dst": tunnel_dst,
            "udp_encap": self.udp_encap_ports().map_or(Value::Null, |(s, d)| json!([s, d])),
            "iv": Value::Null,
            "inner": {
                "src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport,
                "flags": flags, "payload_len": self.payload_len,
                "ip_options": ip_options, "ipv6_extension": ipv6_extension,
            },
        })
    }

    /// The SA flags for `dvipsecctl esp ACTION`. `seq` is the CLI's --seq for that action.
    pub fn sa_flags(&self, seq: u64) -> Vec<String> {
        let mut flags = vec![
            "--spi".to_owned(),
            format!("{:#x}", self.spi),
            "--seq".to_owned(),
            seq.to_string(),
            "--suite".to_owned(),
            self.suite.to_owned(),
            "--mode".to_owned(),
            if self.tunnel { "tunnel" } else { "transport" }.to_owned(),
        ];
        let key = self.key_hex();
        if !key.is_empty() {
            flags.extend(["--key".to_owned(), key]);
        }
        let auth_key = self.auth_key_hex();
        if !auth_key.is_empty() {
            flags.extend(["--auth-key".to_owned(), auth_key]);
        }
        if self.tunnel {
            let (src, dst) = self.tunnel_addresses();
            flags.extend([
                "--tunnel-src".to_owned(),
                src.to_owned(),
                "--tunnel-dst".to_owned(),
                dst.to_owned(),
            ]);
        }
        if let Some((sport, dport)) = self.udp_encap_ports() {
            flags.extend(["--udp-encap".to_owned(), format!("{sport}:{dport}")]);
        }
        if self.esn {
            flags.push("--esn".to_owned());
        }
        flags
    }

    /// `dvipsecctl esp ACTION --hex` with this case's SA.
    pub fn cli_args(&self, action: &str, seq: u64) -> Vec<String> {
        let mut args = vec!["esp".to_owned(), action.to_owned(), "--hex".to_owned()];
        args.extend(self.sa_flags(seq));
        args
    }
}

fn pattern_hex(len: usize, seed: u8) -> String {
    let bytes: Vec<u8> = (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add((i as u8).wrapping_mul(13))
        })
        .collect();
    hex::encode(bytes)
}

/// Every suite (as far as scapy supports it) x transport/tunnel x IPv4/IPv6 x plain/NAT-T, plus
/// mixed-family tunnels and ESN cases. SPIs are unique so tshark can tell the SAs apart.
pub fn interop_matrix(checkers: Checkers) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut spi = 0x1000u32;
    for suite in SUITES {
        if suite == "chacha20poly1305" && !checkers.scapy_chacha {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: this scapy has no CHACHA20-POLY1305; chacha20poly1305 is not covered"
            );
            continue;
        }
        for tunnel in [false, true] {
            for v6 in [false, true] {
                for natt in [false, true] {
                    spi += 1;
                    let inner = if spi & 1 == 0 {
                        Inner::Tcp("S")
                    } else {
                        Inner::Udp
                    };
                    cases.push(Case {
                        name: format!(
                            "{suite}/{}/{}/{}",
                            if tunnel { "tunnel" } else { "transport" },
                            if v6 { "ipv6" } else { "ipv4" },
                            if natt { "natt" } else { "esp" }
                        ),
                        suite,
                        tunnel,
                        inner_v6: v6,
                        outer_v6: v6,
                        natt,
                        esn: false,
                        spi,
                        seq: u64::from(spi % 97 + 1),
                        inner,
                        payload_len: (spi as usize * 37) % 200,
                        shape: Shape::Plain,
                    });
                }
            }
        }
        spi += 1;
        cases.push(Case {
            name: format!("{suite}/transport/ipv4/esp/esn"),
            suite,
            tunnel: false,
            inner_v6: false,
            outer_v6: false,
            natt: false,
            esn: true,
            spi,
            seq: 0x0000_0003_0000_0010,
            inner: Inner::Tcp("PA"),
            payload_len: 100,
            shape: Shape::Plain,
        });
    }
    for (inner_v6, outer_v6) in [(false, true), (true, false)] {
        spi += 1;
        cases.push(Case {
            name: format!(
                "aes128gcm16/tunnel/{}-in-{}/natt",
                if inner_v6 { "ipv6" } else { "ipv4" },
                if outer_v6 { "ipv6" } else { "ipv4" }
            ),
            suite: "aes128gcm16",
            tunnel: true,
            inner_v6,
            outer_v6,
            natt: true,
            esn: false,
            spi,
            seq: 9,
            inner: Inner::Tcp("S"),
            payload_len: 0,
            shape: Shape::Plain,
        });
    }
    cases
}

/// Asks scapy to build and encrypt every case; returns (plaintext, sealed) bytes per case.
pub fn scapy_encrypt(cases: &[Case]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let input = Value::Array(cases.iter().map(Case::to_json).collect());
    let answers = python_helper("encrypt", &input);
    let answers = answers.as_array().expect("encrypt answers a list");
    assert_eq!(answers.len(), cases.len(), "one answer per case");
    cases
        .iter()
        .zip(answers)
        .map(|(case, answer)| {
            assert_eq!(answer["name"], json!(case.name));
            assert!(
                answer.get("error").is_none(),
                "{}: scapy could not encrypt: {}",
                case.name,
                answer["error"]
            );
            (hex_field(answer, "plain"), hex_field(answer, "sealed"))
        })
        .collect()
}

/// Decodes a hex string field of a JSON answer.
pub fn hex_field(answer: &Value, field: &str) -> Vec<u8> {
    let text = answer[field]
        .as_str()
        .unwrap_or_else(|| panic!("answer has no {field}: {answer}"));
    hex::decode(text).unwrap_or_else(|err| panic!("{field} is not hex ({err}): {text}"))
}

/// Decodes the CLI's hex output (one packet per line).
pub fn hex_lines(output: &Output) -> Vec<Vec<u8>> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            hex::decode(l.trim()).unwrap_or_else(|err| panic!("output is not hex ({err}): {l}"))
        })
        .collect()
}

/// Collects failures of a table-driven test so that one run names every failing case.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn add(&mut self, case: &str, what: String) {
        self.0.push(format!("{case}: {what}"));
    }

    pub fn check(&mut self, ok: bool, case: &str, what: impl FnOnce() -> String) {
        if !ok {
            self.add(case, what());
        }
    }

    pub fn assert_none(self, test: &str, total: usize) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failed checks over {total} cases:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}
