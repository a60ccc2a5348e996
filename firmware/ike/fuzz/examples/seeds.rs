//! Writes the checked-in seed corpora of `message` and `endpoint`: every datagram of real
//! exchanges between two in-memory endpoints (IKE_SA_INIT with a cookie round, IKE_AUTH,
//! liveness INFORMATIONAL, child rekey, IKE rekey, delete).
//!
//! Run from this folder: `cargo run --example seeds` (it rewrites `corpus/*/seed-*`).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use dvipsec_ike::crypto::{EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{
    Credential, Endpoint, EndpointConfig, Event, Identity, Lifetime, Mode, PeerConfig, Psk,
};

/// The same peer shape as the `endpoint` fuzz target, so its seeds meet a matching responder.
fn peer(name: &str, local: &str, remote: &str, local_ts: &str, remote_ts: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_addr: None,
        local_id: Identity::Email(local.into()),
        remote_id: Identity::Email(remote.into()),
        credential: Credential::Psk(Psk::new(b"fuzz")),
        ike_suites: vec![
            IkeSuite::AES128GCM_SHA256_X25519,
            IkeSuite::AES256CBC_SHA256_MODP2048,
        ],
        esp_suites: vec![EspSuite::AES128GCM, EspSuite::AES256CBC_SHA256],
        local_ts: vec![TrafficSelector::host(local_ts.parse().expect("address"))],
        remote_ts: vec![TrafficSelector::host(remote_ts.parse().expect("address"))],
        mode: Mode::Tunnel,
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    }
}

/// Two endpoints and every datagram that went between them, in order.
struct Wire {
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Instant,
    /// (sent by a, bytes).
    seen: Vec<(bool, Vec<u8>)>,
}

impl Wire {
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now) {
                self.b
                    .handle_datagram(self.now, self.a_addr, self.b_addr, &t.payload);
                self.seen.push((true, t.payload));
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(self.now) {
                self.a
                    .handle_datagram(self.now, self.b_addr, self.a_addr, &t.payload);
                self.seen.push((false, t.payload));
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn child_spi(events: &[Event]) -> Option<u32> {
        events.iter().find_map(|e| match e {
            Event::ChildSaInstalled(c) => Some(c.inbound_spi),
            Event::ChildSaRekeyed { new, .. } => Some(new.inbound_spi),
            _ => None,
        })
    }
}

fn events(endpoint: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| endpoint.poll_event()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut b_config = EndpointConfig::new(vec![peer("a", "b@x", "a@x", "10.0.0.2", "10.0.0.1")]);
    // A cookie round first, so the seeds hold a COOKIE notify and a request carrying one.
    b_config.cookie_threshold = 0;
    let a = Endpoint::new(EndpointConfig::new(vec![peer(
        "b", "a@x", "b@x", "10.0.0.1", "10.0.0.2",
    )]))?;
    let mut wire = Wire {
        a,
        b: Endpoint::new(b_config)?,
        a_addr: "192.0.2.1:500".parse()?,
        b_addr: "192.0.2.2:500".parse()?,
        now: Instant::now(),
        seen: Vec::new(),
    };
    let id = wire.a.initiate(wire.now, "b", wire.a_addr, wire.b_addr)?;
    wire.pump();
    let spi = Wire::child_spi(&events(&mut wire.a)).ok_or("no child SA")?;
    wire.a.check_liveness(wire.now, id)?;
    wire.pump();
    wire.a.rekey_child(wire.now, id, spi)?;
    wire.pump();
    wire.a.create_child(wire.now, id)?;
    wire.pump();
    wire.a.rekey_ike(wire.now, id)?;
    wire.pump();
    let new_id = wire.a.ike_sas().first().ok_or("no IKE SA")?.id;
    wire.a.delete_ike_sa(wire.now, new_id)?;
    wire.pump();

    let message_dir = Path::new("corpus/message");
    let endpoint_dir = Path::new("corpus/endpoint");
    for dir in [message_dir, endpoint_dir] {
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
    }
    for (index, (from_a, bytes)) in wire.seen.iter().enumerate() {
        let exchange = bytes.get(18).copied().unwrap_or(0);
        let name = format!(
            "seed-{index:02}-x{exchange}-{}",
            if *from_a { "a" } else { "b" }
        );
        fs::write(message_dir.join(&name), bytes)?;
        // The endpoint target's first byte: 4 sends to the responder (as `a` did), 1 puts the
        // fuzzer's half-open SPIs in, 2 makes the length field agree.
        let selector = if *from_a { 4 } else { 0 } | if index < 4 { 3 } else { 0 };
        let mut input = vec![selector];
        input.extend_from_slice(bytes);
        fs::write(endpoint_dir.join(&name), input)?;
        // The message target also reads its input as a bare payload chain whose first type is
        // the first byte: the header's next-payload type, then the payloads.
        if let (Some(&first), Some(chain)) = (bytes.get(16), bytes.get(28..)) {
            let mut input = vec![first];
            input.extend_from_slice(chain);
            fs::write(message_dir.join(format!("{name}-chain")), input)?;
        }
    }
    println!("{} datagrams written", wire.seen.len());
    Ok(())
}
