//! `dvipsecctl cf take` against a CF server on loopback.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use dvipsec_cf::server::{self, BlockSizes};
use dvipsec_cf::{NetClient, SequenceFacility, SlotKey};

fn start_server(dir: &std::path::Path) -> SocketAddr {
    let core = server::open_file_core(dir, BlockSizes::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || server::serve(listener, Arc::new(Mutex::new(core))));
    addr
}

fn take(addr: SocketAddr, slot: &str, count: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvipsecctl"))
        .args([
            "cf",
            "take",
            "--server",
            &addr.to_string(),
            "--slot",
            slot,
            "--count",
            count,
        ])
        .output()
        .unwrap()
}

fn numbers(output: &Output) -> Vec<u64> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

#[test]
fn take_prints_consecutive_numbers_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_server(dir.path());
    let client = NetClient::connect_adopting(addr).unwrap();
    let slot = client
        .allocate(
            SlotKey {
                dvipa: "192.0.2.1".parse().unwrap(),
                spi: 7,
            },
            64,
        )
        .unwrap();
    let slot_arg = slot.0.to_string();

    let output = take(addr, &slot_arg, "5");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "1\n2\n3\n4\n5\n");
    assert_eq!(numbers(&take(addr, &slot_arg, "3")), vec![6, 7, 8]);
    // The data path's numbers and the operator's never overlap.
    assert_eq!(client.fetch_add(slot, 2).unwrap().first, 9);
    // More than one FetchAdd can carry: split over several operations.
    let many = numbers(&take(addr, &slot_arg, "1100000"));
    assert_eq!(many.len(), 1_100_000);
    assert_eq!(many.first(), Some(&11));
    assert!(many.windows(2).all(|pair| pair[1] == pair[0] + 1));
}

#[test]
fn take_reports_errors_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_server(dir.path());

    let unknown = take(addr, "42", "1");
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("slot 42") && stderr.contains("unknown"),
        "{stderr}"
    );
    assert!(unknown.stdout.is_empty());

    let zero = take(addr, "1", "0");
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--count"));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let refused = take(closed, "1", "1");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("connecting to CF server"));
}
