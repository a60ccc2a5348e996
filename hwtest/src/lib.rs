//! Hardware-in-the-loop harness for dvipsec.
//!
//! Owns the test topologies built from Linux network namespaces and veth pairs (removed again
//! by a guard's `Drop`, or for a whole site by `topology down` from a recorded state file), and
//! the preflight that tells an operator whether this machine can run them, strongSwan as a
//! site's remote peer ([`swan_peer`]) and the failover measurement ([`takeover`]). It never
//! touches interfaces or namespaces it did not create.
#![forbid(unsafe_code)]

pub mod netns;
pub mod preflight;
pub mod swan_peer;
pub mod takeover;
pub mod topology;
