//! What the control crate's integration tests share: the data plane's in-process testbed after
//! some echo traffic, so that its tables, DCT and CF slots have something to report.

use std::path::Path;

use dvipsec_dataplane::testbed::{Testbed, TestbedConfig};

/// The testbed (its CF region under `dir`) after `flows` echo round trips, each from its own
/// peer port to the DVIPA's UDP 60; every echo came back.
pub fn echoed_testbed(dir: &Path, flows: u16) -> Testbed {
    let mut bed = Testbed::new(&TestbedConfig::default(), &dir.join("cf")).unwrap();
    for conn in 0..flows {
        assert!(bed.peer.send_udp(
            Testbed::peer_socket(40_000 + conn),
            Testbed::dvipa_socket(60),
            format!("hello {conn}").as_bytes(),
        ));
    }
    bed.settle(1_000, 50);
    assert_eq!(bed.peer.take_received().len(), usize::from(flows));
    bed
}
