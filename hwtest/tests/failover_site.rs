//! Failover on namespaces under load (issue #10): MVS4 backs DVA1. While strongSwan's UDP flows
//! run through the site, MVS1 (the owner) is killed with SIGKILL and its links go down (the box
//! is gone). MVS4 must notice, take DVA1 (CF fenced in a new epoch, address announced, IKE
//! renegotiated with strongSwan) and the flows must come back. Every ESP packet sent to the
//! peer is captured: no (SPI, sequence number) may appear twice across the takeover, and
//! strongSwan must log no replayed packet. Then MVS1 comes back and must not take DVA1 back.
//! The figures (detection, takeover, traffic gap) are printed as JSON.
//!
//! With `define.take_back: true` on DVA1 the returning owner does take it back: MVS4 releases
//! DVA1, MVS1 adopts it (reason TakeBack) and renegotiates with strongSwan, which is left with
//! one established IKE SA, a new one, and keeps getting answers. The take-back's timings are
//! printed as JSON.
//!
//! A target's failure is no takeover: its flows end and new flows go to the other targets.
//! When the failed target boots again it gets the SAs again and serves new flows: its
//! timings (kill to down, restart to SAs installed, restart to its first answer) are printed
//! as JSON.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use dvipsec_hwtest::takeover::{self, Scene};
use dvipsec_hwtest::topology;
use support::site::TestSite;
use support::swan::*;

#[test]
fn the_backup_takes_over_under_load_without_reusing_a_sequence_number() {
    let test = "the_backup_takes_over_under_load_without_reusing_a_sequence_number";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "f", with_backup)
    else {
        return;
    };
    let peer_ns = site.ns("peer");
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
    one_established_ike_sa(&charon);

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
    let back = come_back(&site, "MVS1");
    let again = |needle: &str| log_again(&site, "MVS1").contains(needle);
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
    let after = steady_traffic(&peer_ns, "2");
    assert!(
        field(&after, "echoed") > 0,
        "no traffic after the return: {after}"
    );

    drop(back);
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}

/// The test's site with DVA1's owner taking it back once it returns (`define.take_back`).
fn with_take_back(text: String) -> String {
    let define = "      moveable: immediate\n";
    assert!(text.contains(define), "DVA1's define has no moveable line");
    with_backup(text).replacen(define, &format!("{define}      take_back: true\n"), 1)
}

#[test]
fn a_returning_owner_with_take_back_moves_dva1_home() {
    let test = "a_returning_owner_with_take_back_moves_dva1_home";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "b", with_take_back)
    else {
        return;
    };
    let peer_ns = site.ns("peer");

    // The owner dies and leaves the networks; the backup takes DVA1 and serves the peer.
    let killed = Instant::now();
    kill_box(&site, "MVS1");
    wait_for_log(&site, "MVS4", "DVIPA adopted");
    let adopted_ms = killed.elapsed().as_millis();
    // The kill comes seconds after the boxes booted: the failed owner's missing view must not
    // hold the takeover back until the boot grace ends (it took 4.3 s when it did).
    assert!(
        adopted_ms < 1500,
        "MVS4 adopted DVA1 {adopted_ms} ms after the kill"
    );
    let through_backup = answered_within(&peer_ns, Duration::from_secs(10));
    assert!(
        field(&through_backup, "echoed") > 0,
        "no traffic through MVS4: {through_backup}"
    );
    let backup_sa = newest_ike_sa(&charon);

    // The owner comes back and takes DVA1 home: MVS4 lets it go.
    let started = Instant::now();
    let back = come_back(&site, "MVS1");
    let booted_ms = started.elapsed().as_millis();
    wait_for_line(&site, "MVS1-again", &["DVIPA adopted", "reason=TakeBack"]);
    let took_back_ms = started.elapsed().as_millis();
    wait_for_line(&site, "MVS4", &["DVIPA released", "dvipa=DVA1", "to=MVS1"]);
    // Every target follows the owner (TAKEOVER reached it) and reports its connections.
    for target in ["MVS2", "MVS4"] {
        wait_for_line(
            &site,
            target,
            &["new distributor", "distributor=MVS1", "switched=true"],
        );
    }
    wait_for_line(
        &site,
        "MVS1-again",
        &["DVIPA serving after takeover", "missing=[]"],
    );
    let rebuilt_ms = started.elapsed().as_millis();

    // The peer is served by the owner again, through every target, over a new IKE SA, and
    // only that one is left.
    answered_within(&peer_ns, Duration::from_secs(10));
    let answered_ms = started.elapsed().as_millis();
    let after = steady_traffic(&peer_ns, "2");
    let (sent, echoed) = (field(&after, "sent"), field(&after, "echoed"));
    assert!(
        echoed * 10 >= sent * 9,
        "traffic after the take-back lost more than a tenth: {after}"
    );
    let home_sa = one_established_ike_sa(&charon);
    assert_ne!(
        home_sa, backup_sa,
        "strongSwan still uses the IKE SA it had with MVS4"
    );
    assert!(
        !charon.log().contains("verification failed"),
        "strongSwan saw a replayed or bad sequence number"
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "take_back",
            "backup_adopted_ms": adopted_ms,
            "owner_booted_ms": booted_ms,
            "owner_took_back_ms": took_back_ms,
            "targets_rebuilt_ms": rebuilt_ms,
            "answered_again_ms": answered_ms,
            "steady_after": after,
        })
    );

    drop(back);
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}

/// SIGKILLs `node`'s `dvipsec boot` and takes its links down: the box is gone.
fn kill_box(site: &TestSite, node: &str) {
    let target = boot_pid(&site.pids(), node);
    run(Command::new("kill").args(["-KILL", &target.to_string()]));
    let ns = site.ns(node);
    for link in ["ext0", "xcf0"] {
        run(&mut in_ns(&ns, &["ip", "link", "set", link, "down"]));
    }
}

/// A killed box returns as a rebooted one would (the DVIPA's address is not on it, its links
/// and its route to the peer are up) and runs `dvipsec boot` again; returns once it logged
/// that it booted.
fn come_back(site: &TestSite, node: &str) -> Restarted {
    let ns = site.ns(node);
    in_ns_quiet(
        &ns,
        &["ip", "addr", "del", &format!("{DVIPA}/32"), "dev", "ext0"],
    );
    for link in ["ext0", "xcf0"] {
        run(&mut in_ns(&ns, &["ip", "link", "set", link, "up"]));
    }
    // Taking ext0 down flushed the route to the peer that the topology gave every box; a
    // rebooted box has it again, and its IKE needs it to renegotiate.
    run(&mut in_ns(
        &ns,
        &["ip", "route", "replace", PEER_OUTER, "dev", "ext0"],
    ));
    let back = restart(site, node);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_again(site, node).contains("node booted") {
        assert!(Instant::now() < deadline, "{node} did not boot again");
        std::thread::sleep(Duration::from_millis(100));
    }
    back
}

/// The peer's steady client for `seconds`; its `sent= echoed= gap_ms=` line.
fn steady_traffic(peer_ns: &str, seconds: &str) -> String {
    let output = run(&mut in_ns(
        peer_ns,
        &["python3", "-c", STEADY_CLIENT, PEER_INNER, DVIPA, seconds],
    ));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// One-second steady runs until one is answered (a new owner renegotiates first) or `limit`
/// passed; the last run's line.
fn answered_within(peer_ns: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let line = steady_traffic(peer_ns, "1");
        if field(&line, "echoed") > 0 || Instant::now() >= deadline {
            return line;
        }
    }
}

/// Waits (up to 10 s) until strongSwan holds exactly one established IKE SA; its initiator
/// SPI. A replaced SA may linger as DELETING while strongSwan retransmits its delete to a box
/// that no longer knows it.
fn one_established_ike_sa(charon: &Charon) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sas = charon.swanctl(&["--list-sas", "--raw"]);
        if sas.matches("state=ESTABLISHED").count() == 1 {
            return established_spi(&sas)
                .unwrap_or_else(|| panic!("no initiator-spi in strongSwan's SA:\n{sas}"));
        }
        assert!(
            Instant::now() < deadline,
            "strongSwan holds stale SAs:\n{sas}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The initiator SPI of the established IKE SA strongSwan made last.
fn newest_ike_sa(charon: &Charon) -> String {
    let sas = charon.swanctl(&["--list-sas", "--raw"]);
    sas.lines()
        .filter(|sa| raw_value(sa, "state") == Some("ESTABLISHED"))
        .max_by_key(|sa| raw_value(sa, "uniqueid").and_then(|id| id.parse::<u64>().ok()))
        .and_then(|sa| raw_value(sa, "initiator-spi"))
        .unwrap_or_else(|| panic!("no established IKE SA:\n{sas}"))
        .to_owned()
}

/// The initiator SPI of the established IKE SA in `swanctl --list-sas --raw` output.
fn established_spi(sas: &str) -> Option<String> {
    let established = sas
        .lines()
        .find(|sa| raw_value(sa, "state") == Some("ESTABLISHED"))?;
    raw_value(established, "initiator-spi").map(str::to_owned)
}

/// The first `key=value` of one IKE SA's line of `swanctl --list-sas --raw` (the IKE SA's
/// own keys come before its child SAs'; a key follows a space or a brace).
fn raw_value<'a>(sa: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("{key}=");
    let starts_a_key = |at: usize| at > 0 && matches!(sa.as_bytes()[at - 1], b' ' | b'{');
    let (at, _) = sa
        .match_indices(&pattern)
        .find(|(at, _)| starts_a_key(*at))?;
    sa[at + pattern.len()..].split([' ', '}']).next()
}

/// Waits (up to 10 s) until the log `name` (a node, or `NODE-again` for a restarted one) has a
/// line with all of `needles`.
fn wait_for_line(site: &TestSite, name: &str, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log =
            std::fs::read_to_string(site.run_dir().join(format!("{name}.log"))).unwrap_or_default();
        if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s log has no line with {needles:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// `flows` fresh flows from the peer; the `answered= flows=` line of [`FRESH_FLOWS`].
fn fresh_flows(peer_ns: &str, flows: &str) -> String {
    let output = run(&mut in_ns(
        peer_ns,
        &["python3", "-c", FRESH_FLOWS, PEER_INNER, DVIPA, flows],
    ));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_failed_target_loses_its_flows_and_new_ones_go_to_the_others() {
    let test = "a_failed_target_loses_its_flows_and_new_ones_go_to_the_others";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "t", |t| t) else {
        return;
    };
    let peer_ns = site.ns("peer");
    let fresh = |flows: &str| fresh_flows(&peer_ns, flows);
    let before = fresh("12");
    assert_eq!(field(&before, "answered"), 12, "{before}");

    // MVS2 dies and leaves the networks.
    kill_box(&site, "MVS2");
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

/// MVS2's place among the site's nodes: the hub names its external veth h1e0.
const MVS2_INDEX: usize = 1;

#[test]
fn a_restarted_target_gets_the_sas_again_and_serves_new_flows() {
    let test = "a_restarted_target_gets_the_sas_again_and_serves_new_flows";
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, "r", |t| t) else {
        return;
    };
    assert_eq!(NODES[MVS2_INDEX], "MVS2");
    let peer_ns = site.ns("peer");
    let before = fresh_flows(&peer_ns, "12");
    assert_eq!(field(&before, "answered"), 12, "{before}");
    let ike_sa = one_established_ike_sa(&charon);

    // MVS2 dies and leaves the networks; MVS1 stops choosing it.
    let killed = Instant::now();
    kill_box(&site, "MVS2");
    wait_for_line(
        &site,
        "MVS1",
        &["target out of the distribution", "target_node=MVS2"],
    );
    let down_ms = killed.elapsed().as_millis();

    // What leaves MVS2's external port from now on: its answers (outbound ESP leaves the
    // target's own interface, not the distributor's).
    let pcap = site.dir.path().join("mvs2-esp.pcap");
    let capture = start_capture(&site.ns("hub"), MVS2_INDEX, &pcap);
    wait_for_file(&pcap);

    // MVS2 boots again: MVS1 hears the new incarnation and sends it the SAs it holds.
    let restarted_at = SystemTime::now();
    let started = Instant::now();
    let back = come_back(&site, "MVS2");
    let booted_ms = started.elapsed().as_millis();
    wait_for_line(
        &site,
        "MVS1",
        &["target up", "target_node=MVS2", "restarted=true"],
    );
    let noticed_ms = started.elapsed().as_millis();
    for direction in ["direction=Inbound", "direction=Outbound"] {
        wait_for_line(&site, "MVS2-again", &["shadow SA installed", direction]);
    }
    let installed_ms = started.elapsed().as_millis();
    // MVS1 dials MVS2 (its name sorts first) and MVS2 accepts: it must be heard soon after it
    // listens again, not after a long redial delay (a waiting acceptor's backoff held it
    // unheard for 1.6 s, MVS1's 2 s redial ceiling for up to 2 s more).
    let booted = logged_at(&log_again(&site, "MVS2"), &["node booted"]);
    let noticed = logged_at(
        &log_of(&site, "MVS1"),
        &["target up", "target_node=MVS2", "restarted=true"],
    );
    // Seconds of the day: a restart just before midnight UTC wraps.
    let heard_ms = ((noticed - booted).rem_euclid(86_400.0) * 1000.0).round() as i64;
    assert!(
        heard_ms < 1200,
        "MVS1 heard MVS2 {heard_ms} ms after it booted again"
    );

    // New flows go round the targets again, MVS2 among them, and every one is answered.
    let after = fresh_flows(&peer_ns, "24");
    let answered_at = started.elapsed().as_millis();
    assert_eq!(field(&after, "answered"), 24, "{after}");
    std::thread::sleep(Duration::from_millis(300));
    stop(capture);
    let from_mvs2 = esp_times(&pcap);
    let first_answer_ms = from_mvs2.first().map(|at| {
        let restart = restarted_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        ((at - restart) * 1000.0).round() as u64
    });
    let Some(first_answer_ms) = first_answer_ms else {
        panic!(
            "MVS2 answered none of the new flows ({after}):\n{}",
            log_again(&site, "MVS2")
        );
    };

    // The peer saw nothing wrong and kept its one IKE SA: a target's return renegotiates
    // nothing.
    assert!(
        !charon.log().contains("verification failed"),
        "strongSwan saw a replayed or bad sequence number"
    );
    assert_eq!(
        one_established_ike_sa(&charon),
        ike_sa,
        "strongSwan changed its IKE SA"
    );
    assert!(!log_of(&site, "MVS4").contains("DVIPA adopted"));
    println!(
        "{}",
        serde_json::json!({
            "scenario": "target_restart",
            "kill_to_down_ms": down_ms,
            "restart_to_booted_ms": booted_ms,
            "restart_to_noticed_ms": noticed_ms,
            "booted_to_heard_ms": heard_ms,
            "restart_to_sas_installed_ms": installed_ms,
            "restart_to_first_answer_by_mvs2_ms": first_answer_ms,
            "restart_to_flows_done_ms": answered_at,
            "esp_from_mvs2": from_mvs2.len(),
            "fresh_after": after,
        })
    );

    drop(back);
    drop(charon);
    topology::down(&site.run_dir()).unwrap();
}

/// Waits (up to 15 s) until tshark wrote the capture file's header, and a moment more.
fn wait_for_file(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !file.exists() {
        assert!(Instant::now() < deadline, "tshark did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Seconds since midnight UTC of the first line of `log` with all of `needles`, from its
/// RFC 3339 timestamp (`...THH:MM:SS.ffffffZ`); the boxes share the host's clock.
fn logged_at(log: &str, needles: &[&str]) -> f64 {
    let line = log
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?}:\n{log}"));
    let time = line
        .split_whitespace()
        .next()
        .and_then(|stamp| stamp.split('T').nth(1))
        .unwrap_or_else(|| panic!("no timestamp: {line}"));
    time.trim_end_matches('Z')
        .split(':')
        .map(|part| {
            part.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad time: {line}"))
        })
        .fold(0.0, |seconds, part| seconds * 60.0 + part)
}

/// The capture times (seconds since the epoch) of the packets in `file`, in order.
fn esp_times(file: &Path) -> Vec<f64> {
    let output = run(Command::new("tshark").arg("-r").arg(file).args([
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
    ]));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect()
}

#[test]
fn swanctl_raw_lines_give_the_ike_sas_own_keys() {
    let sas = concat!(
        "list-sa event {dva1 {uniqueid=2 version=2 state=ESTABLISHED ",
        "initiator-spi=3863c4edfc96bdb7 child-sas {app-2 {uniqueid=5 state=INSTALLED}}}}\n",
        "list-sa event {dva1 {uniqueid=1 state=DELETING initiator-spi=804f2070229abe71}}\n",
        "list-sas reply {}",
    );
    let first = sas.lines().next().unwrap_or_default();
    assert_eq!(raw_value(first, "uniqueid"), Some("2"));
    assert_eq!(raw_value(first, "state"), Some("ESTABLISHED"));
    assert_eq!(raw_value(first, "spi"), None);
    assert_eq!(established_spi(sas).as_deref(), Some("3863c4edfc96bdb7"));
}
