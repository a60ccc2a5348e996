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

/// The takeover also needs the firmware next to the harness, tshark and python3 (the peer's
/// echo client).
fn takeover_prerequisites_met(test: &str) -> bool {
    let harness = Path::new(env!("CARGO_BIN_EXE_dvipsec-hwtest"));
    let firmware = harness.with_file_name("dvipsec");
    let missing = [
        firmware.as_path(),
        Path::new("/usr/bin/tshark"),
        Path::new("/usr/bin/python3"),
    ]
    .into_iter()
    .find(|tool| !tool.exists());
    match missing {
        None => prerequisites_met(test),
        Some(tool) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{test}: {} is missing under CI (cargo build -p dvipsec builds the firmware)",
                tool.display()
            )
        }
        Some(tool) => {
            eprintln!("skipping {test}: {} is missing", tool.display());
            false
        }
    }
}

const SITE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sites/figure4-netns.yaml");

/// The runs on the figure-4 site share its namespaces: one at a time.
static SITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn takeover_writes_its_figures_and_leaves_nothing_up() {
    let test = "takeover_writes_its_figures_and_leaves_nothing_up";
    if !takeover_prerequisites_met(test) {
        return;
    }
    let _site = SITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().expect("temporary directory");
    let out_arg = out.path().display().to_string();
    let args = [
        "run",
        "takeover",
        "--site",
        SITE_FILE,
        "--out",
        &out_arg,
        "--seconds",
        "6",
    ];
    let output = hwtest(&args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    let json = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let result: Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(result["scenario"], "takeover", "{result}");
    // The default site names no backup: the run made MVS4 DVA1's.
    assert_eq!(result["backup_added"], true, "{result}");
    let ran = std::fs::read_to_string(out.path().join("site.yaml")).expect("site.yaml");
    assert!(ran.contains("- node: MVS4"), "{ran}");
    assert_eq!(result["seq_reuse"], 0, "{result}");
    assert!(
        result["esp_packets"].as_u64().expect("esp_packets") > 0,
        "{result}"
    );
    let detection = result["detection_ms"].as_f64().expect("detection_ms");
    let takeover = result["takeover_ms"].as_f64().expect("takeover_ms");
    assert!((0.0..1000.0).contains(&detection), "{result}");
    assert!(takeover >= detection, "{result}");
    assert!(
        result["traffic_gap_ms"].as_u64().expect("gap") < 2000,
        "{result}"
    );
    assert_eq!(result["failures"], serde_json::json!([]), "{result}");
    // The PSK does not stay in the results, and the site is down again.
    assert!(!out.path().join("strongswan/swanctl.conf").exists());
    let left = dvipsec_hwtest::netns::list_namespaces().expect("namespaces");
    assert!(
        !left.iter().any(|n| n.starts_with("dvh-fig4ns-")),
        "{left:?}"
    );
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

/// The generator against dvipsec on the namespace site: every size, 1420 B included (its
/// forwarded packets carry the distributor's GRE on the XCF network), arrives and is answered.
#[test]
fn outbound_through_the_dvipsec_site_loses_nothing_at_any_size() {
    let test = "outbound_through_the_dvipsec_site_loses_nothing_at_any_size";
    if !takeover_prerequisites_met(test) {
        return;
    }
    let _site = SITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().expect("temporary directory");
    let out_arg = out.path().display().to_string();
    let args = [
        "run",
        "outbound",
        "--system",
        "dvipsec",
        "--seconds",
        "2",
        "--rate",
        "1000",
        "--out",
        &out_arg,
        "--site",
        SITE_FILE,
    ];
    let output = hwtest(&args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    let json = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let result: Value = serde_json::from_str(&json).expect("valid JSON");
    let system = &result["systems"]["dvipsec"];
    assert_eq!(system["status"], "measured", "{system}");
    let points = system["points"].as_array().expect("points");
    assert_eq!(points.len(), 4, "{system}");
    for point in points {
        let sent = point["sent"].as_u64().expect("sent");
        assert!(sent > 1000, "{point}");
        assert_eq!(point["lost"], 0, "no loss at 1000 pps: {point}");
        assert_eq!(point["replay_rejected_at_peer"], 0, "{point}");
    }
}
