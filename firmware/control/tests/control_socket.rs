//! The control socket against a running in-process cluster: one distributor, two targets and
//! the CF, after 20 echo round trips. Every request, the socket's permissions and lifetime, bad
//! requests, the metrics endpoint, and the absence of key material outside `keys export`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use dvipsec_control::handler::{dispatch, ControlHandler};
use dvipsec_control::metrics::{self, MetricsEndpoint};
use dvipsec_control::protocol::{DvipaRelation, Role, SaLocation};
use dvipsec_control::testbed::{TestbedBox, TestbedHandler};
use dvipsec_control::{ClientError, ControlClient, ControlError, ControlServer, Request, Response};
use dvipsec_dataplane::sa_table::FacilitySink;
use dvipsec_dataplane::testbed::*;

const ROUND_TRIPS: u64 = 20;

/// A site that echoed 20 datagrams on 20 connections and reported lifesize to the CF.
fn running_site(dir: &Path) -> Arc<Mutex<Testbed>> {
    let mut bed = support::echoed_testbed(dir, ROUND_TRIPS as u16);
    let region = bed.distributor.facility.region().clone();
    let mut sink = FacilitySink::new(&region);
    for target in &mut bed.targets {
        target.report_lifesize(&mut sink);
    }
    assert_eq!(sink.failures, 0);
    Arc::new(Mutex::new(bed))
}

/// A control server at `path` answering for box `which` of `site`.
fn serve(path: &Path, site: Arc<Mutex<Testbed>>, which: TestbedBox) -> ControlServer {
    ControlServer::start(path, Box::new(TestbedHandler::new(site, which))).unwrap()
}

fn ask(client: &mut ControlClient, request: Request) -> Response {
    client.request(request).unwrap()
}

fn refused(client: &mut ControlClient, request: Request) -> ControlError {
    match client.request(request) {
        Err(ClientError::Refused(error)) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn socket_is_owner_only_and_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let path = dir.path().join("ctl.sock");
    std::fs::write(&path, b"stale").unwrap();
    let server = serve(&path, site, TestbedBox::Distributor);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let mut client = ControlClient::connect(&path).unwrap();
    assert!(matches!(
        ask(&mut client, Request::Status),
        Response::Status(_)
    ));
    drop(client);
    drop(server);
    assert!(!path.exists());
    assert!(ControlClient::connect(&path).is_err());
}

#[test]
fn the_distributor_answers_from_its_sad_dct_and_cf() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let path = dir.path().join("dist.sock");
    let _server = serve(&path, site.clone(), TestbedBox::Distributor);
    let mut client = ControlClient::connect(&path).unwrap();

    let Response::Status(status) = ask(&mut client, Request::Status) else {
        panic!("status")
    };
    assert_eq!(status.role, Role::Distributor);
    assert_eq!(status.dvipas.len(), 1);
    assert_eq!(status.dvipas[0].relation, DvipaRelation::Owns);
    assert_eq!(status.dvipas[0].dvipa, std::net::IpAddr::V4(DVIPA));
    let peers: Vec<_> = status.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(peers, ["t0", "t1"]);
    let ext = &status.links[0];
    assert_eq!(
        (ext.name.as_str(), ext.rx_packets),
        ("dist-ext", ROUND_TRIPS)
    );

    let Response::SaList(list) = ask(&mut client, Request::SaList) else {
        panic!("sa list")
    };
    assert_eq!(list.sas.len(), 1, "{list:?}");
    let sa = &list.sas[0];
    assert_eq!(
        (
            sa.spi,
            sa.direction.as_str(),
            sa.suite.as_str(),
            sa.mode.as_str()
        ),
        (SPI_TO_DVIPA, "inbound", "aes128gcm16", "tunnel")
    );
    assert_eq!(sa.location, SaLocation::Sad);
    assert_eq!(sa.udp_encap, Some((4500, 4500)));
    // The distributor only peeks: its SA opens nothing.
    assert_eq!(sa.packets, 0);

    let Response::DctList(dct) = ask(&mut client, Request::DctList) else {
        panic!("dct list")
    };
    assert_eq!(
        (dct.entries, dct.added, dct.full_drops),
        (ROUND_TRIPS, ROUND_TRIPS, 0)
    );

    let Response::CfShow(cf) = ask(&mut client, Request::CfShow) else {
        panic!("cf show")
    };
    assert_eq!(cf.slot_capacity, 16);
    let inbound = cf.slots.iter().find(|s| s.spi == SPI_TO_DVIPA).unwrap();
    let outbound = cf.slots.iter().find(|s| s.spi == SPI_TO_PEER).unwrap();
    assert_eq!(inbound.packets_in, ROUND_TRIPS);
    assert_eq!(outbound.packets_out, ROUND_TRIPS);

    let Response::Metrics(text) = ask(&mut client, Request::Metrics) else {
        panic!("metrics")
    };
    assert!(text
        .text
        .lines()
        .any(|l| l == "dvipsec_core_packets_total{node=\"distributor\",core=\"0\"} 20"));

    // The testbed has no IKE and no backup; the refusals say so instead of inventing answers.
    for request in [
        Request::IkeList,
        Request::ConnList,
        Request::Takeover {
            dvipa: std::net::IpAddr::V4(DVIPA),
        },
    ] {
        let error = refused(&mut client, request);
        assert!(matches!(error, ControlError::Unsupported { .. }), "{error}");
    }

    // A deleted SA leaves the listing.
    site.lock().unwrap().delete_sa(SPI_TO_DVIPA);
    let Response::SaList(list) = ask(&mut client, Request::SaList) else {
        panic!("sa list")
    };
    assert!(list.sas.is_empty(), "{list:?}");
}

#[test]
fn targets_list_their_shadow_sas_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let mut inbound_packets = 0;
    let mut outbound_packets = 0;
    for i in 0..2 {
        let mut handler = TestbedHandler::new(site.clone(), TestbedBox::Target(i));
        let Ok(Response::SaList(list)) = dispatch(&mut handler, Request::SaList) else {
            panic!("sa list")
        };
        assert_eq!(list.sas.len(), 2);
        for sa in &list.sas {
            assert_eq!(sa.location, SaLocation::Shadow);
            assert_eq!(sa.lifetime_state, "fresh");
            match sa.direction.as_str() {
                "inbound" => inbound_packets += sa.packets,
                "outbound" => outbound_packets += sa.packets,
                other => panic!("direction {other}"),
            }
        }
        let status = handler.status().unwrap();
        assert_eq!(status.role, Role::Target);
        assert_eq!(status.dvipas[0].relation, DvipaRelation::Serves);
        assert!(matches!(
            handler.dct_list(),
            Err(ControlError::Unsupported { .. })
        ));
        let keys = handler.keys_export().unwrap();
        let spis: Vec<u32> = keys.sas.iter().map(|s| s.spi).collect();
        assert_eq!(spis, [SPI_TO_DVIPA, SPI_TO_PEER]);
    }
    assert_eq!(
        (inbound_packets, outbound_packets),
        (ROUND_TRIPS, ROUND_TRIPS)
    );
    let mut distributor = TestbedHandler::new(site, TestbedBox::Distributor);
    let keys = distributor.keys_export().unwrap();
    assert_eq!(keys.sas.len(), 1);
    assert_eq!(keys.sas[0].enc_key.expose(), KEY_TO_DVIPA);
}

#[test]
fn bad_requests_get_error_responses_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let path = dir.path().join("ctl.sock");
    let _server = serve(&path, site, TestbedBox::Distributor);
    let mut client = ControlClient::connect(&path).unwrap();
    let cases: [(&[u8], &str); 5] = [
        (
            b"{\"version\":2,\"request\":{\"kind\":\"status\"}}\n",
            "\"kind\":\"unsupported_version\",\"requested\":2,\"supported\":1",
        ),
        (b"{\"version\":1,\n", "\"kind\":\"bad_request\""),
        (
            b"{\"version\":1,\"request\":{\"kind\":\"reboot\"}}\n",
            "unknown variant `reboot`",
        ),
        (
            b"{\"request\":{\"kind\":\"status\"}}\n",
            "field `version` (an unsigned integer) is missing",
        ),
        (b"\xff\xfe\n", "\"kind\":\"bad_request\""),
    ];
    for (line, expected) in cases {
        let answer = String::from_utf8(client.send_raw(line).unwrap()).unwrap();
        assert!(
            answer.contains(expected),
            "{:?} -> {answer}",
            String::from_utf8_lossy(line)
        );
        assert!(
            answer.starts_with("{\"version\":1,\"result\":{\"Err\""),
            "{answer}"
        );
    }
    assert!(matches!(
        ask(&mut client, Request::Status),
        Response::Status(_)
    ));

    let mut long = vec![b' '; dvipsec_control::protocol::MAX_LINE + 10];
    long.push(b'\n');
    let answer = String::from_utf8(client.send_raw(&long).unwrap()).unwrap();
    assert!(answer.contains("\"kind\":\"too_long\""), "{answer}");
    // The server hung up on the oversized line; a new connection works.
    let mut again = ControlClient::connect(&path).unwrap();
    assert!(matches!(
        ask(&mut again, Request::CfShow),
        Response::CfShow(_)
    ));
}

/// `GET path` over loopback; returns (status line, headers, body).
fn http_get(address: std::net::SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Parses the exposition: every sample line is `name{labels} value` with a `# TYPE` before it.
fn parse_samples(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE before {line:?}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line:?}");
            }
        }
        samples.push((series.to_string(), value));
    }
    samples
}

#[test]
fn the_metrics_endpoint_is_scraped_over_loopback_and_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let handlers: Vec<TestbedHandler> = [
        TestbedBox::Distributor,
        TestbedBox::Target(0),
        TestbedBox::Target(1),
    ]
    .into_iter()
    .map(|b| TestbedHandler::new(site.clone(), b))
    .collect();
    let source: metrics::MetricsSource = Arc::new(move || {
        let snapshots: Vec<_> = handlers.iter().map(|h| h.snapshot().unwrap()).collect();
        metrics::render(&snapshots)
    });
    let endpoint = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), source).unwrap();
    let (status, headers, body) = http_get(endpoint.address(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let samples = parse_samples(&body);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
    };
    assert_eq!(
        value(
            "dvipsec_port_packets_total{node=\"distributor\",port=\"dist-ext\",direction=\"rx\"}"
        ),
        20.0
    );
    assert_eq!(
        value(
            "dvipsec_drops_total{node=\"distributor\",stage=\"distributor\",cause=\"unknown_sa\"}"
        ),
        0.0
    );
    let sa_packets: f64 = (0..2)
        .map(|i| {
            value(&format!(
                "dvipsec_sa_packets_total{{node=\"t{i}\",spi=\"0x00002000\",direction=\"outbound\",table=\"shadow\"}}"
            ))
        })
        .sum();
    assert_eq!(sa_packets, 20.0);
    assert_eq!(value("dvipsec_takeovers_total{node=\"t1\"}"), 0.0);
    let (status, _, _) = http_get(endpoint.address(), "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// Ways key bytes could leak into text.
fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for key in [KEY_TO_DVIPA, KEY_TO_PEER] {
        let hex = hex::encode(&key[..8]);
        let upper = hex.to_uppercase();
        let decimal = format!("{}, {}, {}, {}", key[0], key[1], key[2], key[3]);
        for needle in [hex, upper, decimal] {
            if text.contains(&needle) {
                found.push(needle);
            }
        }
    }
    found
}

#[test]
fn no_key_material_outside_keys_export() {
    let dir = tempfile::tempdir().unwrap();
    let site = running_site(dir.path());
    let mut texts = Vec::new();
    for which in [TestbedBox::Distributor, TestbedBox::Target(0)] {
        let mut handler = TestbedHandler::new(site.clone(), which);
        texts.push(format!("{handler:?}"));
        for request in [
            Request::Status,
            Request::SaList,
            Request::DctList,
            Request::IkeList,
            Request::ConnList,
            Request::CfShow,
            Request::Takeover {
                dvipa: std::net::IpAddr::V4(DVIPA),
            },
            Request::Metrics,
        ] {
            match dispatch(&mut handler, request) {
                Ok(response) => {
                    texts.push(format!("{response:?}"));
                    texts.push(serde_json::to_string(&response).unwrap());
                }
                Err(error) => {
                    texts.push(format!("{error:?}"));
                    texts.push(error.to_string());
                }
            }
        }
        let export = dispatch(&mut handler, Request::KeysExport).unwrap();
        texts.push(format!("{export:?}"));
        // The needles do find keys where they are meant to be.
        assert!(!leaks(&serde_json::to_string(&export).unwrap()).is_empty());
    }
    let bed = site.lock().unwrap();
    texts.push(format!("{:?}", bed.distributor.sas));
    texts.push(format!("{:?}", bed.targets[0].sas));
    for text in texts {
        assert!(leaks(&text).is_empty(), "key material in: {text}");
    }
}
