//! `dvipsec-hwtest run takeover`: the failover figures of issue #10 on the namespace site,
//! with strongSwan as the peer. The scenario itself is [`dvipsec_hwtest::takeover`]; this
//! module prepares the site (MVS4 made DVA1's backup when the site names none), brings it up,
//! runs the scenario once and writes `result.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dvipsec_config::SiteConfig;
use dvipsec_hwtest::preflight::running_as_root;
use dvipsec_hwtest::swan_peer::{self, connect_site};
use dvipsec_hwtest::takeover::{self, Figures, Scene};
use dvipsec_hwtest::topology::{self, Names, TopologyOptions};
use serde_json::json;
use zeroize::Zeroizing;

use super::{absolute, write_site_copy, EXIT_NOT_AVAILABLE};

/// The peer the scenario's strongSwan plays (its identities are in its configuration).
const PEER: &str = "branch-a";
/// Goals of issue #10 that the run checks.
const DETECTION_GOAL_MS: f64 = 1000.0;
const GAP_GOAL_MS: u64 = 2000;

enum Stop {
    NotAvailable(String),
    Failed(String),
}

/// Runs the scenario; exit 0 when it ran and met the goals, 1 when it failed or missed one,
/// 3 when this machine cannot run it.
pub(super) fn run(site: &Path, out: &Path, seconds: u64) -> ExitCode {
    match execute(site, &absolute(out), seconds) {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            eprintln!("dvipsec-hwtest run takeover: goals missed: {failures:?}");
            ExitCode::FAILURE
        }
        Err(Stop::NotAvailable(reason)) => {
            eprintln!("dvipsec-hwtest run takeover: not available: {reason}");
            ExitCode::from(EXIT_NOT_AVAILABLE)
        }
        Err(Stop::Failed(reason)) => {
            eprintln!("dvipsec-hwtest run takeover: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn execute(site: &Path, out: &Path, seconds: u64) -> Result<Vec<String>, Stop> {
    if !running_as_root() {
        return Err(Stop::NotAvailable(
            "needs root for network namespaces".into(),
        ));
    }
    if let Some(tool) = swan_peer::missing_tool() {
        return Err(Stop::NotAvailable(format!(
            "{tool} is missing (scripts/install-test-deps.sh installs it)"
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Stop::Failed(format!("{}: {e}", out.display())))?;
    let (site_file, backup_added) = prepare_site(site, out).map_err(Stop::Failed)?;
    let config =
        SiteConfig::load(&site_file).map_err(|e| Stop::Failed(e.render().trim_end().to_owned()))?;
    let psk = config
        .peer_psk(PEER)
        .map_err(|e| Stop::Failed(e.render().trim_end().to_owned()))?;
    let psk = Zeroizing::new(String::from_utf8_lossy(psk.expose()).trim().to_owned());
    let names = Names::for_site(&config.site);
    let run_dir = out.join("takeover-run");
    // A previous run of ours that crashed may have left its recorded resources behind.
    let _ = topology::down(&run_dir);
    super::dvipsec::refuse_if_in_use(&names).map_err(|e| Stop::Failed(e.to_string()))?;
    let down = Down(run_dir.clone());
    let options = TopologyOptions {
        run_dir: run_dir.clone(),
        dvipsec: super::dvipsec::firmware_binary(),
    };
    let swan_dir = out.join("strongswan");
    let charon = connect_site(&site_file, &options, &names.peer(), &swan_dir, &psk)
        .map_err(|e| Stop::Failed(format!("the site did not connect to strongSwan: {e}")))?;
    // charon has loaded it: the PSK need not stay in the results directory.
    let _ = std::fs::remove_file(swan_dir.join("swanctl.conf"));
    let scene = Scene {
        run_dir: &run_dir,
        prefix: names.prefix(),
        charon: &charon,
        work_dir: out,
        after_kill: Duration::from_secs(seconds.max(1)),
    };
    let figures = takeover::measure(&scene).map_err(|e| Stop::Failed(e.to_string()));
    drop(charon);
    drop(down);
    let figures = figures?;
    let failures = missed_goals(&figures);
    let mut result =
        serde_json::to_value(&figures).map_err(|e| Stop::Failed(format!("result.json: {e}")))?;
    if let Some(top) = result.as_object_mut() {
        top.insert("site".into(), json!(site_file.display().to_string()));
        top.insert("backup_added".into(), json!(backup_added));
        top.insert("seconds_after_kill".into(), json!(seconds.max(1)));
        top.insert("failures".into(), json!(failures));
    }
    let text = serde_json::to_string_pretty(&result)
        .map_err(|e| Stop::Failed(format!("result.json: {e}")))?;
    let file = out.join("result.json");
    std::fs::write(&file, format!("{text}\n"))
        .map_err(|e| Stop::Failed(format!("{}: {e}", file.display())))?;
    println!("{text}\nresult: {}", file.display());
    Ok(failures)
}

/// Which of issue #10's goals the run missed.
fn missed_goals(f: &Figures) -> Vec<String> {
    let mut missed = Vec::new();
    if f.detection_ms >= DETECTION_GOAL_MS {
        missed.push(format!("detection took {:.0} ms", f.detection_ms));
    }
    if f.traffic_gap_ms >= GAP_GOAL_MS {
        missed.push(format!("traffic stopped for {} ms", f.traffic_gap_ms));
    }
    if f.seq_reuse > 0 {
        missed.push(format!(
            "{} ESP sequence numbers reused (first {:?})",
            f.seq_reuse, f.first_reused
        ));
    }
    if f.echoed <= f.sent / 2 {
        missed.push(format!(
            "traffic did not come back: {} of {} echoed",
            f.echoed, f.sent
        ));
    }
    missed
}

/// Writes the site to run as OUT/site.yaml: relative secrets made absolute, and MVS4 made
/// DVA1's backup when the site gives DVA1 none. Returns the file and whether it added one.
fn prepare_site(site: &Path, out: &Path) -> Result<(PathBuf, bool), String> {
    let text =
        std::fs::read_to_string(site).map_err(|e| format!("site {}: {e}", site.display()))?;
    let config = SiteConfig::load(site).map_err(|e| e.render().trim_end().to_owned())?;
    let dva1 = config
        .dvipas
        .iter()
        .find(|d| d.name.value == "DVA1")
        .ok_or_else(|| format!("site {} has no DVA1", site.display()))?;
    let add_backup = dva1.backups.is_empty();
    let text = if add_backup {
        swan_peer::with_backup(&text)
            .ok_or_else(|| format!("site {}: DVA1 has no policy list", site.display()))?
    } else {
        text
    };
    Ok((write_site_copy(site, out, &text)?, add_backup))
}

/// Tears the topology down whatever happens.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = topology::down(&self.0) {
            eprintln!("dvipsec-hwtest run takeover: topology down: {e}");
        }
    }
}
