//! The XCF link over TCP on loopback: mutual TLS with identities derived from the site key,
//! a wrong key refused at the handshake, and plain TCP when the site trusts the link.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dvipsec_cluster::stream::{read_frame, write_frame, FrameSplitter, StreamError};
use dvipsec_cluster::tls::{link_security, node_dns_name, peer_is, XcfIdentity};
use dvipsec_cluster::{Distributor, DistributorEvent, IkeEvent, LinkSecurity, SlotPool, Target};
use dvipsec_esp::Direction;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(2);

fn view(node: &str) -> dvipsec_config::NodeView {
    figure4_views()
        .into_iter()
        .find(|v| v.node == node)
        .unwrap()
}

/// MVS1's distributor on one accepted stream: once MVS2 is up, IKE installs an SA; returns
/// (and closes the stream) when MVS2 has acknowledged it.
fn serve<S: Read + Write>(stream: &mut S, security: LinkSecurity) -> Result<(), StreamError> {
    let start = Instant::now();
    let mut distributor = Distributor::new(
        &view("MVS1"),
        1,
        security,
        Box::new(SlotPool::new(16)),
        Duration::ZERO,
    );
    let mut splitter = FrameSplitter::new();
    let dva1 = view("MVS1").owns[0].address;
    while start.elapsed() < DEADLINE {
        let now = start.elapsed();
        while let Some(t) = distributor.poll_transmit(now) {
            if t.to == "MVS2" {
                write_frame(stream, &t.bytes)?;
            }
        }
        if let Some(frame) = read_frame(stream, &mut splitter)? {
            distributor
                .handle("MVS2", &frame, now)
                .expect("a good frame from MVS2");
        }
        while let Some(event) = distributor.poll_event() {
            match event {
                DistributorEvent::TargetUp { node, .. } if node == "MVS2" => {
                    let install = sa(DVA1, dva1, Direction::Inbound, 0x1001);
                    distributor
                        .handle_ike(IkeEvent::Installed(Box::new(install)), now)
                        .expect("keys may cross this link");
                }
                DistributorEvent::Distributed(_) => return Ok(()),
                _ => {}
            }
        }
    }
    panic!("MVS2 never acknowledged the SA");
}

/// MVS2's target on a connected stream. Runs until the distributor closes the stream, which
/// it does once the SA is acknowledged; fails if the stream breaks before an SA arrived.
fn run_target<S: Read + Write>(
    stream: &mut S,
    security: LinkSecurity,
) -> Result<Target, StreamError> {
    let start = Instant::now();
    let mut target = Target::new(&view("MVS2"), 2, security, Duration::ZERO);
    let mut splitter = FrameSplitter::new();
    while start.elapsed() < DEADLINE {
        let now = start.elapsed();
        let io = (|| {
            while let Some(t) = target.poll_transmit(now) {
                if t.to == "MVS1" {
                    write_frame(stream, &t.bytes)?;
                }
            }
            if let Some(frame) = read_frame(stream, &mut splitter)? {
                target
                    .handle("MVS1", &frame, now)
                    .expect("a good frame from MVS1");
            }
            Ok::<(), StreamError>(())
        })();
        match io {
            Ok(()) => {}
            Err(_) if !target.all_sas().is_empty() => return Ok(target),
            Err(err) => return Err(err),
        }
    }
    panic!("the distributor never finished");
}

fn listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(POLL)).unwrap();
    tcp
}

#[test]
fn an_sa_crosses_mutual_tls_with_identities_from_the_site_key() {
    let key = b"figure4 xcf link key, 32 bytes!!";
    let server_id = XcfIdentity::from_site_key("figure4", "MVS1", key).unwrap();
    let client_id = XcfIdentity::from_site_key("figure4", "MVS2", key).unwrap();
    assert!(
        !format!("{server_id:?}").contains("PRIVATE"),
        "{server_id:?}"
    );
    let (listener, addr) = listener();
    let server_config = server_id.server_config().unwrap();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(POLL)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(server_config).unwrap(), tcp);
        serve(&mut tls, link_security(false, true)).unwrap();
        let certs = tls.conn.peer_certificates();
        assert!(peer_is(certs, "MVS2"), "the client proved it is MVS2");
        assert!(!peer_is(certs, "MVS4"));
    });
    let connection = ClientConnection::new(
        client_id.client_config().unwrap(),
        node_dns_name("MVS1").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(connection, connect(addr));
    let target = run_target(&mut tls, LinkSecurity::Protected).unwrap();
    assert!(peer_is(tls.conn.peer_certificates(), "MVS1"));
    server.join().unwrap();
    let shadow = &target.shadow_sas(DVA1)[0].install;
    assert_eq!(shadow.spi, 0x1001);
    assert_eq!(
        shadow.keys,
        sa(DVA1, shadow.tunnel.unwrap().dst, Direction::Inbound, 0x1001).keys
    );
}

#[test]
fn a_node_with_another_site_key_fails_the_handshake() {
    let server_id = XcfIdentity::from_site_key("figure4", "MVS1", b"the right key").unwrap();
    let client_id = XcfIdentity::from_site_key("figure4", "MVS2", b"a wrong key").unwrap();
    let (listener, addr) = listener();
    let server_config = server_id.server_config().unwrap();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(POLL)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(server_config).unwrap(), tcp);
        let mut splitter = FrameSplitter::new();
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < DEADLINE, "the handshake did not fail");
            match read_frame(&mut tls, &mut splitter) {
                Ok(None) => continue,
                Ok(Some(_)) => panic!("a frame arrived from an untrusted client"),
                Err(err) => return err.to_string(),
            }
        }
    });
    let connection = ClientConnection::new(
        client_id.client_config().unwrap(),
        node_dns_name("MVS1").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(connection, connect(addr));
    let mut splitter = FrameSplitter::new();
    let start = Instant::now();
    let client_error = loop {
        assert!(start.elapsed() < DEADLINE, "the handshake did not fail");
        let _ = tls.write_all(&[]);
        match read_frame(&mut tls, &mut splitter) {
            Ok(None) => continue,
            Ok(Some(_)) => panic!("a frame arrived from an untrusted server"),
            Err(err) => break err.to_string(),
        }
    };
    let server_error = server.join().unwrap();
    assert!(
        client_error.contains("certificate") || client_error.contains("Certificate"),
        "{client_error}"
    );
    assert!(!server_error.is_empty());
}

#[test]
fn plain_tcp_carries_the_sa_when_the_site_trusts_the_link() {
    let (listener, addr) = listener();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(POLL)).unwrap();
        serve(&mut tcp, link_security(true, false)).unwrap();
    });
    let mut tcp = connect(addr);
    let target = run_target(&mut tcp, LinkSecurity::Trusted).unwrap();
    drop(tcp);
    server.join().unwrap();
    assert_eq!(target.all_sas().len(), 1);
    assert_eq!(link_security(false, false), LinkSecurity::Unprotected);
}

#[test]
fn identities_from_pem_files_work_like_derived_ones() {
    // A PEM CA and node certificate made here stand in for files an operator provides.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mvs2.xcf.dvipsec".to_owned()])
        .unwrap()
        .signed_by(&node_key, &ca, &ca_key)
        .unwrap();
    let id = XcfIdentity::from_pem(
        "MVS2",
        cert.pem().as_bytes(),
        node_key.serialize_pem().as_bytes(),
        ca.pem().as_bytes(),
    )
    .unwrap();
    id.client_config().unwrap();
    id.server_config().unwrap();
    assert!(XcfIdentity::from_pem("MVS2", b"not pem", b"", b"").is_err());
}

/// Runs `openssl verify` (code we did not write) on a node certificate against a CA file.
fn openssl_verify(ca_pem: &str, cert_pem: &str, hostname: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("node.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let output = match std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca)
        .args(["-verify_hostname", hostname])
        .arg(&cert)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            let reason = format!("openssl is not available: {err}");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}");
            }
            eprintln!("skipping: {reason}");
            return (true, String::from("skipped"));
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn openssl_accepts_a_derived_certificate_under_another_nodes_derived_ca() {
    let key = b"figure4 xcf link key";
    let mvs1 = XcfIdentity::from_site_key("figure4", "MVS1", key).unwrap();
    let mvs2 = XcfIdentity::from_site_key("figure4", "MVS2", key).unwrap();
    // MVS1 trusts MVS2 through the CA it derived itself from the same key.
    let (ok, text) = openssl_verify(&mvs1.ca_pem(), &mvs2.chain_pem(), "mvs2.xcf.dvipsec");
    assert!(ok, "{text}");
    // The certificate does not pass for another node's name...
    let (ok, text) = openssl_verify(&mvs1.ca_pem(), &mvs2.chain_pem(), "mvs4.xcf.dvipsec");
    assert!(!ok || text == "skipped", "{text}");
    // ...nor under the CA of a site with another key.
    let other = XcfIdentity::from_site_key("figure4", "MVS1", b"another key").unwrap();
    let (ok, text) = openssl_verify(&other.ca_pem(), &mvs2.chain_pem(), "mvs2.xcf.dvipsec");
    assert!(!ok || text == "skipped", "{text}");
}
