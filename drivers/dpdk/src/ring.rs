//! Two ethdev ports joined back to back through two DPDK `rte_ring`s (the net_ring PMD's
//! `rte_eth_from_rings`): what one sends, the other receives, inside one process. It carries
//! mbufs without a kernel, for exercising the ethdev path and for in-process boxes.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::eal::{unique_name, Eal};
use crate::error::{DpdkError, RteError};
use crate::ethdev::{EthdevConfig, EthdevPort};
use crate::ffi;

/// One DPDK ring, freed on drop.
#[derive(Debug)]
struct Ring {
    ptr: NonNull<ffi::rte_ring>,
}

impl Ring {
    fn new(_eal: &'static Eal, slots: u32) -> Result<Self, DpdkError> {
        let name = unique_name("ring");
        // SAFETY: the EAL is up; name is a valid C string. Flags 0: multi-producer and
        // multi-consumer, because net_ring may be polled from any thread.
        let raw = unsafe { ffi::dvs_ring_create(name.as_ptr(), slots, 0) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            DpdkError::call("rte_ring_create", &name.to_string_lossy(), RteError::last())
        })?;
        Ok(Ring { ptr })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: we created the ring; the ports using it are stopped before (see RingLink).
        unsafe { ffi::dvs_ring_free(self.ptr.as_ptr()) }
    }
}

/// Two started ethdev ports crossing two rings.
pub struct RingLink {
    /// The first end; its transmit ring is the second end's receive ring.
    pub a: EthdevPort,
    /// The second end.
    pub b: EthdevPort,
    // Dropped after the ports (field order).
    _rings: [Ring; 2],
}

// SAFETY: the rings are multi-producer/multi-consumer and only freed on drop; the ports are Send.
unsafe impl Send for RingLink {}

impl std::fmt::Debug for RingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingLink")
            .field("a", &self.a)
            .field("b", &self.b)
            .finish()
    }
}

impl RingLink {
    /// Two ports named `<name>_a` and `<name>_b` over rings of `slots` entries (a power of two).
    pub fn new(
        eal: &'static Eal,
        name: &str,
        slots: u32,
        config: &EthdevConfig,
    ) -> Result<Self, DpdkError> {
        let a_to_b = Ring::new(eal, slots)?;
        let b_to_a = Ring::new(eal, slots)?;
        let a_id = ring_port(&format!("{name}_a"), &b_to_a, &a_to_b)?;
        let b_id = ring_port(&format!("{name}_b"), &a_to_b, &b_to_a)?;
        let mut a_config = config.clone();
        a_config.device = format!("{name}_a");
        let mut b_config = config.clone();
        b_config.device = format!("{name}_b");
        let a = EthdevPort::start(eal, a_id, &a_config)?;
        let b = EthdevPort::start(eal, b_id, &b_config)?;
        Ok(RingLink {
            a,
            b,
            _rings: [a_to_b, b_to_a],
        })
    }
}

fn ring_port(name: &str, rx: &Ring, tx: &Ring) -> Result<u16, DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError::NulInName(name.to_owned()))?;
    let mut port_id = 0u16;
    // SAFETY: both rings are alive and outlive the port (RingLink drops ports first);
    // port_id is a valid out pointer.
    let rc = unsafe {
        ffi::dvs_eth_from_rings(c.as_ptr(), rx.ptr.as_ptr(), tx.ptr.as_ptr(), &mut port_id)
    };
    if rc < 0 {
        return Err(DpdkError::call(
            "rte_eth_from_rings",
            name,
            RteError::last(),
        ));
    }
    Ok(port_id)
}
