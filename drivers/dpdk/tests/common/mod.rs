//! Shared by the DPDK integration tests: one EAL per test binary (one per process), and the
//! CI rule for missing prerequisites.
#![allow(dead_code)]

pub mod ipv4;

use std::sync::OnceLock;

use dvipsec_dpdk::Eal;
use dvipsec_hwtest::preflight::running_as_root;

/// True when a missing prerequisite must fail the test (CI=true) rather than skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Panics in CI, prints the reason and returns false elsewhere.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "CI=true and a prerequisite is missing: {what}");
        eprintln!("skipping: {what}");
    }
    ok
}

/// This process's EAL, started once with `vdevs`, or None (skipped) without root.
pub fn eal(test_binary: &str, vdevs: &[&str]) -> Option<&'static Eal> {
    if !prerequisite(running_as_root(), "DPDK EAL tests need root") {
        return None;
    }
    static EAL: OnceLock<&'static Eal> = OnceLock::new();
    Some(EAL.get_or_init(|| {
        let prefix = format!("dvs_{test_binary}_{}", std::process::id());
        let args = Eal::args_without_hugepages(&prefix, vdevs);
        Eal::init(args).expect("EAL init")
    }))
}
