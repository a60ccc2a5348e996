//! Target selection for new connections, weighted by the targets' reported load as WLM does.
//!
//! Each target reports a weight (its free capacity, from a TARGET_LOAD-style message). A new
//! connection goes to an eligible target by smooth weighted round-robin over the fresh weights:
//! over any run of connections each target's share follows its weight, and the picks interleave
//! instead of coming in blocks. When no eligible target has a fresh, non-zero weight (no reports
//! yet, reports too old, or every target says it is full), selection falls back to plain
//! round-robin so connections are still served. Time is passed in (µs).

use crate::dct::TargetId;

/// A load report from a target, reduced to what selection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLoad {
    /// Free capacity in arbitrary units (WLM weight); 0 means "send me nothing new".
    pub weight: u32,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: TargetId,
    weight: u32,
    reported_at_us: Option<u64>,
    /// Smooth weighted round-robin credit.
    credit: i64,
}

/// Picks targets for new connections.
#[derive(Debug, Clone)]
pub struct TargetSelector {
    candidates: Vec<Candidate>,
    stale_after_us: u64,
    round_robin_next: usize,
}

impl TargetSelector {
    /// A selector for the targets `ids`; a report older than `stale_after_us` is ignored.
    pub fn new(ids: &[TargetId], stale_after_us: u64) -> Self {
        TargetSelector {
            candidates: ids
                .iter()
                .map(|&id| Candidate {
                    id,
                    weight: 0,
                    reported_at_us: None,
                    credit: 0,
                })
                .collect(),
            stale_after_us,
            round_robin_next: 0,
        }
    }

    /// Records a load report from `target` received at `now_us`. Unknown targets are ignored
    /// (returns false).
    pub fn report_load(&mut self, target: TargetId, load: TargetLoad, now_us: u64) -> bool {
        match self.candidates.iter_mut().find(|c| c.id == target) {
            Some(candidate) => {
                candidate.weight = load.weight;
                candidate.reported_at_us = Some(now_us);
                true
            }
            None => false,
        }
    }

    /// Picks one of `eligible` (the targets serving the connection's DVIPA and port) at `now_us`.
    /// Returns None when `eligible` names no known target.
    pub fn select(&mut self, eligible: &[TargetId], now_us: u64) -> Option<TargetId> {
        self.select_weighted(eligible, now_us)
            .or_else(|| self.select_round_robin(eligible))
    }

    fn is_fresh(&self, candidate: &Candidate, now_us: u64) -> bool {
        candidate
            .reported_at_us
            .is_some_and(|at| now_us.saturating_sub(at) < self.stale_after_us)
    }

    fn weight_now(&self, candidate: &Candidate, eligible: &[TargetId], now_us: u64) -> i64 {
        if eligible.contains(&candidate.id) && self.is_fresh(candidate, now_us) {
            i64::from(candidate.weight)
        } else {
            0
        }
    }

    fn select_weighted(&mut self, eligible: &[TargetId], now_us: u64) -> Option<TargetId> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for index in 0..self.candidates.len() {
            let weight = self.weight_now(&self.candidates[index], eligible, now_us);
            if weight == 0 {
                continue;
            }
            total += weight;
            self.candidates[index].credit += weight;
            let credit = self.candidates[index].credit;
            if best.is_none_or(|b| credit > self.candidates[b].credit) {
                best = Some(index);
            }
        }
        let chosen = &mut self.candidates[best?];
        chosen.credit -= total;
        Some(chosen.id)
    }

    fn select_round_robin(&mut self, eligible: &[TargetId]) -> Option<TargetId> {
        let count = self.candidates.len();
        for step in 0..count {
            let index = (self.round_robin_next + step) % count;
            if eligible.contains(&self.candidates[index].id) {
                self.round_robin_next = (index + 1) % count;
                return Some(self.candidates[index].id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [TargetId; 3] = [TargetId(0), TargetId(1), TargetId(2)];

    fn picks(selector: &mut TargetSelector, eligible: &[TargetId], n: usize) -> [usize; 3] {
        let mut counts = [0; 3];
        for _ in 0..n {
            let id = selector.select(eligible, 10).unwrap();
            counts[usize::from(id.0)] += 1;
        }
        counts
    }

    #[test]
    fn without_reports_it_is_round_robin() {
        let mut selector = TargetSelector::new(&IDS, 1_000);
        let order: Vec<u16> = (0..6)
            .map(|_| selector.select(&IDS, 0).unwrap().0)
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn shares_follow_reported_weights() {
        let mut selector = TargetSelector::new(&IDS, 1_000);
        selector.report_load(TargetId(0), TargetLoad { weight: 1 }, 0);
        selector.report_load(TargetId(1), TargetLoad { weight: 3 }, 0);
        selector.report_load(TargetId(2), TargetLoad { weight: 6 }, 0);
        assert_eq!(picks(&mut selector, &IDS, 100), [10, 30, 60]);
    }

    #[test]
    fn zero_weight_target_gets_nothing_while_others_have_capacity() {
        let mut selector = TargetSelector::new(&IDS, 1_000);
        selector.report_load(TargetId(0), TargetLoad { weight: 0 }, 0);
        selector.report_load(TargetId(1), TargetLoad { weight: 5 }, 0);
        selector.report_load(TargetId(2), TargetLoad { weight: 5 }, 0);
        assert_eq!(picks(&mut selector, &IDS, 10), [0, 5, 5]);
    }

    #[test]
    fn stale_reports_fall_back_to_round_robin() {
        let mut selector = TargetSelector::new(&IDS, 5);
        selector.report_load(TargetId(2), TargetLoad { weight: 9 }, 0);
        // At time 10 the report is 10 µs old, older than 5: ignored.
        assert_eq!(picks(&mut selector, &IDS, 6), [2, 2, 2]);
    }

    #[test]
    fn only_eligible_targets_are_picked() {
        let mut selector = TargetSelector::new(&IDS, 1_000);
        let eligible = [TargetId(1), TargetId(2)];
        assert_eq!(picks(&mut selector, &eligible, 4), [0, 2, 2]);
        selector.report_load(TargetId(0), TargetLoad { weight: 100 }, 0);
        selector.report_load(TargetId(1), TargetLoad { weight: 1 }, 0);
        assert_eq!(picks(&mut selector, &eligible, 4), [0, 4, 0]);
        assert_eq!(selector.select(&[TargetId(9)], 0), None);
        assert!(!selector.report_load(TargetId(9), TargetLoad { weight: 1 }, 0));
    }
}
