//! Packet ports: the burst receive/transmit interface the polling loops use, and its backends.
//!
//! Owns the `PacketPort` trait, the preallocated buffer pools with headroom and tailroom for
//! sealing ESP in place, per-port counters, the in-memory fabric that joins boxes inside one
//! process, and the kernel backends: AF_PACKET (TPACKET_V2 frame or V3 block rings) and
//! AF_XDP. Unsafe code (mmap rings, raw sockets, bpf calls, namespace switching) lives here,
//! each block with its `// SAFETY:` reasoning.

pub mod af_packet;
pub mod af_xdp;
pub mod buf;
pub mod counters;
pub mod fabric;
mod ifindex;
mod mmap;
pub mod netns;
mod poll;
pub mod port;

pub use af_packet::{AfPacketConfig, AfPacketError, AfPacketPort, RxRing};
pub use af_xdp::{AfXdpConfig, AfXdpError, AfXdpPort, Steering};
pub use buf::{BufError, BufLayout, PacketBuf, Pool};
pub use counters::{DropCause, PortCounters, PortStats};
pub use fabric::{wire, FabricConfig, FabricError, FabricPort, Mac, SwitchBuilder};
pub use poll::{wait_any_readable, MAX_WAIT_FDS};
pub use port::{Burst, PacketPort};

// Polling loops own their ports and buffers on pinned cores, so all of them must move
// between threads; this fails to compile if one stops being `Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<FabricPort>();
    assert_send::<AfPacketPort>();
    assert_send::<AfXdpPort>();
    assert_send::<PacketBuf>();
    assert_send::<Pool>();
    assert_send::<Box<dyn PacketPort + Send>>();
};
