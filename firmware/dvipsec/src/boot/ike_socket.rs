//! The distributor's IKE sockets: UDP 500 and 4500 on each DVIPA it owns now, driving the
//! sans-io endpoint.
//!
//! On port 4500 IKE carries the RFC 3948 non-ESP marker (four zero bytes); everything else
//! there is UDP-encapsulated ESP, which the data plane takes from the packet port, so the socket
//! only drains it. The kernel socket is what keeps the kernel from answering port 4500 with
//! ICMP unreachable.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use dvipsec_ike::{Endpoint, Transmit};

/// IKE's port and the NAT-traversal port.
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;
/// The RFC 3948 marker in front of IKE on port 4500.
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The largest datagram read.
const DATAGRAM_MAX: usize = 65_536;

/// Why the IKE sockets could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IkeSocketError {
    #[error("cannot bind IKE socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the sockets counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct IkeSocketCounters {
    pub received: u64,
    pub sent: u64,
    pub send_errors: u64,
    /// ESP or keepalives on port 4500 (the data plane handles ESP).
    pub not_ike: u64,
}

/// The sockets of one DVIPA.
struct DvipaSockets {
    address: IpAddr,
    ike: UdpSocket,
    nat_t: UdpSocket,
}

/// The IKE sockets of the DVIPAs the box owns now.
pub struct IkeSockets {
    sockets: Vec<DvipaSockets>,
    buf: Vec<u8>,
    counters: IkeSocketCounters,
}

impl Default for IkeSockets {
    fn default() -> Self {
        IkeSockets {
            sockets: Vec::new(),
            buf: vec![0; DATAGRAM_MAX],
            counters: IkeSocketCounters::default(),
        }
    }
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, IkeSocketError> {
    let bound = UdpSocket::bind(addr).and_then(|socket| {
        socket.set_nonblocking(true)?;
        Ok(socket)
    });
    bound.map_err(|source| IkeSocketError::Bind { addr, source })
}

impl IkeSockets {
    /// Binds ports 500 and 4500 on `address` (a DVIPA the box now owns); already bound: done.
    pub fn add(&mut self, address: IpAddr) -> Result<(), IkeSocketError> {
        if self.sockets.iter().any(|s| s.address == address) {
            return Ok(());
        }
        self.sockets.push(DvipaSockets {
            address,
            ike: bind(SocketAddr::new(address, IKE_PORT))?,
            nat_t: bind(SocketAddr::new(address, NAT_T_PORT))?,
        });
        Ok(())
    }

    /// Every socket's descriptor, for an idle loop to block on.
    pub fn readiness_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.sockets
            .iter()
            .flat_map(|s| [s.ike.as_fd(), s.nat_t.as_fd()])
    }

    /// Closes the sockets of `address` (the DVIPA moved away).
    pub fn remove(&mut self, address: IpAddr) {
        self.sockets.retain(|s| s.address != address);
    }

    pub fn counters(&self) -> IkeSocketCounters {
        self.counters
    }

    /// Hands every waiting IKE datagram to `endpoint`; returns how many.
    pub fn receive_into(&mut self, endpoint: &mut Endpoint, now: Instant) -> usize {
        let mut handled = 0;
        for pair in &self.sockets {
            for (socket, marked) in [(&pair.ike, false), (&pair.nat_t, true)] {
                let Ok(local) = socket.local_addr() else {
                    continue;
                };
                while let Ok((len, remote)) = socket.recv_from(&mut self.buf) {
                    let Some(datagram) = self.buf.get(..len) else {
                        continue;
                    };
                    let ike = if marked {
                        datagram.strip_prefix(&NON_ESP_MARKER)
                    } else {
                        Some(datagram)
                    };
                    match ike {
                        Some(ike) => {
                            self.counters.received += 1;
                            handled += 1;
                            endpoint.handle_datagram(now, remote, local, ike);
                        }
                        None => self.counters.not_ike += 1,
                    }
                }
            }
        }
        handled
    }

    /// Sends what the endpoint queued, from the socket of its local address.
    pub fn send_from(&mut self, endpoint: &mut Endpoint, now: Instant) {
        while let Some(transmit) = endpoint.poll_transmit(now) {
            if self.send(&transmit) {
                self.counters.sent += 1;
            } else {
                self.counters.send_errors += 1;
            }
        }
    }

    fn send(&self, transmit: &Transmit) -> bool {
        let Some(pair) = self
            .sockets
            .iter()
            .find(|pair| pair.address == transmit.local.ip())
        else {
            tracing::warn!(local = %transmit.local, "IKE datagram from an address we do not own");
            return false;
        };
        let result = if transmit.local.port() == NAT_T_PORT {
            let mut marked = Vec::with_capacity(NON_ESP_MARKER.len() + transmit.payload.len());
            marked.extend_from_slice(&NON_ESP_MARKER);
            marked.extend_from_slice(&transmit.payload);
            pair.nat_t.send_to(&marked, transmit.remote)
        } else {
            pair.ike.send_to(&transmit.payload, transmit.remote)
        };
        match result {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(remote = %transmit.remote, %error, "IKE send failed");
                false
            }
        }
    }
}
