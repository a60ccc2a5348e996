//! `topology up|down` on the test site: everything it builds is there and reachable while up,
//! and nothing is left after `down`, also after the nodes crashed or a node failed to boot.

mod support;

use std::path::Path;
use std::process::Command;

use dvipsec_hwtest::topology::{self, TopologyError};
use support::site::{prerequisites, TestSite};

fn pings(namespace: &str, address: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", namespace, "ping", "-c", "1", "-W", "2", address,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn log_of(site: &TestSite, node: &str) -> String {
    std::fs::read_to_string(site.run_dir().join(format!("{node}.log"))).unwrap_or_default()
}

#[test]
fn up_builds_the_site_and_down_leaves_nothing() {
    let Some(dvipsec) = prerequisites("up_builds_the_site_and_down_leaves_nothing") else {
        return;
    };
    let site = TestSite::new("a", |text| text);
    topology::up(&site.file, &site.options(dvipsec)).unwrap();

    let expected: Vec<String> = ["MVS1", "MVS2", "MVS4", "hub", "peer"]
        .iter()
        .map(|n| site.ns(n))
        .collect();
    assert_eq!(site.namespaces(), expected);
    let pids = site.pids();
    assert_eq!(pids.len(), 3);
    for &pid in &pids {
        assert!(topology::is_boot_process(pid), "boot {pid} is not running");
    }
    assert!(site.cf.exists(), "MVS1 created the CF region");
    assert!(log_of(&site, "MVS1").contains("facility=owner of"));
    assert!(log_of(&site, "MVS2").contains("facility=user of"));
    assert!(
        pings(&site.ns("peer"), "198.51.100.10"),
        "peer reaches DVA1"
    );
    assert!(pings(&site.ns("MVS1"), "192.0.2.4"), "XCF1 reaches XCF4");
    assert!(pings(&site.ns("MVS4"), "192.0.2.2"), "XCF4 reaches XCF2");

    for peer in ["MVS2", "MVS4"] {
        let line = format!("XCF stream up node=MVS1 peer={peer} tls=false");
        wait_for_log(&site, "MVS1", &line);
    }
    wait_for_log(&site, "MVS4", "XCF stream up node=MVS4 peer=MVS2 tls=false");

    topology::down(&site.run_dir()).unwrap();
    site.assert_nothing_left(&pids);
    topology::down(&site.run_dir()).unwrap();
}

/// Waits until `node`'s log has `needle` (the XCF streams cross the namespaces' bridge).
fn wait_for_log(site: &TestSite, node: &str, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_of(site, node).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{node} never logged {needle:?}:\n{}",
            log_of(site, node)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn protected_xcf_streams_come_up_over_mutual_tls() {
    let Some(dvipsec) = prerequisites("protected_xcf_streams_come_up_over_mutual_tls") else {
        return;
    };
    let site = TestSite::new("p", |text| {
        text.replace(
            "  security: trusted",
            "  security:\n    protected:\n      key: file:xcf.key",
        )
    });
    std::fs::write(site.dir.path().join("xcf.key"), b"a test-only XCF site key").unwrap();
    topology::up(&site.file, &site.options(dvipsec)).unwrap();
    let pids = site.pids();
    for peer in ["MVS2", "MVS4"] {
        let line = format!("XCF stream up node=MVS1 peer={peer} tls=true");
        wait_for_log(&site, "MVS1", &line);
    }
    wait_for_log(&site, "MVS4", "XCF stream up node=MVS4 peer=MVS2 tls=true");
    topology::down(&site.run_dir()).unwrap();
    site.assert_nothing_left(&pids);
}

#[test]
fn down_cleans_up_after_the_nodes_crashed() {
    let Some(dvipsec) = prerequisites("down_cleans_up_after_the_nodes_crashed") else {
        return;
    };
    let site = TestSite::new("c", |text| text);
    topology::up(&site.file, &site.options(dvipsec)).unwrap();
    let pids = site.pids();
    let status = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(site.cf.exists(), "a crashed owner leaves its region");

    topology::down(&site.run_dir()).unwrap();
    site.assert_nothing_left(&pids);
}

#[test]
fn a_node_that_fails_to_boot_fails_up_and_leaves_nothing() {
    let Some(dvipsec) = prerequisites("a_node_that_fails_to_boot_fails_up_and_leaves_nothing")
    else {
        return;
    };
    // MVS4's port is an in-memory one, which `dvipsec boot` refuses.
    let site = TestSite::new("f", |text| {
        let (head, tail) = text.split_once("  - name: MVS4").unwrap();
        let tail = tail.replacen("driver: af_packet\n        iface: ext0", "driver: mem", 1);
        format!("{head}  - name: MVS4{tail}")
    });
    let error = topology::up(&site.file, &site.options(dvipsec)).unwrap_err();
    let TopologyError::BootFailed { node, tail, .. } = &error else {
        panic!("expected BootFailed, got {error}");
    };
    assert_eq!(node, "MVS4");
    assert!(tail.contains("driver mem cannot be used"), "{tail}");
    site.assert_nothing_left(&[]);
}

#[test]
fn down_with_no_state_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    topology::down(&dir.path().join("never-up")).unwrap();
    assert!(!Path::new(&dir.path().join("never-up")).exists());
}
