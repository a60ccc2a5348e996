//! `dvipsec-hwtest`: the hardware-in-the-loop harness.
fn main() {}
