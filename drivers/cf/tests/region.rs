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
        owner.allocate(key(4), 2000),
        Err(CfError::InvalidArgument(_))
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

/// A target that died holding a slot's replay lock does not block the others.
#[test]
fn a_replay_lock_left_by_a_dead_process_is_taken_over() {
    use std::os::unix::fs::FileExt;
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 2).unwrap();
    owner.allocate(key(1), 64).unwrap();
    let slot = owner.allocate(key(2), 64).unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // The lock word of slot 1: header 128 bytes, 384 bytes per slot, lock at offset 8.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_at(&dead_pid.to_le_bytes(), 128 + 384 + 8)
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let region = owner.region().clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(region.replay_check_and_set(slot, 5));
    });
    let verdict = done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the replay lock of a dead process was never taken over");
    assert_eq!(verdict.unwrap(), ReplayVerdict::Accepted);
    assert_eq!(
        owner.replay_check(slot, 5).unwrap(),
        ReplayVerdict::Replayed
    );
}
