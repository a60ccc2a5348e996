//! Every `dvipsecctl` command against the boxes of the figure-4 site on network namespaces,
//! one `dvipsec boot` per box, while strongSwan (in the peer namespace) holds an IKE SA with
//! DVA1's distributor and UDP flows run to the targets' echo service. Each box's control socket
//! lives under the test's own directory (the site gets `control:` lines per node) and MVS1 also
//! serves Prometheus metrics on its XCF address, scraped over HTTP from its namespace.
//!
//! The answers must agree with strongSwan: the SPIs of its CHILD_SA are in the distributor's
//! SAD, in every target's shadow SAs, in IKE's children, in the CF slots and in the keys export.
//! No key the export shows appears in any other command's output, the scrape or the box logs.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvipsec_hwtest::topology;
use serde_json::Value;
use support::site::{dvipsec_binary, TestSite};
use support::skip_or_fail_in_ci;
use support::swan::{
    field, in_ns, run, with_backup, ConnectedSite, DVIPA, ECHO_CLIENT, NODES, PEER_INNER,
    PEER_OUTER,
};

const TARGETS: [&str; 2] = ["MVS2", "MVS4"];
/// MVS1's metrics endpoint: its XCF address, inside its namespace only.
const METRICS: &str = "192.0.2.1:9464";
const FLOWS: usize = 8;
const ROUNDS: usize = 20;
/// The app-a policy's byte lifetime in this test (see `with_control`).
const SOFT_BYTES: u64 = 36_000;
const HARD_BYTES: u64 = 40_000;

/// `dvipsecctl` of this build, next to `dvipsec`; `None` (after saying why, or failing under
/// CI) when either is missing.
fn dvipsecctl_binary(test: &str) -> Option<PathBuf> {
    let found = dvipsec_binary()
        .map(|dvipsec| dvipsec.with_file_name("dvipsecctl"))
        .filter(|ctl| ctl.exists());
    if found.is_none() {
        skip_or_fail_in_ci(
            test,
            "needs the dvipsec and dvipsecctl binaries: run `cargo build -p dvipsec -p dvipsecctl` first",
        );
    }
    found
}

/// A scrape of the metrics endpoint from inside a namespace: status line, content type, body.
const SCRAPE: &str = r#"
import sys, urllib.request
with urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5) as r:
    print(r.status)
    print(r.headers.get("Content-Type"))
    sys.stdout.write(r.read().decode())
"#;

/// The site with a control socket per node under `sockets` and MVS1's metrics endpoint.
fn with_control(text: String, sockets: &Path) -> String {
    let mut text = text;
    for node in NODES {
        let entry = format!("  - name: {node}\n");
        assert!(text.contains(&entry), "the site has no {node}");
        let mut lines = format!(
            "{entry}    control: {{ socket: {} }}\n",
            sockets.join(format!("{node}.sock")).display()
        );
        if node == "MVS1" {
            lines += &format!("    metrics: {{ listen: \"{METRICS}\" }}\n");
        }
        text = text.replacen(&entry, &lines, 1);
    }
    // A byte lifetime small enough that the targets report their use (each 5% of it) while
    // the test runs, and large enough that nothing rekeys.
    let window = "        replay_window: 1024\n";
    assert!(text.contains(window));
    text.replacen(
        window,
        &format!("{window}        lifetime:\n          bytes: {{ soft: {SOFT_BYTES}, hard: {HARD_BYTES} }}\n"),
        1,
    )
}

/// Everything dvipsecctl printed, kept to look for keys in afterwards.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn keep(&mut self, what: String, output: &Output) {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text += &String::from_utf8_lossy(&output.stderr);
        self.0.push((what, text));
    }
}

/// The boxes and how to ask them.
struct Ctl {
    binary: PathBuf,
    sockets: PathBuf,
}

impl Ctl {
    fn socket(&self, node: &str) -> PathBuf {
        self.sockets.join(format!("{node}.sock"))
    }

    fn raw(&self, node: &str, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .arg("--socket")
            .arg(self.socket(node))
            .stdin(Stdio::null())
            .output()
            .expect("start dvipsecctl")
    }

    /// The command's stdout; it must succeed.
    fn ok(&self, log: &mut Transcript, node: &str, args: &[&str]) -> String {
        let output = self.raw(node, args);
        log.keep(format!("{node}: {args:?}"), &output);
        assert!(
            output.status.success(),
            "dvipsecctl {args:?} on {node} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The `--json` form, parsed.
    fn json(&self, log: &mut Transcript, node: &str, args: &[&str]) -> Value {
        let mut with = args.to_vec();
        with.push("--json");
        let text = self.ok(log, node, &with);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{node} {args:?} --json is not JSON ({e}): {text}"))
    }

    /// A command the box must refuse: its stderr (plain and `--json` alike).
    fn refused(&self, log: &mut Transcript, node: &str, args: &[&str]) -> String {
        let mut reasons = Vec::new();
        for json in [false, true] {
            let mut with = args.to_vec();
            if json {
                with.push("--json");
            }
            let output = self.raw(node, &with);
            log.keep(format!("{node}: {with:?}"), &output);
            assert!(
                !output.status.success(),
                "dvipsecctl {with:?} on {node} should fail: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            reasons.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        assert_eq!(
            reasons[0], reasons[1],
            "{args:?}: --json changes the refusal"
        );
        reasons.remove(0)
    }
}

/// strongSwan's CHILD_SA SPIs: (spi-in, spi-out), i.e. (dvipsec's outbound, its inbound).
fn strongswan_spis(raw: &str) -> (u32, u32) {
    let value = |key: &str| {
        let start = raw.find(key).unwrap_or_else(|| panic!("no {key} in {raw}")) + key.len();
        let hex: String = raw[start..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u32::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("{key}{hex}: {e}"))
    };
    (value("spi-in="), value("spi-out="))
}

fn spis_at(list: &Value, location: &str) -> Vec<u64> {
    list["sas"]
        .as_array()
        .expect("sas")
        .iter()
        .filter(|sa| sa["location"] == location)
        .filter_map(|sa| sa["spi"].as_u64())
        .collect()
}

/// One sample of a text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus/OpenMetrics text: `# HELP`, `# TYPE` and `# EOF` comments, and
/// `name{label="value",...} number` samples, each of a family whose TYPE came first.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF:\n{text}");
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => typed.push(words.next().expect("TYPE names a family").into()),
                Some("HELP") | Some("EOF") | Some("UNIT") => {}
                other => panic!("unknown comment {other:?}: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value ({e}): {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
            None => (series, BTreeMap::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "{name} has no TYPE before it"
        );
        samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let end = after.find('"').expect("closing quote");
        labels.insert(key.to_owned(), after[..end].to_owned());
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

fn total(samples: &[Sample], name: &str, node: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("node").map(String::as_str) == Some(node))
        .map(|s| s.value)
        .sum()
}

/// A Wireshark `esp_sa` record: (SPI, encryption key hex, integrity key hex).
fn esp_sa_line(line: &str) -> (u32, String, String) {
    let inner = line.trim();
    let inner = inner.strip_prefix('"').unwrap_or(inner);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let fields: Vec<&str> = inner.split("\",\"").collect();
    // Messages name fields, never the line: it holds keys.
    assert_eq!(fields.len(), 8, "an esp_sa record has 8 fields");
    assert_eq!(fields[0], "IPv4");
    let spi = u32::from_str_radix(fields[3].trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("bad SPI field {:?}", fields[3]));
    let key = |f: &str| f.trim_start_matches("0x").to_ascii_lowercase();
    (spi, key(fields[5]), key(fields[7]))
}

/// Waits until `check` passes (the cores and CF catch up a moment after the traffic).
fn eventually(what: &str, check: impl FnMut() -> Result<(), String>) {
    eventually_within(Duration::from_secs(10), what, check)
}

fn eventually_within(within: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Every box's socket is owner-only, in the directory the boxes made owner-only.
fn check_sockets(ctl: &Ctl) {
    for node in NODES {
        let meta = std::fs::metadata(ctl.socket(node)).expect("the box's socket");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{node}'s socket");
    }
    let mode = std::fs::metadata(&ctl.sockets)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the socket directory the boxes made");
}

#[test]
fn every_dvipsecctl_command_answers_from_the_boxes_on_namespaces() {
    let test = "every_dvipsecctl_command_answers_from_the_boxes_on_namespaces";
    let Some(binary) = dvipsecctl_binary(test) else {
        return;
    };
    // The boxes inherit this: their debug lines are searched for keys too.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "debug");
    }
    let control_dir = tempfile::tempdir().unwrap();
    // Not there yet: each box makes it (owner-only) when it opens its socket.
    let sockets = control_dir.path().join("ctl");
    let Some(ConnectedSite { site, charon }) =
        ConnectedSite::connect(test, "c", |text| with_control(text, &sockets))
    else {
        return;
    };
    let ctl = Ctl { binary, sockets };
    check_sockets(&ctl);
    let echo = run(&mut in_ns(
        &site.ns("peer"),
        &[
            "python3",
            "-c",
            ECHO_CLIENT,
            PEER_INNER,
            DVIPA,
            &FLOWS.to_string(),
            &ROUNDS.to_string(),
        ],
    ));
    let echo = String::from_utf8_lossy(&echo.stdout).trim().to_owned();
    assert_eq!(
        field(&echo, "warm"),
        FLOWS as u64,
        "every flow answered: {echo}"
    );
    assert_eq!(
        field(&echo, "echoed"),
        (FLOWS * ROUNDS) as u64,
        "no datagram lost: {echo}"
    );
    let raw = charon.swanctl(&["--list-sas", "--raw"]);
    assert!(raw.contains("state=ESTABLISHED"), "{raw}");
    let (outbound, inbound) = strongswan_spis(&raw);
    let (outbound, inbound) = (u64::from(outbound), u64::from(inbound));
    eprintln!("strongSwan's CHILD_SA: dvipsec inbound {inbound:#010x}, outbound {outbound:#010x}");

    let mut log = Transcript::default();
    let mut packets = BTreeMap::new();
    check_status(&ctl, &mut log);
    check_sa_lists(&ctl, &mut log, inbound, outbound);
    check_distributor_listings(&ctl, &mut log, inbound, outbound);
    check_cf(&ctl, &mut log, inbound, outbound);
    check_takeover(&ctl, &mut log);
    for node in NODES {
        packets.insert(node, check_metrics(&ctl, &mut log, node));
    }
    eprintln!("packets each box's core handled (metrics): {packets:?}");
    let scrape = scrape_endpoint(&site);
    let keys = export_keys(&ctl, inbound, outbound);
    let config = Command::new(&ctl.binary)
        .args(["config", "check"])
        .arg(&site.file)
        .output()
        .unwrap();
    log.keep("config check".into(), &config);
    assert!(config.status.success(), "dvipsecctl config check failed");

    // No key anywhere but in the export: listings, JSON, refusals, metrics, the boxes' logs.
    let logs: Vec<(String, String)> = NODES
        .iter()
        .map(|node| {
            let path = site.run_dir().join(format!("{node}.log"));
            (
                format!("{node}.log"),
                std::fs::read_to_string(path).unwrap(),
            )
        })
        .collect();
    let scraped = ("scrape".to_owned(), scrape);
    let everything = log.0.iter().chain(&logs).chain(std::iter::once(&scraped));
    let mut searched = 0;
    for (what, text) in everything {
        let lower = text.to_ascii_lowercase();
        for key in &keys {
            assert!(!lower.contains(key), "a key shows in {what}");
        }
        searched += text.len();
    }
    eprintln!(
        "{} keys searched for in {} outputs and logs ({searched} bytes): none found",
        keys.len(),
        log.0.len() + logs.len() + 1
    );

    // Shutting down closes the sockets and leaves nothing behind.
    let pids = site.pids();
    topology::down(&site.run_dir()).unwrap();
    for node in NODES {
        assert!(!ctl.socket(node).exists(), "{node}'s socket is left");
    }
    drop(charon);
    site.assert_nothing_left(&pids);
}

fn check_status(ctl: &Ctl, log: &mut Transcript) {
    for node in NODES {
        let plain = ctl.ok(log, node, &["status"]);
        assert!(plain.contains(node), "{node} status: {plain}");
        eventually(&format!("{node}'s XCF peers are up"), || {
            let status = ctl.json(log, node, &["status"]);
            let role = if node == "MVS1" {
                "distributor"
            } else {
                "target"
            };
            if status["name"] != node || status["role"] != role {
                return Err(format!("name and role: {status}"));
            }
            let relations: Vec<&str> = status["dvipas"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dvipa"] == DVIPA)
                .filter_map(|d| d["relation"].as_str())
                .collect();
            let expected: &[&str] = if node == "MVS1" {
                &["owns", "serves"]
            } else {
                &["serves"]
            };
            if relations != expected {
                return Err(format!("{DVIPA}: {relations:?}"));
            }
            // Every other node is an XCF peer; those it shares DVA1 with (the distributor and
            // its targets) are watched and up, another target is not watched (null).
            let peers = status["peers"].as_array().unwrap();
            let up: Vec<&str> = peers
                .iter()
                .filter(|p| p["link_up"] == true)
                .filter_map(|p| p["name"].as_str())
                .collect();
            let unwatched = peers.iter().filter(|p| p["link_up"].is_null()).count();
            let (expected_up, expected_unwatched): (&[&str], usize) = if node == "MVS1" {
                (&["MVS2", "MVS4"], 0)
            } else {
                (&["MVS1"], 1)
            };
            if peers.len() != 2 || up != expected_up || unwatched != expected_unwatched {
                return Err(format!("peers: {peers:?}"));
            }
            let links = status["links"].as_array().unwrap();
            let names: Vec<&str> = links.iter().filter_map(|l| l["name"].as_str()).collect();
            if names != ["ext0", "xcf0"] || links.iter().any(|l| l["rx_packets"] == 0) {
                return Err(format!("links: {links:?}"));
            }
            Ok(())
        });
    }
}

fn check_sa_lists(ctl: &Ctl, log: &mut Transcript, inbound: u64, outbound: u64) {
    eventually(
        "the SAD and every shadow list hold strongSwan's SPIs",
        || {
            let sad = ctl.json(log, "MVS1", &["sa", "list"]);
            let in_sad = spis_at(&sad, "sad");
            if !in_sad.contains(&inbound) || !in_sad.contains(&outbound) {
                return Err(format!("SAD: {in_sad:x?}"));
            }
            for node in NODES {
                let list = ctl.json(log, node, &["sa", "list"]);
                let shadow = spis_at(&list, "shadow");
                if !shadow.contains(&inbound) || !shadow.contains(&outbound) {
                    return Err(format!("{node} shadow: {shadow:x?}"));
                }
            }
            Ok(())
        },
    );
    let sad = ctl.json(log, "MVS1", &["sa", "list"]);
    for sa in sad["sas"].as_array().unwrap() {
        assert_eq!(sa["suite"], "aes128gcm16", "{sa}");
        assert_eq!(sa["mode"], "tunnel", "{sa}");
        assert_eq!(sa["peer"], PEER_OUTER, "{sa}");
        assert_eq!(sa["dvipa"], DVIPA, "{sa}");
    }
    // Targets sealed the echoes: some outbound shadow SA counted packets.
    let sealed: u64 = TARGETS
        .iter()
        .flat_map(|node| {
            let list = ctl.json(log, node, &["sa", "list"]);
            list["sas"].as_array().unwrap().clone()
        })
        .filter(|sa| sa["direction"] == "outbound")
        .filter_map(|sa| sa["packets"].as_u64())
        .sum();
    assert!(sealed > 0, "the targets sealed no packet");
    for node in NODES {
        let plain = ctl.ok(log, node, &["sa", "list"]);
        for spi in [inbound, outbound] {
            assert!(
                plain.contains(&format!("spi {spi:#010x}")),
                "{node}: {plain}"
            );
        }
    }
}

fn check_distributor_listings(ctl: &Ctl, log: &mut Transcript, inbound: u64, outbound: u64) {
    let ike = ctl.json(log, "MVS1", &["ike", "list"]);
    let sas = ike["ike_sas"].as_array().unwrap();
    let child = serde_json::json!([inbound, outbound]);
    let established = sas.iter().find(|sa| {
        sa["state"] == "ESTABLISHED"
            && sa["remote"] == PEER_OUTER
            && sa["children"].as_array().unwrap().contains(&child)
    });
    assert!(
        established.is_some(),
        "no ESTABLISHED IKE SA with the peer holds strongSwan's CHILD_SA: {ike}"
    );
    let plain = ctl.ok(log, "MVS1", &["ike", "list"]);
    assert!(plain.contains("ESTABLISHED"), "{plain}");

    let conns = ctl.json(log, "MVS1", &["conn", "list"]);
    let conn = &conns["conns"][0];
    assert_eq!(conn["local"], DVIPA, "{conns}");
    assert_eq!(conn["remote"], PEER_OUTER, "{conns}");
    assert_eq!(conn["esp_proposals"], serde_json::json!(["aes128gcm16"]));
    assert!(ctl.ok(log, "MVS1", &["conn", "list"]).contains(DVIPA));

    let dct = ctl.json(log, "MVS1", &["dct", "list"]);
    let flows = dct["flows"].as_array().unwrap();
    let ours = flows
        .iter()
        .filter(|f| f["src"] == PEER_INNER && f["dst"] == DVIPA && f["dst_port"] == 60)
        .count();
    assert_eq!(ours, FLOWS, "one DCT entry per flow: {dct}");
    assert!(dct["added"].as_u64().unwrap() >= FLOWS as u64, "{dct}");
    assert!(ctl.ok(log, "MVS1", &["dct", "list"]).contains(PEER_INNER));

    for node in TARGETS {
        for request in [&["ike", "list"][..], &["dct", "list"], &["conn", "list"]] {
            let reason = ctl.refused(log, node, request);
            assert!(
                reason.contains("not supported by this box"),
                "{node} {request:?}: {reason}"
            );
        }
    }
}

fn check_cf(ctl: &Ctl, log: &mut Transcript, inbound: u64, outbound: u64) {
    for node in NODES {
        eventually(&format!("{node}'s CF slots"), || {
            let cf = ctl.json(log, node, &["cf", "show"]);
            if cf["epoch"] != 1 {
                return Err(format!("epoch: {cf}"));
            }
            let slots = cf["slots"].as_array().unwrap();
            let spis: Vec<u64> = slots.iter().filter_map(|s| s["spi"].as_u64()).collect();
            if !spis.contains(&inbound) || !spis.contains(&outbound) {
                return Err(format!("slots: {cf}"));
            }
            Ok(())
        });
        assert!(ctl.ok(log, node, &["cf", "show"]).contains("epoch"));
    }
    // The use the targets report over XCF (lifesize, each 5% of the small byte lifetime the
    // test gives the policy) reaches the distributor's SAD.
    eventually("lifesize in the SAD", || {
        let sad = ctl.json(log, "MVS1", &["sa", "list"]);
        let used: u64 = sad["sas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|sa| sa["location"] == "sad")
            .filter_map(|sa| sa["bytes"].as_u64())
            .sum();
        if used == 0 {
            return Err(format!("{sad}"));
        }
        Ok(())
    });
    // The targets also record that use in the CF slots, where every box reads the totals.
    eventually("lifesize in the CF slots", || {
        let cf = ctl.json(log, "MVS1", &["cf", "show"]);
        let slot_bytes = |spi: u64, field: &str| {
            cf["slots"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["spi"].as_u64() == Some(spi))
                .filter_map(|s| s[field].as_u64())
                .sum::<u64>()
        };
        if slot_bytes(inbound, "bytes_in") == 0 || slot_bytes(outbound, "bytes_out") == 0 {
            return Err(format!("{cf}"));
        }
        Ok(())
    });
}

fn check_takeover(ctl: &Ctl, log: &mut Transcript) {
    let reason = ctl.refused(log, "MVS1", &["takeover", DVIPA]);
    assert!(reason.contains("already owns DVA1"), "{reason}");
    let reason = ctl.refused(log, "MVS2", &["takeover", DVIPA]);
    assert!(
        reason.contains("neither the owner nor a backup of DVA1"),
        "{reason}"
    );
    let reason = ctl.refused(log, "MVS4", &["takeover", "10.9.9.9"]);
    assert!(reason.contains("not a DVIPA of this site"), "{reason}");
}

/// Checks the exposition (plain and JSON) and returns the packets the box's core handled.
fn check_metrics(ctl: &Ctl, log: &mut Transcript, node: &str) -> f64 {
    let text = ctl.ok(log, node, &["metrics"]);
    let samples = parse_exposition(&text);
    let json = ctl.json(log, node, &["metrics"]);
    parse_exposition(json["text"].as_str().expect("metrics JSON has its text"));
    let packets = total(&samples, "dvipsec_core_packets_total", node);
    assert!(packets > 0.0, "{node} counted no packet:\n{text}");
    let port_rx = samples
        .iter()
        .filter(|s| s.name == "dvipsec_port_packets_total")
        .filter(|s| s.labels.get("direction").map(String::as_str) == Some("rx"))
        .map(|s| s.value)
        .sum::<f64>();
    assert!(port_rx > 0.0, "{node}: no port received anything");
    assert!(
        total(&samples, "dvipsec_sa_packets_total", node) > 0.0,
        "{node}: no SA counted packets"
    );
    let drops = samples
        .iter()
        .filter(|s| s.name == "dvipsec_drops_total")
        .count();
    assert!(drops > 10, "{node}: drops by cause are missing");
    for family in ["dvipsec_rekeys_total", "dvipsec_takeovers_total"] {
        assert!(
            samples.iter().any(|s| s.name == family),
            "{node}: no {family}"
        );
    }
    // Every box sealed or opened ESP: it took sequence numbers or checked replay in the CF.
    let cf_op = |op: &str| {
        samples
            .iter()
            .filter(|s| s.name == "dvipsec_cf_operations_total")
            .filter(|s| s.labels.get("op").map(String::as_str) == Some(op))
            .map(|s| s.value)
            .sum::<f64>()
    };
    let sequenced = cf_op("fetch_add") + cf_op("replay_check_and_set");
    assert!(sequenced > 0.0, "{node}: no CF operation counted:\n{text}");
    eprintln!(
        "{node}: CF fetch_add {}, replay_check_and_set {}, lifesize_read {}, failed {}",
        cf_op("fetch_add"),
        cf_op("replay_check_and_set"),
        cf_op("lifesize_read"),
        cf_op("failed")
    );
    if node == "MVS1" {
        assert!(
            total(&samples, "dvipsec_lifesize_reports_total", node) > 0.0,
            "the distributor heard no lifesize report:\n{text}"
        );
    }
    packets
}

/// Scrapes MVS1's endpoint over HTTP from MVS1's namespace; returns the body.
fn scrape_endpoint(site: &TestSite) -> String {
    let output = run(&mut in_ns(
        &site.ns("MVS1"),
        &["python3", "-c", SCRAPE, METRICS],
    ));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.splitn(3, '\n');
    assert_eq!(lines.next(), Some("200"), "{text}");
    let content_type = lines.next().unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = lines.next().unwrap_or_default().to_owned();
    let samples = parse_exposition(&body);
    let packets = total(&samples, "dvipsec_core_packets_total", "MVS1");
    assert!(packets > 0.0, "the scrape counts no packet:\n{body}");
    eprintln!(
        "scraped {METRICS}: {} samples, MVS1 core packets {packets}",
        samples.len()
    );
    body
}

/// `keys export --wireshark` on every box: records for strongSwan's SPIs, a warning on
/// stderr. Returns every key (lowercase hex) the boxes exported.
fn export_keys(ctl: &Ctl, inbound: u64, outbound: u64) -> Vec<String> {
    let mut keys = Vec::new();
    for node in NODES {
        let output = ctl.raw(node, &["keys", "export", "--wireshark"]);
        assert!(output.status.success(), "{node}: keys export failed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("WARNING"), "{node}: no warning: {stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let records: Vec<(u32, String, String)> = stdout.lines().map(esp_sa_line).collect();
        for spi in [inbound, outbound] {
            let record = records
                .iter()
                .find(|(s, _, _)| u64::from(*s) == spi)
                .unwrap_or_else(|| panic!("{node}: no record for {spi:#010x}"));
            // AES-128-GCM: 16 key bytes and the 4-byte salt.
            assert_eq!(record.1.len(), 40, "{node}: {}", record.1.len());
            assert!(record.2.is_empty(), "an AEAD has no integrity key");
        }
        // Exactly the SAs the box lists: no more, no fewer.
        let mut exported: Vec<u64> = records.iter().map(|(s, _, _)| u64::from(*s)).collect();
        let list = ctl.json(&mut Transcript::default(), node, &["sa", "list"]);
        let mut listed: Vec<u64> = spis_at(&list, "sad");
        listed.extend(spis_at(&list, "shadow"));
        for spis in [&mut exported, &mut listed] {
            spis.sort();
            spis.dedup();
        }
        assert_eq!(
            exported, listed,
            "{node}: exported SPIs are the listed ones"
        );
        keys.extend(records.into_iter().map(|(_, enc, _)| enc));
    }
    keys.sort();
    keys.dedup();
    // One key per SA and direction: at least strongSwan's two.
    assert!(keys.len() >= 2, "distinct keys exported: {}", keys.len());
    keys
}

/// The DVIPA's relations in a `status` answer.
fn relations(status: &Value) -> Vec<String> {
    status["dvipas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["dvipa"] == DVIPA)
        .filter_map(|d| d["relation"].as_str().map(str::to_owned))
        .collect()
}

/// `dvipsecctl takeover` on the site where MVS4 backs DVA1: refused where it does not apply,
/// and on the backup a planned move that the cluster carries out (MVS4 owns DVA1, MVS1 lets go
/// and backs it, the new owner holds an IKE SA with strongSwan and counts the takeover).
#[test]
fn a_planned_move_with_dvipsecctl_takeover_moves_dva1_to_its_backup() {
    let test = "a_planned_move_with_dvipsecctl_takeover_moves_dva1_to_its_backup";
    let Some(binary) = dvipsecctl_binary(test) else {
        return;
    };
    let control_dir = tempfile::tempdir().unwrap();
    let sockets = control_dir.path().join("ctl");
    // A stale socket from an earlier run: MVS2's box must replace it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&sockets)
        .unwrap();
    drop(std::os::unix::net::UnixListener::bind(sockets.join("MVS2.sock")).unwrap());
    assert!(sockets.join("MVS2.sock").exists());
    let Some(ConnectedSite { site, charon }) =
        ConnectedSite::connect(test, "m", |text| with_control(with_backup(text), &sockets))
    else {
        return;
    };
    let ctl = Ctl { binary, sockets };
    check_sockets(&ctl);
    let mut log = Transcript::default();
    let status = ctl.json(&mut log, "MVS2", &["status"]);
    assert_eq!(
        status["name"], "MVS2",
        "the stale socket was replaced: {status}"
    );
    let status = ctl.json(&mut log, "MVS4", &["status"]);
    assert_eq!(status["role"], "backup", "{status}");
    assert_eq!(relations(&status), ["backs", "serves"], "{status}");

    let reason = ctl.refused(&mut log, "MVS2", &["takeover", DVIPA]);
    assert!(
        reason.contains("neither the owner nor a backup of DVA1; its backups: MVS4 (rank 10)"),
        "{reason}"
    );
    let reason = ctl.refused(&mut log, "MVS1", &["takeover", DVIPA]);
    assert!(reason.contains("MVS1 already owns DVA1"), "{reason}");

    let asked = Instant::now();
    let moved = ctl.json(&mut log, "MVS4", &["takeover", DVIPA]);
    assert_eq!(moved["dvipa"], DVIPA, "{moved}");
    let outcome = moved["outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("MVS4 takes DVA1 over"), "{moved}");
    eventually_within(
        Duration::from_secs(20),
        "MVS4 owns DVA1, MVS1 backs it",
        || {
            let new = ctl.json(&mut log, "MVS4", &["status"]);
            let old = ctl.json(&mut log, "MVS1", &["status"]);
            let (new_relations, old_relations) = (relations(&new), relations(&old));
            let moved = new["role"] == "distributor"
                && new_relations.iter().any(|r| r == "owns")
                && old["role"] == "backup"
                && old_relations.iter().any(|r| r == "backs")
                && !old_relations.iter().any(|r| r == "owns");
            if moved {
                Ok(())
            } else {
                Err(format!("MVS4 {new}\nMVS1 {old}"))
            }
        },
    );
    let owned_after = asked.elapsed();
    eventually_within(Duration::from_secs(20), "the new owner's IKE SA", || {
        let ike = ctl.json(&mut log, "MVS4", &["ike", "list"]);
        let established = ike["ike_sas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|sa| sa["state"] == "ESTABLISHED" && sa["remote"] == PEER_OUTER);
        if established {
            Ok(())
        } else {
            Err(format!("{ike}"))
        }
    });
    eprintln!(
        "planned move: MVS4 owned DVA1 {} ms after dvipsecctl takeover, with an IKE SA after {} ms",
        owned_after.as_millis(),
        asked.elapsed().as_millis()
    );
    let samples = parse_exposition(&ctl.ok(&mut log, "MVS4", &["metrics"]));
    assert!(
        total(&samples, "dvipsec_takeovers_total", "MVS4") >= 1.0,
        "MVS4 counted no takeover"
    );
    let reason = ctl.refused(&mut log, "MVS4", &["takeover", DVIPA]);
    assert!(reason.contains("MVS4 already owns DVA1"), "{reason}");

    let pids = site.pids();
    topology::down(&site.run_dir()).unwrap();
    drop(charon);
    site.assert_nothing_left(&pids);
}
