//! The demo's side of child SAs: the context its distributors give the SA_INSTALLs (the same
//! conversion `boot` uses, [`crate::boot::child`]) and the remote peer's own SAs.

use crate::boot::child::{self, ChildContext, ChildPair};
use dvipsec_esp::{
    Direction, LifetimeLimits, Mode, Sa, SaConfig, SaError, SaKeys, TunnelEndpoints, UdpEncap,
};
use dvipsec_ike::crypto::DirectionKeys;
use dvipsec_ike::ChildSaInstalled;

/// The replay window of every demo SA (the peer's, and the CF slot's for inbound SAs).
pub const REPLAY_WINDOW: u32 = 128;

/// Lifetimes small enough that the demo rekeys within a second or two of traffic. Targets
/// report each 5 % of the hard limit (the site's `lifesize.threshold_percent`).
pub const DEMO_LIFETIME: LifetimeLimits = LifetimeLimits {
    soft_packets: Some(3_000),
    hard_packets: Some(20_000),
    soft_bytes: None,
    hard_bytes: None,
};

/// The DVIPA side's SA_INSTALLs of a child SA a distributor installed (their filter is the
/// negotiated selectors: the DVIPA and the peer's inner host); `None` when the data plane does
/// not run the child's suite or its selectors are not prefixes.
pub fn child_pair(dvipa_name: &str, child: &ChildSaInstalled) -> Option<ChildPair> {
    let context = ChildContext {
        dvipa_name,
        replay_window: REPLAY_WINDOW,
        lifetime: DEMO_LIFETIME,
    };
    child::child_pair(&context, child).ok()
}

/// The peer's own SAs of a child SA its initiator installed: (outbound, inbound).
pub fn peer_sas(child: &ChildSaInstalled) -> Result<Option<(Sa, Sa)>, SaError> {
    let Ok(suite) = child::esp_suite(&child.suite) else {
        return Ok(None);
    };
    let config = |spi, direction, keys: &DirectionKeys, src, dst| {
        let mut config = SaConfig::new(spi, direction, suite, SaKeys::new(&keys.encr, &keys.integ));
        config.mode = Mode::Tunnel;
        config.tunnel = Some(TunnelEndpoints { src, dst });
        config.udp_encap = child.udp_encapsulation.then_some(UdpEncap::NAT_T);
        config.replay_window = REPLAY_WINDOW;
        config
    };
    let (local, remote) = (child.local.ip(), child.remote.ip());
    let outbound = Sa::new(config(
        child.outbound_spi,
        Direction::Outbound,
        &child.outbound_keys,
        local,
        remote,
    ))?;
    let inbound = Sa::new(config(
        child.inbound_spi,
        Direction::Inbound,
        &child.inbound_keys,
        remote,
        local,
    ))?;
    Ok(Some((outbound, inbound)))
}
