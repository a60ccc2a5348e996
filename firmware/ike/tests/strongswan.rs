//! Interoperability with strongSwan 5.9 (charon-systemd, kernel-libipsec) over a veth pair
//! between two network namespaces. Each test builds and removes its own topology.
//!
//! strongSwan with kernel-libipsec always fakes a NAT, so every test also exercises NAT
//! detection and the move of IKE to UDP 4500 with the non-ESP marker.

mod support;

use std::time::Duration;

use support::{field, Suites, Topology, CBC_MODP2048, GCM_X25519, GCM_X25519_PFS, OUR_ID, SWAN_ID};

const WAIT: Duration = Duration::from_secs(15);

/// Checks that strongSwan lists one ESTABLISHED IKE SA whose child SA uses exactly the SPIs our
/// side installed (its spi-in is our outbound SPI and the other way round).
fn assert_swan_matches(topology: &Topology, child_line: &str) {
    // Our NAT detection hashes are right: strongSwan finds no NAT in front of us, and only
    // fakes one because kernel-libipsec needs UDP encapsulation.
    let log = topology.charon_log();
    assert!(log.contains("faking NAT situation"), "{log}");
    assert!(!log.contains("remote host is behind NAT"), "{log}");
    let listing = topology.list_sas();
    assert!(listing.contains("state=ESTABLISHED"), "{listing}");
    assert!(listing.contains("state=INSTALLED"), "{listing}");
    assert!(listing.contains("encap=yes"), "{listing}");
    assert!(
        listing.contains(&format!("remote-id={OUR_ID}")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("local-id={SWAN_ID}")),
        "{listing}"
    );
    assert_eq!(
        field(&listing, "spi-in"),
        field(child_line, "spi_out"),
        "{listing}"
    );
    assert_eq!(
        field(&listing, "spi-out"),
        field(child_line, "spi_in"),
        "{listing}"
    );
    assert_eq!(field(child_line, "udp_encap"), "true");
}

fn strongswan_initiates(test: &str, suites: Suites) -> Topology {
    let mut topology = Topology::start(suites);
    topology.start_ours(suites, false);
    topology.swanctl(&[
        "--initiate",
        "--ike",
        "peer",
        "--child",
        "net",
        "--timeout",
        "10",
    ]);
    let ours = topology.ours();
    let established = ours.wait_for("event=ike_established", WAIT);
    assert_eq!(field(&established, "nat"), "true", "{test}: NAT detection");
    let child = ours.wait_for("event=child_installed", WAIT);
    assert_swan_matches(&topology, &child);
    assert!(
        topology.list_sas().contains("initiator=yes"),
        "{test}: strongSwan was the initiator"
    );
    topology
}

fn we_initiate(test: &str, suites: Suites) -> Topology {
    we_initiate_with(test, suites, &[])
}

fn we_initiate_with(test: &str, suites: Suites, extra: &[&str]) -> Topology {
    let mut topology = Topology::start(suites);
    let ours = topology.start_ours_with(suites, true, extra);
    ours.wait_for("event=ike_established", WAIT);
    let child = ours.wait_for("event=child_installed", WAIT);
    assert_swan_matches(&topology, &child);
    let listing = topology.list_sas();
    assert!(
        !listing.contains("initiator=yes"),
        "{test}: we were the initiator: {listing}"
    );
    let ours_listed = topology.ours().list();
    assert_eq!(ours_listed.len(), 1);
    assert_eq!(field(&ours_listed[0], "state"), "Established");
    assert_eq!(
        field(&listing, "initiator-spi"),
        field(&ours_listed[0], "spi_i")
    );
    assert_eq!(
        field(&listing, "responder-spi"),
        field(&ours_listed[0], "spi_r")
    );
    topology
}

#[test]
fn strongswan_initiates_to_us_aes_gcm_128_x25519() {
    if !support::prerequisites_met("strongswan_initiates_to_us_aes_gcm_128_x25519") {
        return;
    }
    let topology = strongswan_initiates("gcm", GCM_X25519);
    let listing = topology.list_sas();
    assert!(
        listing.contains("encr-alg=AES_GCM_16 encr-keysize=128"),
        "{listing}"
    );
    assert!(listing.contains("dh-group=CURVE_25519"), "{listing}");
}

#[test]
fn strongswan_we_initiate_aes_gcm_128_x25519() {
    if !support::prerequisites_met("strongswan_we_initiate_aes_gcm_128_x25519") {
        return;
    }
    let topology = we_initiate("gcm", GCM_X25519);
    assert!(topology.list_sas().contains("dh-group=CURVE_25519"));
}

#[test]
fn strongswan_initiates_to_us_aes_cbc_256_sha256_modp2048() {
    if !support::prerequisites_met("strongswan_initiates_to_us_aes_cbc_256_sha256_modp2048") {
        return;
    }
    let topology = strongswan_initiates("cbc", CBC_MODP2048);
    let listing = topology.list_sas();
    assert!(
        listing.contains("encr-alg=AES_CBC encr-keysize=256"),
        "{listing}"
    );
    assert!(listing.contains("integ-alg=HMAC_SHA2_256_128"), "{listing}");
    assert!(listing.contains("dh-group=MODP_2048"), "{listing}");
}

#[test]
fn strongswan_we_initiate_aes_cbc_256_sha256_modp2048() {
    if !support::prerequisites_met("strongswan_we_initiate_aes_cbc_256_sha256_modp2048") {
        return;
    }
    let topology = we_initiate("cbc", CBC_MODP2048);
    let listing = topology.list_sas();
    assert!(listing.contains("dh-group=MODP_2048"), "{listing}");
    assert!(listing.contains("integ-alg=HMAC_SHA2_256_128"), "{listing}");
}

#[test]
fn strongswan_deletes_the_ike_sa_and_we_follow() {
    if !support::prerequisites_met("strongswan_deletes_the_ike_sa_and_we_follow") {
        return;
    }
    let mut topology = strongswan_initiates("delete", GCM_X25519);
    topology.swanctl(&["--terminate", "--ike", "peer", "--timeout", "10"]);
    let ours = topology.ours();
    let deleted_child = ours.wait_for("event=child_deleted", WAIT);
    let deleted = ours.wait_for("event=ike_deleted", WAIT);
    assert_eq!(field(&deleted, "reason"), "PeerDelete");
    assert_eq!(field(&deleted_child, "ike_sa"), field(&deleted, "ike_sa"));
    assert!(ours.list().is_empty());
    topology.wait_swan_empty(WAIT);
}

#[test]
fn strongswan_we_delete_the_ike_sa_and_strongswan_follows() {
    if !support::prerequisites_met("strongswan_we_delete_the_ike_sa_and_strongswan_follows") {
        return;
    }
    let mut topology = we_initiate("delete", GCM_X25519);
    let ours = topology.ours();
    ours.command("delete");
    let deleted = ours.wait_for("event=ike_deleted", WAIT);
    assert_eq!(field(&deleted, "reason"), "LocalDelete");
    topology.wait_swan_empty(WAIT);
    assert!(topology
        .charon_log()
        .contains("received DELETE for IKE_SA peer"));
}

#[test]
fn strongswan_answers_our_liveness_check() {
    if !support::prerequisites_met("strongswan_answers_our_liveness_check") {
        return;
    }
    let mut topology = we_initiate("liveness", GCM_X25519);
    let ours = topology.ours();
    ours.command("liveness");
    // The request stays outstanding (busy) until strongSwan's answer arrives; unanswered, it
    // would be retransmitted for about 30 s and then delete the SA.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut was_outstanding = false;
    loop {
        let listed = ours.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(field(&listed[0], "state"), "Established");
        if field(&listed[0], "busy") == "false" {
            break;
        }
        was_outstanding = true;
        assert!(
            std::time::Instant::now() < deadline,
            "no answer to the liveness check"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        was_outstanding,
        "the loop handles `liveness` before `list`, so it was listed busy"
    );
    assert!(!ours.seen.iter().any(|l| l.starts_with("event=ike_deleted")));
    assert!(topology
        .charon_log()
        .contains("parsed INFORMATIONAL request"));
}

/// After a child rekey: our side reports the rekey and then the old child's deletion, and
/// strongSwan's only child SA carries the new SPIs.
fn assert_child_rekeyed(topology: &mut Topology, old_child: &str) -> String {
    let ours = topology.ours();
    let rekeyed = ours.wait_for("event=child_rekeyed", WAIT);
    assert_eq!(field(&rekeyed, "old_spi_in"), field(old_child, "spi_in"));
    assert_eq!(field(&rekeyed, "old_spi_out"), field(old_child, "spi_out"));
    assert_ne!(field(&rekeyed, "spi_in"), field(old_child, "spi_in"));
    let deleted = ours.wait_for("event=child_deleted", WAIT);
    assert_eq!(field(&deleted, "spi_in"), field(old_child, "spi_in"));
    let listing = topology.wait_swan_single_child(WAIT);
    assert_eq!(
        field(&listing, "spi-in"),
        field(&rekeyed, "spi_out"),
        "{listing}"
    );
    assert_eq!(
        field(&listing, "spi-out"),
        field(&rekeyed, "spi_in"),
        "{listing}"
    );
    let ours_listed = topology.ours().list();
    assert_eq!(ours_listed.len(), 1);
    assert_eq!(
        field(&ours_listed[0], "children"),
        format!(
            "{}/{}",
            field(&rekeyed, "spi_in"),
            field(&rekeyed, "spi_out")
        )
    );
    // The new child SA carries traffic both ways.
    traffic_passes(topology);
    listing
}

fn last_child_line(topology: &mut Topology) -> String {
    topology
        .ours()
        .seen
        .iter()
        .rev()
        .find(|l| l.starts_with("event=child_installed"))
        .cloned()
        .expect("a child was installed")
}

#[test]
fn strongswan_rekeys_the_child_sa_and_we_follow() {
    if !support::prerequisites_met("strongswan_rekeys_the_child_sa_and_we_follow") {
        return;
    }
    let mut topology = strongswan_initiates("child rekey", GCM_X25519);
    let old_child = last_child_line(&mut topology);
    topology.swanctl(&["--rekey", "--child", "net"]);
    let listing = assert_child_rekeyed(&mut topology, &old_child);
    assert!(
        !listing.contains("dh-group=CURVE_25519 bytes-in"),
        "{listing}"
    );
}

#[test]
fn strongswan_rekeys_the_child_sa_with_pfs_and_we_follow() {
    if !support::prerequisites_met("strongswan_rekeys_the_child_sa_with_pfs_and_we_follow") {
        return;
    }
    let mut topology = strongswan_initiates("child rekey pfs", GCM_X25519_PFS);
    let old_child = last_child_line(&mut topology);
    topology.swanctl(&["--rekey", "--child", "net"]);
    let listing = assert_child_rekeyed(&mut topology, &old_child);
    // The child SA's own dh-group shows the PFS exchange.
    let child_part = &listing[listing.find("child-sas").expect("child listed")..];
    assert!(child_part.contains("dh-group=CURVE_25519"), "{listing}");
}

#[test]
fn strongswan_we_rekey_the_child_sa() {
    if !support::prerequisites_met("strongswan_we_rekey_the_child_sa") {
        return;
    }
    let mut topology = we_initiate("our child rekey", GCM_X25519);
    let old_child = last_child_line(&mut topology);
    topology.ours().command("rekey-child");
    let listing = assert_child_rekeyed(&mut topology, &old_child);
    let child_part = &listing[listing.find("child-sas").expect("child listed")..];
    assert!(
        !child_part.contains("dh-group="),
        "no PFS was asked for: {listing}"
    );
}

#[test]
fn strongswan_we_rekey_the_child_sa_with_pfs() {
    if !support::prerequisites_met("strongswan_we_rekey_the_child_sa_with_pfs") {
        return;
    }
    let mut topology = we_initiate_with("our child rekey pfs", GCM_X25519_PFS, &["pfs=1"]);
    let old_child = last_child_line(&mut topology);
    topology.ours().command("rekey-child");
    let listing = assert_child_rekeyed(&mut topology, &old_child);
    let child_part = &listing[listing.find("child-sas").expect("child listed")..];
    assert!(child_part.contains("dh-group=CURVE_25519"), "{listing}");
}

/// After an IKE rekey: our side reports it and the old SA's deletion; strongSwan lists the
/// new SPIs, and the child SA kept its SPIs.
fn assert_ike_rekeyed(topology: &mut Topology, before: &str, old_child: &str, reason: &str) {
    let ours = topology.ours();
    let rekeyed = ours.wait_for("event=ike_rekeyed", WAIT);
    let deleted = ours.wait_for("event=ike_deleted", WAIT);
    assert_eq!(field(&deleted, "ike_sa"), field(&rekeyed, "old"));
    assert_eq!(field(&deleted, "reason"), reason);
    assert!(!ours
        .seen
        .iter()
        .any(|l| l.starts_with("event=child_deleted")));
    let listed = ours.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(field(&listed[0], "ike_sa"), field(&rekeyed, "new"));
    assert_eq!(
        field(&listed[0], "children"),
        format!(
            "{}/{}",
            field(old_child, "spi_in"),
            field(old_child, "spi_out")
        )
    );
    let deadline = std::time::Instant::now() + WAIT;
    let listing = loop {
        let listing = topology.list_sas();
        if listing.matches("state=").count() == 2 && listing.contains("state=ESTABLISHED") {
            break listing;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strongSwan lists {listing}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(
        field(&listing, "initiator-spi"),
        field(before, "initiator-spi")
    );
    assert_eq!(
        field(&listing, "initiator-spi"),
        field(&listed[0], "spi_i"),
        "{listing}"
    );
    assert_eq!(
        field(&listing, "responder-spi"),
        field(&listed[0], "spi_r"),
        "{listing}"
    );
    assert_eq!(
        field(&listing, "spi-in"),
        field(old_child, "spi_out"),
        "{listing}"
    );
}

#[test]
fn strongswan_rekeys_the_ike_sa_and_we_follow() {
    if !support::prerequisites_met("strongswan_rekeys_the_ike_sa_and_we_follow") {
        return;
    }
    let mut topology = strongswan_initiates("ike rekey", GCM_X25519);
    let old_child = last_child_line(&mut topology);
    let before = topology.list_sas();
    topology.swanctl(&["--rekey", "--ike", "peer"]);
    assert_ike_rekeyed(&mut topology, &before, &old_child, "PeerDelete");
    traffic_passes(&mut topology);
}

#[test]
fn strongswan_we_rekey_the_ike_sa() {
    if !support::prerequisites_met("strongswan_we_rekey_the_ike_sa") {
        return;
    }
    let mut topology = we_initiate("our ike rekey", CBC_MODP2048);
    let old_child = last_child_line(&mut topology);
    let before = topology.list_sas();
    topology.ours().command("rekey-ike");
    assert_ike_rekeyed(&mut topology, &before, &old_child, "LocalDelete");
    traffic_passes(&mut topology);
}

#[test]
fn strongswan_deletes_the_child_sa_and_we_follow() {
    if !support::prerequisites_met("strongswan_deletes_the_child_sa_and_we_follow") {
        return;
    }
    let mut topology = strongswan_initiates("child delete", GCM_X25519);
    let child = last_child_line(&mut topology);
    topology.swanctl(&["--terminate", "--child", "net", "--timeout", "10"]);
    let ours = topology.ours();
    let deleted = ours.wait_for("event=child_deleted", WAIT);
    assert_eq!(field(&deleted, "spi_in"), field(&child, "spi_in"));
    assert_eq!(field(&deleted, "spi_out"), field(&child, "spi_out"));
    let listed = ours.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(field(&listed[0], "state"), "Established");
    assert_eq!(field(&listed[0], "children"), "");
    let listing = topology.list_sas();
    assert!(listing.contains("state=ESTABLISHED"), "{listing}");
    assert!(!listing.contains("spi-in="), "{listing}");
}

/// Traffic still passes in both directions (after a rekey: over the new SAs).
fn traffic_passes(topology: &mut Topology) {
    let output = topology.ping_from_swan(2);
    assert!(
        output.contains("2 received"),
        "ping from strongSwan: {output}"
    );
    for _ in 0..2 {
        topology.ours().command("ping");
        topology.ours().wait_for("event=ping_reply", WAIT);
    }
}

/// The number after `key=` in strongSwan's listing.
fn swan_count(listing: &str, key: &str) -> u64 {
    field(listing, key).parse().expect("a number")
}

/// Pings from strongSwan's side to ours and from ours to strongSwan's, all through ESP in UDP,
/// and checks both sides' packet counters.
fn ping_both_ways(topology: &mut Topology) {
    let output = topology.ping_from_swan(3);
    assert!(
        output.contains("3 received"),
        "ping from strongSwan: {output}"
    );
    for _ in 0..3 {
        topology.ours().command("ping");
        topology.ours().wait_for("event=ping_reply", WAIT);
    }
    let listing = topology.list_sas();
    // 3 echo requests + 3 replies to ours in each direction.
    assert_eq!(swan_count(&listing, "packets-out"), 6, "{listing}");
    assert_eq!(swan_count(&listing, "packets-in"), 6, "{listing}");
    let ours = topology.ours();
    ours.command("esp");
    let counts = ours.wait_for("esp ", WAIT);
    assert_eq!(field(&counts, "packets_in"), "6", "{counts}");
    assert_eq!(field(&counts, "packets_out"), "6", "{counts}");
}

#[test]
fn strongswan_traffic_flows_both_ways_aes_gcm_128() {
    if !support::prerequisites_met("strongswan_traffic_flows_both_ways_aes_gcm_128") {
        return;
    }
    let mut topology = strongswan_initiates("traffic gcm", GCM_X25519);
    ping_both_ways(&mut topology);
}

#[test]
fn strongswan_traffic_flows_both_ways_aes_cbc_256_sha256() {
    if !support::prerequisites_met("strongswan_traffic_flows_both_ways_aes_cbc_256_sha256") {
        return;
    }
    let mut topology = we_initiate("traffic cbc", CBC_MODP2048);
    ping_both_ways(&mut topology);
}

/// Pings run through a child rekey and an IKE rekey without losing a packet.
fn no_loss_during(topology: &mut Topology, rekey: impl FnOnce(&mut Topology)) {
    let ping = topology.spawn_ping_from_swan(30, "0.1");
    std::thread::sleep(Duration::from_millis(1000));
    rekey(topology);
    let output = ping.wait_with_output().expect("ping finishes");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("30 received"),
        "lost pings during the rekey: {text}"
    );
}

#[test]
fn strongswan_traffic_keeps_flowing_while_strongswan_rekeys() {
    if !support::prerequisites_met("strongswan_traffic_keeps_flowing_while_strongswan_rekeys") {
        return;
    }
    let mut topology = strongswan_initiates("rekeys under traffic", GCM_X25519);
    no_loss_during(&mut topology, |t| {
        t.swanctl(&["--rekey", "--child", "net"]);
        t.ours().wait_for("event=child_deleted", WAIT);
        t.swanctl(&["--rekey", "--ike", "peer"]);
        t.ours().wait_for("event=ike_deleted", WAIT);
    });
}

#[test]
fn strongswan_traffic_keeps_flowing_while_we_rekey() {
    if !support::prerequisites_met("strongswan_traffic_keeps_flowing_while_we_rekey") {
        return;
    }
    let mut topology = we_initiate("our rekeys under traffic", GCM_X25519);
    no_loss_during(&mut topology, |t| {
        t.ours().command("rekey-child");
        t.ours().wait_for("event=child_deleted", WAIT);
        t.ours().command("rekey-ike");
        t.ours().wait_for("event=ike_deleted", WAIT);
    });
}

#[test]
fn strongswan_sa_survives_an_init_flood_that_triggers_cookies() {
    if !support::prerequisites_met("strongswan_sa_survives_an_init_flood_that_triggers_cookies") {
        return;
    }
    let mut topology = strongswan_initiates("flood", GCM_X25519);
    let flood = topology.flood_from_swan_side(300);
    assert!(flood.contains("flood sent=300"), "{flood}");
    let ours = topology.ours();
    // The default threshold is 64 half-open SAs: the rest of the flood gets cookies. Wait
    // until the count stops moving (UDP may drop a few requests of the burst).
    let cookies_sent = |ours: &mut support::OurSide| -> u64 {
        ours.command("stats");
        let stats = ours.wait_for("stats ", WAIT);
        field(&stats, "cookies_sent").parse().expect("number")
    };
    let mut previous = u64::MAX;
    let mut cookies = cookies_sent(ours);
    while cookies != previous {
        std::thread::sleep(Duration::from_millis(300));
        previous = cookies;
        cookies = cookies_sent(ours);
    }
    assert!(cookies >= 200, "cookies sent: {cookies}");
    let listed = ours.list();
    let established: Vec<&String> = listed
        .iter()
        .filter(|l| field(l, "state") == "Established")
        .collect();
    assert_eq!(established.len(), 1, "{listed:?}");
    assert_eq!(
        listed.len(),
        1 + 64,
        "only the threshold of half-open SAs: {listed:?}"
    );
    assert!(topology.list_sas().contains("state=ESTABLISHED"));
    traffic_passes(&mut topology);
}
