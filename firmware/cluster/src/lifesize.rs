//! Lifesize accounting: targets report use in batches, the distributor sums it per SA and
//! tells IKE when a soft or hard limit is reached; the reporting threshold adapts.

use dvipsec_esp::LifetimeLimits;

/// Bytes and packets used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub packets: u64,
}

impl Usage {
    pub fn add(&mut self, bytes: u64, packets: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.packets = self.packets.saturating_add(packets);
    }
}

/// Where summed use stands against an SA's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LimitLevel {
    Below,
    Soft,
    Hard,
}

/// The level `used` has reached against `limits`.
pub fn level(limits: &LifetimeLimits, used: Usage) -> LimitLevel {
    let reached = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value >= l);
    if reached(limits.hard_bytes, used.bytes) || reached(limits.hard_packets, used.packets) {
        LimitLevel::Hard
    } else if reached(limits.soft_bytes, used.bytes) || reached(limits.soft_packets, used.packets) {
        LimitLevel::Soft
    } else {
        LimitLevel::Below
    }
}

/// Use after which a target reports: `percent` of the hard limits (the soft ones when an SA
/// has no hard limit). `None` on an axis the SA does not limit.
pub fn report_threshold(limits: &LifetimeLimits, percent: u8) -> (Option<u64>, Option<u64>) {
    let share = |limit: Option<u64>| {
        limit.map(|l| {
            let part = u128::from(l) * u128::from(percent) / 100;
            u64::try_from(part).unwrap_or(u64::MAX).max(1)
        })
    };
    (
        share(limits.hard_bytes.or(limits.soft_bytes)),
        share(limits.hard_packets.or(limits.soft_packets)),
    )
}

/// The adaptive reporting threshold (percent of the lifetime).
///
/// Smaller batches let the distributor see use sooner, so IKE starts its rekey earlier. When an
/// SA reached its hard limit before IKE replaced it, the threshold halves (down to `min`);
/// every rekey that came in time raises it by one point again (up to `max`), so reporting
/// traffic shrinks back while rekeys stay on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveThreshold {
    percent: u8,
    min: u8,
    max: u8,
}

impl AdaptiveThreshold {
    /// `percent` is clamped into `min..=max`; `min` is at least 1 and `max` at most 100.
    pub fn new(percent: u8, min: u8, max: u8) -> AdaptiveThreshold {
        let min = min.clamp(1, 100);
        let max = max.clamp(min, 100);
        AdaptiveThreshold {
            percent: percent.clamp(min, max),
            min,
            max,
        }
    }

    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// IKE replaced an SA only after it had hit its hard limit.
    pub fn rekey_late(&mut self) {
        self.percent = (self.percent / 2).max(self.min);
    }

    /// IKE replaced an SA before its hard limit.
    pub fn rekey_on_time(&mut self) {
        self.percent = self.percent.saturating_add(1).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_rekeys_halve_the_threshold_and_timely_ones_raise_it_to_the_max() {
        let mut threshold = AdaptiveThreshold::new(5, 1, 20);
        threshold.rekey_late();
        assert_eq!(threshold.percent(), 2);
        threshold.rekey_late();
        assert_eq!(threshold.percent(), 1);
        threshold.rekey_late();
        assert_eq!(threshold.percent(), 1, "never below the minimum");
        for expected in 2..=20 {
            threshold.rekey_on_time();
            assert_eq!(threshold.percent(), expected);
        }
        threshold.rekey_on_time();
        assert_eq!(threshold.percent(), 20, "never above the maximum");
    }

    #[test]
    fn levels_and_thresholds_follow_the_limits() {
        let limits = LifetimeLimits {
            soft_bytes: Some(900),
            hard_bytes: Some(1000),
            soft_packets: None,
            hard_packets: Some(10),
        };
        let used = |bytes, packets| Usage { bytes, packets };
        assert_eq!(level(&limits, used(899, 9)), LimitLevel::Below);
        assert_eq!(level(&limits, used(900, 0)), LimitLevel::Soft);
        assert_eq!(level(&limits, used(0, 10)), LimitLevel::Hard);
        assert_eq!(report_threshold(&limits, 5), (Some(50), Some(1)));
        assert_eq!(
            report_threshold(&LifetimeLimits::default(), 5),
            (None, None)
        );
    }
}
