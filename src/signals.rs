//! Ctrl-C (SIGINT), SIGTERM and SIGHUP, from the moment the command starts: the first one
//! cancels what is under way (loading the pool, or the batch, whose report still follows), a
//! second one exits at once. The exit code is 128 + the signal's number (130, 143, 129).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use devbatch_core::CancelHandle;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::output;

/// The signals the CLI answers, and what it says on the first one.
const HANDLED: [(Signal, &str); 3] = [
    (
        Signal::SIGINT,
        "interrupted: cancelling; press Ctrl-C again to exit at once",
    ),
    (
        Signal::SIGTERM,
        "terminated (SIGTERM): cancelling; a second signal exits at once",
    ),
    (
        Signal::SIGHUP,
        "hung up (SIGHUP): cancelling; a second signal exits at once",
    ),
];

/// Watches for the signals above and cancels [`Interrupt::cancel_handle`] on the first.
pub(crate) struct Interrupt {
    cancel: CancelHandle,
    /// The first signal's number; 0 until one came.
    signal: Arc<AtomicI32>,
}

impl Interrupt {
    /// Starts listening. Must be called inside the runtime.
    pub(crate) fn listen() -> std::io::Result<Self> {
        let cancel = CancelHandle::new();
        let first = Arc::new(AtomicI32::new(0));
        let mut streams = Vec::new();
        for (sig, message) in HANDLED {
            let number = sig as i32;
            streams.push((number, message, signal(SignalKind::from_raw(number))?));
        }
        for (number, message, mut stream) in streams {
            let (cancel, first) = (cancel.clone(), first.clone());
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    match first.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => {
                            output::warn(message);
                            cancel.cancel();
                        }
                        // A second signal, of any kind: exit now with the first one's code.
                        Err(earlier) => output::exit_now(128 + earlier),
                    }
                }
            });
        }
        Ok(Interrupt {
            cancel,
            signal: first,
        })
    }

    /// Fires on the first signal; pass it to the batch.
    pub(crate) fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// 128 + the first signal's number, once one came.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some(128 + n),
        }
    }

    /// Resolves on the first signal.
    pub(crate) async fn signalled(&self) {
        self.cancel.cancelled().await
    }
}
