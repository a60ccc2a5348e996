//! The node's packet ports, opened from the site's port list.

use dvipsec_config::{PortConfig, PortDriver};
use dvipsec_ports::{AfPacketConfig, AfPacketError, AfXdpConfig, AfXdpError, AfXdpPort};
use dvipsec_ports::{AfPacketPort, BufLayout, Burst, PacketBuf, PacketPort, PortStats};
use std::sync::Arc;

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// A kernel port without an interface name.
    #[error("port {port}: driver {driver} needs `iface`")]
    NoInterface { port: String, driver: &'static str },
    /// A driver this binary cannot open in a booted box.
    #[error("port {port}: driver {driver} cannot be used by `dvipsec boot`: {reason}")]
    Unsupported {
        port: String,
        driver: &'static str,
        reason: &'static str,
    },
    /// The AF_PACKET socket could not be set up (missing device, no CAP_NET_RAW, ...).
    #[error("port {port}: {source}")]
    AfPacket {
        port: String,
        #[source]
        source: AfPacketError,
    },
    /// The AF_XDP socket could not be set up.
    #[error("port {port}: {source}")]
    AfXdp {
        port: String,
        #[source]
        source: AfXdpError,
    },
}

/// One open port of the node.
pub enum OpenPort {
    AfPacket(AfPacketPort),
    AfXdp(AfXdpPort),
}

impl OpenPort {
    /// The interface the port is bound to.
    pub fn name(&self) -> &str {
        match self {
            OpenPort::AfPacket(port) => port.name(),
            OpenPort::AfXdp(port) => port.name(),
        }
    }
}

/// Each call goes to the backend the port was opened with (one branch per burst, not per
/// packet).
impl PacketPort for OpenPort {
    fn name(&self) -> &str {
        OpenPort::name(self)
    }

    fn layout(&self) -> BufLayout {
        match self {
            OpenPort::AfPacket(port) => port.layout(),
            OpenPort::AfXdp(port) => port.layout(),
        }
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        match self {
            OpenPort::AfPacket(port) => port.alloc_tx(),
            OpenPort::AfXdp(port) => port.alloc_tx(),
        }
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        match self {
            OpenPort::AfPacket(port) => port.rx_burst(burst),
            OpenPort::AfXdp(port) => port.rx_burst(burst),
        }
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        match self {
            OpenPort::AfPacket(port) => port.tx_burst(burst),
            OpenPort::AfXdp(port) => port.tx_burst(burst),
        }
    }

    fn stats(&self) -> &Arc<PortStats> {
        match self {
            OpenPort::AfPacket(port) => port.stats(),
            OpenPort::AfXdp(port) => port.stats(),
        }
    }
}

/// Opens every port in order; the ones already open are closed again when one fails.
pub fn open_all(configs: &[PortConfig]) -> Result<Vec<OpenPort>, PortError> {
    configs.iter().map(open).collect()
}

fn open(config: &PortConfig) -> Result<OpenPort, PortError> {
    let port = config.name.to_string();
    let driver = driver_name(*config.driver);
    match *config.driver {
        PortDriver::Mem => Err(PortError::Unsupported {
            port,
            driver,
            reason: "in-memory ports only exist inside one process (`dvipsec demo`)",
        }),
        PortDriver::Dpdk => Err(PortError::Unsupported {
            port,
            driver,
            reason: "the DPDK backend is not wired into boot",
        }),
        PortDriver::AfPacket => {
            let iface = interface(config, &port, driver)?;
            AfPacketPort::open(&AfPacketConfig::new(iface))
                .map(OpenPort::AfPacket)
                .map_err(|source| PortError::AfPacket { port, source })
        }
        PortDriver::AfXdp => {
            let iface = interface(config, &port, driver)?;
            let mut xdp = AfXdpConfig::new(iface);
            xdp.queue = config.queue.as_deref().copied().unwrap_or(0);
            AfXdpPort::open(&xdp)
                .map(OpenPort::AfXdp)
                .map_err(|source| PortError::AfXdp { port, source })
        }
    }
}

fn interface<'a>(
    config: &'a PortConfig,
    port: &str,
    driver: &'static str,
) -> Result<&'a str, PortError> {
    config
        .iface
        .as_deref()
        .map(String::as_str)
        .ok_or_else(|| PortError::NoInterface {
            port: port.to_owned(),
            driver,
        })
}

fn driver_name(driver: PortDriver) -> &'static str {
    match driver {
        PortDriver::Mem => "mem",
        PortDriver::AfPacket => "af_packet",
        PortDriver::AfXdp => "af_xdp",
        PortDriver::Dpdk => "dpdk",
    }
}
