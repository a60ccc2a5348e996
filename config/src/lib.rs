//! Site configuration for a dvipsec cluster.
//!
//! Owns the YAML schema that every box boots from (nodes, DVIPAs, IPsec policy, peers,
//! coupling facility, XCF link, lifesize reporting) and the validation that goes beyond
//! types. It does no I/O beyond reading the file and the PSK sources named in it.
#![forbid(unsafe_code)]
