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
    /// The DPDK EAL or ethdev could not be set up.
    #[cfg(feature = "dpdk")]
    #[error("port {port}: {source}")]
    Dpdk {
        port: String,
        #[source]
        source: dvipsec_dpdk::DpdkError,
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
    /// A DPDK ethdev and the kernel interface behind it, if it is a vdev on one (`iface=`).
    #[cfg(feature = "dpdk")]
    Dpdk(dvipsec_dpdk::EthdevPort, Option<String>),
}

/// Calls `$call` on whichever backend `$port` is.
macro_rules! each_backend {
    ($port:expr, $p:ident => $call:expr) => {
        match $port {
            OpenPort::AfPacket($p) => $call,
            OpenPort::AfXdp($p) => $call,
            #[cfg(feature = "dpdk")]
            OpenPort::Dpdk($p, _) => $call,
        }
    };
}

impl OpenPort {
    /// The interface (or DPDK device) the port is bound to.
    pub fn name(&self) -> &str {
        each_backend!(self, port => port.name())
    }

    /// The kernel interface whose MAC the port sends from: the port's own for kernel ports,
    /// the one a DPDK vdev drives; `None` for a device the kernel does not see.
    pub fn kernel_interface(&self) -> Option<&str> {
        match self {
            OpenPort::AfPacket(port) => Some(port.name()),
            OpenPort::AfXdp(port) => Some(port.name()),
            #[cfg(feature = "dpdk")]
            OpenPort::Dpdk(_, iface) => iface.as_deref(),
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
        each_backend!(self, port => port.layout())
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        each_backend!(self, port => port.alloc_tx())
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        each_backend!(self, port => port.rx_burst(burst))
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        each_backend!(self, port => port.tx_burst(burst))
    }

    fn stats(&self) -> &Arc<PortStats> {
        each_backend!(self, port => port.stats())
    }

    fn readiness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        each_backend!(self, port => port.readiness_fd())
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
        PortDriver::Dpdk => open_dpdk(config, port, driver),
        PortDriver::AfPacket => {
            let iface = interface(config, &port, driver)?;
            // Receive and transmit slots follow the layout: the XCF port's frames carry GRE.
            let af_packet = AfPacketConfig::new(iface).with_layout(layout(config));
            AfPacketPort::open(&af_packet)
                .map(OpenPort::AfPacket)
                .map_err(|source| PortError::AfPacket { port, source })
        }
        PortDriver::AfXdp => {
            let iface = interface(config, &port, driver)?;
            let mut xdp = AfXdpConfig::new(iface);
            xdp.queue = config.queue.as_deref().copied().unwrap_or(0);
            xdp.layout = layout(config);
            // ARP, IKE and the XCF streams stay with the kernel.
            xdp.steering = dvipsec_ports::Steering::IpsecOnly;
            AfXdpPort::open(&xdp)
                .map(OpenPort::AfXdp)
                .map_err(|source| PortError::AfXdp { port, source })
        }
    }
}

/// A DPDK ethdev: `iface` names the device when given (a PCI address, say), else the port's
/// first vdev does. The EAL starts with the first DPDK port, from its `eal_args` and the
/// `vdevs` of every port (one EAL per process).
#[cfg(feature = "dpdk")]
fn open_dpdk(
    config: &PortConfig,
    port: String,
    driver: &'static str,
) -> Result<OpenPort, PortError> {
    let vdevs: Vec<String> = config.vdevs.as_deref().cloned().unwrap_or_default();
    let eal_args: Vec<String> = config.eal_args.as_deref().cloned().unwrap_or_default();
    let first_vdev = vdevs.first().map(String::as_str).unwrap_or_default();
    let device = match config.iface.as_deref() {
        Some(iface) => iface.clone(),
        None => first_vdev.split(',').next().unwrap_or_default().to_owned(),
    };
    if device.is_empty() {
        return Err(PortError::NoInterface { port, driver });
    }
    let kernel_iface = first_vdev
        .split(',')
        .find_map(|arg| arg.strip_prefix("iface="))
        .map(str::to_owned);
    let dpdk_error = |source| PortError::Dpdk {
        port: port.clone(),
        source,
    };
    let eal = match dvipsec_dpdk::Eal::get() {
        Some(eal) => {
            for vdev in &vdevs {
                eal.probe_vdev(vdev).map_err(dpdk_error)?;
            }
            eal
        }
        None => dvipsec_dpdk::Eal::init(dvipsec_dpdk::Eal::args_from_site(&eal_args, &vdevs))
            .map_err(dpdk_error)?,
    };
    let mut ethdev_config = dvipsec_dpdk::EthdevConfig::new(&device);
    ethdev_config.layout = layout(config);
    let ethdev = dvipsec_dpdk::EthdevPort::open(eal, &ethdev_config).map_err(dpdk_error)?;
    Ok(OpenPort::Dpdk(ethdev, kernel_iface))
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(
    _config: &PortConfig,
    port: String,
    driver: &'static str,
) -> Result<OpenPort, PortError> {
    Err(PortError::Unsupported {
        port,
        driver,
        reason: "this build has no DPDK backend (build with `--features dpdk`)",
    })
}

/// Buffers for the port's frames: the XCF port's carry the distributor's GRE too.
fn layout(config: &PortConfig) -> BufLayout {
    layout_for(&config.name)
}

/// The layout of the port named `port_name`. The external port's headroom also takes the
/// distributor's forward headers (Ethernet, outer IPv4, GRE) once the received Ethernet header
/// is stripped, so a forwarded frame is never copied to a roomier buffer (see the test).
fn layout_for(port_name: &str) -> BufLayout {
    if port_name == super::plane::XCF_PORT_NAME {
        BufLayout::esp_over_gre_ipv4()
    } else {
        BufLayout::esp_udp_tunnel_ipv4()
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

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_dataplane::gre::FORWARD_OVERHEAD;
    use dvipsec_dataplane::wire::ETHERNET_LEN;

    #[test]
    fn external_frames_take_the_forward_headers_in_place() {
        let external = layout_for("external");
        assert_ne!(external, layout_for(super::super::plane::XCF_PORT_NAME));
        // A received frame starts at the layout's headroom; the distributor strips its
        // Ethernet header and writes Ethernet, IPv4 and GRE in front of the IP packet.
        assert!(
            external.headroom() + ETHERNET_LEN >= FORWARD_OVERHEAD,
            "{external:?} would relocate every forwarded frame"
        );
    }
}
