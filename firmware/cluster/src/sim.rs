//! An in-memory XCF network with simulated time, latency and seeded random loss, for tests
//! and simulations of whole clusters in one process.

use std::time::Duration;

use zeroize::Zeroizing;

/// A small deterministic generator (SplitMix64): the same seed gives the same losses.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u8) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }
}

/// A frame on its way.
pub struct InFlight {
    pub from: String,
    pub to: String,
    pub bytes: Zeroizing<Vec<u8>>,
    pub arrives: Duration,
}

/// Frames between named nodes; each frame is lost with `loss_percent` chance.
pub struct Network {
    rng: SeededRng,
    loss_percent: u8,
    latency: Duration,
    in_flight: Vec<InFlight>,
    /// Frames the network dropped.
    pub lost: u64,
    /// Frames it delivered.
    pub delivered: u64,
}

impl Network {
    pub fn new(seed: u64, loss_percent: u8, latency: Duration) -> Network {
        Network {
            rng: SeededRng::new(seed),
            loss_percent,
            latency,
            in_flight: Vec::new(),
            lost: 0,
            delivered: 0,
        }
    }

    pub fn send(&mut self, from: &str, to: &str, bytes: Zeroizing<Vec<u8>>, now: Duration) {
        if self.rng.chance(self.loss_percent) {
            self.lost += 1;
            return;
        }
        self.in_flight.push(InFlight {
            from: from.to_owned(),
            to: to.to_owned(),
            bytes,
            arrives: now + self.latency,
        });
    }

    /// Frames that have arrived by `now`, in sending order.
    pub fn arrivals(&mut self, now: Duration) -> Vec<InFlight> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|f| f.arrives <= now);
        self.in_flight = later;
        self.delivered += due.len() as u64;
        due
    }

    /// Drops every frame addressed to `node` (it went down).
    pub fn discard_to(&mut self, node: &str) {
        self.in_flight.retain(|f| f.to != node);
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}
