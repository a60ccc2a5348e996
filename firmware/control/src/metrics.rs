//! Prometheus metrics: a box fills a [`MetricsSnapshot`] from its counters and [`render`]
//! writes the text exposition with `prometheus-client`. [`MetricsEndpoint`] serves it over a
//! tiny HTTP/1.1 responder on a std `TcpListener`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Counters of one SA on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaMetric {
    /// SPI.
    pub spi: u32,
    /// "inbound" or "outbound".
    pub direction: String,
    /// Packets sealed or opened.
    pub packets: u64,
    /// Inner bytes.
    pub bytes: u64,
    /// Replays dropped.
    pub replays: u64,
    /// ICV failures.
    pub auth_failures: u64,
    /// The table the SA was found in ("sad" or "shadow"): a box that is both a distributor and
    /// a target holds one SPI in both, with separate counts.
    pub table: String,
}

/// Counters of one packet port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMetric {
    /// Port name.
    pub port: String,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames the port dropped (any cause).
    pub drops: u64,
}

/// Packets one core's polling loop handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreMetric {
    /// Core number.
    pub core: u32,
    /// Packets handled.
    pub packets: u64,
}

/// Drops of one cause at one stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DropMetric {
    /// Where: "distributor", "target", "node" or "port".
    pub stage: String,
    /// Why (snake_case cause name).
    pub cause: String,
    /// How many.
    pub count: u64,
}

/// Time and packets of one stage of a node's packet path (see
/// `dvipsec_dataplane::node::StageCosts`): their quotient is the stage's cost per packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageMetric {
    /// "forward" (distributor), "decap" or "encap" (target).
    pub stage: String,
    /// Nanoseconds spent in the stage.
    pub nanoseconds: u64,
    /// Packets through it.
    pub packets: u64,
    /// Bursts timed (packets over bursts: the mean burst).
    pub bursts: u64,
}

/// Everything one node reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// The node's name (a label on every sample).
    pub node: String,
    /// Per SA.
    pub sas: Vec<SaMetric>,
    /// Per port.
    pub ports: Vec<PortMetric>,
    /// Per core.
    pub cores: Vec<CoreMetric>,
    /// Drops by cause.
    pub drops: Vec<DropMetric>,
    /// Per-stage costs of the packet path.
    pub stages: Vec<StageMetric>,
    /// CF operations by name.
    pub cf_operations: Vec<(String, u64)>,
    /// Lifesize reports sent to the CF (None: the node does not count them; not rendered).
    pub lifesize_reports: Option<u64>,
    /// SA rekeys (None: not counted here).
    pub rekeys: Option<u64>,
    /// DVIPA takeovers (None: not counted here).
    pub takeovers: Option<u64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SaLabels {
    node: String,
    spi: String,
    direction: String,
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    node: String,
    port: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortDropLabels {
    node: String,
    port: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabels {
    node: String,
    core: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    node: String,
    stage: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    node: String,
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CfLabels {
    node: String,
    op: String,
}

/// The metric families, registered once per rendering.
struct Families {
    sa_packets: Family<SaLabels, Counter>,
    sa_bytes: Family<SaLabels, Counter>,
    sa_replays: Family<SaLabels, Counter>,
    sa_auth_failures: Family<SaLabels, Counter>,
    port_packets: Family<PortLabels, Counter>,
    port_bytes: Family<PortLabels, Counter>,
    port_drops: Family<PortDropLabels, Counter>,
    core_packets: Family<CoreLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    stage_nanoseconds: Family<StageLabels, Counter>,
    stage_packets: Family<StageLabels, Counter>,
    stage_bursts: Family<StageLabels, Counter>,
    cf_operations: Family<CfLabels, Counter>,
    lifesize_reports: Family<NodeLabels, Counter>,
    rekeys: Family<NodeLabels, Counter>,
    takeovers: Family<NodeLabels, Counter>,
}

impl Families {
    fn register(registry: &mut Registry) -> Families {
        let families = Families {
            sa_packets: Family::default(),
            sa_bytes: Family::default(),
            sa_replays: Family::default(),
            sa_auth_failures: Family::default(),
            port_packets: Family::default(),
            port_bytes: Family::default(),
            port_drops: Family::default(),
            core_packets: Family::default(),
            drops: Family::default(),
            stage_nanoseconds: Family::default(),
            stage_packets: Family::default(),
            stage_bursts: Family::default(),
            cf_operations: Family::default(),
            lifesize_reports: Family::default(),
            rekeys: Family::default(),
            takeovers: Family::default(),
        };
        let f = &families;
        registry.register(
            "sa_packets",
            "Packets sealed or opened per SA",
            f.sa_packets.clone(),
        );
        registry.register("sa_bytes", "Inner bytes per SA", f.sa_bytes.clone());
        registry.register(
            "sa_replays",
            "Replayed packets dropped per SA",
            f.sa_replays.clone(),
        );
        registry.register(
            "sa_auth_failures",
            "ICV failures per SA",
            f.sa_auth_failures.clone(),
        );
        registry.register(
            "port_packets",
            "Frames per port and direction",
            f.port_packets.clone(),
        );
        registry.register(
            "port_bytes",
            "Bytes per port and direction",
            f.port_bytes.clone(),
        );
        registry.register("port_drops", "Frames a port dropped", f.port_drops.clone());
        registry.register(
            "core_packets",
            "Packets handled per core",
            f.core_packets.clone(),
        );
        registry.register(
            "drops",
            "Packets dropped by stage and cause",
            f.drops.clone(),
        );
        registry.register(
            "stage_nanoseconds",
            "Nanoseconds spent in a stage of the packet path (timed per burst)",
            f.stage_nanoseconds.clone(),
        );
        registry.register(
            "stage_packets",
            "Packets through a stage of the packet path",
            f.stage_packets.clone(),
        );
        registry.register(
            "stage_bursts",
            "Bursts timed in a stage of the packet path",
            f.stage_bursts.clone(),
        );
        registry.register(
            "cf_operations",
            "Coupling facility operations",
            f.cf_operations.clone(),
        );
        registry.register(
            "lifesize_reports",
            "Lifesize reports a target sent, or a distributor received",
            f.lifesize_reports.clone(),
        );
        registry.register("rekeys", "SA rekeys", f.rekeys.clone());
        registry.register("takeovers", "DVIPA takeovers", f.takeovers.clone());
        families
    }

    fn add(&self, snapshot: &MetricsSnapshot) {
        let node = || snapshot.node.clone();
        for sa in &snapshot.sas {
            let labels = SaLabels {
                node: node(),
                spi: format!("0x{:08x}", sa.spi),
                direction: sa.direction.clone(),
                table: sa.table.clone(),
            };
            self.sa_packets.get_or_create(&labels).inc_by(sa.packets);
            self.sa_bytes.get_or_create(&labels).inc_by(sa.bytes);
            self.sa_replays.get_or_create(&labels).inc_by(sa.replays);
            self.sa_auth_failures
                .get_or_create(&labels)
                .inc_by(sa.auth_failures);
        }
        for port in &snapshot.ports {
            for (direction, packets, bytes) in [
                ("rx", port.rx_packets, port.rx_bytes),
                ("tx", port.tx_packets, port.tx_bytes),
            ] {
                let labels = PortLabels {
                    node: node(),
                    port: port.port.clone(),
                    direction: direction.into(),
                };
                self.port_packets.get_or_create(&labels).inc_by(packets);
                self.port_bytes.get_or_create(&labels).inc_by(bytes);
            }
            let labels = PortDropLabels {
                node: node(),
                port: port.port.clone(),
            };
            self.port_drops.get_or_create(&labels).inc_by(port.drops);
        }
        for core in &snapshot.cores {
            let labels = CoreLabels {
                node: node(),
                core: core.core.to_string(),
            };
            self.core_packets
                .get_or_create(&labels)
                .inc_by(core.packets);
        }
        for drop in &snapshot.drops {
            let labels = DropLabels {
                node: node(),
                stage: drop.stage.clone(),
                cause: drop.cause.clone(),
            };
            self.drops.get_or_create(&labels).inc_by(drop.count);
        }
        for stage in &snapshot.stages {
            let labels = StageLabels {
                node: node(),
                stage: stage.stage.clone(),
            };
            self.stage_nanoseconds
                .get_or_create(&labels)
                .inc_by(stage.nanoseconds);
            self.stage_packets
                .get_or_create(&labels)
                .inc_by(stage.packets);
            self.stage_bursts
                .get_or_create(&labels)
                .inc_by(stage.bursts);
        }
        for (op, count) in &snapshot.cf_operations {
            let labels = CfLabels {
                node: node(),
                op: op.clone(),
            };
            self.cf_operations.get_or_create(&labels).inc_by(*count);
        }
        let labels = NodeLabels { node: node() };
        for (family, value) in [
            (&self.lifesize_reports, snapshot.lifesize_reports),
            (&self.rekeys, snapshot.rekeys),
            (&self.takeovers, snapshot.takeovers),
        ] {
            if let Some(value) = value {
                family.get_or_create(&labels).inc_by(value);
            }
        }
    }
}

/// The Prometheus text exposition of `snapshots` (metric names start with `dvipsec_`).
pub fn render(snapshots: &[MetricsSnapshot]) -> String {
    let mut registry = Registry::with_prefix("dvipsec");
    let families = Families::register(&mut registry);
    for snapshot in snapshots {
        families.add(snapshot);
    }
    let mut text = String::new();
    // Writing into a String cannot fail; an error here would be a prometheus-client bug, and
    // the scrape then shows what was encoded so far.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Where the endpoint gets the text of each scrape.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Binding or spawning failed.
    #[error("metrics endpoint {address}: {action}: {source}")]
    Io {
        /// The listen address.
        address: SocketAddr,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running HTTP endpoint answering `GET /metrics`. Dropping it stops its thread.
pub struct MetricsEndpoint {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

const STOP_POLL: Duration = Duration::from_millis(20);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEADER_LINES: usize = 100;

impl MetricsEndpoint {
    /// Listens on `address` (port 0 picks a free port) and serves `source` on one thread.
    pub fn start(address: SocketAddr, source: MetricsSource) -> Result<Self, EndpointError> {
        let io = |action| {
            move |source| EndpointError::Io {
                address,
                action,
                source,
            }
        };
        let listener = TcpListener::bind(address).map_err(io("bind"))?;
        let bound = listener.local_addr().map_err(io("local address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("set non-blocking"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = answer(stream, &source);
                        }
                        Err(_) => std::thread::sleep(STOP_POLL),
                    }
                }
            })
            .map_err(io("spawn"))?;
        Ok(MetricsEndpoint {
            address: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers it; the connection closes afterwards.
fn answer(stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.by_ref().take(8192).read_line(&mut request_line)?;
    for _ in 0..MAX_HEADER_LINES {
        let mut header = String::new();
        if reader.by_ref().take(8192).read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (status, content_type, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            source(),
        ),
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        (Some(_), Some(_)) => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        _ => ("400 Bad Request", "text/plain", "bad request line\n".into()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_with_its_labels() {
        let snapshot = MetricsSnapshot {
            node: "t0".into(),
            sas: vec![SaMetric {
                spi: 0x1000,
                direction: "inbound".into(),
                packets: 3,
                bytes: 300,
                replays: 1,
                auth_failures: 2,
                table: "shadow".into(),
            }],
            ports: vec![PortMetric {
                port: "ext".into(),
                rx_packets: 4,
                rx_bytes: 400,
                tx_packets: 5,
                tx_bytes: 500,
                drops: 6,
            }],
            cores: vec![CoreMetric {
                core: 1,
                packets: 7,
            }],
            drops: vec![DropMetric {
                stage: "target".into(),
                cause: "replay".into(),
                count: 8,
            }],
            stages: vec![StageMetric {
                stage: "decap".into(),
                nanoseconds: 13,
                packets: 14,
                bursts: 15,
            }],
            cf_operations: vec![("fetch_add".into(), 9)],
            lifesize_reports: Some(10),
            rekeys: Some(11),
            takeovers: Some(12),
        };
        let text = render(std::slice::from_ref(&snapshot));
        for line in [
            "dvipsec_sa_packets_total{node=\"t0\",spi=\"0x00001000\",direction=\"inbound\",table=\"shadow\"} 3",
            "dvipsec_sa_bytes_total{node=\"t0\",spi=\"0x00001000\",direction=\"inbound\",table=\"shadow\"} 300",
            "dvipsec_sa_replays_total{node=\"t0\",spi=\"0x00001000\",direction=\"inbound\",table=\"shadow\"} 1",
            "dvipsec_sa_auth_failures_total{node=\"t0\",spi=\"0x00001000\",direction=\"inbound\",table=\"shadow\"} 2",
            "dvipsec_port_packets_total{node=\"t0\",port=\"ext\",direction=\"tx\"} 5",
            "dvipsec_port_bytes_total{node=\"t0\",port=\"ext\",direction=\"rx\"} 400",
            "dvipsec_port_drops_total{node=\"t0\",port=\"ext\"} 6",
            "dvipsec_core_packets_total{node=\"t0\",core=\"1\"} 7",
            "dvipsec_drops_total{node=\"t0\",stage=\"target\",cause=\"replay\"} 8",
            "dvipsec_cf_operations_total{node=\"t0\",op=\"fetch_add\"} 9",
            "dvipsec_lifesize_reports_total{node=\"t0\"} 10",
            "dvipsec_rekeys_total{node=\"t0\"} 11",
            "dvipsec_takeovers_total{node=\"t0\"} 12",
            "dvipsec_stage_nanoseconds_total{node=\"t0\",stage=\"decap\"} 13",
            "dvipsec_stage_packets_total{node=\"t0\",stage=\"decap\"} 14",
            "dvipsec_stage_bursts_total{node=\"t0\",stage=\"decap\"} 15",
            "# TYPE dvipsec_drops counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // A node that does not count lifesize reports shows no sample rather than a false 0.
        let uncounted = MetricsSnapshot {
            lifesize_reports: None,
            ..snapshot
        };
        let text = render(&[uncounted]);
        assert!(!text.contains("dvipsec_lifesize_reports_total{"), "{text}");
        assert!(
            text.contains("dvipsec_rekeys_total{node=\"t0\"} 11"),
            "{text}"
        );
    }

    #[test]
    fn stage_costs_render_per_node_and_stage() {
        let stage = |stage: &str, nanoseconds, packets| StageMetric {
            stage: stage.into(),
            nanoseconds,
            packets,
            bursts: 1,
        };
        let distributor = MetricsSnapshot {
            node: "d".into(),
            stages: vec![stage("forward", 3_200, 32)],
            ..MetricsSnapshot::default()
        };
        let target = MetricsSnapshot {
            node: "t1".into(),
            stages: vec![stage("decap", 6_400, 32), stage("encap", 7_000, 31)],
            ..MetricsSnapshot::default()
        };
        let text = render(&[distributor, target]);
        // A family's samples come in no set order: compare them sorted.
        let mut samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dvipsec_stage_"))
            .collect();
        samples.sort_unstable();
        assert_eq!(
            samples,
            [
                "dvipsec_stage_bursts_total{node=\"d\",stage=\"forward\"} 1",
                "dvipsec_stage_bursts_total{node=\"t1\",stage=\"decap\"} 1",
                "dvipsec_stage_bursts_total{node=\"t1\",stage=\"encap\"} 1",
                "dvipsec_stage_nanoseconds_total{node=\"d\",stage=\"forward\"} 3200",
                "dvipsec_stage_nanoseconds_total{node=\"t1\",stage=\"decap\"} 6400",
                "dvipsec_stage_nanoseconds_total{node=\"t1\",stage=\"encap\"} 7000",
                "dvipsec_stage_packets_total{node=\"d\",stage=\"forward\"} 32",
                "dvipsec_stage_packets_total{node=\"t1\",stage=\"decap\"} 32",
                "dvipsec_stage_packets_total{node=\"t1\",stage=\"encap\"} 31",
            ],
            "{text}"
        );
        for family in [
            "dvipsec_stage_nanoseconds",
            "dvipsec_stage_packets",
            "dvipsec_stage_bursts",
        ] {
            assert!(
                text.lines()
                    .any(|l| l == format!("# TYPE {family} counter")),
                "{family} not declared a counter:\n{text}"
            );
        }
    }
}
