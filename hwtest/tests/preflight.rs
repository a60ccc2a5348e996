//! The preflight really builds and removes a topology, and the binary reports it.

mod support;

use std::process::Command;

use dvipsec_hwtest::netns::list_namespaces;
use dvipsec_hwtest::preflight::{self, running_as_root};
use support::skip_or_fail_in_ci;

/// Returns false (and says why) when this test cannot run here; panics under CI.
fn have_root_or_skip(test: &str) -> bool {
    if running_as_root() {
        return true;
    }
    skip_or_fail_in_ci(test, "needs root for network namespaces");
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
