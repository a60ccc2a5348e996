//! The takeover scenario (issue #10) on a figure-4 namespace site whose DVA1 is backed by
//! MVS4: while the peer's steady UDP flows run, the owner MVS1 is SIGKILLed and its links go
//! down (the box is gone). The figures: when MVS4 logged MVS1 down (detection) and DVA1
//! adopted (takeover), both after the kill, from MVS4's log timestamps; the longest time the
//! peer's echo client went without an echo; and every (SPI, sequence number) of the ESP the
//! site sent the peer, none of which may repeat.
//!
//! The site must already be up with strongSwan connected ([`crate::swan_peer::connect_site`]);
//! the caller tears it down.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::swan_peer::{
    boot_pid, field_of, in_ns, run_checked, sequence_reuse, stop, wait_for_node_log, wait_until,
    Charon, SwanError, DVIPA, PEER_INNER, STEADY_CLIENT,
};
use crate::topology::{self, Resource};

/// Steady traffic before the kill, so that the flows run through the owner first.
const BEFORE_KILL: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TakeoverError {
    #[error(transparent)]
    Peer(#[from] SwanError),
    #[error("the site's recorded state: {0}")]
    State(String),
    #[error("no `dvipsec boot` process for {0} among the site's")]
    NoBootProcess(String),
    #[error("strongSwan lists {0} SPIs of its child SA, expected 2")]
    Spis(usize),
    #[error("MVS4's log has no {0} line after the kill")]
    NotLogged(&'static str),
    #[error("the echo client printed {0:?}")]
    Traffic(String),
}

/// The running site the scenario acts on.
pub struct Scene<'a> {
    /// The topology's run directory (state file and the nodes' logs).
    pub run_dir: &'a Path,
    /// What the site's namespace names start with (`dvh-SITE`).
    pub prefix: &'a str,
    pub charon: &'a Charon,
    /// Where the capture goes.
    pub work_dir: &'a Path,
    /// How long the steady traffic runs after the kill.
    pub after_kill: Duration,
}

impl Scene<'_> {
    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }
}

/// The figures of one takeover.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub scenario: &'static str,
    pub detection_ms: f64,
    pub takeover_ms: f64,
    pub traffic_gap_ms: u64,
    pub seq_reuse: usize,
    pub esp_packets: usize,
    pub sent: u64,
    pub echoed: u64,
    /// The first repeated `SPI<TAB>sequence` pair, if any.
    pub first_reused: Option<String>,
    /// The dead owner's child SA (`spi=0x...`, in and out), which the targets must drop.
    #[serde(skip)]
    pub old_spis: Vec<String>,
}

/// A child process stopped (SIGINT, then SIGKILL) when dropped, so an error midway leaves
/// no capture or client behind.
struct Guarded(Option<Child>);

impl Guarded {
    fn take(mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            stop(child);
        }
    }
}

/// Runs the takeover on `scene` and measures it.
pub fn measure(scene: &Scene) -> Result<Figures, TakeoverError> {
    let pcap = scene.work_dir.join("to-peer.pcap");
    let capture = Guarded(Some(start_capture(&scene.ns("hub"), &pcap)?));
    wait_until(Duration::from_secs(15), "tshark's capture file", || {
        pcap.exists()
    })?;
    let seconds = (BEFORE_KILL + scene.after_kill).as_secs_f64().to_string();
    let traffic = in_ns(
        &scene.ns("peer"),
        &["python3", "-c", STEADY_CLIENT, PEER_INNER, DVIPA, &seconds],
    )
    .stdout(Stdio::piped())
    .spawn()
    .map_err(|source| SwanError::Spawn {
        what: "the echo client".into(),
        source,
    })?;
    let traffic = Guarded(Some(traffic));
    std::thread::sleep(BEFORE_KILL);

    let old_spis = child_spis(scene.charon)?;
    let killed_at = kill_owner(scene)?;
    wait_for_node_log(scene.run_dir, "MVS4", "DVIPA adopted")?;

    let line = traffic
        .take()
        .map(|child| child.wait_with_output())
        .transpose()
        .map_err(|source| SwanError::Io {
            what: "the echo client".into(),
            source,
        })?
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    if let Some(child) = capture.take() {
        stop(child);
    }
    let count = sequence_reuse(&[pcap.as_path()])?;
    let number = |key| field_of(&line, key).ok_or_else(|| TakeoverError::Traffic(line.clone()));
    let kill = seconds_of_day(killed_at);
    let backup_log = crate::swan_peer::node_log(scene.run_dir, "MVS4");
    Ok(Figures {
        scenario: "takeover",
        detection_ms: logged_after(&backup_log, &["member down", "member=MVS1"], kill)
            .ok_or(TakeoverError::NotLogged("member down"))?,
        takeover_ms: logged_after(&backup_log, &["DVIPA adopted", "DVA1"], kill)
            .ok_or(TakeoverError::NotLogged("DVIPA adopted"))?,
        traffic_gap_ms: number("gap_ms")?,
        seq_reuse: count.reused,
        esp_packets: count.packets,
        sent: number("sent")?,
        echoed: number("echoed")?,
        first_reused: count.first_reused,
        old_spis,
    })
}

/// tshark on the hub's end of the peer's veth, keeping the ESP that leaves the DVIPA.
fn start_capture(hub: &str, file: &Path) -> Result<Child, SwanError> {
    let filter = format!("udp port 4500 and src host {DVIPA}");
    in_ns(hub, &["tshark", "-q", "-i", "hpeer", "-f", &filter, "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| SwanError::Spawn {
            what: "tshark".into(),
            source,
        })
}

/// The SPIs (in and out) of strongSwan's child SA with the owner.
fn child_spis(charon: &Charon) -> Result<Vec<String>, TakeoverError> {
    let sas = charon.swanctl(&["--list-sas", "--raw"])?;
    let spis: Vec<String> = ["spi-in=", "spi-out="]
        .iter()
        .filter_map(|key| {
            let at = sas.find(key)? + key.len();
            sas.get(at..at + 8).map(|spi| format!("spi=0x{spi}"))
        })
        .collect();
    if spis.len() != 2 {
        return Err(TakeoverError::Spis(spis.len()));
    }
    Ok(spis)
}

/// SIGKILLs MVS1's `dvipsec boot` and takes its links down; when that happened.
fn kill_owner(scene: &Scene) -> Result<SystemTime, TakeoverError> {
    let pids: Vec<u32> = topology::recorded(scene.run_dir)
        .map_err(|e| TakeoverError::State(e.to_string()))?
        .into_iter()
        .filter_map(|r| match r {
            Resource::Process(pid) => Some(pid),
            _ => None,
        })
        .collect();
    let owner = boot_pid(&pids, "MVS1").ok_or(TakeoverError::NoBootProcess("MVS1".into()))?;
    let killed_at = SystemTime::now();
    run_checked(Command::new("kill").args(["-KILL", &owner.to_string()]))?;
    let mvs1 = scene.ns("MVS1");
    for link in ["ext0", "xcf0"] {
        run_checked(&mut in_ns(&mvs1, &["ip", "link", "set", link, "down"]))?;
    }
    Ok(killed_at)
}

/// Seconds since midnight UTC of a log line's RFC 3339 timestamp (`...THH:MM:SS.ffffffZ`).
fn log_time(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

fn seconds_of_day(at: SystemTime) -> f64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    since % 86_400.0
}

/// Milliseconds after `kill` at which the log first has a line with all of `needles`.
fn logged_after(log: &str, needles: &[&str], kill: f64) -> Option<f64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(log_time)
        .find(|t| *t >= kill)
        .map(|t| (t - kill) * 1000.0)
}

/// The site text with every relative `file:` secret made absolute against `base` (the
/// directory of the site the text came from), so the text may be written elsewhere.
pub fn absolute_files(text: &str, base: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("file:") {
        let (head, tail) = rest.split_at(at + "file:".len());
        out.push_str(head);
        if !tail.starts_with('/') {
            out.push_str(&format!("{}/", base.display()));
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_after_the_kill_is_timed_from_it() {
        let log = "2026-01-01T10:00:00.500000Z INFO member down member=MVS1\n\
                   2026-01-01T10:00:01.250000Z INFO member down member=MVS1\n";
        let kill = 10.0 * 3600.0 + 1.0;
        let ms = logged_after(log, &["member down", "MVS1"], kill).unwrap();
        assert!((ms - 250.0).abs() < 0.01, "{ms}");
        assert_eq!(logged_after(log, &["DVIPA adopted"], kill), None);
    }

    #[test]
    fn relative_secrets_become_absolute_and_absolute_ones_stay() {
        let text = "psk: file:secrets/a.psk\nkey: 'file:/etc/k'\n";
        let out = absolute_files(text, Path::new("/site"));
        assert_eq!(out, "psk: file:/site/secrets/a.psk\nkey: 'file:/etc/k'\n");
    }
}
