//! Packet ports: the burst receive/transmit interface the polling loops use, and its backends.
//!
//! Owns the `PacketPort` trait, the in-memory fabric that joins boxes inside one process, and
//! the kernel-socket backends. Unsafe code (mmap rings, raw sockets) lives here, each block
//! with its `// SAFETY:` reasoning.
