//! `dvipsec boot` driven as a process: refusals with clear messages, and a clean run in a
//! network namespace of its own that ends on SIGTERM with the CF region removed.

use dvipsec_hwtest::netns::Netns;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dvipsec");

/// A one-node site: `dist` owns a DVIPA, has an external port of `driver` on `iface`, an XCF
/// port on `bt-xcf`, and the CF region at `cf`.
fn site_yaml(driver: &str, iface: &str, cf: &Path, polling_cores: &str) -> String {
    let iface = if iface.is_empty() {
        String::new()
    } else {
        format!("\n        iface: {iface}")
    };
    format!(
        "site: boot-test
nodes:
  - name: dist
    capabilities: [distributor, ike]
    xcf: [\"10.99.0.1\"]
    ports:
      - name: ext
        driver: {driver}{iface}
      - name: xcf
        driver: af_packet
        iface: bt-xcf
    polling_cores: {polling_cores}
dvipas:
  - name: web
    define:
      address: \"10.99.1.80\"
      prefix_len: 32
    owner: dist
    policy:
      - name: clients
        remote: \"10.99.2.0/24\"
        protocol: tcp
        local_ports: [443]
        action: bypass
peers: []
coupling_facility:
  backend:
    shm: {cf}
  sequence_allocation: per_packet
xcf:
  security: trusted
  heartbeat_ms: 50
  takeover_timeout_ms: 500
",
        cf = cf.display()
    )
}

struct Site {
    _dir: tempfile::TempDir,
    file: PathBuf,
    cf: PathBuf,
}

fn write_site(tag: &str, driver: &str, iface: &str, polling_cores: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let cf = PathBuf::from(format!(
        "/dev/shm/dvipsec-boot-test-{}-{tag}",
        std::process::id()
    ));
    let file = dir.path().join("site.yaml");
    std::fs::write(&file, site_yaml(driver, iface, &cf, polling_cores)).unwrap();
    Site {
        _dir: dir,
        file,
        cf,
    }
}

fn boot(site: &Path, node: &str) -> Output {
    Command::new(BIN)
        .args(["boot", "--config"])
        .arg(site)
        .args(["--node", node])
        .output()
        .unwrap()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Boots `node` of `site`, asserts that it exits with `exit_code`, and returns its stderr.
fn refused_boot(site: &Path, node: &str, exit_code: i32) -> String {
    let output = boot(site, node);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(exit_code), "{stderr}");
    stderr
}

#[test]
fn a_bad_configuration_exits_2_naming_the_line() {
    let site = write_site("badcfg", "af_packet", "eth-none", "[]");
    let text = std::fs::read_to_string(&site.file)
        .unwrap()
        .replace("action: bypass", "action: permit");
    std::fs::write(&site.file, text).unwrap();
    let stderr = refused_boot(&site.file, "dist", 2);
    let located = format!("{}:25:17: unknown variant `permit`", site.file.display());
    assert!(stderr.contains(&located), "{stderr}");
    assert!(!site.cf.exists(), "no region for a refused boot");
}

#[test]
fn a_cf_server_backend_exits_2_naming_the_line() {
    // A valid site for `cf serve` clients, but the boot data plane needs the mapped region: it
    // must refuse before opening anything rather than drop every packet as a CF failure.
    let site = write_site("netcf", "af_packet", "eth-none", "[]");
    let shm = format!("    shm: {}", site.cf.display());
    let text = std::fs::read_to_string(&site.file)
        .unwrap()
        .replace(&shm, "    network: \"127.0.0.1:7400\"");
    std::fs::write(&site.file, text).unwrap();
    let stderr = refused_boot(&site.file, "dist", 2);
    let located = format!(
        "{}:29:5: coupling_facility: `dvipsec boot` needs",
        site.file.display()
    );
    assert!(stderr.contains(&located), "{stderr}");
    assert!(
        !stderr.contains("eth-none"),
        "refused before the ports: {stderr}"
    );
}

#[test]
fn an_unknown_node_exits_2() {
    let site = write_site("nonode", "af_packet", "eth-none", "[]");
    let stderr = refused_boot(&site.file, "nobody", 2);
    assert!(stderr.contains("no node is named `nobody`"), "{stderr}");
}

#[test]
fn a_missing_device_exits_1_naming_port_and_interface() {
    let site = write_site("nodev", "af_packet", "dvb-absent0", "[]");
    let stderr = refused_boot(&site.file, "dist", 1);
    assert!(stderr.contains("node dist: port ext:"), "{stderr}");
    assert!(stderr.contains("dvb-absent0"), "{stderr}");
    assert!(!site.cf.exists(), "no region for a refused boot");
}

#[test]
fn a_missing_polling_core_exits_1() {
    let site = write_site("nocore", "af_packet", "dvb-absent0", "[4000]");
    let stderr = refused_boot(&site.file, "dist", 1);
    assert!(
        stderr.contains("polling core 4000 does not exist"),
        "{stderr}"
    );
}

#[test]
fn in_memory_and_dpdk_ports_are_refused_with_the_reason() {
    // A build with the DPDK backend opens DPDK ports (see hwtest's DPDK site test).
    let drivers: &[&str] = if cfg!(feature = "dpdk") {
        &["mem"]
    } else {
        &["mem", "dpdk"]
    };
    for &driver in drivers {
        let site = write_site(driver, driver, "", "[]");
        let stderr = refused_boot(&site.file, "dist", 1);
        let expected = format!("port ext: driver {driver} cannot be used by `dvipsec boot`");
        assert!(stderr.contains(&expected), "{stderr}");
    }
}

/// Whether this test may need root; under CI a missing prerequisite is a failure.
fn root_or_skip(test: &str) -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (network namespaces, AF_PACKET) and CI=true");
    }
    eprintln!("{test}: skipped, needs root");
    false
}

/// A namespace with a veth pair inside, and whatever boot process runs in it; both gone on drop
/// (the process first, then the namespace with the veth, by hwtest's guard).
struct NamespaceRun {
    child: Option<Child>,
    cf: PathBuf,
    namespace: Netns,
}

impl Drop for NamespaceRun {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.cf);
    }
}

/// Runs boot for the one-node site in a namespace of its own with a veth as its port.
fn run_in_namespace(tag: &str, xcf_address_present: bool) -> (Site, NamespaceRun, Child) {
    let site = write_site(tag, "af_packet", "bt-ext", "[0]");
    let netns = Netns::create(&format!("dvb-boot-{}-{tag}", std::process::id())).unwrap();
    let namespace = netns.name().to_owned();
    let run = NamespaceRun {
        child: None,
        cf: site.cf.clone(),
        namespace: netns,
    };
    let in_namespace = |args: &[&str]| run.namespace.exec_ip(args).unwrap();
    in_namespace(&[
        "link", "add", "bt-ext", "type", "veth", "peer", "name", "bt-ext-p",
    ]);
    in_namespace(&[
        "link", "add", "bt-xcf", "type", "veth", "peer", "name", "bt-xcf-p",
    ]);
    for link in ["bt-ext", "bt-ext-p", "bt-xcf", "bt-xcf-p"] {
        in_namespace(&["link", "set", link, "up"]);
    }
    // The DVIPA, where the box's IKE sockets listen.
    in_namespace(&["addr", "add", "10.99.1.80/32", "dev", "bt-ext"]);
    if xcf_address_present {
        in_namespace(&["addr", "add", "10.99.0.1/24", "dev", "bt-xcf"]);
    }

    let child = Command::new("ip")
        .args(["netns", "exec", &namespace, BIN, "boot", "--config"])
        .arg(&site.file)
        .args(["--node", "dist"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (site, run, child)
}

#[test]
fn boot_runs_until_sigterm_and_removes_its_region() {
    if !root_or_skip("boot_runs_until_sigterm_and_removes_its_region") {
        return;
    }
    let (site, mut run, mut child) = run_in_namespace("run", true);
    let lines = log_lines(child.stderr.take().unwrap());
    let pid = child.id();
    run.child = Some(child);

    wait_for_line(&lines, "node booted");
    assert!(site.cf.exists(), "the owner created the region");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_line(&lines, "shut down cleanly");
    let exit = run.child.take().unwrap().wait().unwrap();
    assert!(exit.success(), "boot exited {exit}");
    assert!(!site.cf.exists(), "the owner removed the region");
}

fn log_lines(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no log line with {needle:?}; saw:\n{}", seen.join("\n")),
        }
    }
}
