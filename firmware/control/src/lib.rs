//! The operator interface of a dvipsec box.
//!
//! Owns the versioned control-socket protocol (requests and responses), the Unix-socket server
//! that answers them from a box's state, the client `dvipsecctl` uses, the Prometheus metrics
//! rendering and the Wireshark key export. Nothing else in dvipsec prints keys.
#![forbid(unsafe_code)]
