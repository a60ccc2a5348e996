//! Moving the calling thread into a named network namespace.
//!
//! A packet socket belongs to the namespace of the thread that created it, for its whole life.
//! So a harness can open ports in several namespaces from one process: one thread per
//! namespace enters it, opens the port, and hands the port back.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Why a thread could not enter a namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// Namespace names are file names under `/run/netns`.
    #[error("network namespace name {0:?} is not a plain file name")]
    BadName(String),
    /// `/run/netns/NAME` could not be opened (no such namespace, or no permission).
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `setns` refused (needs CAP_SYS_ADMIN).
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Moves the calling thread (only it) into the network namespace `ip netns` knows as `name`.
pub fn enter_thread_into(name: &str) -> Result<(), NetnsError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetnsError::BadName(name.to_owned()));
    }
    let path = PathBuf::from("/run/netns").join(name);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    // SAFETY: `file` is an open descriptor we own for the duration of the call; setns only
    // reads it and changes the calling thread's network namespace, touching no Rust memory.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Enter {
            name: name.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `work` on a new thread that first enters the namespace `name`, and hands back what it
/// returns: how one process opens ports in several namespaces (a socket stays in the namespace
/// of the thread that created it). A panic in `work` is passed on to the caller.
pub fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let name = name.to_owned();
    let worker = std::thread::spawn(move || {
        enter_thread_into(&name)?;
        Ok(work())
    });
    match worker.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_paths_are_refused() {
        for bad in ["", "a/b", "..", "."] {
            assert!(
                matches!(enter_thread_into(bad), Err(NetnsError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn run_in_reports_a_namespace_it_cannot_enter_and_runs_nothing() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&ran);
        let result = run_in("dvipsec-no-such-namespace", move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        assert!(matches!(result, Err(NetnsError::Open { .. })), "{result:?}");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(run_in("a/b", || ()), Err(NetnsError::BadName(_))));
    }

    #[test]
    fn a_missing_namespace_is_an_open_error() {
        let err = enter_thread_into("dvipsec-no-such-namespace").unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("/run/netns/dvipsec-no-such-namespace"));
    }
}
