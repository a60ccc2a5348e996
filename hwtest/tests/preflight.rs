//! The preflight really builds and removes a topology, and the binary reports it.

use std::process::Command;

use dvipsec_hwtest::netns::list_namespaces;
use dvipsec_hwtest::preflight;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Returns false (and says why) when this test cannot run here; panics under CI.
fn have_root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root for network namespaces, and CI=true"
    );
    eprintln!("skipping {test}: needs root for network namespaces");
    false
}

#[test]
fn preflight_passes_and_leaves_no_namespace_behind() {
    if !have_root_or_skip("preflight_passes_and_leaves_no_namespace_behind") {
        return;
    }
    let tag = format!("t{}", std::process::id());
    let checks = preflight::run(&tag);
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "preflight failed: {failed:?}");
    assert_eq!(
        checks.len(),
        3,
        "root, topology and hugepage checks all ran"
    );
    let leftover: Vec<String> = list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.contains(&tag))
        .collect();
    assert!(leftover.is_empty(), "namespaces left behind: {leftover:?}");
}

#[test]
fn preflight_binary_prints_one_line_per_check() {
    if !have_root_or_skip("preflight_binary_prints_one_line_per_check") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dvipsec-hwtest"))
        .arg("preflight")
        .output()
        .expect("run dvipsec-hwtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "preflight exited {:?}: {stdout}",
        out.status
    );
    for name in ["root", "netns+veth", "hugepages"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(name)),
            "no passing line for {name} in:\n{stdout}"
        );
    }
}
