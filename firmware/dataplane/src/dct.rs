//! The distributed connection table (DCT): which target holds each distributed connection.
//!
//! Entries are keyed by the inner 5-tuple that peek reads. Peek output is unauthenticated, so
//! everything here must stay harmless under forged packets: the table is bounded (a full table
//! drops new connections and counts it, it never evicts a live one), an entry created by a SYN is
//! only half open and expires quickly unless more traffic follows, and a FIN or RST does not delete
//! the entry at once but starts a short linger that later ordinary traffic cancels. A forged FIN
//! therefore cannot tear down a connection that is still talking. Time is passed in (µs).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// The target a connection is distributed to (an index the distributor's configuration assigns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

/// The inner 5-tuple of a connection, as seen from the peer (source) to the DVIPA (destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Inner source address (the remote peer's side).
    pub src: IpAddr,
    /// Inner destination address (the DVIPA).
    pub dst: IpAddr,
    /// Transport protocol (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Source port.
    pub src_port: u16,
    /// Destination port (the distributed port).
    pub dst_port: u16,
}

/// The most words [`FlowKey::words`] gives: the tags, protocol and ports, then two IPv6
/// addresses of two words each.
const KEY_WORDS: usize = 5;

impl FlowKey {
    /// The key as whole 64-bit words, and how many: first the addresses' family tags with the
    /// protocol and ports, then the addresses (both IPv4 ones in one word). The first word says
    /// how the rest is laid out, so the words tell the key apart from any other.
    #[inline]
    fn words(&self) -> ([u64; KEY_WORDS], usize) {
        let tag = |address: &IpAddr| match address {
            IpAddr::V4(_) => 4u64,
            IpAddr::V6(_) => 6u64,
        };
        let mut words = [0u64; KEY_WORDS];
        words[0] = tag(&self.src) << 56
            | tag(&self.dst) << 48
            | u64::from(self.protocol) << 32
            | u64::from(self.src_port) << 16
            | u64::from(self.dst_port);
        let count = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                words[1] = u64::from(src.to_bits()) << 32 | u64::from(dst.to_bits());
                2
            }
            (src, dst) => {
                for (at, address) in [(1, src), (3, dst)] {
                    let bits = match address {
                        IpAddr::V4(v4) => u128::from(v4.to_bits()),
                        IpAddr::V6(v6) => v6.to_bits(),
                    };
                    words[at] = (bits >> 64) as u64;
                    words[at + 1] = bits as u64;
                }
                KEY_WORDS
            }
        };
        (words, count)
    }
}

/// The key as whole words, built in registers: a keyed hash pays per write call (the derived
/// hash made one per field and address part), and a key first packed byte by byte into memory
/// and then read back as words stalled each lookup on the reload.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (words, count) = self.words();
        for word in &words[..count] {
            state.write_u64(*word);
        }
    }
}

/// TCP flag bits the table reacts to.
pub mod tcp_flags {
    /// FIN: the sender has finished.
    pub const FIN: u8 = 0x01;
    /// SYN: a connection request.
    pub const SYN: u8 = 0x02;
    /// RST: the connection is reset.
    pub const RST: u8 = 0x04;
}

/// Sizes and timeouts of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DctConfig {
    /// Most entries at once; a new connection beyond this is dropped and counted.
    pub capacity: usize,
    /// An established entry with no traffic for this long ends.
    pub idle_timeout_us: u64,
    /// An entry that has seen only its opening packet ends after this long without more traffic.
    pub half_open_timeout_us: u64,
    /// After a FIN or RST the entry lingers this long (so the last segments still reach the
    /// target), unless ordinary traffic shows the connection is still alive.
    pub fin_linger_us: u64,
}

impl Default for DctConfig {
    fn default() -> Self {
        DctConfig {
            capacity: 65_536,
            idle_timeout_us: 300_000_000,
            half_open_timeout_us: 5_000_000,
            fin_linger_us: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    HalfOpen,
    Established,
    Closing,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    target: TargetId,
    last_seen_us: u64,
    state: EntryState,
}

/// What the table counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DctCounters {
    /// Entries added.
    pub added: u64,
    /// New connections refused because the table was full.
    pub full_drops: u64,
    /// Entries that ended by idle (or half-open) timeout.
    pub expired: u64,
    /// Entries that ended after a FIN or RST and its linger.
    pub closed: u64,
    /// Entries put back from a target's connection report after a takeover.
    pub restored: u64,
}

/// Why an entry could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DctError {
    /// The table holds `capacity` entries already.
    #[error("distributed connection table is full ({capacity} entries)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
}

/// The DCT's hash: aHash, keyed at random for each table (its default `runtime-rng` seeds the
/// keys from the OS).
///
/// The keys are attacker-chosen: peek output is unauthenticated and CTR mode lets an on-path
/// sender flip inner header bits at will, so the hash must keep forged 5-tuples from aiming at
/// one bucket. aHash is a keyed hash that its authors design and maintain for exactly this
/// (DoS resistance in in-memory hash maps, not a MAC); its output never leaves the box, so the
/// keys can only be probed through timing. The standard SipHash-1-3 is the stronger PRF; aHash
/// takes about 11 ns a packet (of some 83) off the distributor's forward stage (BENCHMARKS.md).
/// foldhash was not taken: its authors advise against it where an attacker may study the
/// program to build colliding inputs. Whatever the hash, the table is bounded and a full table
/// is a counted drop.
pub type FlowHasher = ahash::RandomState;

/// The distributed connection table.
#[derive(Debug)]
pub struct Dct {
    entries: HashMap<FlowKey, Entry, FlowHasher>,
    config: DctConfig,
    counters: DctCounters,
}

impl Dct {
    /// An empty table; its storage for `config.capacity` entries is allocated here, once.
    pub fn new(config: DctConfig) -> Self {
        Dct {
            entries: HashMap::with_capacity_and_hasher(config.capacity, FlowHasher::new()),
            config,
            counters: DctCounters::default(),
        }
    }

    /// Entries currently held (including ones that expired but were not swept yet).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the table counted so far.
    pub fn counters(&self) -> DctCounters {
        self.counters
    }

    /// The target of a live entry, without touching it.
    pub fn target_of(&self, key: &FlowKey, now_us: u64) -> Option<TargetId> {
        let entry = self.entries.get(key)?;
        (!self.is_over(entry, now_us)).then_some(entry.target)
    }

    /// Looks up the connection of a packet seen at `now_us` with TCP flags `flags` (None for
    /// UDP) and records the packet against it. Returns the entry's target, or None when there is
    /// no live entry (an expired one is removed and counted here).
    pub fn touch(&mut self, key: &FlowKey, flags: Option<u8>, now_us: u64) -> Option<TargetId> {
        // One lookup: the key's hash is most of a touch's cost.
        let live = self.entries.get_mut(key)?;
        if entry_is_over(&self.config, live, now_us) {
            let state = live.state;
            self.remove_ended(key, state);
            return None;
        }
        live.last_seen_us = now_us;
        live.state = next_state(live.state, flags);
        Some(live.target)
    }

    /// Adds a half-open entry for a new connection to `target`.
    pub fn insert(&mut self, key: FlowKey, target: TargetId, now_us: u64) -> Result<(), DctError> {
        if self.entries.len() >= self.config.capacity && !self.entries.contains_key(&key) {
            self.expire(now_us);
        }
        if self.entries.len() >= self.config.capacity && !self.entries.contains_key(&key) {
            self.counters.full_drops += 1;
            return Err(DctError::Full {
                capacity: self.config.capacity,
            });
        }
        let entry = Entry {
            target,
            last_seen_us: now_us,
            state: EntryState::HalfOpen,
        };
        if self.entries.insert(key, entry).is_none() {
            self.counters.added += 1;
        }
        Ok(())
    }

    /// Puts back a connection that `target` reported holding (CONN_REPORT after a takeover):
    /// established at once, since no SYN will come for it, and assigned to `target` even if
    /// the table had it elsewhere (the target holds the connection's state). Subject to the
    /// capacity like [`Dct::insert`].
    pub fn restore(&mut self, key: FlowKey, target: TargetId, now_us: u64) -> Result<(), DctError> {
        self.insert(key, target, now_us)?;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.state = EntryState::Established;
        }
        self.counters.restored += 1;
        Ok(())
    }

    /// Removes an entry (the target reported the connection gone). Returns whether it existed.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Removes every entry that has timed out or finished lingering by `now_us`; returns how many.
    pub fn expire(&mut self, now_us: u64) -> usize {
        let before = self.entries.len();
        let (mut expired, mut closed) = (0, 0);
        let config = self.config;
        self.entries.retain(|_, entry| {
            let over = entry_is_over(&config, entry, now_us);
            if over && entry.state == EntryState::Closing {
                closed += 1;
            } else if over {
                expired += 1;
            }
            !over
        });
        self.counters.expired += expired;
        self.counters.closed += closed;
        before - self.entries.len()
    }

    fn is_over(&self, entry: &Entry, now_us: u64) -> bool {
        entry_is_over(&self.config, entry, now_us)
    }

    fn remove_ended(&mut self, key: &FlowKey, state: EntryState) {
        self.entries.remove(key);
        if state == EntryState::Closing {
            self.counters.closed += 1;
        } else {
            self.counters.expired += 1;
        }
    }

    /// The flows held (live or not yet swept) and their targets, in no particular order; for
    /// operator listings.
    pub fn entries(&self) -> impl Iterator<Item = (&FlowKey, TargetId)> + '_ {
        self.entries.iter().map(|(key, entry)| (key, entry.target))
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }
}

fn entry_is_over(config: &DctConfig, entry: &Entry, now_us: u64) -> bool {
    let limit = match entry.state {
        EntryState::HalfOpen => config.half_open_timeout_us,
        EntryState::Established => config.idle_timeout_us,
        EntryState::Closing => config.fin_linger_us,
    };
    now_us.saturating_sub(entry.last_seen_us) >= limit
}

/// FIN or RST starts the linger; any other non-SYN packet (or any UDP datagram) shows the
/// connection alive; a retransmitted SYN changes nothing.
fn next_state(state: EntryState, flags: Option<u8>) -> EntryState {
    match flags {
        Some(f) if f & (tcp_flags::FIN | tcp_flags::RST) != 0 => EntryState::Closing,
        Some(f) if f & tcp_flags::SYN != 0 && state == EntryState::HalfOpen => EntryState::HalfOpen,
        _ => EntryState::Established,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn packed(key: &FlowKey) -> Vec<u64> {
        let (words, count) = key.words();
        words[..count].to_vec()
    }

    #[test]
    fn packed_keys_differ_whenever_keys_differ() {
        let base = key(1000);
        let v6 = FlowKey {
            src: "::ffff:198.51.100.7".parse().unwrap(),
            dst: "::ffff:203.0.113.10".parse().unwrap(),
            ..base
        };
        let mixed = FlowKey {
            dst: "::ffff:203.0.113.10".parse().unwrap(),
            ..base
        };
        let variants = [
            base,
            v6,
            mixed,
            FlowKey {
                protocol: 17,
                ..base
            },
            FlowKey {
                src_port: 1000,
                dst_port: 1000,
                ..base
            },
            FlowKey {
                src: base.dst,
                dst: base.src,
                ..base
            },
            key(1001),
        ];
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(packed(a), packed(b), "{a:?} and {b:?} pack alike");
            }
        }
        assert_eq!(packed(&base), packed(&key(1000)));
        assert_eq!(packed(&v6).len(), KEY_WORDS);
        assert_eq!(packed(&mixed).len(), KEY_WORDS);
        assert_eq!(packed(&base).len(), 2);
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: "198.51.100.7".parse().unwrap(),
            dst: "203.0.113.10".parse().unwrap(),
            protocol: 6,
            src_port: port,
            dst_port: 60,
        }
    }

    fn table(capacity: usize) -> Dct {
        Dct::new(DctConfig {
            capacity,
            idle_timeout_us: 60 * SEC,
            half_open_timeout_us: 5 * SEC,
            fin_linger_us: 2 * SEC,
        })
    }

    #[test]
    fn entry_steers_later_packets_to_its_target() {
        let mut dct = table(4);
        dct.insert(key(1000), TargetId(2), 0).unwrap();
        assert_eq!(dct.touch(&key(1000), Some(0x10), SEC), Some(TargetId(2)));
        assert_eq!(dct.touch(&key(1001), Some(0x10), SEC), None);
        assert_eq!(dct.counters().added, 1);
    }

    #[test]
    fn half_open_entry_expires_fast_established_one_lasts() {
        let mut dct = table(4);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.insert(key(2), TargetId(1), 0).unwrap();
        // key(2) sees an ACK: established, idle timeout 60 s from then.
        assert!(dct.touch(&key(2), Some(0x10), SEC).is_some());
        assert_eq!(dct.target_of(&key(1), 5 * SEC - 1), Some(TargetId(0)));
        assert_eq!(dct.expire(5 * SEC), 1);
        assert_eq!(dct.target_of(&key(1), 5 * SEC), None);
        assert_eq!(dct.target_of(&key(2), 60 * SEC), Some(TargetId(1)));
        assert_eq!(dct.touch(&key(2), Some(0x10), 61 * SEC), None);
        assert_eq!(dct.counters().expired, 2);
        assert!(dct.is_empty());
    }

    #[test]
    fn fin_ends_the_entry_after_the_linger() {
        let mut dct = table(4);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.touch(&key(1), Some(0x10), SEC);
        assert_eq!(dct.touch(&key(1), Some(0x11), 2 * SEC), Some(TargetId(0)));
        // The last ACK during the linger still goes to the target...
        assert_eq!(dct.target_of(&key(1), 3 * SEC), Some(TargetId(0)));
        assert_eq!(dct.expire(4 * SEC), 1);
        assert_eq!(dct.counters().closed, 1);
        assert_eq!(dct.touch(&key(1), Some(0x10), 4 * SEC), None);
    }

    #[test]
    fn rst_ends_the_entry_too() {
        let mut dct = table(4);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.touch(&key(1), Some(tcp_flags::RST), SEC);
        assert_eq!(dct.touch(&key(1), Some(0x10), 3 * SEC), None);
        assert_eq!(dct.counters().closed, 1);
    }

    #[test]
    fn traffic_after_a_forged_fin_keeps_the_connection() {
        let mut dct = table(4);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.touch(&key(1), Some(0x10), SEC);
        dct.touch(&key(1), Some(tcp_flags::FIN), 2 * SEC);
        // The real connection keeps talking inside the linger: back to established.
        dct.touch(&key(1), Some(0x18), 3 * SEC);
        assert_eq!(dct.expire(10 * SEC), 0);
        assert_eq!(dct.target_of(&key(1), 10 * SEC), Some(TargetId(0)));
    }

    #[test]
    fn full_table_drops_and_counts_new_connections_but_keeps_live_ones() {
        let mut dct = table(2);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.insert(key(2), TargetId(1), 0).unwrap();
        assert_eq!(
            dct.insert(key(3), TargetId(0), SEC),
            Err(DctError::Full { capacity: 2 })
        );
        assert_eq!(dct.counters().full_drops, 1);
        assert_eq!(dct.target_of(&key(1), SEC), Some(TargetId(0)));
        // Once the half-open entries time out there is room again.
        dct.insert(key(3), TargetId(0), 6 * SEC).unwrap();
        assert_eq!(dct.len(), 1);
    }

    #[test]
    fn restored_connections_are_established_without_a_syn() {
        let mut dct = table(2);
        dct.insert(key(1), TargetId(0), 0).unwrap();
        dct.restore(key(1), TargetId(1), 0).unwrap();
        dct.restore(key(2), TargetId(0), 0).unwrap();
        assert_eq!(dct.counters().restored, 2);
        // Past the half-open timeout they live on: they count as established.
        assert_eq!(dct.touch(&key(1), Some(0x10), 10 * SEC), Some(TargetId(1)));
        assert_eq!(dct.target_of(&key(2), 10 * SEC), Some(TargetId(0)));
        assert_eq!(
            dct.restore(key(3), TargetId(0), 10 * SEC),
            Err(DctError::Full { capacity: 2 })
        );
        assert_eq!(dct.counters().restored, 2);
    }

    #[test]
    fn syn_flood_is_bounded_and_drains_by_itself() {
        let mut dct = table(100);
        let mut refused = 0;
        for port in 0..1000u16 {
            if dct.insert(key(port), TargetId(0), u64::from(port)).is_err() {
                refused += 1;
            }
        }
        assert_eq!(dct.len(), 100);
        assert_eq!(refused, 900);
        assert_eq!(dct.expire(10 * SEC), 100);
    }
}
