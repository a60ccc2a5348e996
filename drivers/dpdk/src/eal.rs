//! The Environment Abstraction Layer: initialised once per process, never torn down.
//!
//! DPDK keeps global state (memory, devices, lcores) per process and cannot be initialised twice,
//! so [`Eal::init`] succeeds at most once; every device handle borrows the `&'static Eal` it
//! returns as proof that the EAL is up.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::error::{DpdkError, RteError};
use crate::ffi;

static CLAIMED: AtomicBool = AtomicBool::new(false);
static EAL: OnceLock<Eal> = OnceLock::new();

/// Proof that this process's EAL is initialised.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name; for example
    /// `--no-huge -m 1024 --no-pci --file-prefix=x --vdev=net_ring0`). Fails with
    /// [`DpdkError::EalAlreadyInitialized`] on any call after the first, even a failed one: DPDK
    /// cannot retry an EAL init in the same process.
    pub fn init(args: Vec<String>) -> Result<&'static Eal, DpdkError> {
        if CLAIMED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialized);
        }
        let mut argv = vec![CString::from(c"dvipsec")];
        for (index, arg) in args.iter().enumerate() {
            let c = CString::new(arg.as_str()).map_err(|_| DpdkError::NulInArgument {
                index,
                argument: arg.clone(),
            })?;
            argv.push(c);
        }
        // rte_eal_init may keep pointers into argv (and reorders it), so the strings and the
        // pointer array live for the rest of the process.
        let strings: &'static [CString] = Box::leak(argv.into_boxed_slice());
        let pointers: &'static mut [*mut c_char] = Box::leak(
            strings
                .iter()
                .map(|s| s.as_ptr().cast_mut())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let argc = c_int::try_from(pointers.len()).map_err(|_| DpdkError::OutOfRange {
            what: "EAL argument count",
            value: pointers.len(),
            range: "a C int",
        })?;
        // SAFETY: argc matches the array; every pointer is a NUL-terminated string that lives
        // forever (leaked above); CLAIMED guarantees this runs once per process.
        let rc = unsafe { ffi::dvs_eal_init(argc, pointers.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::EalInit {
                args,
                cause: RteError::last(),
            });
        }
        Ok(EAL.get_or_init(|| Eal { args }))
    }

    /// The EAL of this process, if [`Eal::init`] succeeded.
    pub fn get() -> Option<&'static Eal> {
        EAL.get()
    }

    /// The arguments the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// EAL arguments from a site configuration: its `eal_args` as given, then one `--vdev=` per
    /// entry of `vdevs`.
    pub fn args_from_site(eal_args: &[String], vdevs: &[String]) -> Vec<String> {
        eal_args
            .iter()
            .cloned()
            .chain(vdevs.iter().map(|v| format!("--vdev={v}")))
            .collect()
    }

    /// Arguments for a machine without hugepages or a PCI NIC (tests, CI, namespaces):
    /// `--no-huge -m 1024 --no-pci --file-prefix=<file_prefix>` and the vdevs. Each concurrent
    /// DPDK process needs its own `file_prefix`.
    pub fn args_without_hugepages(file_prefix: &str, vdevs: &[&str]) -> Vec<String> {
        let base = [
            "--no-huge".to_owned(),
            "-m".to_owned(),
            "1024".to_owned(),
            "--no-pci".to_owned(),
            "-l".to_owned(),
            "0".to_owned(),
            "--log-level=warning".to_owned(),
            format!("--file-prefix={file_prefix}"),
        ];
        let vdevs: Vec<String> = vdevs.iter().map(|v| (*v).to_owned()).collect();
        Self::args_from_site(&base, &vdevs)
    }

    /// Creates a virtual device after start-up (for example `net_af_packet1,iface=veth0`), so a
    /// device can be added once the interface it drives exists.
    pub fn probe_vdev(&self, devargs: &str) -> Result<(), DpdkError> {
        let c = CString::new(devargs).map_err(|_| DpdkError::NulInName(devargs.to_owned()))?;
        // SAFETY: the EAL is up (self exists); devargs is a valid C string for the call.
        let rc = unsafe { ffi::dvs_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError::call(
                "rte_dev_probe",
                devargs,
                RteError::from_code(rc),
            ));
        }
        Ok(())
    }
}

/// A process-unique name for a DPDK object (mempools and rings share one namespace per process).
pub(crate) fn unique_name(kind: &str) -> CString {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Names are short ASCII without NUL, so this cannot fail; fall back to the kind alone.
    CString::new(format!("dvs_{kind}_{n}")).unwrap_or_else(|_| CString::from(c"dvs"))
}
