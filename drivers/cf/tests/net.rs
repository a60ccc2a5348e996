//! The networked CF on loopback: same behaviour as the region, batching, fencing, bad input,
//! and a client killed in the middle of a lease.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipsec_cf::proto::{self, Op, OpResult, Request, ServerStats};
use dvipsec_cf::server::{self, BlockSizes, FileStore, SharedCore};
use dvipsec_cf::{CfError, Direction, NetClient, RegionOwner, SequenceFacility, SlotId, SlotKey};

fn key(spi: u32) -> SlotKey {
    SlotKey {
        dvipa: "203.0.113.5".parse::<IpAddr>().unwrap(),
        spi,
    }
}

/// Starts a server on an ephemeral loopback port, in a thread of this process.
fn start_server(dir: &Path) -> (SocketAddr, SharedCore<FileStore>) {
    let core = server::open_file_core(
        dir,
        BlockSizes {
            outbound: 100,
            replay: 100,
        },
    )
    .unwrap();
    let core = Arc::new(Mutex::new(core));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::clone(&core);
    std::thread::spawn(move || server::serve(listener, serving));
    (addr, core)
}

/// The same calls, recorded, so two facilities can be compared.
fn transcript(facility: &dyn SequenceFacility, slot: SlotId) -> Vec<String> {
    let mut out = Vec::new();
    for n in [1, 1, 7, 1, 32] {
        out.push(format!(
            "{:?}",
            facility.fetch_add(slot, n).map(|r| (r.first, r.count))
        ));
    }
    out.push(format!(
        "{:?}",
        facility.fetch_add(slot, 0).map_err(|e| e.to_string())
    ));
    for seq in [5, 5, 3, 300, 200, 237, 236, 0] {
        out.push(format!(
            "check {seq} {:?}",
            facility.replay_check(slot, seq).unwrap()
        ));
        out.push(format!(
            "set {seq} {:?}",
            facility.replay_check_and_set(slot, seq).unwrap()
        ));
    }
    facility
        .lifesize_add(slot, Direction::Outbound, 1400, 1)
        .unwrap();
    facility
        .lifesize_add(slot, Direction::Inbound, 90, 2)
        .unwrap();
    out.push(format!("{:?}", facility.lifesize_read(slot).unwrap()));
    out.push(format!(
        "{:?}",
        facility.fetch_add(SlotId(0xdead), 1).is_err()
    ));
    out
}

#[test]
fn network_and_region_behave_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(&dir.path().join("state"));
    let client = NetClient::connect_adopting(addr).unwrap();
    let net_slot = client.allocate(key(1), 64).unwrap();
    let owner = RegionOwner::create(&dir.path().join("region"), 4).unwrap();
    let shm_slot = owner.allocate(key(1), 64).unwrap();

    let over_network = transcript(&client, net_slot);
    let in_memory = transcript(owner.region(), shm_slot);
    assert_eq!(over_network, in_memory);
    assert_eq!(over_network[0], "Ok((1, 1))");
    assert_eq!(over_network[4], "Ok((11, 32))");
    assert!(
        over_network.contains(&"set 236 TooOld".to_string()),
        "{over_network:?}"
    );
}

/// Both facilities take the widest window the ESP engine allows (4096) and agree at its edge.
#[test]
fn both_facilities_take_windows_up_to_4096() {
    use dvipsec_cf::ReplayVerdict::{Accepted, Replayed, TooOld};
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(&dir.path().join("state"));
    let client = NetClient::connect_adopting(addr).unwrap();
    let owner = RegionOwner::create(&dir.path().join("region"), 4).unwrap();
    assert!(client.allocate(key(2), 4097).is_err());
    assert!(owner.allocate(key(2), 4097).is_err());
    let net_slot = client.allocate(key(1), 4096).unwrap();
    let shm_slot = owner.allocate(key(1), 4096).unwrap();
    let expected = [
        (10_000, Accepted),
        (5904, TooOld),
        (5905, Accepted),
        (5905, Replayed),
        (10_001, Accepted),
        (5905, TooOld),
        (5906, Accepted),
    ];
    let facilities: [(&dyn SequenceFacility, SlotId); 2] =
        [(&client, net_slot), (owner.region(), shm_slot)];
    for (facility, slot) in facilities {
        for (seq, verdict) in expected {
            assert_eq!(
                facility.replay_check(slot, seq).unwrap(),
                verdict,
                "check {seq}"
            );
            if verdict != Replayed {
                assert_eq!(
                    facility.replay_check_and_set(slot, seq).unwrap(),
                    verdict,
                    "set {seq}"
                );
            }
        }
    }
}

#[test]
fn one_round_trip_serves_a_burst_over_several_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, core) = start_server(dir.path());
    let client = NetClient::connect_adopting(addr).unwrap();
    let slots: Vec<SlotId> = (0..3)
        .map(|spi| client.allocate(key(spi), 128).unwrap())
        .collect();
    let requests_before = client.stats().unwrap().requests;
    let takes: Vec<(SlotId, u32)> = (0..300).map(|i| (slots[i % 3], 4)).collect();
    let ranges = client.fetch_add_many(&takes).unwrap();
    assert_eq!(
        core.lock().unwrap().stats().requests,
        requests_before + 1,
        "one request for the burst"
    );
    for (slot_index, slot) in slots.iter().enumerate() {
        let firsts: Vec<u64> = ranges
            .iter()
            .skip(slot_index)
            .step_by(3)
            .map(|r| r.first)
            .collect();
        let expected: Vec<u64> = (0..100).map(|i| 1 + 4 * i).collect();
        assert_eq!(firsts, expected, "slot {slot:?}");
    }
    let too_many = vec![(slots[0], 1u32); proto::MAX_OPS + 1];
    assert!(matches!(
        client.fetch_add_many(&too_many),
        Err(CfError::InvalidArgument(_))
    ));
}

#[test]
fn a_newer_epoch_fences_old_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(dir.path());
    let distributor = NetClient::connect_adopting(addr).unwrap();
    let slot = distributor.allocate(key(1), 64).unwrap();
    let target = NetClient::connect(addr, distributor.epoch(), distributor.incarnation()).unwrap();
    assert_eq!(target.fetch_add(slot, 1).unwrap().first, 1);
    distributor.bump_epoch(distributor.epoch() + 1).unwrap();
    assert!(matches!(
        target.fetch_add(slot, 1),
        Err(CfError::Fenced {
            caller: 1,
            current: 2
        })
    ));
    assert!(matches!(
        target.replay_check_and_set(slot, 1),
        Err(CfError::Fenced { .. })
    ));
    let new_target = NetClient::connect(addr, 2, distributor.incarnation()).unwrap();
    assert_eq!(new_target.fetch_add(slot, 1).unwrap().first, 2);
    let wrong_incarnation = NetClient::connect(addr, 2, distributor.incarnation() ^ 1).unwrap_err();
    assert!(
        matches!(wrong_incarnation, CfError::StateLost { .. }),
        "{wrong_incarnation}"
    );
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may close before reading everything; that is the point.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

fn wait_for_stats(client: &NetClient, done: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats().unwrap();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_requests_are_counted_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(dir.path());
    let client = NetClient::connect_adopting(addr).unwrap();
    let slot = client.allocate(key(1), 64).unwrap();

    // Oversized: a length prefix far beyond the limit.
    assert!(send_raw(addr, &u32::MAX.to_be_bytes()).is_empty());
    // Truncated: a prefix announcing 40 bytes, then 10 and the end of the stream.
    let mut truncated = 40u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0u8; 10]);
    assert!(send_raw(addr, &truncated).is_empty());
    // Truncated inside the prefix.
    assert!(send_raw(addr, &[0, 0]).is_empty());
    // Garbage: a well-framed body that is not a request.
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"hello world!");
    assert!(send_raw(addr, &garbage).is_empty());
    // A good request followed by garbage: the good one is answered first.
    let mut good_then_bad = proto::encode_request(&Request {
        epoch: 1,
        ops: vec![Op::Stats],
    });
    good_then_bad.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    assert!(!send_raw(addr, &good_then_bad).is_empty());

    let stats = wait_for_stats(&client, |s| {
        s.oversized >= 1 && s.truncated >= 2 && s.malformed >= 2
    });
    assert_eq!(
        (stats.oversized, stats.truncated, stats.malformed),
        (1, 2, 2),
        "{stats:?}"
    );

    // Random frames (seeded): each is dropped or answered, never kills the server.
    let mut state = 0x1234_5678_9abc_def0u64;
    for round in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let length = (state % 64) as usize;
        let mut frame = (length as u32).to_be_bytes().to_vec();
        frame.extend((0..length).map(|i| (state >> (i % 8 * 8)) as u8 ^ round as u8));
        send_raw(addr, &frame);
    }
    let stats = wait_for_stats(&client, |s| s.oversized + s.truncated + s.malformed >= 205);
    assert!(
        stats.oversized + stats.truncated + stats.malformed >= 205,
        "{stats:?}"
    );
    assert_eq!(
        client.fetch_add(slot, 3).unwrap().first,
        1,
        "still serving, nothing consumed"
    );
}

/// Kills the child if the test fails first.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_client_killed_in_the_middle_of_a_lease_loses_only_its_own_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(dir.path());
    let client = NetClient::connect_adopting(addr).unwrap();
    let slot = client.allocate(key(1), 64).unwrap();
    let truncated_before = client.stats().unwrap().truncated;

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_takes_leases_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CF_CHILD_SERVER", addr.to_string())
        .env("CF_CHILD_SLOT", slot.0.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut child_highest = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(range) = line.strip_prefix("lease ") {
            let (first, count) = range.split_once(' ').unwrap();
            child_highest = first.parse::<u64>().unwrap() + count.parse::<u64>().unwrap() - 1;
        }
        if line == "half a frame sent" {
            break;
        }
    }
    assert!(child_highest >= 16 * 50, "the child took its leases");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let stats = wait_for_stats(&client, |s| s.truncated > truncated_before);
    assert_eq!(
        stats.truncated,
        truncated_before + 1,
        "the half frame was counted"
    );
    let next = client.fetch_add(slot, 1).unwrap().first;
    assert!(
        next > child_highest,
        "{next} was handed out before (child reached {child_highest})"
    );
}

/// Entry point of the child of `a_client_killed_in_the_middle_of_a_lease_loses_only_its_own_numbers`.
#[test]
#[ignore = "runs only as a child process"]
fn child_takes_leases_until_killed() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} not set: run by the parent test"))
    };
    let addr: SocketAddr = var("CF_CHILD_SERVER").parse().unwrap();
    let slot = SlotId(var("CF_CHILD_SLOT").parse().unwrap());
    let client = NetClient::connect_adopting(addr).unwrap();
    let mut stdout = std::io::stdout();
    for _ in 0..50 {
        let range = client.fetch_add(slot, 16).unwrap();
        writeln!(stdout, "lease {} {}", range.first, range.count).unwrap();
    }
    // A second connection that stops in the middle of a request.
    let mut raw = TcpStream::connect(addr).unwrap();
    let frame = proto::encode_request(&Request {
        epoch: client.epoch(),
        ops: vec![Op::FetchAdd { slot, count: 16 }],
    });
    raw.write_all(&frame[..frame.len() / 2]).unwrap();
    raw.flush().unwrap();
    writeln!(stdout, "half a frame sent").unwrap();
    stdout.flush().unwrap();
    loop {
        // Keep the lease half used until the parent kills this process.
        let _ = client.fetch_add(slot, 1);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn answers_match_ops_one_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _core) = start_server(dir.path());
    let client = NetClient::connect_adopting(addr).unwrap();
    let slot = client.allocate(key(1), 64).unwrap();
    let ops = [
        Op::FetchAdd { slot, count: 2 },
        Op::ReplayCheckAndSet { slot, seq: 9 },
        Op::FetchAdd {
            slot: SlotId(77),
            count: 2,
        },
        Op::LifesizeRead { slot },
    ];
    let results = client.call(&ops).unwrap();
    assert_eq!(results.len(), 4);
    assert!(matches!(results[0], OpResult::Range(r) if r.first == 1 && r.count == 2));
    assert!(matches!(
        results[1],
        OpResult::Verdict(dvipsec_cf::ReplayVerdict::Accepted)
    ));
    assert_eq!(results[2], OpResult::UnknownSlot);
    assert!(matches!(results[3], OpResult::Lifesize(_)));
}
