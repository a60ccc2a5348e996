//! CPU time of the gateway's processes and threads, turned into cycles.
//!
//! The kernel accounts user and system time per process and per thread in clock ticks
//! (fields 14 and 15 of `/proc/PID/stat`, all threads included for a process). Cycles are
//! those seconds times the clock rate `/proc/cpuinfo` reports ("cpu MHz"); on these VMs the
//! TSC runs at that nominal rate, so it is the same figure a TSC difference would give for a
//! busy core.

use std::process::Command;

/// `(utime, stime)` of the stat line `text`, in clock ticks.
fn user_and_system_of_stat(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// `utime + stime` of the stat line `text`, in clock ticks.
pub fn ticks_of_stat(text: &str) -> Option<u64> {
    user_and_system_of_stat(text).map(|(user, system)| user + system)
}

/// CPU ticks used so far by process `pid` (all its threads), if it still exists.
pub fn process_ticks(pid: u32) -> Option<u64> {
    ticks_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The user-space part of [`process_ticks`]: what the kernel spent for the process (its
/// syscalls, and on veths the receiving side's softirq work it triggers) left out.
pub fn process_user_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    user_and_system_of_stat(&text).map(|(user, _)| user)
}

/// CPU ticks used so far by thread `tid` of this process.
pub fn thread_ticks(tid: u32) -> Option<u64> {
    let path = format!("/proc/self/task/{tid}/stat");
    ticks_of_stat(&std::fs::read_to_string(path).ok()?)
}

/// The calling thread's id (the kernel's, as `/proc/thread-self` names it).
pub fn current_tid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux uses 100 everywhere we run).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// The first "cpu MHz" of /proc/cpuinfo.
pub fn cpu_mhz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("cpu MHz"))
        .and_then(|line| line.split(':').nth(1))
        .and_then(|value| value.trim().parse().ok())
}

/// Cycles per packet from a tick difference, or `None` when there is nothing to divide.
pub fn cycles_per_packet(ticks: u64, tck: u64, mhz: f64, packets: u64) -> Option<f64> {
    if packets == 0 || tck == 0 {
        return None;
    }
    let seconds = ticks as f64 / tck as f64;
    Some(seconds * mhz * 1e6 / packets as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "1234 (charon (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 9 0 100";
        assert_eq!(ticks_of_stat(line), Some(325));
        assert_eq!(user_and_system_of_stat(line), Some((250, 75)));
        assert_eq!(ticks_of_stat("garbage"), None);
    }

    #[test]
    fn this_process_and_thread_have_stat_lines() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(
            process_user_ticks(std::process::id()) <= process_ticks(std::process::id()),
            "user time is a part of the total"
        );
        let tid = current_tid().expect("tid");
        assert!(thread_ticks(tid).is_some());
    }

    #[test]
    fn cycles_scale_with_time_and_clock() {
        // 1 s at 2000 MHz over 1e6 packets: 2000 cycles each.
        let cycles = cycles_per_packet(100, 100, 2000.0, 1_000_000).expect("packets");
        assert!((cycles - 2000.0).abs() < 1e-6);
        assert_eq!(cycles_per_packet(100, 100, 2000.0, 0), None);
    }
}
