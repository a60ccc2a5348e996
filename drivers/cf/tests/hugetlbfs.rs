//! The region on hugetlbfs, the other place the distributor may put it. The test reserves two
//! huge pages and mounts a private hugetlbfs; both are undone when it ends, also on failure.

use std::path::Path;
use std::process::Command;

use dvipsec_cf::{Region, RegionOwner, SequenceFacility, SlotKey};
use dvipsec_hwtest::preflight::running_as_root;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn free_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("HugePages_Free:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Two reserved huge pages and a hugetlbfs mount, released on drop.
struct HugeMount {
    dir: tempfile::TempDir,
    previous_pages: Option<u64>,
    mounted: bool,
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
        if let Some(previous) = self.previous_pages {
            let _ = std::fs::write(NR_HUGEPAGES, previous.to_string());
        }
    }
}

fn missing(reason: &str) -> Option<HugeMount> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("hugetlbfs test cannot run in CI: {reason}");
    }
    eprintln!("skipping the hugetlbfs test: {reason}");
    None
}

fn huge_mount() -> Option<HugeMount> {
    if !running_as_root() {
        return missing("needs root to reserve huge pages and mount hugetlbfs");
    }
    let previous: u64 = std::fs::read_to_string(NR_HUGEPAGES)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut guard = HugeMount {
        dir: tempfile::tempdir().ok()?,
        previous_pages: None,
        mounted: false,
    };
    if free_huge_pages() < 2 {
        std::fs::write(NR_HUGEPAGES, (previous + 2).to_string()).ok()?;
        guard.previous_pages = Some(previous);
        if free_huge_pages() < 2 {
            return missing("the kernel could not reserve two huge pages");
        }
    }
    let status = Command::new("mount")
        .args(["-t", "hugetlbfs", "none"])
        .arg(guard.dir.path())
        .status()
        .ok()?;
    if !status.success() {
        return missing("mount -t hugetlbfs failed");
    }
    guard.mounted = true;
    Some(guard)
}

#[test]
fn region_works_on_hugetlbfs() {
    let Some(mount) = huge_mount() else {
        return;
    };
    let path = mount.dir.path().join("cf-region");
    let owner = RegionOwner::create(&path, 16).expect("region on hugetlbfs");
    let length = std::fs::metadata(&path).unwrap().len();
    assert_eq!(length % (2 << 20), 0, "sized in whole huge pages: {length}");
    let slot = owner
        .allocate(
            SlotKey {
                dvipa: "192.0.2.1".parse().unwrap(),
                spi: 1,
            },
            128,
        )
        .unwrap();
    let target = Region::attach(Path::new(&path), 1, owner.region().incarnation()).unwrap();
    assert_eq!(target.fetch_add(slot, 4).unwrap().first, 1);
    assert_eq!(owner.fetch_add(slot, 1).unwrap().first, 5);
    drop((target, owner));
    std::fs::remove_file(&path).unwrap();
}
