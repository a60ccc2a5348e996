//! CF continuity across a distributor takeover (issue #10): the new owner fences the old one
//! with a new epoch; every number handed out by old and new owners and their senders is
//! checked, including the old ones still trying after the fence.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use dvipsec_cf::{
    CfError, LeasePolicy, LeasedSequencer, Region, RegionOwner, SequenceFacility, SlotId, SlotKey,
};

fn key(spi: u32) -> SlotKey {
    SlotKey {
        dvipa: "198.51.100.10".parse::<IpAddr>().unwrap(),
        spi,
    }
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

fn region_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("cf-region")
}

/// What one sender saw: the numbers it was given, and the ones given by calls that started
/// after the fence had been made (there must be none from an old-epoch sender).
#[derive(Default)]
struct Seen {
    numbers: Vec<(SlotId, u64)>,
    after_fence: Vec<(SlotId, u64)>,
    fenced_errors: u64,
    other_errors: Vec<String>,
}

/// How one sender takes a number for `slot`.
enum Sender<'a> {
    PerPacket(&'a dyn SequenceFacility),
    Leased(Vec<LeasedSequencer<'a, Region>>),
}

impl Sender<'_> {
    fn take(&mut self, index: usize, slot: SlotId, now_us: u64) -> Result<u64, CfError> {
        match self {
            Sender::PerPacket(facility) => facility.fetch_add(slot, 1).map(|r| r.first),
            Sender::Leased(sequencers) => sequencers[index].next(now_us),
        }
    }
}

/// Takes numbers round-robin over `slots` until `stop`, then `extra` more attempts.
fn run_sender(
    mut sender: Sender<'_>,
    slots: &[SlotId],
    fence_done: &AtomicBool,
    stop: &AtomicBool,
    taken: &AtomicU64,
) -> Seen {
    let mut seen = Seen::default();
    let mut extra = 2000;
    for round in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            extra -= 1;
            if extra == 0 {
                break;
            }
        }
        let index = (round % slots.len() as u64) as usize;
        let slot = slots[index];
        let after = fence_done.load(Ordering::SeqCst);
        match sender.take(index, slot, round) {
            Ok(seq) => {
                seen.numbers.push((slot, seq));
                if after {
                    seen.after_fence.push((slot, seq));
                }
                taken.fetch_add(1, Ordering::Relaxed);
            }
            Err(CfError::Fenced { .. }) => seen.fenced_errors += 1,
            Err(other) => seen.other_errors.push(other.to_string()),
        }
    }
    seen
}

#[test]
fn no_number_is_handed_out_twice_and_the_fenced_side_gets_nothing_after_the_fence() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let old_owner = RegionOwner::create(&path, 64).unwrap();
    let incarnation = old_owner.region().incarnation();
    let slots: Vec<SlotId> = (0..4)
        .map(|spi| old_owner.allocate(key(spi), 64).unwrap())
        .collect();
    let old_target = Region::attach(&path, 1, incarnation).unwrap();
    let old_leasing = Region::attach(&path, 1, incarnation).unwrap();
    let fence_done = AtomicBool::new(false);
    let stop_old = AtomicBool::new(false);
    let stop_new = AtomicBool::new(false);
    let taken = AtomicU64::new(0);
    let results: Mutex<Vec<(&str, Seen)>> = Mutex::new(Vec::new());

    let run_old = |name: &'static str, sender: Sender<'_>| {
        let seen = run_sender(sender, &slots, &fence_done, &stop_old, &taken);
        results.lock().unwrap().push((name, seen));
    };
    std::thread::scope(|s| {
        s.spawn(|| run_old("old owner", Sender::PerPacket(&old_owner)));
        s.spawn(|| run_old("old target", Sender::PerPacket(&old_target)));
        s.spawn(|| {
            let leased = slots
                .iter()
                .map(|slot| {
                    LeasedSequencer::new(&old_leasing, *slot, LeasePolicy::unchecked(16, u64::MAX))
                })
                .collect();
            run_old("old leasing target", Sender::Leased(leased))
        });
        while taken.load(Ordering::Relaxed) < 30_000 {
            std::thread::yield_now();
        }

        // The backup takes over: a new epoch fences every handle of the old one.
        let new_owner = RegionOwner::take_over(&path).unwrap();
        fence_done.store(true, Ordering::SeqCst);
        assert_eq!(new_owner.region().epoch(), 2);
        let fresh = new_owner.allocate(key(100), 64).unwrap();
        let mut new_slots = slots.clone();
        new_slots.push(fresh);
        let new_target = Region::attach(&path, 2, incarnation).unwrap();
        let never = AtomicBool::new(false);
        let new_seen = std::thread::scope(|inner| {
            let a = inner.spawn(|| {
                run_sender(
                    Sender::PerPacket(&new_owner),
                    &new_slots,
                    &never,
                    &stop_new,
                    &taken,
                )
            });
            let b = inner.spawn(|| {
                run_sender(
                    Sender::PerPacket(&new_target),
                    &new_slots,
                    &never,
                    &stop_new,
                    &taken,
                )
            });
            let target = taken.load(Ordering::Relaxed) + 30_000;
            while taken.load(Ordering::Relaxed) < target {
                std::thread::yield_now();
            }
            stop_new.store(true, Ordering::SeqCst);
            stop_old.store(true, Ordering::SeqCst);
            [a.join().unwrap(), b.join().unwrap()]
        });
        let mut results = results.lock().unwrap();
        for seen in new_seen {
            results.push(("new side", seen));
        }
    });

    let results = results.into_inner().unwrap();
    let mut all: HashSet<(SlotId, u64)> = HashSet::new();
    let mut total = 0;
    for (name, seen) in &results {
        assert!(
            seen.other_errors.is_empty(),
            "{name}: {:?}",
            seen.other_errors
        );
        assert!(
            seen.after_fence.is_empty(),
            "{name} was handed {} numbers after the fence, first {:?}",
            seen.after_fence.len(),
            seen.after_fence.first()
        );
        for number in &seen.numbers {
            assert!(all.insert(*number), "{name}: {number:?} handed out twice");
            total += 1;
        }
        if name.starts_with("old") {
            assert!(
                seen.fenced_errors >= 1999,
                "{name} kept trying after the fence"
            );
        } else {
            assert_eq!(seen.fenced_errors, 0, "{name}");
        }
    }
    assert!(total >= 60_000, "{total} numbers checked");
    eprintln!("takeover checker: {total} (SA, seq) numbers handed out, none twice");

    // The old owner can do nothing else either, and cannot come back in its old epoch.
    assert!(matches!(
        old_owner.allocate(key(7), 64),
        Err(CfError::Fenced {
            caller: 1,
            current: 2
        })
    ));
    assert!(matches!(
        old_owner.release(slots[0]),
        Err(CfError::Fenced { .. })
    ));
    assert!(matches!(
        RegionOwner::rejoin(&path, 1),
        Err(CfError::Fenced { .. })
    ));
}

#[test]
fn a_fenced_lease_is_thrown_away_not_used() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let owner = RegionOwner::create(&path, 4).unwrap();
    let slot = owner.allocate(key(1), 64).unwrap();
    let target = Region::attach(&path, 1, owner.region().incarnation()).unwrap();
    let mut sequencer = LeasedSequencer::new(&target, slot, LeasePolicy::unchecked(8, u64::MAX));
    assert_eq!(sequencer.next(0).unwrap(), 1);
    assert_eq!(sequencer.next(1).unwrap(), 2);
    let backup = RegionOwner::take_over(&path).unwrap();
    // 3..=8 are leased but must not go out: the lease is dropped at the fence.
    assert!(matches!(sequencer.next(2), Err(CfError::Fenced { .. })));
    assert_eq!(sequencer.dropped(), 6);
    assert!(matches!(sequencer.next(3), Err(CfError::Fenced { .. })));
    // The new epoch goes on above the lease.
    let new_target = Region::attach(&path, 2, backup.region().incarnation()).unwrap();
    assert_eq!(new_target.fetch_add(slot, 1).unwrap().first, 9);
}

#[test]
fn an_innocent_distributor_rejoins_at_the_new_epoch_and_keeps_its_slots() {
    let dir = shm_dir();
    let path = region_path(&dir);
    // Two distributors on one region: DVB1's owner and DVA1's owner, which fails.
    let dvb1_owner = RegionOwner::create(&path, 8).unwrap();
    let dvb1_slot = dvb1_owner.allocate(key(20), 64).unwrap();
    assert_eq!(dvb1_owner.fetch_add(dvb1_slot, 5).unwrap().first, 1);
    let taker = RegionOwner::take_over(&path).unwrap();
    assert_eq!(taker.region().current_epoch(), 2);
    // The region-wide fence catches DVB1's owner too...
    assert!(matches!(
        dvb1_owner.fetch_add(dvb1_slot, 1),
        Err(CfError::Fenced { .. })
    ));
    assert!(dvb1_owner.check_epoch().is_err());
    // ...which, told epoch 2 by the new owner, rejoins without fencing anybody.
    let rejoined = RegionOwner::rejoin(&path, 2).unwrap();
    assert_eq!(rejoined.fetch_add(dvb1_slot, 1).unwrap().first, 6);
    assert!(taker.check_epoch().is_ok());
    assert_eq!(taker.region().current_epoch(), 2);
}

#[test]
fn the_new_owner_releases_the_slots_the_failed_owner_left_for_its_dvipa() {
    let dir = shm_dir();
    let path = region_path(&dir);
    let old = RegionOwner::create(&path, 8).unwrap();
    let dva1: Vec<SlotId> = (1..=3)
        .map(|spi| old.allocate(key(spi), 64).unwrap())
        .collect();
    let dvb1_key = SlotKey {
        dvipa: "198.51.100.20".parse::<IpAddr>().unwrap(),
        spi: 1,
    };
    let dvb1 = old.allocate(dvb1_key, 64).unwrap();
    let new = RegionOwner::take_over(&path).unwrap();
    assert!(matches!(
        old.release_dvipa(key(1).dvipa),
        Err(CfError::Fenced { .. })
    ));
    assert_eq!(new.release_dvipa(key(1).dvipa).unwrap(), 3);
    for slot in dva1 {
        assert!(matches!(
            new.fetch_add(slot, 1),
            Err(CfError::UnknownSlot(_))
        ));
    }
    assert_eq!(new.fetch_add(dvb1, 1).unwrap().first, 1);
    assert_eq!(new.release_dvipa(key(1).dvipa).unwrap(), 0);
    // Room again: the freed slots take the new SAs.
    for spi in 10..14 {
        new.allocate(key(spi), 64).unwrap();
    }
}
