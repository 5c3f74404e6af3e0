//! The [`CallLog`] tests assert on.

use std::sync::{Arc, Mutex, MutexGuard};

/// One call a mock device received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The device.
    pub device: String,
    /// `op:NAME` for an operation, `run:LINE`, `push:REMOTE`, `pull:REMOTE` or `reboot` for
    /// a primitive.
    pub what: String,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    in_flight: usize,
    max_in_flight: usize,
}

/// A log shared by any number of mock devices: every call they receive, and how many
/// scripted operations ran at once at most. Clones share the log.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Inner>>);

impl CallLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, device: &str, what: String) {
        self.lock().calls.push(Call {
            device: device.to_string(),
            what,
        });
    }

    pub(crate) fn enter(&self) -> InFlight {
        let mut inner = self.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        InFlight(self.clone())
    }

    /// Every call, in the order received.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls `device` received whose `what` is `what`.
    pub fn count(&self, device: &str, what: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.device == device && c.what == what)
            .count()
    }

    /// The most operations that were in flight at once on the devices of this log.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// How many operations are in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

/// Counts an operation as in flight until dropped (also when its future is dropped).
pub(crate) struct InFlight(CallLog);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}
