//! Failover on namespaces under load (issue #10): MVS4 backs DVA1. While strongSwan's UDP flows
//! run through the site, MVS1 (the owner) is killed with SIGKILL and its links go down (the box
//! is gone). MVS4 must notice, take DVA1 (CF fenced in a new epoch, address announced, IKE
//! renegotiated with strongSwan) and the flows must come back. Every ESP packet sent to the
//! peer is captured: no (SPI, sequence number) may appear twice across the takeover, and
//! strongSwan must log no replayed packet. Then MVS1 comes back and must not take DVA1 back.
//! The figures (detection, takeover, traffic gap) are printed as JSON.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use dvipsec_hwtest::takeover::{self, Scene};
use dvipsec_hwtest::topology;
use support::swan::*;

#[test]
fn the_backup_takes_over_under_load_without_reusing_a_sequence_number() {
    let test = "the_backup_takes_over_under_load_without_reusing_a_sequence_number";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "f", with_backup)
    else {
        return;
    };
    let (peer_ns, mvs1) = (site.ns("peer"), site.ns("MVS1"));
    // The scenario of `dvipsec-hwtest run takeover`: 3 s of traffic, the kill, 9 s more.
    let scene = Scene {
        run_dir: &site.run_dir(),
        prefix: &site.prefix,
        charon: &charon.0,
        work_dir: site.dir.path(),
        after_kill: Duration::from_secs(9),
    };
    let figures = takeover::measure(&scene).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{}",
        serde_json::to_string(&figures).expect("figures as JSON")
    );
    assert_eq!(
        figures.seq_reuse, 0,
        "(SPI, seq) sent twice: {:?}",
        figures.first_reused
    );
    assert!(figures.esp_packets > 0, "no ESP captured");
    let old_spis = figures.old_spis.clone();
    let (detection_ms, gap_ms) = (figures.detection_ms, figures.traffic_gap_ms);
    let (sent, echoed) = (figures.sent, figures.echoed);
    let line = format!("{figures:?}");
    assert!(
        figures.takeover_ms >= detection_ms,
        "adopted before detecting: {line}"
    );
    eprintln!("steady traffic: {line}");

    assert!(echoed > sent / 2, "traffic did not come back: {line}");
    assert!(detection_ms < 1000.0, "detection took {detection_ms:.0} ms");
    assert!(gap_ms < 2000, "traffic stopped for {gap_ms} ms");
    // The DCT was rebuilt from the targets' reports: MVS2's flows went back to MVS2.
    let restored = log_of(&site, "MVS4")
        .lines()
        .filter(|l| l.contains("connections restored") && l.contains("target=MVS2"))
        .filter_map(|l| l.split("restored=").nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        restored > 0,
        "MVS4 restored none of MVS2's connections:\n{}",
        log_of(&site, "MVS4")
    );
    let swan_log = charon.log();
    assert!(
        !swan_log.contains("verification failed"),
        "strongSwan saw a replayed or bad sequence number"
    );
    // No stuck SA: strongSwan keeps exactly one established IKE SA, the backup's; the dead
    // owner's is replaced (it may linger as DELETING while strongSwan retransmits its delete
    // to an owner that no longer knows it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sas = charon.swanctl(&["--list-sas", "--raw"]);
        if sas.matches("state=ESTABLISHED").count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strongSwan holds stale SAs:\n{sas}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // No stuck SA on the targets either: MVS2 dropped the dead owner's shadow SAs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let dropped = |spi: &String| {
        log_of(&site, "MVS2")
            .lines()
            .any(|l| l.contains("shadow SA deleted") && l.contains(spi.as_str()))
    };
    while !old_spis.iter().all(dropped) {
        assert!(
            Instant::now() < deadline,
            "MVS2 kept the old owner's SAs {old_spis:?}:\n{}",
            log_of(&site, "MVS2")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The owner comes back (a rebooted box: the DVIPA's address is not on it) and does not
    // take DVA1 back; traffic keeps flowing through MVS4.
    in_ns_quiet(
        &mvs1,
        &["ip", "addr", "del", &format!("{DVIPA}/32"), "dev", "ext0"],
    );
    for link in ["ext0", "xcf0"] {
        run(&mut in_ns(&mvs1, &["ip", "link", "set", link, "up"]));
    }
    let back = restart(&site, "MVS1");
    let again = |needle: &str| log_again(&site, "MVS1").contains(needle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !again("node booted") {
        assert!(Instant::now() < deadline, "MVS1 did not boot again");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !again("DVIPA adopted"),
        "the returning owner took DVA1 back:\n{}",
        log_again(&site, "MVS1")
    );
    assert!(
        !log_of(&site, "MVS4").contains("DVIPA released"),
        "MVS4 gave DVA1 up"
    );
    let output = run(&mut in_ns(
        &peer_ns,
        &["python3", "-c", STEADY_CLIENT, PEER_INNER, DVIPA, "2"],
    ));
    let after = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        field(&after, "echoed") > 0,
        "no traffic after the return: {after}"
    );

    drop(back);
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}

/// How many of `flows` fresh flows (one datagram each, retried for a few seconds) are answered.
const FRESH_FLOWS: &str = r#"
import socket, sys, time
src, dst, flows = sys.argv[1], sys.argv[2], int(sys.argv[3])
answered = 0
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.settimeout(0.3)
    deadline = time.time() + 3
    while time.time() < deadline:
        s.sendto(b"fresh-%d" % i, (dst, 60))
        try:
            s.recv(4096); answered += 1; break
        except socket.timeout:
            pass
print("answered=%d flows=%d" % (answered, flows))
"#;

#[test]
fn a_failed_target_loses_its_flows_and_new_ones_go_to_the_others() {
    let test = "a_failed_target_loses_its_flows_and_new_ones_go_to_the_others";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "t", |t| t) else {
        return;
    };
    let peer_ns = site.ns("peer");
    let fresh = |flows: &str| {
        let output = run(&mut in_ns(
            &peer_ns,
            &["python3", "-c", FRESH_FLOWS, PEER_INNER, DVIPA, flows],
        ));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let before = fresh("12");
    assert_eq!(field(&before, "answered"), 12, "{before}");

    // MVS2 dies and leaves the networks.
    let pids = site.pids();
    let target = boot_pid(&pids, "MVS2");
    run(Command::new("kill").args(["-KILL", &target.to_string()]));
    let mvs2 = site.ns("MVS2");
    for link in ["ext0", "xcf0"] {
        run(&mut in_ns(&mvs2, &["ip", "link", "set", link, "down"]));
    }
    wait_for_log(&site, "MVS1", "target out of the distribution");
    assert!(
        log_of(&site, "MVS1").contains("target_node=MVS2"),
        "MVS1 took the wrong target out:\n{}",
        log_of(&site, "MVS1")
    );
    // Every new flow is answered: none is sent to the dead target.
    let after = fresh("24");
    assert_eq!(field(&after, "answered"), 24, "{after}");
    // The distributor still owns DVA1: a target's death is not a takeover.
    assert!(!log_of(&site, "MVS4").contains("DVIPA adopted"));
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}
