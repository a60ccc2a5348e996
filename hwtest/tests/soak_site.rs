//! The soak (issue #12): the figure-4 site on namespaces with strongSwan as the peer, under
//! steady UDP traffic for `DVIPSEC_SOAK_SECONDS` (default 600) with random loss on the external
//! and XCF bridges (nftables), child SAs rekeyed all along (strongSwan by time, the cluster by
//! packet count), a target killed and restarted at a third of the time and the distributor
//! killed (its backup takes over) at two thirds. It passes when no box panicked, no (SPI,
//! sequence number) left any box twice, strongSwan rejected nothing as a replay, the peer's SA
//! converged (traffic flows at the end), and no surviving box's memory kept growing.
//!
//! It takes minutes, so it is `#[ignore]`d in plain `cargo test`: run it with
//! `cargo test -p dvipsec-hwtest --test soak_site -- --ignored` (scripts/test-all.sh runs it
//! for 90 s).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dvipsec_hwtest::topology;
use support::swan::*;

/// Loss on each bridge, percent of frames.
const LOSS_PERCENT: u32 = 2;
/// Packets after which the cluster rekeys a child SA (soft limit), and its hard limit.
const SOFT_PACKETS: u32 = 4_000;
const HARD_PACKETS: u32 = 40_000;
/// Resident memory a surviving box may gain between the middle and the end of its second
/// half (it reaches its working set well before).
const MEMORY_GROWTH_BOUND_KIB: u64 = 16 * 1024;

fn soak_seconds() -> u64 {
    std::env::var("DVIPSEC_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

/// The site with MVS4 as DVA1's backup and a packet-count lifetime on the child SAs.
fn soak_site(text: String) -> String {
    let text = with_backup(text);
    let policy = "        replay_window: 1024";
    assert!(text.contains(policy));
    text.replacen(
        policy,
        &format!(
            "        replay_window: 1024\n        lifetime:\n          packets: {{ soft: {SOFT_PACKETS}, hard: {HARD_PACKETS} }}"
        ),
        1,
    )
}

/// Random loss on both bridges of the hub.
fn add_loss(hub: &str) {
    let rules = [
        "add table bridge soak".to_owned(),
        "add chain bridge soak lossy { type filter hook forward priority 0; }".to_owned(),
        format!("add rule bridge soak lossy numgen random mod 100 < {LOSS_PERCENT} counter drop"),
    ];
    for rule in rules {
        run(&mut in_ns(hub, &["nft", &rule]));
    }
}

fn remove_loss(hub: &str) {
    run(&mut in_ns(hub, &["nft", "delete table bridge soak"]));
}

/// Resident set of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The `dvipsec` process under an `ip netns exec` (which execs it, so the pid is the same).
fn firmware_pid(child: &Child) -> u32 {
    child.id()
}

/// Captures of ESP from DVA1 on every box's external veth (before the lossy bridge).
fn capture_all(site: &support::site::TestSite) -> Vec<(PathBuf, Child)> {
    let hub = site.ns("hub");
    (0..NODES.len())
        .map(|i| {
            let file = site.dir.path().join(format!("soak-{i}.pcap"));
            (file.clone(), start_capture(&hub, i, &file))
        })
        .collect()
}

#[test]
#[ignore = "minutes long: run with --ignored (scripts/test-all.sh runs it for 90 s)"]
fn the_site_survives_loss_rekeys_a_target_restart_and_a_takeover() {
    let test = "the_site_survives_loss_rekeys_a_target_restart_and_a_takeover";
    let seconds = soak_seconds();
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "k", soak_site) else {
        return;
    };
    let (peer_ns, hub) = (site.ns("peer"), site.ns("hub"));
    let captures = capture_all(&site);
    let deadline = Instant::now() + Duration::from_secs(15);
    while captures.iter().any(|(f, _)| !f.exists()) {
        assert!(Instant::now() < deadline, "tshark did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    add_loss(&hub);
    let traffic = in_ns(
        &peer_ns,
        &[
            "python3",
            "-c",
            STEADY_CLIENT,
            PEER_INNER,
            DVIPA,
            &seconds.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("traffic");
    let started = Instant::now();
    let at = |fraction: f64| Duration::from_secs_f64(seconds as f64 * fraction);
    let pids = site.pids();
    let mvs4 = boot_pid(&pids, "MVS4");

    // A third in: MVS2 crashes and comes back (a new incarnation: the SAs are sent again).
    std::thread::sleep(at(1.0 / 3.0).saturating_sub(started.elapsed()));
    run(Command::new("kill").args(["-KILL", &boot_pid(&pids, "MVS2").to_string()]));
    std::thread::sleep(Duration::from_millis(500));
    let mvs2 = restart(&site, "MVS2");

    // Two thirds in: the distributor dies and leaves the networks; MVS4 takes over.
    std::thread::sleep(at(2.0 / 3.0).saturating_sub(started.elapsed()));
    run(Command::new("kill").args(["-KILL", &boot_pid(&pids, "MVS1").to_string()]));
    for link in ["ext0", "xcf0"] {
        run(&mut in_ns(
            &site.ns("MVS1"),
            &["ip", "link", "set", link, "down"],
        ));
    }
    wait_for_log(&site, "MVS4", "DVIPA adopted");

    // Memory of the survivors over the rest of the run: the middle and the end of it.
    let rest = at(1.0).saturating_sub(started.elapsed());
    std::thread::sleep(rest / 2);
    let middle = [rss_kib(mvs4), rss_kib(firmware_pid(&mvs2.0))];
    std::thread::sleep(rest / 2);
    let end = [rss_kib(mvs4), rss_kib(firmware_pid(&mvs2.0))];

    let output = traffic.wait_with_output().expect("traffic ends");
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    remove_loss(&hub);
    let mut files = Vec::new();
    for (file, child) in captures {
        stop(child);
        files.push(file);
    }
    let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let packets = assert_no_sequence_reuse(&paths);
    eprintln!("soak {seconds} s: traffic {line}; {packets} ESP packets, no (SPI, seq) twice; RSS KiB middle {middle:?} end {end:?}");

    for node in ["MVS1", "MVS2", "MVS4"] {
        let log = log_of(&site, node) + &log_again(&site, node);
        assert!(!log.contains("panicked"), "{node} panicked:\n{log}");
    }
    let swan_log = charon.log();
    assert!(
        !swan_log.contains("verification failed"),
        "strongSwan rejected a sequence number"
    );
    let rekeys = swan_log.matches("rekeying CHILD_SA").count()
        + log_of(&site, "MVS1").matches("rekey=true").count()
        + log_of(&site, "MVS4").matches("rekey=true").count();
    assert!(rekeys > 0, "no child SA was rekeyed during the soak");
    assert!(field(&line, "echoed") > field(&line, "sent") / 2, "{line}");
    for (before, after) in middle.iter().zip(&end) {
        let (Some(before), Some(after)) = (before, after) else {
            panic!("a surviving box is gone: {middle:?} {end:?}");
        };
        assert!(
            after.saturating_sub(*before) <= MEMORY_GROWTH_BOUND_KIB,
            "memory grew from {before} to {after} KiB"
        );
    }
    // Converged: the peer holds one SA and every fresh flow is answered without loss.
    let sas = charon.swanctl(&["--list-sas", "--raw"]);
    assert_eq!(sas.matches("state=ESTABLISHED").count(), 1, "{sas}");
    let output = run(&mut in_ns(
        &peer_ns,
        &["python3", "-c", STEADY_CLIENT, PEER_INNER, DVIPA, "2"],
    ));
    let after = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        field(&after, "echoed") * 10 >= field(&after, "sent") * 9,
        "{after}"
    );

    drop(mvs2);
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}
