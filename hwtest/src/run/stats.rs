//! Per-flow statistics of the load generator: what was sent and received, loss, reordering,
//! a latency histogram, and the packets a real receiver's anti-replay window would refuse.

use dvipsec_esp::replay::ReplayWindow;
use serde::Serialize;

/// Sub-buckets per power of two in the latency histogram: values are kept to within 1/16
/// (about 6 %), which is finer than the noise of these machines.
const SUB_BUCKETS: u64 = 16;
const SUB_BITS: u32 = 4;
/// Enough buckets for any u64 nanosecond value.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_BUCKETS as usize;

/// A log-linear histogram of nanosecond values: exact below 16 ns, then 16 buckets per
/// power of two. Fixed size, so recording at line rate never allocates.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    ((exponent - SUB_BITS + 1) as u64 * SUB_BUCKETS + sub) as usize
}

/// The smallest value that falls into `bucket`.
fn bucket_floor(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let exponent = bucket / SUB_BUCKETS + u64::from(SUB_BITS) - 1;
    let sub = bucket % SUB_BUCKETS;
    (1u64 << exponent) | (sub << (exponent - u64::from(SUB_BITS)))
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({} samples)", self.total)
    }
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The value at quantile `q` (0.0..=1.0): the floor of the bucket holding the
    /// ceil(q * n)-th smallest value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_floor(bucket));
            }
        }
        None
    }

    /// The cumulative distribution: (value, fraction of samples at or below it) per
    /// non-empty bucket, for the latency CDF plot.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut seen = 0;
        let mut points = Vec::new();
        for (bucket, count) in self.counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            seen += count;
            points.push((bucket_floor(bucket), seen as f64 / self.total as f64));
        }
        points
    }
}

/// Latency percentiles in microseconds, as they go into the result JSON.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram) -> Option<Self> {
        let us = |q| histogram.quantile(q).map(|ns| ns as f64 / 1000.0);
        Some(Percentiles {
            p50_us: us(0.5)?,
            p90_us: us(0.9)?,
            p99_us: us(0.99)?,
            p999_us: us(0.999)?,
        })
    }
}

/// Counts what an RFC 4303 receiver with a `size`-packet window would refuse: numbers at or
/// below the window's bottom and numbers seen before. Only the counting lives here; the
/// window itself is the ESP engine's.
pub struct ReplayCounter {
    window: ReplayWindow,
    pub rejected: u64,
}

impl ReplayCounter {
    pub fn new(size: u32) -> Self {
        ReplayCounter {
            window: ReplayWindow::new(size),
            rejected: 0,
        }
    }

    /// Feeds one received sequence number; false when the receiver would have dropped it.
    pub fn observe(&mut self, seq: u64) -> bool {
        let accepted = self.window.accept(seq);
        if !accepted {
            self.rejected += 1;
        }
        accepted
    }
}

/// One flow's receive-side tally. The sender's count is kept apart (it lives on another
/// thread) and joined in [`FlowStats::finish`].
#[derive(Default, Clone)]
pub struct FlowReceive {
    pub received: u64,
    pub bytes: u64,
    /// Packets that arrived after one with a higher flow sequence number (RFC 4737's
    /// "reordered" singleton definition).
    pub reordered: u64,
    /// The largest distance, in flow sequence numbers, by which a packet came late.
    pub max_reorder_distance: u64,
    highest: Option<u64>,
    pub latency: Histogram,
}

impl FlowReceive {
    /// Records one received packet with its flow sequence number and one-way+back latency.
    pub fn record(&mut self, flow_seq: u64, bytes: usize, latency_ns: u64) {
        self.received += 1;
        self.bytes += bytes as u64;
        self.latency.record(latency_ns);
        match self.highest {
            Some(top) if flow_seq < top => {
                self.reordered += 1;
                self.max_reorder_distance = self.max_reorder_distance.max(top - flow_seq);
            }
            _ => self.highest = Some(flow_seq),
        }
    }
}

/// The figures of one flow in the result JSON.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStats {
    pub flow: u32,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub reordered: u64,
    pub max_reorder_distance: u64,
    pub latency: Option<Percentiles>,
}

impl FlowStats {
    pub fn finish(flow: u32, sent: u64, receive: &FlowReceive) -> Self {
        let lost = sent.saturating_sub(receive.received);
        FlowStats {
            flow,
            sent,
            received: receive.received,
            lost,
            loss_ratio: if sent == 0 {
                0.0
            } else {
                lost as f64 / sent as f64
            },
            reordered: receive.reordered,
            max_reorder_distance: receive.max_reorder_distance,
            latency: Percentiles::of(&receive.latency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_stay_within_one_sixteenth() {
        for value in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            123_456,
            9_999_999,
            u64::MAX,
        ] {
            let floor = bucket_floor(bucket_of(value));
            assert!(floor <= value, "{value}: floor {floor}");
            assert!(
                (value - floor) as f64 <= value as f64 / 16.0,
                "{value}: floor {floor}"
            );
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        let p = Percentiles::of(&h).expect("samples");
        // Each is the floor of its bucket: within 1/16 below the exact value.
        for (got, exact) in [
            (p.p50_us, 500.0),
            (p.p90_us, 900.0),
            (p.p99_us, 990.0),
            (p.p999_us, 999.0),
        ] {
            assert!(
                got <= exact && got >= exact * 15.0 / 16.0,
                "{got} vs {exact}"
            );
        }
    }

    #[test]
    fn a_single_outlier_shows_only_at_the_top() {
        let mut h = Histogram::default();
        for _ in 0..999 {
            h.record(10_000);
        }
        h.record(50_000_000);
        let p = Percentiles::of(&h).expect("samples");
        assert!(p.p99_us < 11.0, "{p:?}");
        assert!(p.p999_us < 11.0, "{p:?}");
        assert!(h.quantile(1.0).expect("max") > 45_000_000);
        assert_eq!(Percentiles::of(&Histogram::default()), None);
    }

    #[test]
    fn cdf_ends_at_one_and_rises() {
        let mut h = Histogram::default();
        for v in [5u64, 5, 100, 1000] {
            h.record(v);
        }
        let cdf = h.cdf();
        assert_eq!(cdf.len(), 3);
        assert!((cdf[0].1 - 0.5).abs() < 1e-9);
        assert!((cdf[2].1 - 1.0).abs() < 1e-9);
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn reordering_counts_late_packets_and_their_distance() {
        let mut flow = FlowReceive::default();
        for seq in [1u64, 2, 5, 3, 4, 6, 10, 7] {
            flow.record(seq, 100, 1);
        }
        assert_eq!(flow.received, 8);
        assert_eq!(flow.reordered, 3, "3, 4 after 5 and 7 after 10");
        assert_eq!(flow.max_reorder_distance, 3);
        let stats = FlowStats::finish(9, 10, &flow);
        assert_eq!(stats.lost, 2);
        assert!((stats.loss_ratio - 0.2).abs() < 1e-9);
    }

    #[test]
    fn in_order_traffic_is_not_reordered() {
        let mut flow = FlowReceive::default();
        for seq in 1..=1000u64 {
            flow.record(seq, 64, 1);
        }
        assert_eq!(flow.reordered, 0);
        assert_eq!(flow.max_reorder_distance, 0);
    }

    #[test]
    fn replay_counter_refuses_duplicates_and_numbers_below_the_window() {
        let mut counter = ReplayCounter::new(128);
        assert!(counter.observe(1));
        assert!(counter.observe(200));
        // 200 - 128 = 72 is the bottom: 72 and below are out, 73 is still in.
        assert!(!counter.observe(72));
        assert!(counter.observe(73));
        assert!(!counter.observe(73), "duplicate");
        assert!(!counter.observe(1), "below the window");
        assert_eq!(counter.rejected, 3);
    }

    #[test]
    fn replay_counter_accepts_reordering_within_the_window() {
        let mut counter = ReplayCounter::new(128);
        for seq in (1..=128u64).rev() {
            assert!(counter.observe(seq), "{seq}");
        }
        assert_eq!(counter.rejected, 0);
    }
}
