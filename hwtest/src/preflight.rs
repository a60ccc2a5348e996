//! Preflight: can this machine build the harness's topologies?
//!
//! Each check really does the thing the harness needs (create a namespace, a veth pair, an
//! address) and undoes it, so a green preflight means the topology code will work here.

use std::fmt;

use crate::netns::{join_with_veth, list_namespaces, Netns};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// Passed, or failed with the reason an operator needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

impl Check {
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass(detail) => write!(f, "ok   {:<12} {detail}", self.name),
            Outcome::Fail(reason) => write!(f, "FAIL {:<12} {reason}", self.name),
        }
    }
}

/// Runs every check. `tag` makes the names of the scratch namespaces unique, so that two
/// preflights at once do not collide.
pub fn run(tag: &str) -> Vec<Check> {
    let mut checks = vec![check_root()];
    if !checks[0].passed() {
        return checks;
    }
    checks.push(check_topology(tag));
    checks.push(check_hugepages());
    checks
}

fn check_root() -> Check {
    let outcome = match effective_uid() {
        Some(0) => Outcome::Pass("running as root".into()),
        Some(uid) => Outcome::Fail(format!("uid {uid}: namespaces and veth pairs need root")),
        None => Outcome::Fail("cannot read /proc/self/status to find the uid".into()),
    };
    Check {
        name: "root",
        outcome,
    }
}

/// True when this process runs with effective uid 0 (what namespaces, veth pairs and packet
/// sockets need). Shared by the integration tests of every crate that builds topologies.
pub fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// Reads the effective uid from /proc, which keeps this crate free of `unsafe` libc calls.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn check_topology(tag: &str) -> Check {
    let outcome = match build_scratch_topology(tag) {
        Ok(()) => Outcome::Pass("created two namespaces joined by veth, addressed, removed".into()),
        Err(reason) => Outcome::Fail(reason),
    };
    Check {
        name: "netns+veth",
        outcome,
    }
}

fn build_scratch_topology(tag: &str) -> Result<(), String> {
    let a_name = format!("dvh-pf-{tag}-a");
    let b_name = format!("dvh-pf-{tag}-b");
    {
        let a = Netns::create(&a_name).map_err(|e| e.to_string())?;
        let b = Netns::create(&b_name).map_err(|e| e.to_string())?;
        join_with_veth(&a, "pf0", &b, "pf1").map_err(|e| e.to_string())?;
        a.exec_ip(&["addr", "add", "192.0.2.1/30", "dev", "pf0"])
            .map_err(|e| e.to_string())?;
        let links = b
            .exec_ip(&["-o", "link", "show", "pf1"])
            .map_err(|e| e.to_string())?;
        if !links.contains("pf1") {
            return Err("veth end pf1 did not appear in its namespace".into());
        }
    }
    let left = list_namespaces().map_err(|e| e.to_string())?;
    if left.iter().any(|n| *n == a_name || *n == b_name) {
        return Err("scratch namespaces were not removed".into());
    }
    Ok(())
}

fn check_hugepages() -> Check {
    let outcome = match std::fs::read_to_string("/proc/sys/vm/nr_hugepages") {
        Ok(n) => Outcome::Pass(format!(
            "{} huge pages reserved (DPDK runs with --no-huge otherwise)",
            n.trim()
        )),
        Err(e) => Outcome::Fail(format!("cannot read /proc/sys/vm/nr_hugepages: {e}")),
    };
    Check {
        name: "hugepages",
        outcome,
    }
}
