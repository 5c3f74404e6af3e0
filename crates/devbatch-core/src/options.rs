//! How a batch runs: [`BatchOptions`] and its parts, the [`CancelHandle`], and the
//! [`BatchEvent`]s an observer receives.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::device::DEFAULT_MAX_OUTPUT;
use crate::error::DeviceError;
use crate::outcome::DeviceOutcome;

/// The concurrency used when none is given: 10, as in the spec.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// When to retry a failed attempt.
///
/// An attempt is retried only when its error [`is_retryable`](DeviceError::is_retryable) and
/// either the operation is idempotent or the error says it
/// [`never_started`](DeviceError::never_started). The wait before retry `n` is drawn at random
/// between half and all of `initial_backoff * 2^(n-1)`, capped at `max_backoff` ("equal
/// jitter"), so that a fleet that failed together does not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retry).
    pub max_retries: u32,
    /// The base wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// `n` retries with the default backoff.
    pub fn retries(n: u32) -> Self {
        RetryPolicy {
            max_retries: n,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (from 1).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << (retry - 1).min(20));
        let cap = exp.min(self.max_backoff);
        let half = cap / 2;
        half + Duration::from_nanos(fastrand::u64(0..=(cap - half).as_nanos() as u64))
    }
}

/// When to stop starting devices after failures. Devices already running finish; devices not
/// yet started get an `aborted` outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum FailurePolicy {
    /// Run every device whatever happens.
    #[default]
    Continue,
    /// Stop at the first failure.
    FailFast,
    /// Stop once this many devices have failed.
    MaxFailures(usize),
    /// Stop once this percentage (0-100) of the requested devices have failed.
    MaxFailurePercent(f64),
}

impl FailurePolicy {
    pub(crate) fn should_stop(self, failed: usize, total: usize) -> bool {
        match self {
            FailurePolicy::Continue => false,
            FailurePolicy::FailFast => failed > 0,
            FailurePolicy::MaxFailures(n) => failed >= n.max(1),
            FailurePolicy::MaxFailurePercent(p) => {
                failed > 0 && (failed as f64) * 100.0 >= p * total as f64
            }
        }
    }
}

/// Cancels batches from outside: clone it, pass it in [`BatchOptions::cancel`], and call
/// [`cancel`](Self::cancel) from anywhere (a Ctrl-C handler, another task). Running
/// operations are stopped and reported `cancelled`, devices not started are reported
/// `cancelled`, and the batch still returns one outcome per device.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(CancellationToken);

impl CancelHandle {
    /// A handle that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every batch that uses this handle.
    pub fn cancel(&self) {
        self.0.cancel()
    }

    /// Whether it has fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once it has fired (at once if it already has).
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.0
    }
}

/// Something that happened to one device during a batch.
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchEvent<'a> {
    /// An attempt started.
    Started {
        /// The device.
        device_id: &'a str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// An attempt failed and another will follow after `delay`.
    Retrying {
        /// The device.
        device_id: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        error: &'a DeviceError,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// The device has its outcome. Exactly one per requested device.
    Finished {
        /// The device.
        device_id: &'a str,
        /// Its outcome.
        outcome: &'a DeviceOutcome,
    },
}

/// A callback for [`BatchEvent`]s. It runs inline on the engine's tasks, so it must be quick
/// (update a progress bar, send on a channel); it never slows the batch beyond its own cost.
/// A panic in it is caught and logged once per batch; the batch goes on and every device still
/// gets its one outcome.
pub type Observer = Arc<dyn Fn(&BatchEvent<'_>) + Send + Sync>;

/// How a batch runs. `BatchOptions::default()` gives the spec's behaviour (10 at a time) plus
/// each operation's default timeout.
#[derive(Clone)]
pub struct BatchOptions {
    /// Most devices worked on at once.
    pub concurrency: usize,
    /// Time allowed per attempt on one device; `None` uses the operation's default timeout.
    pub timeout: Option<Duration>,
    /// Time allowed for the whole batch. When it passes, running operations stop with
    /// `timeout` and devices not started are reported `timeout` too.
    pub deadline: Option<Duration>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// When to stop after failures.
    pub failure_policy: FailurePolicy,
    /// Run the first N devices first, and the rest only if they all succeed.
    pub canary: Option<usize>,
    /// Most output bytes kept per device.
    pub max_output: usize,
    /// Cancels the batch from outside.
    pub cancel: Option<CancelHandle>,
    /// Receives progress events.
    pub observer: Option<Observer>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: None,
            deadline: None,
            retry: RetryPolicy::default(),
            failure_policy: FailurePolicy::Continue,
            canary: None,
            max_output: DEFAULT_MAX_OUTPUT,
            cancel: None,
            observer: None,
        }
    }
}

impl fmt::Debug for BatchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchOptions")
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("retry", &self.retry)
            .field("failure_policy", &self.failure_policy)
            .field("canary", &self.canary)
            .field("max_output", &self.max_output)
            .field("cancel", &self.cancel.is_some())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl BatchOptions {
    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the per-attempt timeout for every device.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, t: Duration) -> Self {
        self.deadline = Some(t);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// Sets the failure policy.
    pub fn failure_policy(mut self, p: FailurePolicy) -> Self {
        self.failure_policy = p;
        self
    }

    /// Runs the first `n` devices as canaries.
    pub fn canary(mut self, n: usize) -> Self {
        self.canary = Some(n);
        self
    }

    /// Sets the per-device output cap.
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// Uses this cancel handle.
    pub fn cancel_handle(mut self, h: CancelHandle) -> Self {
        self.cancel = Some(h);
        self
    }

    /// Sends events to this observer.
    pub fn observer(mut self, f: impl Fn(&BatchEvent<'_>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let r = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let b1 = r.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = r.backoff(3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b9 = r.backoff(9);
            assert!(
                b9 >= Duration::from_millis(500) && b9 <= Duration::from_secs(1),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn failure_policies_stop_where_they_say() {
        assert!(!FailurePolicy::Continue.should_stop(99, 100));
        assert!(FailurePolicy::FailFast.should_stop(1, 100));
        assert!(!FailurePolicy::MaxFailures(3).should_stop(2, 100));
        assert!(FailurePolicy::MaxFailures(3).should_stop(3, 100));
        assert!(!FailurePolicy::MaxFailurePercent(10.0).should_stop(9, 100));
        assert!(FailurePolicy::MaxFailurePercent(10.0).should_stop(10, 100));
    }
}
