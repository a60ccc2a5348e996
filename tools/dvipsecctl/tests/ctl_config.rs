//! `dvipsecctl config check` and choosing a box by node name (`--node`, `--site`): the socket
//! path comes from the site file's `control.socket`, or `/run/dvipsec/NODE.sock`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dvipsec_control::protocol::StatusReport;
use dvipsec_control::testbed::{TestbedBox, TestbedHandler};
use dvipsec_control::ControlServer;
use dvipsec_dataplane::testbed::{Testbed, TestbedConfig};
use support::{ctl, stdout};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// figure4.yaml with MVS2's control socket at `socket` and a metrics endpoint.
fn site_with_socket(dir: &Path, socket: &Path) -> PathBuf {
    let figure4 = std::fs::read_to_string(repo_file("config/examples/figure4.yaml")).unwrap();
    let anchor = "    xcf: [192.0.2.2]";
    assert!(figure4.contains(anchor));
    let site = figure4.replacen(
        anchor,
        &format!(
            "{anchor}\n    control: {{ socket: {} }}\n    metrics: {{ listen: \"127.0.0.1:9464\" }}",
            socket.display()
        ),
        1,
    );
    let file = dir.join("site.yaml");
    std::fs::write(&file, site).unwrap();
    file
}

#[test]
fn check_lists_each_nodes_roles_and_operator_endpoints() {
    let figure4 = repo_file("config/examples/figure4.yaml");
    let text = stdout(&ctl(&["config", "check", figure4.to_str().unwrap()]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert!(lines[0].starts_with("MVS1: roles distributor"), "{text}");
    assert_eq!(
        lines[1],
        "  control socket /run/dvipsec/MVS1.sock; metrics none"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = site_with_socket(dir.path(), Path::new("/run/site/mvs2.sock"));
    let text = stdout(&ctl(&[
        "config",
        "check",
        file.to_str().unwrap(),
        "--node",
        "MVS2",
    ]));
    assert_eq!(
        text.lines().nth(1),
        Some("  control socket /run/site/mvs2.sock; metrics http://127.0.0.1:9464/metrics"),
        "{text}"
    );
}

#[test]
fn check_of_a_broken_file_names_file_line_and_column_and_exits_2() {
    let broken = repo_file("config/tests/broken/control-socket-relative.yaml");
    let shown = broken.to_str().unwrap();
    let output = ctl(&["config", "check", shown]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "{shown}:13:24: control socket path run/D1.sock must be absolute"
        )),
        "{stderr}"
    );
    let output = ctl(&["config", "check", shown.replace("broken/", "").as_str()]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a missing file is an error too"
    );
}

#[test]
fn a_box_is_found_by_its_node_name_in_the_site_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mvs2.sock");
    let site = site_with_socket(dir.path(), &socket);
    let bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).unwrap();
    let handler = TestbedHandler::new(Arc::new(Mutex::new(bed)), TestbedBox::Target(0));
    let _server = ControlServer::start(&socket, Box::new(handler)).unwrap();
    let site = site.to_str().unwrap();
    let json = stdout(&ctl(&[
        "status", "--json", "--site", site, "--node", "MVS2",
    ]));
    let status: StatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!(
        status.name, "t0",
        "the testbed box behind MVS2's socket answered"
    );
    // A node the site lacks, and a node without a site (its default socket is not there).
    let output = ctl(&["status", "--site", site, "--node", "MVS9"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no node is named `MVS9`"), "{stderr}");
    let output = ctl(&["sa", "list", "--node", "NO-SUCH-NODE"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("/run/dvipsec/NO-SUCH-NODE.sock"),
        "{stderr}"
    );
    // --socket and --node choose the box two ways: clap refuses both at once.
    let output = ctl(&["status", "--socket", "/x.sock", "--node", "MVS2"]);
    assert_eq!(output.status.code(), Some(2));
}
