//! Replay-safe allocation of outbound sequence numbers, sans-io (time is passed in).
//!
//! The peer's replay window `W` is not negotiated, so the numbers that several targets take from
//! one counter must reach the peer nearly in the order they were handed out. A target either takes
//! one number per packet (the default on shared memory) or a bounded lease of up to `B` numbers,
//! and throws away what is left of a lease `T` microseconds after taking it.
//!
//! # The bound
//!
//! Assumptions: `K` targets send on the SA; a target takes a lease only when it has a packet to
//! send, uses the numbers in order and never sends one later than `T` µs after the lease was taken;
//! each target sends at most `r` packets per µs; the delay from send to the peer's replay check is a
//! common base plus a variable part in `[0, J]` µs.
//!
//! A number `m > n` can reach the peer before `n` only if `m` was handed out in
//! `[a_n, a_n + T + J)`, where `a_n` is when `n`'s lease was taken: `n` arrives by
//! `a_n + T + base + J` and `m` no earlier than `a_m + base`. A target takes its next lease only
//! when the previous one is used up (at least `B / r` later) or expired (`T` later), so in a span
//! of `L = T + J` it takes at most `1 + L * max(r, B / T) / B` leases, that is at most
//! `B + L * max(r, B / T)` numbers. The numbers between `n` and `m` were all handed out in that
//! span, so `m - n < W`, and `n` is still inside the window when it arrives, whenever
//!
//! ```text
//!     K * (B + (T + J) * max(r, B / T)) <= W
//! ```
//!
//! [`LeasePolicy::bounded`] picks the largest `B` that satisfies it (for `r*(T+J)` small and
//! `J = T` this is `B = W / (3K)`, e.g. 10 for W = 128 and K = 4). Per-packet allocation is the
//! case `B = 1`; it is subject to the same inequality, so a cluster whose `K * r * (T + J)`
//! reaches `W` cannot be made replay-safe by any lease size: the delays must shrink.

use crate::error::CfError;
use crate::facility::{SeqRange, SequenceFacility, SlotId};

const MICROS_PER_SECOND: u128 = 1_000_000;

/// What the bound is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseParams {
    /// The peer's anti-replay window `W`, in packets.
    pub peer_window: u32,
    /// The number of targets `K` sending on the SA.
    pub targets: u32,
    /// How long a lease lives, `T` µs.
    pub lease_lifetime_us: u64,
    /// The variable part of the delay to the peer, `J` µs.
    pub delay_jitter_us: u64,
    /// The highest rate one target sends at, `r` packets per second.
    pub max_target_rate_pps: u64,
}

impl LeaseParams {
    /// Whether leases of `size` numbers keep every packet inside the peer's window.
    pub fn is_replay_safe(&self, size: u32) -> bool {
        if self.lease_lifetime_us == 0 || self.targets == 0 {
            return false;
        }
        // Scaled by T * 10^6 to stay in integers:
        // K * (B*T*10^6 + L * max(B*10^6, r*T)) <= W*T*10^6.
        let lifetime = u128::from(self.lease_lifetime_us);
        let span = lifetime + u128::from(self.delay_jitter_us);
        let size = u128::from(size);
        let per_lease = size * MICROS_PER_SECOND;
        let per_rate = u128::from(self.max_target_rate_pps) * lifetime;
        let needed = u128::from(self.targets)
            * (size * lifetime * MICROS_PER_SECOND + span * per_lease.max(per_rate));
        needed <= u128::from(self.peer_window) * lifetime * MICROS_PER_SECOND
    }

    /// The largest replay-safe lease size, if even one number per packet is safe.
    pub fn largest_safe_lease(&self) -> Option<u32> {
        let mut low = 0u32; // safe (vacuously)
        let mut high = self.peer_window.saturating_add(1); // unsafe: K*B > W
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.is_replay_safe(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        (low >= 1).then_some(low)
    }
}

/// How a target takes numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// Numbers per lease (1: one number per packet).
    pub size: u32,
    /// The unused rest of a lease is dropped this long after it was taken.
    pub lifetime_us: u64,
}

impl LeasePolicy {
    /// One number per packet, taken when the packet is sent.
    pub const fn per_packet() -> Self {
        LeasePolicy {
            size: 1,
            lifetime_us: u64::MAX,
        }
    }

    /// The largest lease the bound allows for `params`.
    pub fn bounded(params: &LeaseParams) -> Result<Self, CfError> {
        let size = params.largest_safe_lease().ok_or(CfError::InvalidArgument(
            "peer window too small for this many targets, rate and delay jitter",
        ))?;
        Ok(LeasePolicy {
            size,
            lifetime_us: params.lease_lifetime_us,
        })
    }

    /// A lease of any size, without checking the bound (to show what an unsafe size does).
    pub const fn unchecked(size: u32, lifetime_us: u64) -> Self {
        LeasePolicy { size, lifetime_us }
    }
}

/// The lease a target holds: numbers `next..end`, taken at `taken_at_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    next: u64,
    end: u64,
    taken_at_us: u64,
}

/// Hands out numbers from leases under a policy; sans-io: the caller passes the time and the
/// function that takes a fresh range.
#[derive(Debug, Clone)]
pub struct LeaseHolder {
    policy: LeasePolicy,
    lease: Option<Lease>,
    dropped: u64,
}

impl LeaseHolder {
    pub fn new(policy: LeasePolicy) -> Self {
        LeaseHolder {
            policy,
            lease: None,
            dropped: 0,
        }
    }

    /// How many leased numbers were thrown away unused because their lease expired.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Throws the rest of the lease away (counted as dropped): after a fence, numbers taken
    /// earlier must not be sent.
    pub fn discard(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.dropped += lease.end - lease.next;
        }
    }

    /// The number for a packet sent at `now_us`.
    pub fn next(
        &mut self,
        now_us: u64,
        take: impl FnOnce(u32) -> Result<SeqRange, CfError>,
    ) -> Result<u64, CfError> {
        if let Some(lease) = self.lease.as_mut() {
            let fresh = now_us.saturating_sub(lease.taken_at_us) < self.policy.lifetime_us;
            if fresh && lease.next < lease.end {
                let seq = lease.next;
                lease.next += 1;
                return Ok(seq);
            }
            self.dropped += lease.end - lease.next;
            self.lease = None;
        }
        let range = take(self.policy.size)?;
        if range.count == 0 {
            return Err(CfError::InvalidArgument("facility returned an empty range"));
        }
        self.lease = Some(Lease {
            next: range.first + 1,
            end: range.first + u64::from(range.count),
            taken_at_us: now_us,
        });
        Ok(range.first)
    }
}

/// A target's sequence source for one SA: a facility, a slot and a lease policy.
pub struct LeasedSequencer<'f, F: SequenceFacility + ?Sized> {
    facility: &'f F,
    slot: SlotId,
    holder: LeaseHolder,
}

impl<'f, F: SequenceFacility + ?Sized> LeasedSequencer<'f, F> {
    pub fn new(facility: &'f F, slot: SlotId, policy: LeasePolicy) -> Self {
        LeasedSequencer {
            facility,
            slot,
            holder: LeaseHolder::new(policy),
        }
    }

    /// The sequence number for a packet sent at `now_us`. Once the handle is fenced, the rest
    /// of a lease is thrown away and every call fails: a fenced sender sends nothing more, not
    /// even numbers it holds.
    pub fn next(&mut self, now_us: u64) -> Result<u64, CfError> {
        let (facility, slot) = (self.facility, self.slot);
        if let Err(fenced) = facility.check_epoch() {
            self.holder.discard();
            return Err(fenced);
        }
        self.holder.next(now_us, |n| facility.fetch_add(slot, n))
    }

    /// Numbers thrown away unused (expired or fenced leases).
    pub fn dropped(&self) -> u64 {
        self.holder.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: u32, targets: u32, rate: u64) -> LeaseParams {
        LeaseParams {
            peer_window: window,
            targets,
            lease_lifetime_us: 50,
            delay_jitter_us: 50,
            max_target_rate_pps: rate,
        }
    }

    #[test]
    fn bound_matches_the_documented_example() {
        // r*(T+J) = 0.1 * 100 = 10 <= 2B, so B = W / (3K) rounded down.
        assert_eq!(params(128, 4, 100_000).largest_safe_lease(), Some(10));
        assert_eq!(params(128, 1, 0).largest_safe_lease(), Some(42));
        assert_eq!(params(32, 4, 0).largest_safe_lease(), Some(2));
    }

    #[test]
    fn high_rate_makes_every_size_unsafe() {
        // 4 targets * 1 packet/µs * 100 µs = 400 > 128: nothing helps.
        assert_eq!(params(128, 4, 1_000_000).largest_safe_lease(), None);
        assert!(LeasePolicy::bounded(&params(128, 4, 1_000_000)).is_err());
    }

    #[test]
    fn holder_expires_and_counts_the_unused_rest() {
        let mut holder = LeaseHolder::new(LeasePolicy::unchecked(4, 10));
        let mut counter = 1u64;
        let mut take = |n: u32| {
            let range = SeqRange {
                first: counter,
                count: n,
            };
            counter += u64::from(n);
            Ok(range)
        };
        assert_eq!(holder.next(0, &mut take).unwrap(), 1);
        assert_eq!(holder.next(5, &mut take).unwrap(), 2);
        // Expired at 10: 3 and 4 are dropped.
        assert_eq!(holder.next(10, &mut take).unwrap(), 5);
        assert_eq!(holder.dropped(), 2);
        for expected in 6..=8 {
            assert_eq!(holder.next(11, &mut take).unwrap(), expected);
        }
        assert_eq!(holder.next(11, &mut take).unwrap(), 9);
        assert_eq!(holder.dropped(), 2);
    }
}
