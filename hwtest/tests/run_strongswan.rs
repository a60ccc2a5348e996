//! `dvipsec-hwtest run` end to end against strongSwan: namespaces, charon with
//! kernel-libipsec, our IKE initiator and user-space ESP in the load generator, the JSON
//! result and the HTML report. Needs root and strongSwan: under CI=true a missing
//! prerequisite fails the test, elsewhere it is skipped with the reason.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const CHARON: &str = "/usr/sbin/charon-systemd";
const SWANCTL: &str = "/usr/sbin/swanctl";
const LIBIPSEC_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";

fn missing_prerequisite() -> Option<String> {
    if !dvipsec_hwtest::preflight::running_as_root() {
        return Some("needs root (network namespaces)".into());
    }
    for tool in [CHARON, SWANCTL, LIBIPSEC_PLUGIN] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing: run scripts/install-test-deps.sh"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the ip tool (iproute2) is missing".into());
    }
    None
}

/// True when the test can run; under CI=true a missing prerequisite fails it.
fn prerequisites_met(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: prerequisite missing under CI: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

fn hwtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvipsec-hwtest"))
        .args(args)
        .output()
        .expect("run dvipsec-hwtest")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `scenario` against strongSwan only, asserts success, returns the JSON and report.
fn run_against_strongswan(scenario: &str, extra: &[&str], out: &Path) -> (Value, String) {
    let out_arg = out.display().to_string();
    let mut args = vec!["run", scenario, "--system", "strongswan", "--out", &out_arg];
    args.extend_from_slice(extra);
    let output = hwtest(&args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    let json = std::fs::read_to_string(out.join("result.json")).expect("result.json written");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html written");
    (serde_json::from_str(&json).expect("valid JSON"), html)
}

fn points(result: &Value) -> &Vec<Value> {
    let system = &result["systems"]["strongswan"];
    assert_eq!(system["status"], "measured", "{system}");
    system["points"].as_array().expect("points")
}

#[test]
fn outbound_at_a_low_rate_loses_nothing_and_reports_with_plots() {
    if !prerequisites_met("outbound_at_a_low_rate_loses_nothing_and_reports_with_plots") {
        return;
    }
    let out = tempfile::tempdir().expect("temporary directory");
    let (result, html) = run_against_strongswan(
        "outbound",
        &["--seconds", "2", "--rate", "1000"],
        out.path(),
    );
    let points = points(&result);
    let labels: Vec<&str> = points.iter().filter_map(|p| p["label"].as_str()).collect();
    assert_eq!(labels, ["64 B", "576 B", "1420 B", "IMIX"]);
    for point in points {
        let sent = point["sent"].as_u64().expect("sent");
        // 1000 pps for 2 s: the pacing must have offered about that many.
        assert!((1500..=2500).contains(&sent), "{point}");
        assert_eq!(point["lost"], 0, "no loss at 1000 pps: {point}");
        assert_eq!(point["received"], sent, "{point}");
        assert!(point["gbps"].as_f64().expect("gbps") > 0.0, "{point}");
        assert!(point["pps"].as_f64().expect("pps") > 400.0, "{point}");
        assert_eq!(point["replay_rejected_at_peer"], 0, "{point}");
        assert_eq!(point["replay_rejected_at_gateway"], 0, "{point}");
        assert_eq!(point["open_failures"], 0, "{point}");
        let latency = &point["latency"];
        assert!(latency["p50_us"].as_f64().expect("p50") > 0.0, "{point}");
        assert!(
            latency["p999_us"].as_f64() >= latency["p50_us"].as_f64(),
            "{point}"
        );
        // The gateway's own counters saw every probe and every reply.
        assert_eq!(
            point["gateway_esp_packets"][0].as_u64(),
            Some(sent),
            "{point}"
        );
        assert!(
            point["cycles_per_packet"].as_f64().expect("cycles") > 0.0,
            "{point}"
        );
    }
    assert!(html.contains("<svg"), "report has plots");
    assert!(html.contains("Throughput against packet size"));
    assert!(html.contains("Latency CDF"));
}

#[test]
fn rekeys_through_our_ike_under_load_keep_the_traffic_flowing() {
    if !prerequisites_met("rekeys_through_our_ike_under_load_keep_the_traffic_flowing") {
        return;
    }
    let out = tempfile::tempdir().expect("temporary directory");
    let (result, _) =
        run_against_strongswan("rekey", &["--seconds", "3", "--rate", "2000"], out.path());
    let point = &points(&result)[0];
    let completed = point["rekeys_completed"].as_u64().expect("rekeys");
    assert!(completed >= 2, "{point}");
    assert_eq!(point["rekeys_started"].as_u64(), Some(completed), "{point}");
    // Old and new SAs overlap: replies still arrive and none is refused as a replay.
    assert!(
        point["loss_ratio"].as_f64().expect("loss") < 0.01,
        "{point}"
    );
    assert_eq!(point["replay_rejected_at_peer"], 0, "{point}");
    assert_eq!(point["replay_rejected_at_gateway"], 0, "{point}");
}

#[test]
fn takeover_says_it_is_not_available_with_exit_code_3() {
    let output = hwtest(&["run", "takeover"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("not available: failover not built yet"));
}

#[test]
fn xcf_loss_does_not_apply_to_strongswan_and_says_so() {
    let out = tempfile::tempdir().expect("temporary directory");
    let out_arg = out.path().display().to_string();
    let output = hwtest(&[
        "run",
        "xcf-loss",
        "--system",
        "strongswan",
        "--out",
        &out_arg,
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let json = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let result: Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(result["systems"]["strongswan"]["status"], "not_applicable");
}
