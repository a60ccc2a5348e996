//! `dvipsec demo` as a user runs it: the built binary, two seconds, JSON summary on stdout.

use serde_json::Value;
use std::process::{Command, Output};

/// The PSK compiled into the demo (see `demo/ike.rs`); it must never be printed.
const DEMO_PSK: &str = "dvipsec-demo-psk-never-printed";

fn run_demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvipsec"))
        .arg("demo")
        .args(args)
        .output()
        .expect("dvipsec runs")
}

fn json_demo() -> (Value, String, String) {
    let output = run_demo(&["--seconds", "2", "--json"]);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
    (summary, stdout, stderr)
}

fn count(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a count in {value}"))
}

#[test]
fn two_seconds_of_the_figure4_site_are_clean_and_consistent() {
    let (summary, _, stderr) = json_demo();
    assert!(
        stderr.contains("targets in/out"),
        "live line on stderr: {stderr}"
    );

    // The site file's targets: DVA1 -> MVS1, MVS2, MVS4; DVB1 -> ALL (MVS1..MVS5).
    let targets = summary["targets"].as_array().expect("targets");
    let nodes: Vec<&str> = targets
        .iter()
        .map(|t| t["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"]);
    let mut outbound_total = 0;
    for target in targets {
        let inbound = count(target, "inbound_packets");
        let outbound = count(target, "outbound_packets");
        assert!(
            inbound > 0 && outbound > 0,
            "every serving target got traffic: {target}"
        );
        outbound_total += outbound;
    }

    let distributors = summary["distributors"].as_array().expect("distributors");
    let nodes: Vec<&str> = distributors
        .iter()
        .map(|d| d["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["MVS1", "MVS5"]);
    for distributor in distributors {
        assert_eq!(
            count(distributor, "outbound_sent"),
            0,
            "outbound bypasses: {distributor}"
        );
        assert!(count(distributor, "forwarded") > 0, "{distributor}");
        assert!(count(distributor, "peeked") >= count(distributor, "forwarded"));
    }

    let peer = &summary["peer"];
    assert_eq!(count(peer, "duplicate_seq"), 0, "{peer}");
    assert_eq!(count(peer, "replay_drops"), 0, "{peer}");
    assert_eq!(count(peer, "auth_failures"), 0, "{peer}");
    // 16 echo flows to each DVIPA.
    assert_eq!(count(peer, "connections"), 32, "{peer}");
    // Per-packet sequence allocation: one CF number per packet a target sealed, and every
    // sealed packet reached the peer.
    let issued = count(&summary["cf"], "numbers_issued");
    assert_eq!(issued, outbound_total);
    assert_eq!(count(peer, "packets_received"), outbound_total);
    // Every echo request came back; the extra received packet is the target-originated one.
    assert_eq!(
        count(peer, "packets_sent") + 1,
        count(peer, "packets_received")
    );

    // Each DVIPA has its own peer; DVB1's first connection comes from a target (NEWCONN).
    let peers = summary["peers"].as_array().expect("peers");
    let firsts: Vec<(&str, &str)> = peers
        .iter()
        .map(|p| {
            assert_eq!(count(p, "unrecognised"), 0, "{p}");
            assert_eq!(count(p, "send_failures"), 0, "{p}");
            assert!(count(p, "packets_received") > 0, "{p}");
            (
                p["dvipa"].as_str().unwrap(),
                p["first_connection_from"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(firsts, [("DVA1", "peer"), ("DVB1", "target")]);

    assert!(count(&summary, "rekeys") >= 1, "{summary}");
    assert!(count(&summary, "lifesize_reports") >= 1, "{summary}");
    assert_eq!(count(&summary, "newconn"), 1, "{summary}");
    assert_eq!(count(&summary, "errors"), 0, "{summary}");
}

#[test]
fn no_key_material_is_printed() {
    let (_, stdout, stderr) = json_demo();
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains(DEMO_PSK), "the PSK is in {name}");
        // Keys would show as long runs of hex digits; counters are short decimal numbers.
        let longest_hex = text
            .split(|c: char| !c.is_ascii_hexdigit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_hex < 24, "a long hex string in {name}: {text}");
    }
}

#[test]
fn the_text_summary_names_every_box() {
    let output = run_demo(&["--seconds", "1"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    for node in ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"] {
        assert!(stdout.contains(node), "{node} missing: {stdout}");
    }
    assert!(stdout.contains("rekeys"), "{stdout}");
}

#[test]
fn a_bad_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "site: [unclosed\n").unwrap();
    let output = run_demo(&["--seconds", "1", "--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(stderr.contains("broken.yaml"), "{stderr}");
}
