//! The result of a run: the JSON file and a self-contained HTML report with SVG plots.
//!
//! Plots are drawn by plotters' SVG backend without its font feature: text goes into the SVG
//! as `<text>` and the browser renders it, so no system fonts are needed to build or run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::costs::Costs;
use super::stats::{FlowStats, Percentiles};

/// How the cycles-per-packet figures are computed (also written into the JSON).
pub const CYCLES_METHOD: &str = "gateway CPU time (utime+stime from /proc/PID/stat of the gateway's processes: charon and the echo thread for strongSwan, every `dvipsec boot` for dvipsec) over the measurement, in clock ticks / CLK_TCK, times the 'cpu MHz' of /proc/cpuinfo, divided by the ESP packets through the gateway (probes sent + replies received by the generator)";

/// One measurement of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub label: String,
    /// Mean inner packet size in bytes.
    pub packet_size: f64,
    pub flows: u32,
    pub senders: usize,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub send_errors: u64,
    /// Echo replies received per second.
    pub pps: f64,
    /// Inner bytes of the received replies, in Gbit/s.
    pub gbps: f64,
    pub reordered: u64,
    pub max_reorder_distance: u64,
    pub latency: Option<Percentiles>,
    /// Replies a 128-packet replay window at the peer (the generator) would have refused.
    pub replay_rejected_at_peer: u64,
    /// Probes the gateway's own replay window refused (strongSwan: from its log).
    pub replay_rejected_at_gateway: Option<u64>,
    pub unknown_spi: u64,
    pub open_failures: u64,
    /// Replies to the previous point that arrived during this one (not counted here).
    pub stale_replies: u64,
    pub rekeys_started: u64,
    pub rekeys_completed: u64,
    pub gateway_cpu_seconds: f64,
    /// CPU time of the load generator (this process, less any gateway thread in it): near
    /// `seconds` times the cores it uses means the generator, not the gateway, was the limit.
    pub generator_cpu_seconds: f64,
    /// The gateway's CPU time by part: strongSwan's `charon` and `echo`, dvipsec's nodes.
    pub gateway_cpu_seconds_by_part: BTreeMap<String, f64>,
    pub cycles_per_packet: Option<f64>,
    /// Where the CPU went: per part, the ESP core, and the boxes' own stage costs.
    #[serde(flatten)]
    pub costs: Costs,
    /// The gateway's own ESP counters (in, out), where it has them.
    pub gateway_esp_packets: Option<(u64, u64)>,
    pub per_flow: Vec<FlowStats>,
    /// What differed from the plan for this system (sizes it cannot carry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Latency CDF: (µs, fraction); plotted, not written to the JSON.
    #[serde(skip)]
    pub cdf: Vec<(f64, f64)>,
}

/// What happened with one system.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SystemResult {
    Measured {
        ike_setup_ms: f64,
        points: Vec<Point>,
    },
    /// It could not run here (prerequisite missing, not built yet); the reason says which.
    Unavailable { reason: String },
    /// The scenario does not apply to this system.
    NotApplicable { reason: String },
}

impl SystemResult {
    pub fn points(&self) -> &[Point] {
        match self {
            SystemResult::Measured { points, .. } => points,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_mhz: Option<f64>,
    pub clk_tck: u64,
    pub cores: usize,
}

/// One label's ratio of a system to strongSwan.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub label: String,
    pub pps: Option<f64>,
    pub gbps: Option<f64>,
    /// strongSwan's cycles per packet over the system's (above 1: the system is cheaper).
    pub cycles_per_packet: Option<f64>,
    /// ESP packets one ESP core handles per CPU-second, the system's over strongSwan's
    /// (charon's cycles per ESP packet over a dvipsec target's).
    pub esp_core_capacity: Option<f64>,
    /// The same counting user-space CPU only.
    pub esp_core_user_capacity: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub seconds_per_point: f64,
    pub rate_pps: u64,
    pub inflight: u64,
    pub started_unix: u64,
    pub machine: Machine,
    pub cpu_cycles_method: &'static str,
    pub systems: BTreeMap<String, SystemResult>,
    pub ratio_vs_strongswan: BTreeMap<String, Vec<Ratio>>,
    /// The performance goals that this scenario's figures speak to.
    pub goals: Vec<Goal>,
}

/// One performance goal: what is required, what was measured, whether it is met.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: &'static str,
    pub required: &'static str,
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

impl Goal {
    fn at_least(
        goal: &'static str,
        required: &'static str,
        bound: f64,
        measured: Option<f64>,
    ) -> Self {
        Goal::judged(goal, required, measured, |m| m >= bound)
    }

    fn at_most(
        goal: &'static str,
        required: &'static str,
        bound: f64,
        measured: Option<f64>,
    ) -> Self {
        Goal::judged(goal, required, measured, |m| m <= bound)
    }

    fn judged(
        goal: &'static str,
        required: &'static str,
        measured: Option<f64>,
        meets: impl Fn(f64) -> bool,
    ) -> Self {
        Goal {
            goal,
            required,
            measured,
            met: measured.map(meets),
        }
    }
}

/// The goals the measured points of `systems` can be checked against (none without dvipsec).
pub fn goals(
    systems: &BTreeMap<String, SystemResult>,
    ratios: &BTreeMap<String, Vec<Ratio>>,
) -> Vec<Goal> {
    let Some(dvipsec) = systems.get("dvipsec").filter(|s| !s.points().is_empty()) else {
        return Vec::new();
    };
    let points = dvipsec.points();
    let mut goals = Vec::new();
    let ratio_1420 = ratios
        .get("dvipsec")
        .and_then(|list| list.iter().find(|r| r.label == "1420 B"));
    if let Some(at_1420) = ratio_1420 {
        goals.push(Goal::at_least(
            "dvipsec throughput over strongSwan's at 1420 B (generator-limited here)",
            ">= 10",
            10.0,
            at_1420.gbps,
        ));
        goals.push(Goal::at_least(
            "ESP packets per CPU-second of one dvipsec target over charon's, 1420 B",
            ">= 10",
            10.0,
            at_1420.esp_core_capacity,
        ));
    }
    let forward_over_decap = points
        .iter()
        .filter(|p| (p.packet_size - 1420.0).abs() < 0.5)
        .find_map(|p| p.costs.forward_over_decap);
    if forward_over_decap.is_some() {
        goals.push(Goal::at_most(
            "distributor forward stage over target decap stage, per packet at 1420 B",
            "<= 0.10",
            0.10,
            forward_over_decap,
        ));
    }
    let gbps_of = |label: &str| points.iter().find(|p| p.label == label).map(|p| p.gbps);
    if let (Some(one), Some(two)) = (gbps_of("1 flows"), gbps_of("2 flows")) {
        goals.push(Goal::at_least(
            "throughput with 2 flows over 1 flow",
            ">= 1.8",
            1.8,
            ratio(two, one),
        ));
    }
    let drops: u64 = points.iter().map(|p| p.replay_rejected_at_peer).sum();
    goals.push(Goal {
        goal: "replay drops at the peer",
        required: "0",
        measured: Some(drops as f64),
        met: Some(drops == 0),
    });
    goals
}

/// Theirs over ours: for costs, where less is better.
fn inverse_ratio(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    ratio(theirs?, ours?)
}

fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs > 0.0 && ours.is_finite()).then(|| ours / theirs)
}

/// Every measured system's ratios to strongSwan's points of the same label.
pub fn ratios(systems: &BTreeMap<String, SystemResult>) -> BTreeMap<String, Vec<Ratio>> {
    let Some(base) = systems.get("strongswan") else {
        return BTreeMap::new();
    };
    systems
        .iter()
        .filter(|(name, result)| *name != "strongswan" && !result.points().is_empty())
        .map(|(name, result)| {
            let list = result
                .points()
                .iter()
                .filter_map(|point| {
                    let other = base.points().iter().find(|b| b.label == point.label)?;
                    Some(Ratio {
                        label: point.label.clone(),
                        pps: ratio(point.pps, other.pps),
                        gbps: ratio(point.gbps, other.gbps),
                        cycles_per_packet: inverse_ratio(
                            point.cycles_per_packet,
                            other.cycles_per_packet,
                        ),
                        esp_core_capacity: inverse_ratio(
                            point.costs.esp_core_cycles_per_packet,
                            other.costs.esp_core_cycles_per_packet,
                        ),
                        esp_core_user_capacity: inverse_ratio(
                            point.costs.esp_core_user_cycles_per_packet,
                            other.costs.esp_core_user_cycles_per_packet,
                        ),
                    })
                })
                .collect();
            (name.clone(), list)
        })
        .collect()
}

/// Writes `result.json` and `report.html` into `dir`; returns their paths.
pub fn write(dir: &Path, result: &RunResult) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let json_path = dir.join("result.json");
    let json = serde_json::to_string_pretty(result).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let html_path = dir.join("report.html");
    std::fs::write(&html_path, html(result)?)
        .map_err(|e| format!("{}: {e}", html_path.display()))?;
    Ok((json_path, html_path))
}

type Series = (String, Vec<(f64, f64)>);

/// The points of every measured system as (system, x, y) series.
fn series(result: &RunResult, x: fn(&Point) -> f64, y: fn(&Point) -> Option<f64>) -> Vec<Series> {
    result
        .systems
        .iter()
        .map(|(name, system)| {
            let mut points: Vec<(f64, f64)> = system
                .points()
                .iter()
                .filter_map(|p| Some((x(p), y(p)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name.clone(), points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect()
}

fn html(result: &RunResult) -> Result<String, String> {
    let mut page = String::new();
    let title = format!("dvipsec-hwtest: {}", result.scenario);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} \
         td,th{{border:1px solid #aaa;padding:2px 6px;text-align:right}} th{{background:#eee}}\
         </style></head><body>\n<h1>{title}</h1>\n<p>{} s per point, rate {} (0: closed loop with {} packets in flight), \
         cpu {:?} MHz, {} cores.</p>\n",
        result.seconds_per_point,
        result.rate_pps,
        result.inflight,
        result.machine.cpu_mhz,
        result.machine.cores
    );
    summary_tables(&mut page, result);
    cost_tables(&mut page, result);
    ratio_table(&mut page, result);
    goal_table(&mut page, result);
    let distinct_sizes = |s: &[Series]| s.iter().any(|(_, p)| p.len() > 1);
    let by_size = series(result, |p| p.packet_size, |p| Some(p.gbps));
    if distinct_sizes(&by_size) && result.scenario == "outbound" {
        plot_section(&mut page, "Throughput against packet size", || {
            line_chart(&by_size, "mean inner packet size (B)", "Gbit/s", false)
        })?;
    }
    let by_flows = series(result, |p| f64::from(p.flows), |p| Some(p.gbps));
    if result.scenario == "scaling" {
        plot_section(&mut page, "Throughput against flows (targets)", || {
            line_chart(&by_flows, "concurrent flows", "Gbit/s", false)
        })?;
    }
    let cdf = cdf_series(result);
    if !cdf.is_empty() {
        plot_section(&mut page, "Latency CDF (round trip)", || {
            line_chart(&cdf, "latency (µs, log scale)", "fraction of replies", true)
        })?;
    }
    let cycles = series(result, |p| p.packet_size, |p| p.cycles_per_packet);
    if !cycles.is_empty() {
        plot_section(&mut page, "Gateway CPU cycles per ESP packet", || {
            line_chart(
                &cycles,
                "mean inner packet size (B)",
                "cycles / packet",
                false,
            )
        })?;
        let _ = writeln!(page, "<p><small>{CYCLES_METHOD}.</small></p>");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

fn summary_tables(page: &mut String, result: &RunResult) {
    for (name, system) in &result.systems {
        let _ = writeln!(page, "<h2>{name}</h2>");
        match system {
            SystemResult::Unavailable { reason } => {
                let _ = writeln!(page, "<p>not available: {}</p>", escape(reason));
            }
            SystemResult::NotApplicable { reason } => {
                let _ = writeln!(page, "<p>not applicable: {}</p>", escape(reason));
            }
            SystemResult::Measured {
                ike_setup_ms,
                points,
            } => {
                let _ = writeln!(
                    page,
                    "<p>IKE SA and child SA in {ike_setup_ms:.1} ms.</p>\n<table><tr><th>point</th>\
                     <th>sent</th><th>received</th><th>loss</th><th>pps</th><th>Gbit/s</th>\
                     <th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>reordered</th>\
                     <th>replay drops (peer)</th><th>replay drops (gateway)</th><th>rekeys</th><th>cycles/pkt</th>\
                     <th>gateway CPU s</th><th>generator CPU s</th></tr>"
                );
                for p in points {
                    let lat = |f: fn(&Percentiles) -> f64| {
                        p.latency
                            .as_ref()
                            .map_or("-".into(), |l| format!("{:.1}", f(l)))
                    };
                    let _ = writeln!(
                        page,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.0}</td><td>{:.3}</td>\
                         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td>\
                         <td>{}</td><td>{:.2}</td></tr>",
                        escape(&p.label),
                        p.sent,
                        p.received,
                        p.loss_ratio,
                        p.pps,
                        p.gbps,
                        lat(|l| l.p50_us),
                        lat(|l| l.p99_us),
                        lat(|l| l.p999_us),
                        p.reordered,
                        p.replay_rejected_at_peer,
                        p.replay_rejected_at_gateway.map_or("-".into(), |n| n.to_string()),
                        p.rekeys_completed,
                        p.rekeys_started,
                        p.cycles_per_packet.map_or("-".into(), |c| format!("{c:.0}")),
                        cpu_parts(p),
                        p.generator_cpu_seconds,
                    );
                }
                page.push_str("</table>\n");
            }
        }
    }
}

/// Per point: each part's cycles per ESP packet, the ESP core's, and the boxes' stage costs.
fn cost_tables(page: &mut String, result: &RunResult) {
    for (name, system) in &result.systems {
        let points = system.points();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            page,
            "<h3>{name}: where the CPU goes</h3>\n<table><tr><th>point</th>\
             <th>cycles per ESP packet, by part</th><th>ESP core cycles/pkt</th><th>ESP core user-space cycles/pkt</th>\
             <th>stage ns/pkt</th><th>packets per burst</th><th>forward / decap</th></tr>"
        );
        let show =
            |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        for p in points {
            let parts: Vec<String> = p
                .costs
                .cycles_per_esp_packet_by_part
                .iter()
                .map(|(part, cycles)| format!("{} {cycles:.0}", escape(part)))
                .collect();
            let stages: Vec<String> = p
                .costs
                .stage_ns_per_packet
                .iter()
                .map(|(stage, ns)| format!("{} {ns:.1}", escape(stage)))
                .collect();
            let bursts: Vec<String> = p
                .costs
                .stage_mean_burst
                .iter()
                .map(|(stage, mean)| format!("{} {mean:.1}", escape(stage)))
                .collect();
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.label),
                parts.join(", "),
                show(p.costs.esp_core_cycles_per_packet, 0),
                show(p.costs.esp_core_user_cycles_per_packet, 0),
                stages.join(", "),
                bursts.join(", "),
                show(p.costs.forward_over_decap, 3),
            );
        }
        page.push_str("</table>\n");
    }
}

fn goal_table(page: &mut String, result: &RunResult) {
    if result.goals.is_empty() {
        return;
    }
    page.push_str("<h2>Goals</h2>\n<table><tr><th>goal</th><th>required</th><th>measured</th><th>met</th></tr>\n");
    for goal in &result.goals {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(goal.goal),
            escape(goal.required),
            goal.measured.map_or("-".into(), |m| format!("{m:.2}")),
            goal.met.map_or("-", |met| if met { "yes" } else { "no" })
        );
    }
    page.push_str("</table>\n");
}

/// "1.20 (MVS1 0.80, MVS2 0.40)": the gateway's CPU seconds, in all and by part.
fn cpu_parts(point: &Point) -> String {
    let parts: Vec<String> = point
        .gateway_cpu_seconds_by_part
        .iter()
        .map(|(name, seconds)| format!("{} {seconds:.2}", escape(name)))
        .collect();
    format!("{:.2} ({})", point.gateway_cpu_seconds, parts.join(", "))
}

fn ratio_table(page: &mut String, result: &RunResult) {
    for (name, list) in &result.ratio_vs_strongswan {
        let _ = writeln!(
            page,
            "<h2>{name} / strongswan</h2>\n<table><tr><th>point</th><th>pps</th><th>Gbit/s</th><th>cycles (strongSwan / {name})</th><th>ESP core capacity ({name} / strongSwan)</th><th>the same, user-space CPU</th></tr>"
        );
        let show = |v: Option<f64>| v.map_or("-".into(), |r| format!("{r:.2}x"));
        for r in list {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.label),
                show(r.pps),
                show(r.gbps),
                show(r.cycles_per_packet),
                show(r.esp_core_capacity),
                show(r.esp_core_user_capacity)
            );
        }
        page.push_str("</table>\n");
    }
}

fn cdf_series(result: &RunResult) -> Vec<Series> {
    result
        .systems
        .iter()
        .flat_map(|(name, system)| {
            system
                .points()
                .iter()
                .filter(|p| !p.cdf.is_empty())
                .map(move |p| (format!("{name} {}", p.label), p.cdf.clone()))
        })
        .collect()
}

fn plot_section(
    page: &mut String,
    heading: &str,
    draw: impl FnOnce() -> Result<String, String>,
) -> Result<(), String> {
    let svg = draw()?;
    let _ = writeln!(page, "<h2>{heading}</h2>\n{svg}");
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn bounds(series: &[Series], log_x: bool) -> (f64, f64, f64, f64) {
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for (x, y) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if log_x {
        x0 = x0.max(0.1);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = (x1 - x0) * 0.05;
    let x0 = if log_x { x0 * 0.9 } else { (x0 - pad).max(0.0) };
    let x1 = if log_x { x1 * 1.1 } else { x1 + pad };
    (x0, x1, 0.0, if y1 > 0.0 { y1 * 1.1 } else { 1.0 })
}

/// One SVG line chart (lines with markers, a legend) of `series`.
fn line_chart(
    series: &[Series],
    x_desc: &str,
    y_desc: &str,
    log_x: bool,
) -> Result<String, String> {
    let (x0, x1, y0, y1) = bounds(series, log_x);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70);
        if log_x {
            let mut chart = builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|e| e.to_string())?;
            draw_lines(&mut chart, series)?;
        } else {
            let mut chart = builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|e| e.to_string())?;
            draw_lines(&mut chart, series)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (index, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        if points.len() <= 64 {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, size: f64, gbps: f64) -> Point {
        Point {
            label: label.into(),
            packet_size: size,
            flows: 1,
            senders: 1,
            seconds: 1.0,
            sent: 10,
            received: 10,
            lost: 0,
            loss_ratio: 0.0,
            send_errors: 0,
            pps: gbps * 1e9 / 8.0 / size,
            gbps,
            reordered: 0,
            max_reorder_distance: 0,
            latency: None,
            replay_rejected_at_peer: 0,
            replay_rejected_at_gateway: None,
            unknown_spi: 0,
            open_failures: 0,
            stale_replies: 0,
            rekeys_started: 0,
            rekeys_completed: 0,
            gateway_cpu_seconds: 0.0,
            generator_cpu_seconds: 0.0,
            gateway_cpu_seconds_by_part: BTreeMap::new(),
            cycles_per_packet: Some(1000.0),
            costs: Costs::default(),
            gateway_esp_packets: None,
            per_flow: Vec::new(),
            note: None,
            cdf: vec![(10.0, 0.5), (20.0, 1.0)],
        }
    }

    #[test]
    fn ratios_pair_points_by_label_and_the_report_has_plots() {
        let mut systems = BTreeMap::new();
        let measured = |points| SystemResult::Measured {
            ike_setup_ms: 1.0,
            points,
        };
        let mut swan_1420 = point("1420 B", 1420.0, 0.2);
        swan_1420.costs.esp_core_cycles_per_packet = Some(30_000.0);
        systems.insert(
            "strongswan".to_string(),
            measured(vec![point("64 B", 64.0, 0.1), swan_1420]),
        );
        let mut ours = point("1420 B", 1420.0, 2.0);
        ours.costs.esp_core_cycles_per_packet = Some(5_000.0);
        ours.costs.forward_over_decap = Some(0.125);
        ours.costs
            .stage_ns_per_packet
            .insert("forward".into(), 25.0);
        systems.insert("dvipsec".to_string(), measured(vec![ours]));
        let table = ratios(&systems);
        let goals = goals(&systems, &table);
        assert_eq!(goals[0].measured, Some(10.0));
        assert_eq!(goals[0].met, Some(true));
        assert_eq!(goals[1].measured, Some(6.0), "30k over 5k cycles");
        assert_eq!(goals[1].met, Some(false));
        assert_eq!(goals[2].measured, Some(0.125));
        assert_eq!(goals[2].met, Some(false), "forward above a tenth of decap");
        assert_eq!(
            goals.last().map(|g| g.met),
            Some(Some(true)),
            "no replay drops"
        );
        let list = &table["dvipsec"];
        assert_eq!(list.len(), 1);
        assert!((list[0].gbps.expect("ratio") - 10.0).abs() < 1e-9);
        let result = RunResult {
            scenario: "outbound".into(),
            seconds_per_point: 1.0,
            rate_pps: 0,
            inflight: 64,
            started_unix: 0,
            machine: Machine {
                cpu_mhz: Some(2000.0),
                clk_tck: 100,
                cores: 2,
            },
            cpu_cycles_method: CYCLES_METHOD,
            ratio_vs_strongswan: table,
            goals,
            systems,
        };
        let page = html(&result).expect("html");
        assert_eq!(page.matches("<svg").count(), 3, "size, CDF, cycles");
        assert!(page.contains("forward 25.0"), "stage costs are tabled");
        let json = serde_json::to_value(&result).expect("json");
        assert_eq!(json["systems"]["dvipsec"]["status"], "measured");
        assert!(json["ratio_vs_strongswan"]["dvipsec"][0]["gbps"].is_number());
    }
}
