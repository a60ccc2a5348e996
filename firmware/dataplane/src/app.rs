//! Applications on a target: UDP sockets bound to DVIPA:port, and the built-in echo service.
//!
//! A socket is a bounded queue of received datagrams, each still in the pool buffer it arrived in
//! (no copy, no allocation per packet). A full queue drops the datagram and counts it, like a
//! socket's receive buffer. Sending goes through the target's outbound path (see
//! [`crate::node::TargetNode::send_to`]).

use crate::wire::Flow;
use dvipsec_ports::PacketBuf;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

const UDP: u8 = 17;

/// The port of the built-in echo ("hello") service, as in the seed's example configuration.
pub const ECHO_PORT: u16 = 60;

/// A bound socket's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub usize);

/// Why a bind failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another socket holds the address.
    #[error("{0} is already bound")]
    InUse(SocketAddr),
    /// The address is not a DVIPA this target serves.
    #[error("{0} is not a DVIPA of this target")]
    NotDvipa(IpAddr),
    /// The queue must hold at least one datagram.
    #[error("a socket queue must hold at least one datagram")]
    EmptyQueue,
}

/// A received datagram.
#[derive(Debug)]
pub struct Datagram {
    buf: PacketBuf,
    /// Who sent it.
    pub from: SocketAddr,
    /// Where it was sent (DVIPA:port).
    pub to: SocketAddr,
    payload: Range<usize>,
}

impl Datagram {
    /// The datagram's data.
    pub fn payload(&self) -> &[u8] {
        self.buf.data().get(self.payload.clone()).unwrap_or(&[])
    }
}

#[derive(Debug)]
struct Socket {
    local: SocketAddr,
    queue: VecDeque<Datagram>,
    capacity: usize,
    overflow: u64,
}

/// The sockets of one target.
#[derive(Debug, Default)]
pub struct Sockets {
    sockets: Vec<Socket>,
    /// Datagrams for a port nobody bound.
    pub no_listener: u64,
}

impl Sockets {
    /// Binds a UDP socket to `local` with room for `queue` datagrams (allocated here, once).
    pub fn bind(&mut self, local: SocketAddr, queue: usize) -> Result<SocketId, BindError> {
        if queue == 0 {
            return Err(BindError::EmptyQueue);
        }
        if self.sockets.iter().any(|s| s.local == local) {
            return Err(BindError::InUse(local));
        }
        self.sockets.push(Socket {
            local,
            queue: VecDeque::with_capacity(queue),
            capacity: queue,
            overflow: 0,
        });
        Ok(SocketId(self.sockets.len() - 1))
    }

    /// The local address of a socket.
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.get(id.0).map(|s| s.local)
    }

    /// The socket bound to `dst`, if any.
    pub fn find(&self, dst: SocketAddr) -> Option<SocketId> {
        self.sockets
            .iter()
            .position(|s| s.local == dst)
            .map(SocketId)
    }

    /// Queues a datagram whose frame is the inner IP packet of `flow` (payload offsets relative
    /// to the frame). Returns false (and counts) when nobody listens or the queue is full.
    pub fn deliver(&mut self, buf: PacketBuf, flow: &Flow) -> bool {
        if flow.protocol != UDP {
            // No user-space TCP (or other transport) here: nobody listens.
            self.no_listener += 1;
            return false;
        }
        let to = SocketAddr::new(flow.dst, flow.dst_port);
        let Some(socket) = self.sockets.iter_mut().find(|s| s.local == to) else {
            self.no_listener += 1;
            return false;
        };
        if socket.queue.len() >= socket.capacity {
            socket.overflow += 1;
            return false;
        }
        socket.queue.push_back(Datagram {
            buf,
            from: SocketAddr::new(flow.src, flow.src_port),
            to,
            payload: flow.payload.clone(),
        });
        true
    }

    /// The oldest queued datagram of a socket.
    pub fn recv(&mut self, id: SocketId) -> Option<Datagram> {
        self.sockets.get_mut(id.0)?.queue.pop_front()
    }

    /// Datagrams a socket dropped because its queue was full.
    pub fn overflow(&self, id: SocketId) -> u64 {
        self.sockets.get(id.0).map_or(0, |s| s.overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_ports::{BufLayout, Pool};

    fn flow(protocol: u8, port: u16) -> Flow {
        Flow {
            src: "10.1.0.1".parse().unwrap(),
            dst: "203.0.113.10".parse().unwrap(),
            protocol,
            src_port: 4000,
            dst_port: port,
            tcp_flags: None,
            payload: 28..31,
        }
    }

    #[test]
    fn datagrams_reach_only_their_socket_and_a_full_queue_counts() {
        let pool = Pool::new(BufLayout::new(0, 64, 0).unwrap(), 8).unwrap();
        let mut sockets = Sockets::default();
        let local: SocketAddr = "203.0.113.10:7000".parse().unwrap();
        let id = sockets.bind(local, 2).unwrap();
        assert_eq!(sockets.bind(local, 2), Err(BindError::InUse(local)));
        let mut frame = pool.alloc().unwrap();
        frame.set_frame(&[0xab; 31]).unwrap();
        assert!(sockets.deliver(frame, &flow(17, 7000)));
        assert!(!sockets.deliver(pool.alloc().unwrap(), &flow(17, 7001)));
        assert!(
            !sockets.deliver(pool.alloc().unwrap(), &flow(6, 7000)),
            "TCP is not UDP"
        );
        assert_eq!(sockets.no_listener, 2);
        assert!(sockets.deliver(pool.alloc().unwrap(), &flow(17, 7000)));
        assert!(!sockets.deliver(pool.alloc().unwrap(), &flow(17, 7000)));
        assert_eq!(sockets.overflow(id), 1);
        let first = sockets.recv(id).unwrap();
        assert_eq!(first.payload(), &[0xab; 3]);
        assert_eq!(first.from, "10.1.0.1:4000".parse::<SocketAddr>().unwrap());
        assert!(sockets.recv(id).is_some());
        assert!(sockets.recv(id).is_none());
        assert_eq!(pool.available(), 7, "only the one datagram still held");
    }
}
