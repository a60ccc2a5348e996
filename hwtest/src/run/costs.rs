//! Where a gateway's CPU goes: each part's ESP packets and, for dvipsec, the per-stage costs
//! its boxes measure themselves (the way VPP's `show runtime` gives clocks per packet per
//! graph node). Two of the goals are read from these, not from the generator's pps:
//! a target core's ESP packets per CPU-second against charon's, and the distributor's
//! forwarding cost against a target's decap cost.

use std::collections::BTreeMap;

use serde::Serialize;

/// Stage names the boxes export in `dvipsec_stage_*_total{stage=...}`.
pub const FORWARD: &str = "forward";
pub const DECAP: &str = "decap";

/// A stage's figures count only with at least this many packets in the point: a few stray
/// packets (the first of a flow, a warm-up straggler) on a box that carried none of the load
/// would otherwise stand for the stage.
pub const MIN_STAGE_PACKETS: u64 = 1000;

/// Nanoseconds a stage spent, the packets it handled and the bursts it timed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageWork {
    pub nanoseconds: u64,
    pub packets: u64,
    pub bursts: u64,
}

impl StageWork {
    fn since(self, before: StageWork) -> StageWork {
        StageWork {
            nanoseconds: self.nanoseconds.saturating_sub(before.nanoseconds),
            packets: self.packets.saturating_sub(before.packets),
            bursts: self.bursts.saturating_sub(before.bursts),
        }
    }

    fn add(&mut self, other: StageWork) {
        self.nanoseconds += other.nanoseconds;
        self.packets += other.packets;
        self.bursts += other.bursts;
    }

    /// Nanoseconds per packet; `None` below [`MIN_STAGE_PACKETS`].
    pub fn per_packet(self) -> Option<f64> {
        (self.packets >= MIN_STAGE_PACKETS).then(|| self.nanoseconds as f64 / self.packets as f64)
    }

    /// Packets per timed burst; `None` below [`MIN_STAGE_PACKETS`] or without bursts.
    pub fn mean_burst(self) -> Option<f64> {
        (self.packets >= MIN_STAGE_PACKETS && self.bursts > 0)
            .then(|| self.packets as f64 / self.bursts as f64)
    }
}

/// What one part of a gateway (a process) did: ESP packets it sealed or opened, and its
/// stages' work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartWork {
    pub esp_packets: u64,
    pub stages: BTreeMap<String, StageWork>,
}

impl PartWork {
    /// The work done between `before` and `self`.
    pub fn since(&self, before: &PartWork) -> PartWork {
        PartWork {
            esp_packets: self.esp_packets.saturating_sub(before.esp_packets),
            stages: self
                .stages
                .iter()
                .map(|(name, now)| {
                    let then = before.stages.get(name).copied().unwrap_or_default();
                    (name.clone(), now.since(then))
                })
                .collect(),
        }
    }

    fn stage(&self, name: &str) -> StageWork {
        self.stages.get(name).copied().unwrap_or_default()
    }
}

/// Each dvipsec node's work from its metrics exposition: `dvipsec_sa_packets_total` summed
/// over its SAs, and `dvipsec_stage_{nanoseconds,packets,bursts}_total` by stage.
pub fn parts_from_exposition(text: &str) -> BTreeMap<String, PartWork> {
    let mut parts: BTreeMap<String, PartWork> = BTreeMap::new();
    for line in text.lines() {
        let Some((family, labels, value)) = sample(line) else {
            continue;
        };
        let Some(node) = label(labels, "node") else {
            continue;
        };
        let part = parts.entry(node.to_owned()).or_default();
        match family {
            "dvipsec_sa_packets_total" => part.esp_packets += value,
            "dvipsec_stage_nanoseconds_total"
            | "dvipsec_stage_packets_total"
            | "dvipsec_stage_bursts_total" => {
                let Some(stage) = label(labels, "stage") else {
                    continue;
                };
                let work = part.stages.entry(stage.to_owned()).or_default();
                match family {
                    "dvipsec_stage_nanoseconds_total" => work.nanoseconds += value,
                    "dvipsec_stage_packets_total" => work.packets += value,
                    _ => work.bursts += value,
                }
            }
            _ => {}
        }
    }
    parts
}

/// A sample line's family, label text and integer value.
fn sample(line: &str) -> Option<(&str, &str, u64)> {
    let (family, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let value = value.trim().parse::<f64>().ok()?;
    (value.is_finite() && value >= 0.0).then_some((family, labels, value as u64))
}

/// The value of `name="..."` in a label text.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// The figures of one measurement point derived from its parts' CPU and work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Costs {
    /// CPU cycles of each part per ESP packet it sealed or opened (parts that did some).
    pub cycles_per_esp_packet_by_part: BTreeMap<String, f64>,
    /// CPU cycles of the gateway's ESP core per ESP packet: charon for strongSwan, the
    /// target boxes that do not distribute for dvipsec (summed CPU over summed packets).
    pub esp_core_cycles_per_packet: Option<f64>,
    /// Nanoseconds per packet of each stage the boxes measure, over all boxes.
    pub stage_ns_per_packet: BTreeMap<String, f64>,
    /// Packets per timed burst of each stage: at low load bursts are small, and the per-burst
    /// work (clock reads included) weighs on few packets.
    pub stage_mean_burst: BTreeMap<String, f64>,
    /// The distributor's forward stage over the targets' decap stage, per packet.
    pub forward_over_decap: Option<f64>,
    /// `esp_core_cycles_per_packet` counting user-space time only: on veths most of a box's
    /// CPU is the kernel's (its syscalls and the receiving side's softirq work).
    pub esp_core_user_cycles_per_packet: Option<f64>,
}

impl Costs {
    /// Fills in the user-space figure from each part's user-space CPU seconds.
    pub fn add_user_space(
        &mut self,
        user_seconds: &BTreeMap<String, f64>,
        work: &BTreeMap<String, PartWork>,
        cycles_per_second: Option<f64>,
    ) {
        self.esp_core_user_cycles_per_packet = esp_core(user_seconds, work)
            .and_then(|(seconds, packets)| Some(seconds * cycles_per_second? / packets as f64));
    }
}

/// The costs of a point from each part's CPU seconds and work during it; `cycles_per_second`
/// turns CPU seconds into cycles.
pub fn costs(
    cpu_seconds: &BTreeMap<String, f64>,
    work: &BTreeMap<String, PartWork>,
    cycles_per_second: Option<f64>,
) -> Costs {
    let cycles_of = |seconds: f64| cycles_per_second.map(|hz| seconds * hz);
    let cycles_per_esp_packet_by_part = work
        .iter()
        .filter(|(_, w)| w.esp_packets > 0)
        .filter_map(|(name, w)| {
            let cycles = cycles_of(*cpu_seconds.get(name)?)?;
            Some((name.clone(), cycles / w.esp_packets as f64))
        })
        .collect();
    let mut stages: BTreeMap<String, StageWork> = BTreeMap::new();
    for part in work.values() {
        for (name, stage) in &part.stages {
            stages.entry(name.clone()).or_default().add(*stage);
        }
    }
    let stage_ns_per_packet: BTreeMap<String, f64> = stages
        .iter()
        .filter_map(|(name, stage)| Some((name.clone(), stage.per_packet()?)))
        .collect();
    let stage_mean_burst = stages
        .iter()
        .filter_map(|(name, stage)| Some((name.clone(), stage.mean_burst()?)))
        .collect();
    let forward_over_decap = match (
        stage_ns_per_packet.get(FORWARD),
        stage_ns_per_packet.get(DECAP),
    ) {
        (Some(forward), Some(decap)) if *decap > 0.0 => Some(forward / decap),
        _ => None,
    };
    Costs {
        cycles_per_esp_packet_by_part,
        esp_core_cycles_per_packet: esp_core(cpu_seconds, work)
            .and_then(|(seconds, packets)| Some(cycles_of(seconds)? / packets as f64)),
        stage_ns_per_packet,
        stage_mean_burst,
        forward_over_decap,
        esp_core_user_cycles_per_packet: None,
    }
}

/// CPU seconds and ESP packets of the parts that are ESP cores: those that decapsulated and
/// forwarded nothing (strongSwan's charon has no stages, so it counts when it did ESP).
fn esp_core(
    cpu_seconds: &BTreeMap<String, f64>,
    work: &BTreeMap<String, PartWork>,
) -> Option<(f64, u64)> {
    let cores: Vec<(&String, &PartWork)> = work
        .iter()
        .filter(|(_, w)| w.esp_packets > 0 && w.stage(FORWARD).packets == 0)
        .collect();
    let packets: u64 = cores.iter().map(|(_, w)| w.esp_packets).sum();
    let seconds: f64 = cores
        .iter()
        .map(|(name, _)| cpu_seconds.get(*name).copied())
        .sum::<Option<f64>>()?;
    (packets > 0).then_some((seconds, packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# TYPE dvipsec_sa_packets_total counter\n\
        dvipsec_sa_packets_total{node=\"MVS1\",spi=\"0x1\",direction=\"inbound\",table=\"own\"} 10\n\
        dvipsec_sa_packets_total{node=\"MVS2\",spi=\"0x2\",direction=\"inbound\",table=\"shadow\"} 400\n\
        dvipsec_sa_packets_total{node=\"MVS2\",spi=\"0x3\",direction=\"outbound\",table=\"shadow\"} 400\n\
        dvipsec_stage_nanoseconds_total{node=\"MVS1\",stage=\"forward\"} 20000\n\
        dvipsec_stage_packets_total{node=\"MVS1\",stage=\"forward\"} 1000\n\
        dvipsec_stage_bursts_total{node=\"MVS1\",stage=\"forward\"} 250\n\
        dvipsec_stage_nanoseconds_total{node=\"MVS2\",stage=\"decap\"} 500000\n\
        dvipsec_stage_packets_total{node=\"MVS2\",stage=\"decap\"} 1000\n\
        dvipsec_drops_total{node=\"MVS2\",stage=\"target\",cause=\"replay\"} 3\n";

    #[test]
    fn the_exposition_gives_each_node_its_esp_packets_and_stages() {
        let parts = parts_from_exposition(EXPOSITION);
        assert_eq!(parts["MVS1"].esp_packets, 10);
        assert_eq!(parts["MVS2"].esp_packets, 800);
        assert_eq!(
            parts["MVS1"].stage(FORWARD),
            StageWork {
                nanoseconds: 20000,
                packets: 1000,
                bursts: 250
            }
        );
        assert_eq!(parts["MVS2"].stage(DECAP).packets, 1000);
        assert_eq!(parts["MVS1"].stage(FORWARD).bursts, 250);
        assert!(
            !parts["MVS2"].stages.contains_key("target"),
            "drops are not stages"
        );
    }

    #[test]
    fn costs_divide_the_deltas_and_leave_the_distributor_out_of_the_esp_core() {
        let before = parts_from_exposition("");
        let after = parts_from_exposition(EXPOSITION);
        let work: BTreeMap<String, PartWork> = after
            .iter()
            .map(|(name, w)| {
                let then = before.get(name).cloned().unwrap_or_default();
                (name.clone(), w.since(&then))
            })
            .collect();
        let cpu = BTreeMap::from([("MVS1".to_string(), 0.5), ("MVS2".to_string(), 0.002)]);
        let costs = costs(&cpu, &work, Some(1e9));
        // MVS2: 2e6 cycles over 800 packets; MVS1 distributes, so it is not an ESP core.
        assert_eq!(costs.esp_core_cycles_per_packet, Some(2500.0));
        assert_eq!(costs.cycles_per_esp_packet_by_part["MVS1"], 5e8 / 10.0);
        assert_eq!(costs.stage_ns_per_packet[FORWARD], 20.0);
        assert_eq!(costs.stage_ns_per_packet[DECAP], 500.0);
        assert_eq!(costs.forward_over_decap, Some(0.04));
        assert_eq!(costs.stage_mean_burst[FORWARD], 4.0);
        assert!(
            !costs.stage_mean_burst.contains_key(DECAP),
            "no bursts counted for decap"
        );
        assert_eq!(costs.cycles_per_esp_packet_by_part.len(), 2);
        let mut costs = costs;
        let user = BTreeMap::from([("MVS2".to_string(), 0.0004)]);
        costs.add_user_space(&user, &work, Some(1e9));
        assert_eq!(costs.esp_core_user_cycles_per_packet, Some(500.0));
    }

    #[test]
    fn without_a_clock_rate_or_stages_the_figures_are_absent() {
        let work = parts_from_exposition(EXPOSITION);
        let cpu = BTreeMap::from([("MVS2".to_string(), 1.0)]);
        let costs = costs(&cpu, &work, None);
        assert_eq!(costs.esp_core_cycles_per_packet, None);
        assert!(costs.cycles_per_esp_packet_by_part.is_empty());
        let charon_only = BTreeMap::from([(
            "charon".to_string(),
            PartWork {
                esp_packets: 100,
                stages: BTreeMap::new(),
            },
        )]);
        let cpu = BTreeMap::from([("charon".to_string(), 0.001)]);
        let costs = super::costs(&cpu, &charon_only, Some(1e9));
        assert_eq!(costs.forward_over_decap, None);
        assert_eq!(costs.esp_core_cycles_per_packet, Some(1e4));
    }

    #[test]
    fn a_stage_with_a_few_stray_packets_stands_for_nothing() {
        let stray = StageWork {
            nanoseconds: 1_000_000,
            packets: MIN_STAGE_PACKETS - 1,
            bursts: 3,
        };
        assert_eq!(stray.per_packet(), None);
        assert_eq!(stray.mean_burst(), None);
        let work = BTreeMap::from([(
            "MVS2".to_string(),
            PartWork {
                esp_packets: 0,
                stages: BTreeMap::from([(DECAP.to_string(), stray)]),
            },
        )]);
        let costs = costs(&BTreeMap::new(), &work, Some(1e9));
        assert!(costs.stage_ns_per_packet.is_empty());
        assert_eq!(costs.forward_over_decap, None);
    }

    #[test]
    fn a_counter_going_back_counts_as_no_work() {
        let before = PartWork {
            esp_packets: 50,
            stages: BTreeMap::from([(
                DECAP.to_string(),
                StageWork {
                    nanoseconds: 9,
                    packets: 9,
                    bursts: 9,
                },
            )]),
        };
        let after = PartWork::default();
        assert_eq!(after.since(&before).esp_packets, 0);
    }
}
