//! `dvipsec cf serve` as a process: SIGKILL and restart under load never reissue a number, a lost
//! state is reported as such, and a corrupt state stops the server.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipsec_cf::{CfError, NetClient, SequenceFacility, SlotId, SlotKey};

/// A running `dvipsec cf serve`; SIGKILLed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(listen: &str, state: &Path) -> Server {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_dvipsec"))
                .args(["cf", "serve", "--listen", listen, "--state"])
                .arg(state)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning dvipsec cf serve");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if let Some(rest) = line.strip_prefix("cf serving on ") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .expect("address")
                    .parse()
                    .expect("socket address");
                return Server { child, addr };
            }
            // The port of a killed server can take a moment to be free again.
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "dvipsec cf serve did not start: {line:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key() -> SlotKey {
    SlotKey {
        dvipa: "192.0.2.80".parse().unwrap(),
        spi: 0x1000_0001,
    }
}

/// Takes numbers in a loop, reconnecting after every failure, until told to stop.
fn load(
    addr: SocketAddr,
    epoch: u64,
    incarnation: u64,
    slot: SlotId,
    seed: u64,
    stop: &AtomicBool,
) -> (Vec<(u64, u32)>, u64) {
    let mut ranges = Vec::new();
    let mut failures = 0u64;
    let mut client: Option<NetClient> = None;
    let mut state = seed | 1;
    while !stop.load(Ordering::SeqCst) {
        let Some(connected) = client.as_ref() else {
            match NetClient::connect(addr, epoch, incarnation) {
                Ok(fresh) => client = Some(fresh),
                Err(CfError::StateLost { .. }) => panic!("the restarted server lost its state"),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
            continue;
        };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let count = 1 + (state % 32) as u32;
        match connected.fetch_add(slot, count) {
            Ok(range) => ranges.push((range.first, range.count)),
            Err(CfError::StateLost { .. }) => panic!("the restarted server lost its state"),
            Err(_) => {
                failures += 1;
                client = None;
            }
        }
    }
    (ranges, failures)
}

#[test]
fn sigkill_and_restart_under_load_never_reissue_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut server = Server::start("127.0.0.1:0", &state);
    let addr = server.addr;
    let distributor = NetClient::connect_adopting(addr).unwrap();
    let slot = distributor.allocate(key(), 128).unwrap();
    let (epoch, incarnation) = (distributor.epoch(), distributor.incarnation());
    drop(distributor);

    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3u64)
        .map(|seed| {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            std::thread::spawn(move || {
                let outcome = load(addr, epoch, incarnation, slot, seed + 1, &stop);
                results.lock().unwrap().push(outcome);
            })
        })
        .collect();
    let mut taken_per_life = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(250));
        server.kill();
        server = Server::start(&addr.to_string(), &state);
        let checker = NetClient::connect(addr, epoch, incarnation)
            .expect("the same incarnation after a restart");
        taken_per_life.push(checker.fetch_add(slot, 1).unwrap().first);
    }
    std::thread::sleep(Duration::from_millis(250));
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("a load thread failed");
    }
    assert_eq!(results.lock().unwrap().len(), 3);

    let mut all = Vec::new();
    let mut failures = 0;
    for (ranges, worker_failures) in results.lock().unwrap().iter() {
        failures += worker_failures;
        for (first, count) in ranges {
            all.extend(*first..*first + u64::from(*count));
        }
    }
    all.extend(&taken_per_life);
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a number was issued twice");
    assert!(all.len() > 1000, "too little load: {} numbers", all.len());
    assert!(failures >= 1, "the kills did not interrupt the load");
    // Every restart continued above everything handed out before it.
    for pair in taken_per_life.windows(2) {
        assert!(pair[1] > pair[0]);
    }
}

#[test]
fn a_lost_state_is_reported_so_that_the_sas_are_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start("127.0.0.1:0", &dir.path().join("first"));
    let addr = server.addr;
    let distributor = NetClient::connect_adopting(addr).unwrap();
    let slot = distributor.allocate(key(), 64).unwrap();
    let target = NetClient::connect(addr, distributor.epoch(), distributor.incarnation()).unwrap();
    assert_eq!(target.fetch_add(slot, 1).unwrap().first, 1);

    server.kill();
    // The state directory is gone: the new server is a new incarnation.
    let _server = Server::start(&addr.to_string(), &dir.path().join("empty"));
    let first_error = target.fetch_add(slot, 1).unwrap_err();
    assert!(matches!(first_error, CfError::Io { .. }), "{first_error}");
    let error = target.fetch_add(slot, 1).unwrap_err();
    assert!(matches!(error, CfError::StateLost { .. }), "{error}");
    assert!(error.requires_rekey());
}

#[test]
fn a_corrupt_state_stops_the_server_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cf-state"),
        b"DVCFST01 but not really a state file at all",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dvipsec"))
        .args(["cf", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cf-state") && stderr.contains("at byte"),
        "{stderr}"
    );
}

#[test]
fn garbage_on_the_wire_is_dropped_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("127.0.0.1:0", dir.path());
    let client = NetClient::connect_adopting(server.addr).unwrap();
    let slot = client.allocate(key(), 64).unwrap();
    let frames: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 9, 1, 2, 3],
        &[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
    ];
    for frame in frames {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(frame);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert!(reply.is_empty(), "a bad frame was answered");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = client.stats().unwrap();
        if stats.oversized + stats.truncated + stats.malformed >= 3 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        (stats.oversized, stats.truncated, stats.malformed),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(client.fetch_add(slot, 2).unwrap().first, 1);
}
