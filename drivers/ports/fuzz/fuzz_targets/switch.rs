//! Arbitrary frames from arbitrary ports through a three-port in-memory switch: never a
//! panic, every frame either delivered or counted as dropped, and every buffer back in its
//! pool once the receivers are drained.
#![no_main]

use dvipsec_ports::{BufLayout, Burst, FabricConfig, PacketPort, SwitchBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = FabricConfig {
        layout: BufLayout::new(16, 256, 16).expect("layout"),
        pool_size: 8,
        ring_size: 4,
    };
    let Ok(mut ports) = SwitchBuilder::new(config)
        .port("p0", [2, 0, 0, 0, 0, 0])
        .and_then(|b| b.port("p1", [2, 0, 0, 0, 0, 1]))
        .and_then(|b| b.port("p2", [2, 0, 0, 0, 0, 2]))
        .and_then(|b| b.build())
    else {
        return;
    };
    // Records: [port, len, bytes...]; a record with the top bit of `port` set drains a port.
    let mut rest = data;
    let mut burst = Burst::with_capacity(4);
    while let [port, len, tail @ ..] = rest {
        let index = usize::from(port & 0x7f) % ports.len();
        if port & 0x80 != 0 {
            ports[index].rx_burst(&mut burst);
            burst.clear();
            rest = tail;
            continue;
        }
        let len = usize::from(*len).min(tail.len());
        let (frame, after) = tail.split_at(len);
        rest = after;
        if let Some(mut buf) = ports[index].alloc_tx() {
            if buf.set_frame(frame).is_ok() {
                let _ = burst.push(buf);
                ports[index].tx_burst(&mut burst);
            }
        }
        burst.clear();
    }
    let mut received = 0;
    for port in ports.iter_mut() {
        while port.rx_burst(&mut burst) > 0 {
            burst.clear();
        }
        received += port.counters().rx_packets;
    }
    let sent: u64 = ports.iter().map(|p| p.counters().tx_packets).sum();
    assert_eq!(
        sent, received,
        "every frame put on the fabric came out once"
    );
    for port in &ports {
        assert_eq!(
            port.pool().available(),
            port.pool().capacity(),
            "buffer leaked"
        );
    }
});
