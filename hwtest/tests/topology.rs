//! `topology up|down` on the test site: everything it builds is there and reachable while up,
//! and nothing is left after `down`, also after the nodes crashed or a node failed to boot.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use dvipsec_hwtest::netns::list_namespaces;
use dvipsec_hwtest::preflight::running_as_root;
use dvipsec_hwtest::topology::{self, Resource, TopologyError, TopologyOptions};
use support::skip_or_fail_in_ci;

const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sites/figure4-netns.yaml");

/// The `dvipsec` binary of this build (target/debug/dvipsec next to target/debug/deps).
fn dvipsec_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("dvipsec");
    candidate.exists().then_some(candidate)
}

/// The prerequisites, or `None` (after saying why) outside CI; under CI a gap is a failure.
fn prerequisites(test: &str) -> Option<PathBuf> {
    let problem = if !running_as_root() {
        "needs root for network namespaces".to_owned()
    } else if let Some(binary) = dvipsec_binary() {
        return Some(binary);
    } else {
        "needs the dvipsec binary: run `cargo build -p dvipsec` first".to_owned()
    };
    skip_or_fail_in_ci(test, &problem);
    None
}

/// A copy of the test site under a name (and CF path) of its own, its run directory, and a
/// guard that runs `down` whatever happens.
struct TestSite {
    dir: tempfile::TempDir,
    file: PathBuf,
    prefix: String,
    cf: PathBuf,
}

impl TestSite {
    fn new(tag: &str, edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("t{}{tag}", std::process::id());
        let cf = PathBuf::from(format!("/dev/shm/dvipsec-hwtest-{name}-cf"));
        let text = std::fs::read_to_string(SITE)
            .unwrap()
            .replace("site: fig4ns", &format!("site: {name}"))
            .replace(
                "/dev/shm/dvipsec-hwtest-fig4ns-cf",
                &cf.display().to_string(),
            );
        let file = dir.path().join("site.yaml");
        std::fs::write(&file, edit(text)).unwrap();
        TestSite {
            dir,
            file,
            prefix: format!("dvh-{name}"),
            cf,
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn options(&self, dvipsec: PathBuf) -> TopologyOptions {
        TopologyOptions {
            run_dir: self.run_dir(),
            dvipsec,
        }
    }

    fn namespaces(&self) -> Vec<String> {
        let mut found: Vec<String> = list_namespaces()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .collect();
        found.sort();
        found
    }

    fn pids(&self) -> Vec<u32> {
        topology::recorded(&self.run_dir())
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Resource::Process(pid) => Some(pid),
                _ => None,
            })
            .collect()
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn assert_nothing_left(&self, pids: &[u32]) {
        assert!(
            self.namespaces().is_empty(),
            "left: {:?}",
            self.namespaces()
        );
        for &pid in pids {
            assert!(!topology::is_boot_process(pid), "boot {pid} still runs");
        }
        assert!(!self.cf.exists(), "CF region {} left", self.cf.display());
        assert!(!self.run_dir().exists(), "run directory left");
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        let _ = topology::down(&self.run_dir());
    }
}

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
