//! A private copy of the figure-4 namespace site for one test, and what the topology tests
//! need to run it: the firmware binary, the prerequisites, and cleanup whatever happens.

use std::path::PathBuf;

use dvipsec_hwtest::netns::list_namespaces;
use dvipsec_hwtest::preflight::running_as_root;
use dvipsec_hwtest::topology::{self, Resource, TopologyOptions};

use super::skip_or_fail_in_ci;

pub const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sites/figure4-netns.yaml");
/// The site's secrets, by absolute path (the test's copy of the site lives elsewhere).
pub const SECRETS: &str = concat!("file:", env!("CARGO_MANIFEST_DIR"), "/sites/secrets/");

/// The `dvipsec` binary of this build (target/debug/dvipsec next to target/debug/deps).
pub fn dvipsec_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("dvipsec");
    candidate.exists().then_some(candidate)
}

/// The prerequisites, or `None` (after saying why) outside CI; under CI a gap is a failure.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
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
pub struct TestSite {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    pub prefix: String,
    pub cf: PathBuf,
}

impl TestSite {
    pub fn new(tag: &str, edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("t{}{tag}", std::process::id());
        let cf = PathBuf::from(format!("/dev/shm/dvipsec-hwtest-{name}-cf"));
        let text = std::fs::read_to_string(SITE)
            .unwrap()
            .replace("site: fig4ns", &format!("site: {name}"))
            .replace(
                "/dev/shm/dvipsec-hwtest-fig4ns-cf",
                &cf.display().to_string(),
            )
            .replace("file:secrets/", SECRETS);
        let file = dir.path().join("site.yaml");
        std::fs::write(&file, edit(text)).unwrap();
        TestSite {
            dir,
            file,
            prefix: format!("dvh-{name}"),
            cf,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn options(&self, dvipsec: PathBuf) -> TopologyOptions {
        TopologyOptions {
            run_dir: self.run_dir(),
            dvipsec,
        }
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut found: Vec<String> = list_namespaces()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .collect();
        found.sort();
        found
    }

    pub fn pids(&self) -> Vec<u32> {
        topology::recorded(&self.run_dir())
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Resource::Process(pid) => Some(pid),
                _ => None,
            })
            .collect()
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    pub fn assert_nothing_left(&self, pids: &[u32]) {
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
