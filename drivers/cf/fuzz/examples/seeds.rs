//! Writes the checked-in seed corpus of `request`: frames as a CF client sends them (hello,
//! slot allocation, sequence numbers, replay checks, lifesize, stats, epoch bump, release),
//! each encoded by the protocol's own encoder.
//!
//! Run from this folder: `cargo run --example seeds` (it rewrites `corpus/request/seed-*`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use dvipsec_cf::proto::{encode_request, Op, Request};
use dvipsec_cf::{Direction, SlotId, SlotKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = SlotKey {
        dvipa: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        spi: 0x1000,
    };
    let slot = SlotId(0);
    let requests: Vec<(&str, Vec<Op>)> = vec![
        ("hello", vec![Op::Hello]),
        (
            "allocate",
            vec![Op::Allocate { key, window: 128 }, Op::Lookup { key }],
        ),
        ("fetch-add", vec![Op::FetchAdd { slot, count: 32 }]),
        (
            "replay",
            vec![
                Op::ReplayCheck { slot, seq: 7 },
                Op::ReplayCheckAndSet { slot, seq: 7 },
                Op::ReplayCheck { slot, seq: 7 },
            ],
        ),
        (
            "lifesize",
            vec![
                Op::LifesizeAdd {
                    slot,
                    direction: Direction::Inbound,
                    bytes: 1_500,
                    packets: 1,
                },
                Op::LifesizeRead { slot },
            ],
        ),
        ("stats", vec![Op::Stats]),
        ("bump-epoch", vec![Op::BumpEpoch { new_epoch: 2 }]),
        ("release", vec![Op::Release { slot }]),
    ];
    let dir = Path::new("corpus/request");
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            fs::remove_file(path)?;
        }
    }
    for (name, ops) in requests {
        let frame = encode_request(&Request { epoch: 1, ops });
        fs::write(dir.join(format!("seed-{name}")), frame)?;
    }
    Ok(())
}
