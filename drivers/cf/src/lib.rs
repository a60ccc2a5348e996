//! The coupling facility (CF).
//!
//! Owns the shared sequence region (outbound sequence counters, inbound replay state and
//! lifesize counters per (DVIPA, SPI) slot), both as a memory-mapped region shared by
//! processes on one host and as a networked server for boxes that share no memory.
