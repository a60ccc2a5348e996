//! The shared-memory region: layout checks, slots, fencing, and several processes on one slot.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use dvipsec_cf::{
    CfError, Direction, Region, RegionOwner, ReplayVerdict, SequenceFacility, SlotId, SlotKey,
};

fn key(spi: u32) -> SlotKey {
    SlotKey {
        dvipa: "198.51.100.7".parse::<IpAddr>().unwrap(),
        spi,
    }
}

fn region_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("cf-region")
}

/// A directory in /dev/shm when there is one (as in production), else the default temp dir.
fn shm_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

#[test]
fn slots_hand_out_consecutive_numbers_and_stop_after_release() {
    let dir = shm_dir();
    let owner = RegionOwner::create(&region_path(&dir), 4).unwrap();
    let first = owner.allocate(key(1), 128).unwrap();
    let second = owner.allocate(key(2), 64).unwrap();
    let target = Region::attach(
        &region_path(&dir),
        owner.region().epoch(),
        owner.region().incarnation(),
    )
    .unwrap();
    assert_eq!(target.lookup(key(2)).unwrap(), second);
    assert_eq!(target.fetch_add(first, 1).unwrap().first, 1);
    assert_eq!(target.fetch_add(first, 8).unwrap().first, 2);
    assert_eq!(target.fetch_add(first, 1).unwrap().first, 10);
    assert_eq!(
        target.fetch_add(second, 1).unwrap().first,
        1,
        "slots are independent"
    );
    assert!(matches!(
        target.fetch_add(first, 0),
        Err(CfError::InvalidArgument(_))
    ));

    owner.release(first).unwrap();
    assert!(matches!(
        target.fetch_add(first, 1),
        Err(CfError::UnknownSlot(_))
    ));
    // The storage is reused with a new generation: the old id still fails.
    let reused = owner.allocate(key(3), 32).unwrap();
    assert_ne!(reused, first);
    assert_eq!(target.fetch_add(reused, 1).unwrap().first, 1);
    assert!(matches!(
        target.fetch_add(first, 1),
        Err(CfError::UnknownSlot(_))
    ));
    assert!(
        matches!(owner.allocate(key(2), 64), Err(CfError::InvalidArgument(_))),
        "duplicate key"
    );
}

#[test]
fn full_region_reports_no_free_slot() {
    let dir = shm_dir();
    let owner = RegionOwner::create(&region_path(&dir), 2).unwrap();
    owner.allocate(key(1), 64).unwrap();
    owner.allocate(key(2), 64).unwrap();
    assert!(matches!(
        owner.allocate(key(3), 64),
        Err(CfError::NoFreeSlot)
    ));
    assert!(matches!(
        owner.allocate(key(4), 4097),
        Err(CfError::InvalidArgument(_))
    ));
    assert!(matches!(
        owner.allocate(key(4), 0),
        Err(CfError::InvalidArgument(_))
    ));
}

/// Windows from the smallest the ESP engine allows (32) to the largest (4096), at their edges.
#[test]
fn replay_windows_from_32_to_4096_have_exact_edges() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 4).unwrap();
    let target = Region::attach(&path, 1, owner.region().incarnation()).unwrap();
    for (spi, window) in [(1u32, 32u64), (2, 1024), (3, 4096)] {
        let slot = owner.allocate(key(spi), window as u32).unwrap();
        let top = 100_000u64;
        assert_eq!(
            target.replay_check_and_set(slot, top).unwrap(),
            ReplayVerdict::Accepted
        );
        let left_edge = top - window + 1;
        assert_eq!(
            owner.replay_check(slot, left_edge).unwrap(),
            ReplayVerdict::Accepted,
            "window {window}: left edge"
        );
        assert_eq!(
            owner.replay_check(slot, left_edge - 1).unwrap(),
            ReplayVerdict::TooOld,
            "window {window}: just outside"
        );
        assert_eq!(
            target.replay_check_and_set(slot, left_edge - 1).unwrap(),
            ReplayVerdict::TooOld
        );
        assert_eq!(
            target.replay_check_and_set(slot, left_edge).unwrap(),
            ReplayVerdict::Accepted
        );
        assert_eq!(
            owner.replay_check(slot, left_edge).unwrap(),
            ReplayVerdict::Replayed
        );
        // Every number of the window is accepted once, in reverse order.
        for seq in (left_edge + 1..top).rev() {
            assert_eq!(
                target.replay_check_and_set(slot, seq).unwrap(),
                ReplayVerdict::Accepted,
                "window {window}: {seq}"
            );
        }
        for seq in left_edge..=top {
            assert_eq!(
                owner.replay_check(slot, seq).unwrap(),
                ReplayVerdict::Replayed,
                "window {window}: {seq}"
            );
        }
    }
    let widest = owner.allocate(key(4), 4096).unwrap();
    assert!(matches!(
        owner.allocate(key(5), 4097),
        Err(CfError::InvalidArgument(_))
    ));
    owner.release(widest).unwrap();
    assert!(matches!(
        target.replay_check(widest, 1),
        Err(CfError::UnknownSlot(_))
    ));
}

#[test]
fn replay_state_is_shared_and_check_alone_changes_nothing() {
    let dir = shm_dir();
    let owner = RegionOwner::create(&region_path(&dir), 1).unwrap();
    let slot = owner.allocate(key(1), 64).unwrap();
    let target = Region::attach(&region_path(&dir), 1, owner.region().incarnation()).unwrap();
    assert_eq!(
        target.replay_check(slot, 10).unwrap(),
        ReplayVerdict::Accepted
    );
    assert_eq!(
        owner.replay_check(slot, 10).unwrap(),
        ReplayVerdict::Accepted
    );
    assert_eq!(
        target.replay_check_and_set(slot, 10).unwrap(),
        ReplayVerdict::Accepted
    );
    assert_eq!(
        owner.replay_check(slot, 10).unwrap(),
        ReplayVerdict::Replayed
    );
    assert_eq!(
        owner.replay_check_and_set(slot, 100).unwrap(),
        ReplayVerdict::Accepted
    );
    assert_eq!(
        target.replay_check_and_set(slot, 36).unwrap(),
        ReplayVerdict::TooOld
    );
    assert_eq!(
        target.replay_check_and_set(slot, 37).unwrap(),
        ReplayVerdict::Accepted
    );
    assert_eq!(
        target.replay_check_and_set(slot, 0).unwrap(),
        ReplayVerdict::Zero
    );
}

#[test]
fn lifesize_counters_add_up_per_direction() {
    let dir = shm_dir();
    let owner = RegionOwner::create(&region_path(&dir), 1).unwrap();
    let slot = owner.allocate(key(1), 64).unwrap();
    owner
        .lifesize_add(slot, Direction::Outbound, 1500, 1)
        .unwrap();
    owner
        .lifesize_add(slot, Direction::Outbound, 3000, 2)
        .unwrap();
    owner
        .lifesize_add(slot, Direction::Inbound, 100, 1)
        .unwrap();
    let life = owner.lifesize_read(slot).unwrap();
    assert_eq!(
        (
            life.bytes_out,
            life.packets_out,
            life.bytes_in,
            life.packets_in
        ),
        (4500, 3, 100, 1)
    );
}

#[test]
fn a_takeover_fences_handles_of_the_old_epoch() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 1).unwrap();
    let slot = owner.allocate(key(1), 64).unwrap();
    let old_target = Region::attach(&path, 1, owner.region().incarnation()).unwrap();
    let backup = RegionOwner::take_over(&path).unwrap();
    assert_eq!(backup.region().epoch(), 2);
    assert!(matches!(
        old_target.fetch_add(slot, 1),
        Err(CfError::Fenced {
            caller: 1,
            current: 2
        })
    ));
    assert!(matches!(
        owner.allocate(key(2), 64),
        Err(CfError::Fenced { .. })
    ));
    let new_target = Region::attach(&path, 2, backup.region().incarnation()).unwrap();
    assert_eq!(new_target.fetch_add(slot, 1).unwrap().first, 1);
    assert!(matches!(
        Region::attach(&path, 1, backup.region().incarnation()),
        Err(CfError::Fenced { .. })
    ));
}

#[test]
fn a_recreated_region_is_reported_as_state_lost() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 1).unwrap();
    let target = Region::attach(&path, 1, owner.region().incarnation()).unwrap();
    target.check_backing().unwrap();
    std::fs::remove_file(&path).unwrap();
    let replacement = RegionOwner::create(&path, 1).unwrap();
    let error = target.check_backing().unwrap_err();
    assert!(matches!(error, CfError::StateLost { .. }), "{error}");
    assert!(error.requires_rekey());
    let error = Region::attach(&path, 1, owner.region().incarnation()).unwrap_err();
    assert!(matches!(error, CfError::StateLost { .. }), "{error}");
    drop(replacement);
}

fn write_file(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(bytes).unwrap();
}

fn attach_error(path: &Path) -> String {
    match Region::attach(path, 1, 0) {
        Err(CfError::BadRegion { reason, .. }) => reason.to_string(),
        other => panic!("expected a bad-region error, got {other:?}"),
    }
}

#[test]
fn a_bad_header_is_an_error_not_a_mapping() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 2).unwrap();
    let good = std::fs::read(&path).unwrap();
    drop(owner);

    let bad = dir.path().join("bad");
    write_file(&bad, &good[..64]);
    assert_eq!(attach_error(&bad), "file shorter than the header");

    let mut magic = good.clone();
    magic[0] ^= 0xff;
    write_file(&bad, &magic);
    assert_eq!(attach_error(&bad), "bad magic");

    let mut version = good.clone();
    version[8] = 9;
    write_file(&bad, &version);
    assert_eq!(attach_error(&bad), "unsupported version");

    let mut slots = good.clone();
    slots[12..16].copy_from_slice(&100u32.to_le_bytes());
    write_file(&bad, &slots);
    assert_eq!(
        attach_error(&bad),
        "size does not match the slot count or the file"
    );

    write_file(&bad, &good[..good.len() - 8]);
    assert_eq!(
        attach_error(&bad),
        "size does not match the slot count or the file"
    );

    let mut zero = good.clone();
    zero[12..16].copy_from_slice(&0u32.to_le_bytes());
    write_file(&bad, &zero);
    assert_eq!(attach_error(&bad), "slot count out of range");

    assert!(matches!(
        Region::attach(&dir.path().join("missing"), 1, 0),
        Err(CfError::Io { .. })
    ));
}

const TAKES_PER_CHILD: usize = 100_000;
const REPLAY_SEQS: u64 = 50_000;

/// Kills the children if the test fails before it collects them.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_numbers(path: &Path) -> Vec<u64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap()))
        .collect()
}

/// Four processes hammer one slot: every number is handed out exactly once, with no gaps, and
/// every replay number is accepted by exactly one process.
#[test]
fn several_processes_share_one_slot() {
    const CHILDREN: usize = 4;
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 8).unwrap();
    owner.allocate(key(99), 64).unwrap();
    let slot = owner.allocate(key(1), 1024).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(Vec::new());
    for index in 0..CHILDREN {
        let child = Command::new(&exe)
            .args([
                "--exact",
                "child_hammers_a_slot",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CF_CHILD_REGION", &path)
            .env(
                "CF_CHILD_INCARNATION",
                owner.region().incarnation().to_string(),
            )
            .env("CF_CHILD_SLOT", slot.0.to_string())
            .env("CF_CHILD_TAKES", dir.path().join(format!("takes-{index}")))
            .env(
                "CF_CHILD_ACCEPTS",
                dir.path().join(format!("accepts-{index}")),
            )
            .spawn()
            .unwrap();
        children.0.push(child);
    }
    for child in &mut children.0 {
        assert!(child.wait().unwrap().success(), "a child process failed");
    }
    let mut taken = Vec::new();
    let mut accepted = Vec::new();
    for index in 0..CHILDREN {
        taken.extend(read_numbers(&dir.path().join(format!("takes-{index}"))));
        accepted.extend(read_numbers(&dir.path().join(format!("accepts-{index}"))));
    }
    let unique: BTreeSet<u64> = taken.iter().copied().collect();
    assert_eq!(unique.len(), taken.len(), "a number was handed out twice");
    let highest = *unique.iter().next_back().unwrap();
    assert_eq!(
        unique.len() as u64,
        highest,
        "numbers are not contiguous from 1"
    );
    assert_eq!(owner.fetch_add(slot, 1).unwrap().first, highest + 1);

    let unique_accepts: BTreeSet<u64> = accepted.iter().copied().collect();
    assert_eq!(
        unique_accepts.len(),
        accepted.len(),
        "a replayed number was accepted twice"
    );
    assert_eq!(unique_accepts, (1..=REPLAY_SEQS).collect::<BTreeSet<u64>>());
}

/// Entry point of the child processes of `several_processes_share_one_slot`.
#[test]
#[ignore = "runs only as a child process of several_processes_share_one_slot"]
fn child_hammers_a_slot() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} not set: run by the parent test"))
    };
    let region = Region::attach(
        Path::new(&var("CF_CHILD_REGION")),
        1,
        var("CF_CHILD_INCARNATION").parse().unwrap(),
    )
    .unwrap();
    let slot = SlotId(var("CF_CHILD_SLOT").parse().unwrap());
    let mut takes = Vec::with_capacity(TAKES_PER_CHILD * 3 * 8);
    for i in 0..TAKES_PER_CHILD {
        let count = if i % 4 == 0 { 5 } else { 1 };
        for seq in region.fetch_add(slot, count).unwrap().iter() {
            takes.extend_from_slice(&seq.to_le_bytes());
        }
    }
    std::fs::write(var("CF_CHILD_TAKES"), takes).unwrap();
    let mut accepts = Vec::new();
    for seq in 1..=REPLAY_SEQS {
        if region.replay_check_and_set(slot, seq).unwrap() == ReplayVerdict::Accepted {
            accepts.extend_from_slice(&seq.to_le_bytes());
        }
    }
    std::fs::write(var("CF_CHILD_ACCEPTS"), accepts).unwrap();
}

const WIDE_WINDOW: u32 = 4096;
const RACE_SEQS: u64 = 60_000;
/// Numbers are tried block by block (blocks no wider than the window), each process in its own
/// order inside a block, so processes collide. A process that lags may find numbers `TooOld`,
/// but the first process to move the window past a number tried that number before, while it
/// was inside the window: so every number is accepted by someone.
const RACE_BLOCK: u64 = 512;

fn spawn_child(test: &str, envs: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.stdout(std::process::Stdio::piped());
    command.spawn().unwrap()
}

fn child_region() -> (Region, SlotId) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} not set: run by the parent test"))
    };
    let region = Region::attach(
        Path::new(&var("CF_CHILD_REGION")),
        1,
        var("CF_CHILD_INCARNATION").parse().unwrap(),
    )
    .unwrap();
    (region, SlotId(var("CF_CHILD_SLOT").parse().unwrap()))
}

const READY: &str = "CHILD-READY";

/// Waits for a child's ready line on its stdout (after the test harness's own lines).
fn wait_ready(child: &mut Child) -> std::io::BufReader<std::process::ChildStdout> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.trim_end().ends_with(READY) {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child did not start"
        );
    }
    reader
}

/// Three processes check-and-set the same numbers in different orders on a 4096 window while two
/// others pre-check: every number is accepted by exactly one process, and a pre-check never
/// calls a number new again once it saw it used.
#[test]
fn check_and_set_races_across_processes_while_others_pre_check() {
    const SETTERS: usize = 3;
    const CHECKERS: usize = 2;
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 4).unwrap();
    let slot = owner.allocate(key(7), WIDE_WINDOW).unwrap();
    let base_env = vec![
        ("CF_CHILD_REGION", path.display().to_string()),
        (
            "CF_CHILD_INCARNATION",
            owner.region().incarnation().to_string(),
        ),
        ("CF_CHILD_SLOT", slot.0.to_string()),
    ];
    let stop = dir.path().join("stop");
    let go = dir.path().join("go");
    let mut checkers = Children(Vec::new());
    let mut checker_outputs = Vec::new();
    for _ in 0..CHECKERS {
        let mut envs = base_env.clone();
        envs.push(("CF_CHILD_STOP", stop.display().to_string()));
        let mut child = spawn_child("child_pre_checks", &envs);
        checker_outputs.push(wait_ready(&mut child));
        checkers.0.push(child);
    }
    let mut setters = Children(Vec::new());
    for index in 0..SETTERS {
        let mut envs = base_env.clone();
        envs.push(("CF_CHILD_ORDER", index.to_string()));
        envs.push(("CF_CHILD_GO", go.display().to_string()));
        envs.push((
            "CF_CHILD_ACCEPTS",
            dir.path()
                .join(format!("race-{index}"))
                .display()
                .to_string(),
        ));
        setters
            .0
            .push(spawn_child("child_sets_in_its_order", &envs));
    }
    std::fs::write(&go, b"").unwrap();
    for child in &mut setters.0 {
        assert!(child.wait().unwrap().success(), "a setter process failed");
    }
    std::fs::write(&stop, b"").unwrap();
    let mut transitions = 0u64;
    for (child, output) in checkers.0.iter_mut().zip(checker_outputs) {
        use std::io::BufRead;
        assert!(
            child.wait().unwrap().success(),
            "a pre-check process failed"
        );
        let report = output.lines().map(|line| line.unwrap()).collect::<Vec<_>>();
        let seen: u64 = report
            .iter()
            .find_map(|line| line.strip_prefix("transitions "))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no report from a pre-check process: {report:?}"));
        transitions += seen;
    }
    assert!(
        transitions > 0,
        "the pre-check processes never saw a number become used: they did not overlap"
    );
    let mut accepted = Vec::new();
    for index in 0..SETTERS {
        accepted.extend(read_numbers(&dir.path().join(format!("race-{index}"))));
    }
    let unique: BTreeSet<u64> = accepted.iter().copied().collect();
    assert_eq!(unique.len(), accepted.len(), "a number was accepted twice");
    assert_eq!(unique, (1..=RACE_SEQS).collect::<BTreeSet<u64>>());
}

/// Entry point of the setters of `check_and_set_races_across_processes_while_others_pre_check`.
#[test]
#[ignore = "runs only as a child process of check_and_set_races_across_processes_while_others_pre_check"]
fn child_sets_in_its_order() {
    let (region, slot) = child_region();
    // All setters start together, so that they really collide.
    let go = PathBuf::from(std::env::var("CF_CHILD_GO").unwrap());
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let order: u64 = std::env::var("CF_CHILD_ORDER").unwrap().parse().unwrap();
    // Odd multipliers permute each block: 1 (ascending), 3 and 5, each with its own offset.
    let multiplier = 2 * order + 1;
    let mut accepts = Vec::new();
    for block in 0..RACE_SEQS / RACE_BLOCK + 1 {
        for i in 0..RACE_BLOCK {
            let seq = block * RACE_BLOCK + (i * multiplier + order * 97) % RACE_BLOCK + 1;
            if seq > RACE_SEQS {
                continue;
            }
            match region.replay_check_and_set(slot, seq).unwrap() {
                ReplayVerdict::Accepted => accepts.extend_from_slice(&seq.to_le_bytes()),
                ReplayVerdict::Replayed | ReplayVerdict::TooOld => {}
                ReplayVerdict::Zero => panic!("zero is never tried"),
            }
        }
    }
    std::fs::write(std::env::var("CF_CHILD_ACCEPTS").unwrap(), accepts).unwrap();
}

/// Entry point of the pre-checkers: checks numbers until the stop file appears, and fails if a
/// number it once saw used is called new again.
#[test]
#[ignore = "runs only as a child process of check_and_set_races_across_processes_while_others_pre_check"]
fn child_pre_checks() {
    let (region, slot) = child_region();
    let stop = PathBuf::from(std::env::var("CF_CHILD_STOP").unwrap());
    let mut used = vec![false; RACE_SEQS as usize + 1];
    let mut transitions = 0u64;
    println!("{READY}");
    let mut seq = 1u64;
    let mut round = 0u64;
    loop {
        round += 1;
        if round.is_multiple_of(4096) && stop.exists() {
            break;
        }
        seq = seq % RACE_SEQS + 1;
        let verdict = region.replay_check(slot, seq).unwrap();
        let was_used = used[seq as usize];
        match verdict {
            ReplayVerdict::Accepted => assert!(!was_used, "{seq} was used, now called new"),
            ReplayVerdict::Replayed | ReplayVerdict::TooOld => {
                if !was_used {
                    used[seq as usize] = true;
                    transitions += 1;
                }
            }
            ReplayVerdict::Zero => panic!("zero is never checked"),
        }
    }
    println!("transitions {transitions}");
}

/// A process killed (SIGKILL) in the middle of replay updates leaves no lock behind: the others
/// carry on at once, and every number it reported accepted stays rejected.
#[test]
fn a_process_killed_during_replay_updates_blocks_nobody() {
    use std::io::BufRead;
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 2).unwrap();
    let slot = owner.allocate(key(2), WIDE_WINDOW).unwrap();
    let envs = [
        ("CF_CHILD_REGION", path.display().to_string()),
        (
            "CF_CHILD_INCARNATION",
            owner.region().incarnation().to_string(),
        ),
        ("CF_CHILD_SLOT", slot.0.to_string()),
    ];
    let mut children = Children(vec![spawn_child("child_sets_until_killed", &envs)]);
    let mut reports = wait_ready(&mut children.0[0]);
    let mut reported = Vec::new();
    let mut line = String::new();
    while reported.len() < 20_000 {
        line.clear();
        assert!(
            reports.read_line(&mut line).unwrap() > 0,
            "child ended early"
        );
        reported.push(line.trim().parse::<u64>().unwrap());
    }
    children.0[0].kill().unwrap();
    children.0[0].wait().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let region = owner.region().clone();
    let highest = *reported.iter().max().unwrap();
    std::thread::spawn(move || {
        let verdicts: Vec<_> = reported
            .iter()
            .map(|&seq| (seq, region.replay_check_and_set(slot, seq).unwrap()))
            .collect();
        let fresh = region
            .replay_check_and_set(slot, highest + 1_000_000)
            .unwrap();
        let _ = done_tx.send((verdicts, fresh));
    });
    let (verdicts, fresh) = done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("replay updates blocked after a process was killed");
    for (seq, verdict) in verdicts {
        assert_ne!(verdict, ReplayVerdict::Accepted, "{seq} accepted twice");
    }
    assert_eq!(fresh, ReplayVerdict::Accepted);
}

/// Entry point of the child of `a_process_killed_during_replay_updates_blocks_nobody`: accepts
/// rising numbers and reports each on stdout, until killed.
#[test]
#[ignore = "runs only as a child process of a_process_killed_during_replay_updates_blocks_nobody"]
fn child_sets_until_killed() {
    use std::io::Write;
    let (region, slot) = child_region();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}").unwrap();
    out.flush().unwrap();
    let mut pair = 0u64;
    loop {
        pair += 2;
        // Each pair out of order, so the killed update may move the top or mark inside the window.
        for seq in [pair, pair - 1] {
            if region.replay_check_and_set(slot, seq).unwrap() == ReplayVerdict::Accepted {
                writeln!(out, "{seq}").unwrap();
                out.flush().unwrap();
            }
        }
    }
}
