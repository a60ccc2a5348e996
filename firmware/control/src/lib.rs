//! The operator interface of a dvipsec box.
//!
//! Owns the versioned control-socket protocol (requests and responses, [`protocol`]), the
//! Unix-socket server that answers them from a box's [`ControlHandler`] ([`server`]), the client
//! `dvipsecctl` uses ([`client`]), the Prometheus metrics rendering and HTTP endpoint
//! ([`metrics`]) and the Wireshark key export ([`keys`]). Nothing else in dvipsec prints keys.
//! [`report`] builds report entries from data-plane tables, ports, drop counters, the DCT and CF
//! slots (for the booted box, the demo and the testbed alike), and [`testbed`] answers for a box
//! of the data plane's in-process testbed.
#![forbid(unsafe_code)]

pub mod client;
pub mod handler;
pub mod keys;
pub mod metrics;
pub mod protocol;
pub mod relay;
pub mod report;
pub mod server;
pub mod testbed;

pub use client::{ClientError, ControlClient};
pub use handler::ControlHandler;
pub use protocol::{ControlError, Request, Response, PROTOCOL_VERSION};
pub use server::{ControlServer, ServerError};
