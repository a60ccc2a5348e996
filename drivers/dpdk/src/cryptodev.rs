//! ESP AES-GCM through a DPDK cryptodev (crypto_aesni_gcm here, QAT on hardware), as a
//! `dvipsec_esp::AeadProvider`: an SA built with [`CryptodevProvider`] frames ESP exactly as the
//! software path does and hands only the AEAD step to the device.
//!
//! Each call copies the AAD and text into one mbuf laid out as `[AAD (16)][text][tag (16)]`,
//! enqueues one operation, polls it back and copies the result out. The device's single queue
//! pair is shared by every SA through a mutex. This is the simple synchronous form; a burst form
//! that enqueues a whole burst of packets is what would pay off on QAT.

use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use dvipsec_esp::{AeadAlgorithm, AeadProvider, CryptoError, EspAead, NONCE_LEN, TAG_LEN};

use crate::eal::{unique_name, Eal};
use crate::error::{DpdkError, RteError};
use crate::ffi;
use crate::mempool::{free_mbuf, MbufPool};

/// Room reserved for the AAD in front of the text (ESP uses 8 bytes, 12 with ESN).
const AAD_ROOM: usize = 16;
/// Mbuf data room of the crypto pool: the largest DPDK allows.
const CRYPTO_MBUF_ROOM: u16 = u16::MAX;
/// Largest text (plaintext or ciphertext) one operation takes.
pub const MAX_CRYPTO_TEXT: usize = CRYPTO_MBUF_ROOM as usize - 128 - AAD_ROOM - TAG_LEN;
/// Dequeue polls before an operation is declared lost (a software PMD answers on the first).
const MAX_DEQUEUE_POLLS: u32 = 10_000_000;

struct Pools {
    sessions: NonNull<ffi::rte_mempool>,
    ops: NonNull<ffi::rte_mempool>,
}

/// An opened, started cryptodev with one queue pair.
pub struct Cryptodev {
    name: String,
    dev_id: u8,
    queue: Mutex<()>,
    pools: Pools,
    mbufs: MbufPool,
}

// SAFETY: the mempools are thread-safe; the queue pair is only used with `queue` locked; the
// device id is plain data.
unsafe impl Send for Cryptodev {}
// SAFETY: as above.
unsafe impl Sync for Cryptodev {}

impl std::fmt::Debug for Cryptodev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cryptodev")
            .field("name", &self.name)
            .field("dev_id", &self.dev_id)
            .finish()
    }
}

impl Cryptodev {
    /// Configures and starts the cryptodev named `name` (for example `crypto_aesni_gcm0`).
    pub fn open(eal: &'static Eal, name: &str) -> Result<Arc<Self>, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::NulInName(name.to_owned()))?;
        // SAFETY: the EAL is up; c is a valid C string.
        let id = unsafe { ffi::dvs_cryptodev_get_dev_id(c.as_ptr()) };
        let dev_id = u8::try_from(id).map_err(|_| DpdkError::NoSuchCryptodev(name.to_owned()))?;
        let sessions = pool_or_error(
            "cryptodev session pool",
            name,
            // SAFETY: dev_id exists; the name is a valid C string.
            |n| unsafe { ffi::dvs_session_pool_create(n, dev_id, 1024) },
        )?;
        let ops = pool_or_error(
            "crypto op pool",
            name,
            // SAFETY: the EAL is up; the name is a valid C string.
            |n| unsafe { ffi::dvs_crypto_op_pool_create(n, 256) },
        )?;
        let pools = Pools { sessions, ops };
        let mbufs = MbufPool::new(eal, 64, CRYPTO_MBUF_ROOM)?;
        // SAFETY: dev_id exists and is not started; the session pool lives as long as the device.
        let rc = unsafe { ffi::dvs_cryptodev_setup(dev_id, 128, pools.sessions.as_ptr()) };
        if rc != 0 {
            free_pools(&pools);
            return Err(DpdkError::call(
                "configure and start cryptodev",
                name,
                RteError::from_code(rc),
            ));
        }
        Ok(Arc::new(Cryptodev {
            name: name.to_owned(),
            dev_id,
            queue: Mutex::new(()),
            pools,
            mbufs,
        }))
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn new_session(&self, encrypt: bool, key: &[u8], aad_len: u16) -> Result<Session, CryptoError> {
        let key_len = u16::try_from(key.len()).map_err(|_| provider_error("session key"))?;
        // SAFETY: the device is started; key is read (and copied into the session) during the
        // call only.
        let raw = unsafe {
            ffi::dvs_aead_gcm_session_create(
                self.dev_id,
                self.pools.sessions.as_ptr(),
                i32::from(encrypt),
                key.as_ptr(),
                key_len,
                aad_len,
                TAG_LEN as u16,
            )
        };
        NonNull::new(raw)
            .map(|ptr| Session { ptr })
            .ok_or_else(|| provider_error("cryptodev session create"))
    }

    /// Runs one AEAD operation: `text` is transformed in place, `tag` written (seal) or checked.
    fn run(&self, job: Job<'_>) -> Result<(), CryptoError> {
        let total = AAD_ROOM + job.text.len() + TAG_LEN;
        if job.text.len() > MAX_CRYPTO_TEXT || job.aad.len() > AAD_ROOM {
            return Err(provider_error("cryptodev operation size"));
        }
        let _queue = self
            .queue
            .lock()
            .map_err(|_| provider_error("cryptodev queue lock"))?;
        let m = self
            .mbufs
            .alloc()
            .ok_or(provider_error("cryptodev mbuf alloc"))?;
        let result = self.run_in_mbuf(m, total, job);
        // SAFETY: the mbuf is ours again (the op was dequeued or never enqueued).
        unsafe { free_mbuf(m) };
        result
    }

    fn run_in_mbuf(
        &self,
        m: NonNull<ffi::rte_mbuf>,
        total: usize,
        job: Job<'_>,
    ) -> Result<(), CryptoError> {
        // SAFETY: m is a fresh mbuf of CRYPTO_MBUF_ROOM bytes; total fits (checked by run).
        let base = unsafe { ffi::dvs_pktmbuf_append(m.as_ptr(), total as u16) };
        if base.is_null() {
            return Err(provider_error("cryptodev mbuf append"));
        }
        // SAFETY: base points at `total` writable bytes owned by us until the op is enqueued.
        let area = unsafe { std::slice::from_raw_parts_mut(base, total) };
        let text_end = AAD_ROOM + job.text.len();
        area[..job.aad.len()].copy_from_slice(job.aad);
        area[AAD_ROOM..text_end].copy_from_slice(job.text);
        if let TagIo::Check(tag) = &job.tag {
            area[text_end..].copy_from_slice(&tag[..]);
        }
        self.submit(m, job.session, job.text.len(), job.nonce)?;
        // SAFETY: the device is done with the mbuf (dequeued); base is still `total` bytes.
        let area = unsafe { std::slice::from_raw_parts(base, total) };
        job.text.copy_from_slice(&area[AAD_ROOM..text_end]);
        if let TagIo::Write(tag) = job.tag {
            tag.copy_from_slice(&area[text_end..]);
        }
        Ok(())
    }

    fn submit(
        &self,
        m: NonNull<ffi::rte_mbuf>,
        session: &Session,
        text_len: usize,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<(), CryptoError> {
        // SAFETY: the op pool is alive.
        let op = NonNull::new(unsafe { ffi::dvs_crypto_op_alloc(self.pools.ops.as_ptr()) })
            .ok_or(provider_error("crypto op alloc"))?;
        // SAFETY: op and m are ours; the session belongs to this device; nonce is copied.
        unsafe {
            ffi::dvs_crypto_op_prepare_aead(
                op.as_ptr(),
                session.ptr.as_ptr(),
                m.as_ptr(),
                AAD_ROOM as u16,
                text_len as u32,
                nonce.as_ptr(),
                NONCE_LEN as u16,
            )
        };
        let result = self.enqueue_and_wait(op);
        // SAFETY: the op is ours again (dequeued, or never accepted).
        unsafe { ffi::dvs_crypto_op_free(op.as_ptr()) };
        result
    }

    fn enqueue_and_wait(&self, op: NonNull<ffi::rte_crypto_op>) -> Result<(), CryptoError> {
        let mut ops = [op.as_ptr()];
        // SAFETY: the queue lock is held by our caller; ops holds one prepared op.
        let queued =
            unsafe { ffi::dvs_cryptodev_enqueue_burst(self.dev_id, 0, ops.as_mut_ptr(), 1) };
        if queued != 1 {
            return Err(provider_error("cryptodev enqueue"));
        }
        let mut done = [std::ptr::null_mut(); 1];
        for _ in 0..MAX_DEQUEUE_POLLS {
            // SAFETY: as above; the device writes at most one op pointer into `done`.
            let n =
                unsafe { ffi::dvs_cryptodev_dequeue_burst(self.dev_id, 0, done.as_mut_ptr(), 1) };
            if n == 1 {
                return op_status(done[0]);
            }
            std::hint::spin_loop();
        }
        Err(provider_error(
            "cryptodev dequeue (operation never completed)",
        ))
    }
}

impl Drop for Cryptodev {
    fn drop(&mut self) {
        // SAFETY: every session holds an Arc to this device, so none is left; stop the device
        // before freeing the pools it uses.
        unsafe { ffi::dvs_cryptodev_stop_close(self.dev_id) };
        free_pools(&self.pools);
    }
}

fn free_pools(pools: &Pools) {
    // SAFETY: the pools are ours and no longer used by the (stopped or never started) device.
    unsafe {
        ffi::dvs_mempool_free(pools.sessions.as_ptr());
        ffi::dvs_mempool_free(pools.ops.as_ptr());
    }
}

fn pool_or_error(
    operation: &'static str,
    device: &str,
    create: impl FnOnce(*const std::ffi::c_char) -> *mut ffi::rte_mempool,
) -> Result<NonNull<ffi::rte_mempool>, DpdkError> {
    let name = unique_name("cpool");
    NonNull::new(create(name.as_ptr()))
        .ok_or_else(|| DpdkError::call(operation, device, RteError::last()))
}

fn op_status(op: *mut ffi::rte_crypto_op) -> Result<(), CryptoError> {
    // SAFETY: op is the operation we enqueued, handed back by the device.
    let status = unsafe { ffi::dvs_crypto_op_status(op) };
    // SAFETY: returns a constant.
    if status == unsafe { ffi::dvs_crypto_op_status_success() } {
        Ok(())
    } else {
        // The PMD reports a failed tag check as an authentication failure status.
        Err(CryptoError::TagMismatch)
    }
}

fn provider_error(operation: &'static str) -> CryptoError {
    CryptoError::Provider { operation }
}

/// A cryptodev session, freed by its owner.
struct Session {
    ptr: NonNull<c_void>,
}

enum TagIo<'a> {
    Write(&'a mut [u8; TAG_LEN]),
    Check(&'a [u8; TAG_LEN]),
}

struct Job<'a> {
    session: &'a Session,
    nonce: &'a [u8; NONCE_LEN],
    aad: &'a [u8],
    text: &'a mut [u8],
    tag: TagIo<'a>,
}

/// Builds AES-GCM AEADs on one cryptodev.
#[derive(Debug, Clone)]
pub struct CryptodevProvider {
    device: Arc<Cryptodev>,
}

impl CryptodevProvider {
    /// A provider over an opened device.
    pub fn new(device: Arc<Cryptodev>) -> Self {
        CryptodevProvider { device }
    }
}

impl AeadProvider for CryptodevProvider {
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn EspAead>, CryptoError> {
        let name = match algorithm {
            AeadAlgorithm::Aes128Gcm => "AES-128-GCM",
            AeadAlgorithm::Aes256Gcm => "AES-256-GCM",
            _ => return Err(provider_error("cryptodev supports AES-GCM only")),
        };
        if key.len() != algorithm.key_len() {
            return Err(CryptoError::KeyLength {
                algorithm: name,
                expected: algorithm.key_len(),
                got: key.len(),
            });
        }
        Ok(Box::new(CryptodevGcm::new(&self.device, key)?))
    }
}

/// One SA's keyed sessions: seal and open, for 8-byte AAD (ESP) and 12-byte AAD (ESN).
struct CryptodevGcm {
    device: Arc<Cryptodev>,
    seal: [Session; 2],
    open: [Session; 2],
}

// SAFETY: sessions are immutable after creation and only used under the device's queue lock.
unsafe impl Send for CryptodevGcm {}
// SAFETY: as above.
unsafe impl Sync for CryptodevGcm {}

impl CryptodevGcm {
    fn new(device: &Arc<Cryptodev>, key: &[u8]) -> Result<Self, CryptoError> {
        let mut made = Vec::with_capacity(4);
        for (encrypt, aad_len) in [(true, 8), (true, 12), (false, 8), (false, 12)] {
            match device.new_session(encrypt, key, aad_len) {
                Ok(s) => made.push(s),
                Err(e) => {
                    free_sessions(device, &made);
                    return Err(e);
                }
            }
        }
        let mut it = made.into_iter();
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(s8), Some(s12), Some(o8), Some(o12)) => Ok(CryptodevGcm {
                device: Arc::clone(device),
                seal: [s8, s12],
                open: [o8, o12],
            }),
            _ => Err(provider_error("cryptodev session create")),
        }
    }

    fn pick<'a>(sessions: &'a [Session; 2], aad: &[u8]) -> Result<&'a Session, CryptoError> {
        match aad.len() {
            8 => Ok(&sessions[0]),
            12 => Ok(&sessions[1]),
            _ => Err(provider_error("cryptodev AAD length (8 or 12 bytes)")),
        }
    }
}

fn free_sessions(device: &Cryptodev, sessions: &[Session]) {
    for s in sessions {
        // SAFETY: the session belongs to this device and is not used again; the PMD clears the
        // key material it holds.
        unsafe { ffi::dvs_session_free(device.dev_id, s.ptr.as_ptr()) };
    }
}

impl Drop for CryptodevGcm {
    fn drop(&mut self) {
        free_sessions(&self.device, &self.seal);
        free_sessions(&self.device, &self.open);
    }
}

impl EspAead for CryptodevGcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.device.run(Job {
            session: Self::pick(&self.seal, aad)?,
            nonce,
            aad,
            text: in_out,
            tag: TagIo::Write(tag),
        })
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.device.run(Job {
            session: Self::pick(&self.open, aad)?,
            nonce,
            aad,
            text: in_out,
            tag: TagIo::Check(tag),
        })
    }

    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        offset: usize,
        data: &mut [u8],
    ) -> Result<(), CryptoError> {
        // GCM encryption of zeros followed by `data` XORs `data` with the keystream from
        // `offset`; the tag is discarded.
        let mut text = vec![0u8; offset + data.len()];
        text[offset..].copy_from_slice(data);
        let mut tag = [0u8; TAG_LEN];
        self.device.run(Job {
            session: &self.seal[0],
            nonce,
            aad: &[0u8; 8],
            text: &mut text,
            tag: TagIo::Write(&mut tag),
        })?;
        data.copy_from_slice(&text[offset..]);
        Ok(())
    }
}
