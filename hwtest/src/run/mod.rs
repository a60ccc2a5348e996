//! `dvipsec-hwtest run SCENARIO`: the hardware-in-the-loop throughput harness (issue #9).
//!
//! For each system (strongSwan as the reference gateway, dvipsec as the system under test)
//! it builds the topology, lets the load generator negotiate with the gateway through our
//! IKEv2 initiator, runs the scenario's measurements with the same traffic on each, and
//! writes `result.json` and `report.html` into `--out`.

mod costs;
mod cpu;
mod dvipsec;
mod loadgen;
mod report;
mod stats;
mod strongswan;
mod takeover;
mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use loadgen::{LoadError, PeerSpec, Session, Traffic, TrafficResult};
use report::{Machine, Point, RunResult, SystemResult};
use strongswan::GatewayError;

/// Exit code of a scenario or system that cannot run here, as opposed to one that failed.
const EXIT_NOT_AVAILABLE: u8 = 3;
/// How long the generator waits for the gateway's IKE.
const IKE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the first echoes may take after IKE.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Simple IMIX: 7 small, 4 medium, 1 large, interleaved so every burst mixes sizes.
const IMIX: [usize; 12] = [64, 576, 64, 1420, 64, 576, 64, 576, 64, 64, 576, 64];
const DEFAULT_SITE: &str = "hwtest/sites/figure4-netns.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Throughput against packet size: 64, 576, 1420 B and IMIX.
    Outbound,
    /// Many flows of 1420 B into the gateway (through the distributor for dvipsec).
    Inbound,
    /// Throughput from 1 to N concurrent flows (N: the site's targets, or --max-flows).
    Scaling,
    /// Child SA rekeys through our IKE while traffic runs.
    Rekey,
    /// Distributor takeover under load, strongSwan as the peer: MVS1 (DVA1's owner) is
    /// killed, MVS4 takes over; writes detection, takeover and traffic-gap figures and ESP
    /// sequence reuse to result.json (no report.html). A site without a backup for DVA1 is
    /// run with MVS4 made its backup (written to OUT/site.yaml). --seconds is the traffic
    /// after the kill.
    Takeover,
    /// Random loss on the XCF network (nftables in the hub namespace); dvipsec only.
    XcfLoss,
    /// Several senders sharing one SA's sequence counter, against a 128-packet window.
    ReplayStress,
}

/// The kernel port drivers a site can be switched between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PortDriver {
    AfPacket,
    AfXdp,
}

impl PortDriver {
    fn site_name(self) -> &'static str {
        match self {
            PortDriver::AfPacket => "af_packet",
            PortDriver::AfXdp => "af_xdp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Systems {
    Strongswan,
    Dvipsec,
    Both,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// The dvipsec site to bring up (default hwtest/sites/figure4-netns.yaml).
    #[arg(long, value_name = "FILE")]
    site: Option<PathBuf>,
    /// Seconds per measurement point (takeover: seconds of traffic after the kill).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Where result.json, report.html and the gateways' logs go.
    #[arg(long, value_name = "DIR", default_value = "hwtest-results")]
    out: PathBuf,
    /// Packets per second to offer; 0 runs a closed loop at the highest rate that keeps
    /// --inflight packets outstanding.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Packets outstanding in closed-loop mode.
    #[arg(long, default_value_t = 64)]
    inflight: u64,
    /// Which gateways to measure.
    #[arg(long, value_enum, default_value = "both")]
    system: Systems,
    /// The largest number of flows in `scaling` (default: the site's targets).
    #[arg(long)]
    max_flows: Option<u32>,
    /// Run dvipsec's kernel ports on this driver instead of the site's (the site is copied to
    /// OUT/site.yaml with every `driver: af_packet` or `af_xdp` line changed).
    #[arg(long, value_enum)]
    port_driver: Option<PortDriver>,
    /// Percent of XCF frames `xcf-loss` drops.
    #[arg(long, default_value_t = 5)]
    xcf_loss_percent: u8,
}

/// One measurement point of a scenario.
#[derive(Clone)]
struct Plan {
    label: String,
    traffic: Traffic,
}

pub fn run(args: RunArgs) -> ExitCode {
    if args.scenario == Scenario::Takeover {
        let site = args.site.as_deref().unwrap_or(Path::new(DEFAULT_SITE));
        return takeover::run(site, &args.out, args.seconds);
    }
    match execute(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dvipsec-hwtest run: {message}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: &RunArgs) -> Result<ExitCode, String> {
    let site = args
        .site
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SITE));
    let site = match args.port_driver {
        Some(driver) => with_port_driver(&site, &args.out, driver)?,
        None => site,
    };
    let plans = plans(args, site_targets(&site));
    let systems = chosen_systems(args.system);
    let total_ms = plans.len() as u64 * args.seconds * 1000 * systems.len() as u64;
    let progress = progress_bar(total_ms);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut results = BTreeMap::new();
    for (index, system) in systems.iter().enumerate() {
        let offset = index as u64 * plans.len() as u64 * args.seconds * 1000;
        let context = Context {
            args,
            site: &site,
            progress: &progress,
            offset_ms: offset,
        };
        let result = match *system {
            "strongswan" => measure_strongswan(&context, &plans),
            _ => measure_dvipsec(&context, &plans),
        };
        results.insert(system.to_string(), result);
    }
    progress.finish_and_clear();
    let mut result = RunResult {
        scenario: scenario_name(args.scenario).into(),
        seconds_per_point: args.seconds as f64,
        rate_pps: args.rate,
        inflight: args.inflight,
        started_unix,
        machine: Machine {
            cpu_mhz: cpu::cpu_mhz(),
            clk_tck: cpu::clock_ticks_per_second(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        cpu_cycles_method: report::CYCLES_METHOD,
        ratio_vs_strongswan: BTreeMap::new(),
        goals: Vec::new(),
        systems: results,
    };
    result.ratio_vs_strongswan = report::ratios(&result.systems);
    result.goals = report::goals(&result.systems, &result.ratio_vs_strongswan);
    let (json, html) = report::write(&args.out, &result)?;
    print_summary(&result);
    println!("result: {}\nreport: {}", json.display(), html.display());
    let measured = result
        .systems
        .values()
        .any(|s| matches!(s, SystemResult::Measured { .. }));
    Ok(if measured {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_AVAILABLE)
    })
}

fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Outbound => "outbound",
        Scenario::Inbound => "inbound",
        Scenario::Scaling => "scaling",
        Scenario::Rekey => "rekey",
        Scenario::Takeover => "takeover",
        Scenario::XcfLoss => "xcf-loss",
        Scenario::ReplayStress => "replay-stress",
    }
}

fn chosen_systems(systems: Systems) -> Vec<&'static str> {
    match systems {
        Systems::Strongswan => vec!["strongswan"],
        Systems::Dvipsec => vec!["dvipsec"],
        Systems::Both => vec!["strongswan", "dvipsec"],
    }
}

/// The number of target-capable nodes of the site, if it loads.
fn site_targets(site: &Path) -> Option<u32> {
    let config = dvipsec_config::SiteConfig::load(site).ok()?;
    let count = config
        .nodes
        .iter()
        .filter(|n| {
            n.capabilities
                .iter()
                .any(|c| **c == dvipsec_config::Capability::Target)
        })
        .count();
    u32::try_from(count).ok().filter(|n| *n > 0)
}

fn plans(args: &RunArgs, targets: Option<u32>) -> Vec<Plan> {
    let base = Traffic {
        sizes: vec![1420],
        flows: 4,
        senders: 1,
        duration: Duration::from_secs(args.seconds.max(1)),
        rate_pps: args.rate,
        inflight: args.inflight,
        rekey_every: None,
    };
    let with = |label: String, change: &dyn Fn(&mut Traffic)| {
        let mut traffic = base.clone();
        change(&mut traffic);
        Plan { label, traffic }
    };
    match args.scenario {
        Scenario::Outbound => {
            let mut plans: Vec<Plan> = [64usize, 576, 1420]
                .iter()
                .map(|&size| with(format!("{size} B"), &|t| t.sizes = vec![size]))
                .collect();
            plans.push(with("IMIX".into(), &|t| t.sizes = IMIX.to_vec()));
            plans
        }
        Scenario::Inbound => vec![with("1420 B, 16 flows".into(), &|t| t.flows = 16)],
        Scenario::Scaling => {
            let max = args.max_flows.or(targets).unwrap_or(3).max(1);
            (1..=max)
                .map(|flows| with(format!("{flows} flows"), &|t| t.flows = flows))
                .collect()
        }
        Scenario::Rekey => {
            let every = (base.duration / 4).max(Duration::from_millis(500));
            vec![with("576 B, rekeying".into(), &|t| {
                t.sizes = vec![576];
                t.rekey_every = Some(every);
            })]
        }
        Scenario::XcfLoss => vec![with(
            format!("1420 B, {}% XCF loss", args.xcf_loss_percent),
            &|_| {},
        )],
        Scenario::ReplayStress => vec![with("64 B, 4 senders on one SA".into(), &|t| {
            t.sizes = vec![64];
            t.flows = 8;
            t.senders = 4;
            t.inflight = args.inflight.max(512);
        })],
        Scenario::Takeover => Vec::new(),
    }
}

fn progress_bar(total_ms: u64) -> ProgressBar {
    let bar = ProgressBar::new(total_ms.max(1));
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent:>3}% {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

struct Context<'a> {
    args: &'a RunArgs,
    site: &'a Path,
    progress: &'a ProgressBar,
    offset_ms: u64,
}

/// What a gateway offers the measurement loop.
trait Gateway {
    fn name(&self) -> &'static str;
    fn peer_spec(&self) -> PeerSpec;
    /// CPU ticks used so far by each part of the gateway (process or thread), by name.
    fn cpu_parts(&self) -> BTreeMap<String, u64>;
    /// The user-space part of `cpu_parts`, where the gateway's processes can be read.
    fn user_cpu_parts(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    fn esp_packets(&self) -> Option<(u64, u64)> {
        None
    }
    fn replay_failures(&self) -> Option<u64> {
        None
    }
    /// ESP packets and stage costs so far of each part of the gateway (named as in
    /// `cpu_parts`), where the gateway reports them.
    fn work_by_part(&self) -> BTreeMap<String, costs::PartWork> {
        BTreeMap::new()
    }
    /// The largest inner packet the gateway carries whole, if it has such a limit.
    fn max_inner(&self) -> Option<usize> {
        None
    }
    /// CPU ticks of the gateway's parts that run inside this process (strongSwan's echo
    /// thread), so that they are not counted as the generator's.
    fn in_process_ticks(&self) -> u64 {
        0
    }
}

impl Gateway for strongswan::StrongSwan {
    fn name(&self) -> &'static str {
        "strongswan"
    }
    fn peer_spec(&self) -> PeerSpec {
        strongswan::StrongSwan::peer_spec(self)
    }
    fn cpu_parts(&self) -> BTreeMap<String, u64> {
        strongswan::StrongSwan::cpu_parts(self)
    }
    fn user_cpu_parts(&self) -> BTreeMap<String, u64> {
        strongswan::StrongSwan::user_cpu_parts(self)
    }
    fn esp_packets(&self) -> Option<(u64, u64)> {
        strongswan::StrongSwan::esp_packets(self)
    }
    fn replay_failures(&self) -> Option<u64> {
        Some(strongswan::StrongSwan::replay_failures(self))
    }
    fn max_inner(&self) -> Option<usize> {
        Some(strongswan::MAX_INNER)
    }
    fn in_process_ticks(&self) -> u64 {
        strongswan::StrongSwan::echo_ticks(self)
    }
    fn work_by_part(&self) -> BTreeMap<String, costs::PartWork> {
        strongswan::StrongSwan::work_by_part(self)
    }
}

impl Gateway for dvipsec::Dvipsec {
    fn name(&self) -> &'static str {
        "dvipsec"
    }
    fn peer_spec(&self) -> PeerSpec {
        dvipsec::Dvipsec::peer_spec(self).clone()
    }
    fn cpu_parts(&self) -> BTreeMap<String, u64> {
        dvipsec::Dvipsec::cpu_parts(self)
    }
    fn user_cpu_parts(&self) -> BTreeMap<String, u64> {
        dvipsec::Dvipsec::user_cpu_parts(self)
    }
    fn replay_failures(&self) -> Option<u64> {
        self.replay_drops()
    }
    fn work_by_part(&self) -> BTreeMap<String, costs::PartWork> {
        self.work_by_node()
    }
}

fn unavailable(reason: impl ToString) -> SystemResult {
    SystemResult::Unavailable {
        reason: reason.to_string(),
    }
}

fn measure_strongswan(context: &Context, plans: &[Plan]) -> SystemResult {
    if context.args.scenario == Scenario::XcfLoss {
        return SystemResult::NotApplicable {
            reason: "strongSwan is one box: it has no XCF network".into(),
        };
    }
    // The whole pid: namespaces of runs that died without cleaning up can then be told
    // from those of runs still going.
    let tag = std::process::id().to_string();
    strongswan::remove_orphans();
    match strongswan::StrongSwan::start(&tag, &context.args.out.join("strongswan")) {
        Ok(gateway) => measure(context, &gateway, plans),
        Err(GatewayError::Missing(reason)) => unavailable(reason),
        Err(e) => unavailable(format!("strongSwan gateway setup failed: {e}")),
    }
}

fn measure_dvipsec(context: &Context, plans: &[Plan]) -> SystemResult {
    let run_dir = absolute(&context.args.out.join("dvipsec-run"));
    let gateway = match dvipsec::Dvipsec::start(context.site, &run_dir) {
        Ok(gateway) => gateway,
        Err(e) => return unavailable(format!("dvipsec site did not come up: {e}")),
    };
    if context.args.scenario == Scenario::XcfLoss {
        if let Err(e) = dvipsec::drop_on_xcf(&gateway.hub(), context.args.xcf_loss_percent) {
            return unavailable(e);
        }
    }
    measure(context, &gateway, plans)
}

/// Writes `text`, the site `site` changed, as OUT/site.yaml, with its relative `file:`
/// references made absolute so they still point next to the original.
fn write_site_copy(site: &Path, out: &Path, text: &str) -> Result<PathBuf, String> {
    let base = absolute(site)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let file = out.join("site.yaml");
    std::fs::write(&file, dvipsec_hwtest::takeover::absolute_files(text, &base))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

/// The site with its kernel ports on `driver`, written to OUT/site.yaml.
fn with_port_driver(site: &Path, out: &Path, driver: PortDriver) -> Result<PathBuf, String> {
    let text =
        std::fs::read_to_string(site).map_err(|e| format!("site {}: {e}", site.display()))?;
    write_site_copy(site, out, &switch_port_drivers(&text, driver))
}

/// Every `driver: af_packet` or `driver: af_xdp` line of a site changed to `driver`.
fn switch_port_drivers(text: &str, driver: PortDriver) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = &body[..body.len() - body.trim_start().len()];
        match body.trim() {
            "driver: af_packet" | "driver: af_xdp" => {
                out.push_str(indent);
                out.push_str("driver: ");
                out.push_str(driver.site_name());
                out.push_str(&line[body.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Negotiates with `gateway` and runs every plan on the one session.
fn measure(context: &Context, gateway: &dyn Gateway, plans: &[Plan]) -> SystemResult {
    let spec = gateway.peer_spec();
    let mut session = match Session::negotiate(&spec, IKE_TIMEOUT) {
        Ok(session) => session,
        Err(LoadError::IkeTimeout(after)) => {
            return unavailable(format!(
                "{} did not answer IKE from {} to {} within {after:?}",
                gateway.name(),
                spec.local,
                spec.remote
            ))
        }
        Err(e) => return unavailable(format!("{}: {e}", gateway.name())),
    };
    let ike_setup_ms = session.setup.as_secs_f64() * 1000.0;
    let flows = plans.iter().map(|p| p.traffic.flows).max().unwrap_or(1);
    if let Err(e) = session.warm_up(flows, WARM_UP_TIMEOUT) {
        return unavailable(format!("{}: {e}", gateway.name()));
    }
    let mut points = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let done_ms = context.offset_ms + index as u64 * context.args.seconds * 1000;
        context
            .progress
            .set_message(format!("{} {}", gateway.name(), plan.label));
        match measure_point(context, gateway, &mut session, plan, done_ms) {
            Ok(point) => points.push(point),
            Err(e) => {
                return unavailable(format!(
                    "{} failed during {}: {e}",
                    gateway.name(),
                    plan.label
                ))
            }
        }
    }
    SystemResult::Measured {
        ike_setup_ms,
        points,
    }
}

fn measure_point(
    context: &Context,
    gateway: &dyn Gateway,
    session: &mut Session,
    plan: &Plan,
    done_ms: u64,
) -> Result<Point, LoadError> {
    let (plan, note) = fit_to(gateway, plan);
    let plan = &plan;
    let parts_before = gateway.cpu_parts();
    let user_before = gateway.user_cpu_parts();
    let own_before = own_ticks(gateway);
    let esp_before = gateway.esp_packets();
    let replays_before = gateway.replay_failures();
    let work_before = gateway.work_by_part();
    let progress = context.progress;
    let outcome = session.run(&plan.traffic, &|elapsed| {
        progress.set_position(done_ms + elapsed.as_millis() as u64);
    })?;
    let parts = ticks_since(&parts_before, gateway.cpu_parts());
    let ticks = parts.values().sum();
    let user_parts = ticks_since(&user_before, gateway.user_cpu_parts());
    let generator_ticks = own_ticks(gateway).saturating_sub(own_before);
    let esp = match (esp_before, gateway.esp_packets()) {
        (Some((in0, out0)), Some((in1, out1))) => {
            Some((in1.saturating_sub(in0), out1.saturating_sub(out0)))
        }
        _ => None,
    };
    let replays = match (replays_before, gateway.replay_failures()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let work: BTreeMap<String, costs::PartWork> = gateway
        .work_by_part()
        .into_iter()
        .map(|(name, after)| {
            let before = work_before.get(&name).cloned().unwrap_or_default();
            let during = after.since(&before);
            (name, during)
        })
        .collect();
    let mut point = point(plan, &outcome, ticks, esp, replays);
    point.note = note;
    let tck = cpu::clock_ticks_per_second().max(1) as f64;
    point.gateway_cpu_seconds_by_part = parts
        .into_iter()
        .map(|(name, ticks)| (name, ticks as f64 / tck))
        .collect();
    point.generator_cpu_seconds =
        generator_ticks as f64 / cpu::clock_ticks_per_second().max(1) as f64;
    let hz = cpu::cpu_mhz().map(|mhz| mhz * 1e6);
    let user_seconds = user_parts
        .into_iter()
        .map(|(name, ticks)| (name, ticks as f64 / tck))
        .collect();
    point.costs = costs::costs(&point.gateway_cpu_seconds_by_part, &work, hz);
    point.costs.add_user_space(&user_seconds, &work, hz);
    Ok(point)
}

/// Each part's ticks between `before` and `after`.
fn ticks_since(
    before: &BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .into_iter()
        .map(|(name, now)| {
            let then = before.get(&name).copied().unwrap_or(0);
            (name, now.saturating_sub(then))
        })
        .collect()
}

/// CPU ticks of this process that belong to the load generator.
fn own_ticks(gateway: &dyn Gateway) -> u64 {
    cpu::process_ticks(std::process::id())
        .unwrap_or(0)
        .saturating_sub(gateway.in_process_ticks())
}

/// The plan with its sizes cut to what the gateway carries whole, and a note saying so.
fn fit_to(gateway: &dyn Gateway, plan: &Plan) -> (Plan, Option<String>) {
    let mut plan = plan.clone();
    let Some(max) = gateway.max_inner() else {
        return (plan, None);
    };
    if plan.traffic.sizes.iter().all(|s| *s <= max) {
        return (plan, None);
    }
    for size in &mut plan.traffic.sizes {
        *size = (*size).min(max);
    }
    let note = format!(
        "{} carries inner packets of at most {max} B: larger probes were sent as {max} B",
        gateway.name()
    );
    (plan, Some(note))
}

fn point(
    plan: &Plan,
    outcome: &TrafficResult,
    ticks: u64,
    esp: Option<(u64, u64)>,
    replays: Option<u64>,
) -> Point {
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let sizes = &plan.traffic.sizes;
    let packet_size = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let tck = cpu::clock_ticks_per_second();
    let gateway_packets = outcome.sent + outcome.received;
    let cycles =
        cpu::cpu_mhz().and_then(|mhz| cpu::cycles_per_packet(ticks, tck, mhz, gateway_packets));
    let lost = outcome.sent.saturating_sub(outcome.received);
    Point {
        label: plan.label.clone(),
        packet_size,
        flows: plan.traffic.flows,
        senders: plan.traffic.senders,
        seconds,
        sent: outcome.sent,
        received: outcome.received,
        lost,
        loss_ratio: if outcome.sent == 0 {
            0.0
        } else {
            lost as f64 / outcome.sent as f64
        },
        send_errors: outcome.send_errors,
        pps: outcome.received as f64 / seconds,
        gbps: outcome.received_bytes as f64 * 8.0 / seconds / 1e9,
        reordered: outcome.flows.iter().map(|f| f.reordered).sum(),
        max_reorder_distance: outcome
            .flows
            .iter()
            .map(|f| f.max_reorder_distance)
            .max()
            .unwrap_or(0),
        latency: stats::Percentiles::of(&outcome.latency),
        replay_rejected_at_peer: outcome.replay_rejected,
        replay_rejected_at_gateway: replays,
        unknown_spi: outcome.unknown_spi,
        open_failures: outcome.open_failures,
        stale_replies: outcome.stale,
        rekeys_started: outcome.rekeys_started,
        rekeys_completed: outcome.rekeys_completed,
        gateway_cpu_seconds: ticks as f64 / tck.max(1) as f64,
        generator_cpu_seconds: 0.0,
        gateway_cpu_seconds_by_part: BTreeMap::new(),
        cycles_per_packet: cycles,
        costs: costs::Costs::default(),
        gateway_esp_packets: esp,
        per_flow: outcome.flows.clone(),
        note: None,
        cdf: outcome
            .latency
            .cdf()
            .into_iter()
            .map(|(ns, fraction)| (ns as f64 / 1000.0, fraction))
            .collect(),
    }
}

/// The point's cost figures, when the gateway reported any.
fn print_costs(name: &str, p: &Point) {
    let costs = &p.costs;
    if costs.cycles_per_esp_packet_by_part.is_empty() && costs.stage_ns_per_packet.is_empty() {
        return;
    }
    let list = |map: &BTreeMap<String, f64>, digits: usize| {
        map.iter()
            .map(|(k, v)| format!("{k} {v:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{name:<10} {:<26} cycles/ESP pkt by part [{}] ESP core {} (user {}) stage ns/pkt [{}] mean burst [{}] forward/decap {}",
        p.label,
        list(&costs.cycles_per_esp_packet_by_part, 0),
        costs
            .esp_core_cycles_per_packet
            .map_or("-".into(), |c| format!("{c:.0}")),
        costs
            .esp_core_user_cycles_per_packet
            .map_or("-".into(), |c| format!("{c:.0}")),
        list(&costs.stage_ns_per_packet, 1),
        list(&costs.stage_mean_burst, 1),
        costs
            .forward_over_decap
            .map_or("-".into(), |r| format!("{r:.3}")),
    );
}

fn print_summary(result: &RunResult) {
    for (name, system) in &result.systems {
        match system {
            SystemResult::Unavailable { reason } => println!("{name:<10} not available: {reason}"),
            SystemResult::NotApplicable { reason } => {
                println!("{name:<10} not applicable: {reason}")
            }
            SystemResult::Measured { .. } => {}
        }
        for p in system.points() {
            println!(
                "{name:<10} {:<26} sent {:>9} recv {:>9} loss {:>7.4} {:>10.0} pps {:>7.3} Gbit/s p99 {:>8} us replay(peer) {} cycles/pkt {} cpu gw/gen {:.2}/{:.2} s",
                p.label,
                p.sent,
                p.received,
                p.loss_ratio,
                p.pps,
                p.gbps,
                p.latency.map_or("-".into(), |l| format!("{:.1}", l.p99_us)),
                p.replay_rejected_at_peer,
                p.cycles_per_packet.map_or("-".into(), |c| format!("{c:.0}")),
                p.gateway_cpu_seconds,
                p.generator_cpu_seconds,
            );
            print_costs(name, p);
        }
    }
    for (name, list) in &result.ratio_vs_strongswan {
        for r in list {
            let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            println!(
                "ratio {name}/strongswan {:<26} pps {} Gbit/s {} ESP core capacity {} (user-space CPU {})",
                r.label,
                show(r.pps),
                show(r.gbps),
                show(r.esp_core_capacity),
                show(r.esp_core_user_capacity)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_config::SiteConfig;

    #[test]
    fn switching_drivers_changes_only_kernel_port_lines() {
        let text = "ports:\n  - name: ext\n    driver: af_packet\n  - name: d\n    driver: dpdk\n# driver: af_packet in a comment\n  - name: xcf\n    driver: af_xdp\r\n";
        let switched = switch_port_drivers(text, PortDriver::AfXdp);
        assert_eq!(
            switched,
            "ports:\n  - name: ext\n    driver: af_xdp\n  - name: d\n    driver: dpdk\n# driver: af_packet in a comment\n  - name: xcf\n    driver: af_xdp\r\n"
        );
        assert_eq!(
            switch_port_drivers(&switched, PortDriver::AfPacket)
                .matches("af_packet")
                .count(),
            3
        );
    }

    #[test]
    fn the_default_site_on_af_xdp_still_loads_with_its_secrets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let site = root.join(DEFAULT_SITE);
        let out = std::env::temp_dir().join(format!("dvh-driver-{}", std::process::id()));
        let written = with_port_driver(&site, &out, PortDriver::AfXdp).expect("site copy");
        let config = SiteConfig::load(&written).expect("the copy loads");
        let text = std::fs::read_to_string(&written).expect("read");
        assert!(!text.contains("af_packet"), "{text}");
        for peer in &config.peers {
            assert!(
                peer.psk.read(&out).is_ok(),
                "the PSK file is found from the copy"
            );
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
