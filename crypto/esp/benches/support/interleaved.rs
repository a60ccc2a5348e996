//! Wall-clock ratios that hold on a loaded machine. Criterion measures one benchmark after the
//! other, so a load change between two of them moves their ratio; here every variant runs for a
//! short slice in turn, many rounds over, so a load change hits all of them alike, and each
//! round gives its own ratio. Shared by the `esp` bench and the `peek_cost` example.

use std::time::{Duration, Instant};

/// One way to process packets, timed per packet.
pub struct Variant<'a> {
    pub name: &'static str,
    /// Packets one call of `run` processes.
    pub packets: usize,
    /// Index of the variant this one is compared with (itself for a baseline).
    pub base: usize,
    pub run: Box<dyn FnMut() + 'a>,
}

/// Median ns per packet of one variant and the median of its per-round ratios to its base.
pub struct Timing {
    pub name: &'static str,
    pub ns_per_packet: f64,
    pub ratio: f64,
}

/// How long each variant runs per round.
const SLICE: Duration = Duration::from_micros(50);

/// Runs `rounds` rounds of every variant, each for about [`SLICE`].
pub fn interleave(variants: &mut [Variant<'_>], rounds: usize) -> Vec<Timing> {
    let reps: Vec<u32> = variants.iter_mut().map(calls_per_slice).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds {
        for ((variant, &reps), sample) in variants.iter_mut().zip(&reps).zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..reps {
                (variant.run)();
            }
            let packets = f64::from(reps) * variant.packets as f64;
            sample.push(start.elapsed().as_nanos() as f64 / packets);
        }
    }
    variants
        .iter()
        .enumerate()
        .map(|(i, variant)| {
            let mut ratios: Vec<f64> = samples[i]
                .iter()
                .zip(&samples[variant.base])
                .map(|(own, base)| own / base)
                .collect();
            Timing {
                name: variant.name,
                ns_per_packet: median(&mut samples[i].clone()),
                ratio: median(&mut ratios),
            }
        })
        .collect()
}

/// Calls of `variant.run` that fill one slice, from one warm call and one timed batch.
fn calls_per_slice(variant: &mut Variant<'_>) -> u32 {
    (variant.run)();
    let start = Instant::now();
    for _ in 0..16 {
        (variant.run)();
    }
    let per_call = start.elapsed().as_nanos().max(1) as f64 / 16.0;
    (SLICE.as_nanos() as f64 / per_call).clamp(1.0, 1e6) as u32
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
