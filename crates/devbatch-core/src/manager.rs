//! [`BatchOperationManager`]: validates a request, then runs one operation on many devices at
//! once and returns exactly one outcome per device.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::device::Device;
use crate::error::{BatchError, DeviceError, ErrorKind, OperationError};
use crate::operation::{Operation, OperationContext, Params, validate_params};
use crate::options::{BatchEvent, BatchOptions, FailurePolicy, Observer};
use crate::outcome::{BatchResult, BatchSummary, DeviceOutcome, StopReason};
use crate::pool::DevicePool;
use crate::registry::Registry;

/// Runs operations across the devices of a [`DevicePool`].
///
/// Cheap to clone; clones share the pool, the registry and the set of in-flight work that
/// [`shutdown`](Self::shutdown) waits for.
///
/// ```no_run
/// # async fn demo(pool: devbatch_core::DevicePool) -> Result<(), devbatch_core::BatchError> {
/// use devbatch_core::BatchOperationManager;
/// use serde_json::json;
///
/// let batch_manager = BatchOperationManager::new(pool);
/// // On all devices:
/// let result = batch_manager.execute_batch("shell", json!({"cmd": "uname -a"}), None).await?;
/// // On some:
/// let result = batch_manager
///     .execute_batch("shell", json!({"cmd": "true"}), Some(&["device1", "device2"]))
///     .await?;
/// for (device_id, outcome) in result.iter() {
///     println!("{device_id}: {:?}", outcome.status);
/// }
/// batch_manager.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BatchOperationManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: DevicePool,
    registry: Registry,
    in_flight: TaskTracker,
    shut_down: AtomicBool,
}

/// One device's work, ready to run.
struct Job {
    index: usize,
    device: Arc<dyn Device>,
    /// The implementation for this device's backend (or, when its backend has none, the one
    /// its params were validated against).
    op: Arc<dyn Operation>,
    params: Arc<Params>,
    /// Whether `op` is meant for this device's backend.
    native: bool,
}

/// What a device task hands back to the driver.
struct Finished {
    index: usize,
    outcome: DeviceOutcome,
}

const REASON_CANCELLED: u8 = 0;
const REASON_DEADLINE: u8 = 1;

/// State every device task of one batch shares.
struct Shared {
    operation: String,
    /// The backends with their own implementation of the operation, for error messages.
    providers: Vec<String>,
    stop: CancellationToken,
    /// Why `stop` fired: cancelled or deadline.
    stop_reason: AtomicU8,
    deadline: Option<Duration>,
    options: BatchOptions,
    observer: Option<Observer>,
    /// Whether the observer has panicked in this batch (the panic is logged only once).
    observer_panicked: AtomicBool,
}

impl Shared {
    /// Hands `event` to the observer. A panicking observer is the caller's bug, not the
    /// device's: the panic is caught, logged once per batch, and the batch goes on (each later
    /// event is still offered to the observer).
    fn emit(&self, event: BatchEvent<'_>) {
        let Some(observer) = &self.observer else {
            return;
        };
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| observer(&event)))
            && !self.observer_panicked.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(
                operation = %self.operation,
                "the batch observer panicked (further observer panics in this batch are not \
                 logged); the batch goes on: {}",
                panic_message(panic.as_ref())
            );
        }
    }

    /// The error a device task reports when `stop` fires while it runs.
    fn stop_error(&self) -> DeviceError {
        match (self.stop_reason.load(Ordering::Acquire), self.deadline) {
            (REASON_DEADLINE, Some(d)) => DeviceError::Deadline(d),
            _ => DeviceError::Cancelled,
        }
    }
}

impl BatchOperationManager {
    /// A manager for `pool`, with every operation and backend linked into the program.
    ///
    /// # Panics
    ///
    /// If two linked crates register the same operation or backend name: a build mistake that
    /// [`Registry::linked`] reports with both sources. Use [`with_registry`](Self::with_registry)
    /// to handle it as an error.
    pub fn new(pool: DevicePool) -> Self {
        let registry = Registry::linked().unwrap_or_else(|e| panic!("{e}"));
        Self::with_registry(pool, registry)
    }

    /// A manager for `pool` with an explicit registry (tests, plugins).
    pub fn with_registry(pool: DevicePool, registry: Registry) -> Self {
        BatchOperationManager {
            inner: Arc::new(Inner {
                pool,
                registry,
                in_flight: TaskTracker::new(),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &DevicePool {
        &self.inner.pool
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The device with this id.
    pub fn get_device(&self, id: &str) -> Option<&Arc<dyn Device>> {
        self.inner.pool.get_device(id)
    }

    /// Runs `operation` with `params` on `devices` (`None`: every device in the pool) with
    /// default options, and returns one outcome per device.
    ///
    /// Nothing runs unless the whole request is valid: an unknown device gives
    /// [`BatchError::Device`] naming every unknown id; an unknown operation or bad parameters
    /// give [`BatchError::Operation`].
    pub async fn execute_batch(
        &self,
        operation: &str,
        params: Value,
        devices: Option<&[&str]>,
    ) -> Result<BatchResult, BatchError> {
        self.execute_batch_with(operation, params, devices, &BatchOptions::default())
            .await
    }

    /// [`execute_batch`](Self::execute_batch) with options.
    pub async fn execute_batch_with(
        &self,
        operation: &str,
        params: Value,
        devices: Option<&[&str]>,
        options: &BatchOptions,
    ) -> Result<BatchResult, BatchError> {
        let jobs = self.plan(operation, &params, devices, options)?;
        let ids: Vec<String> = jobs.iter().map(|j| j.device.id().to_string()).collect();
        let mut slots: Vec<Option<DeviceOutcome>> = vec![None; jobs.len()];
        let summary = self
            .run(operation, jobs, options, |index, outcome| {
                slots[index] = Some(outcome)
            })
            .await;
        let outcomes = ids
            .into_iter()
            .zip(slots)
            .map(|(id, o)| (id, o.expect("the engine produces one outcome per device")))
            .collect();
        Ok(BatchResult::new(outcomes, summary))
    }

    /// Runs a batch without keeping the outcomes: each one goes to `sink` as soon as its device
    /// finishes (in finishing order), so memory stays flat however many devices there are.
    /// Returns the counts.
    pub async fn execute_batch_streaming(
        &self,
        operation: &str,
        params: Value,
        devices: Option<&[&str]>,
        options: &BatchOptions,
        mut sink: impl FnMut(&str, DeviceOutcome) + Send,
    ) -> Result<BatchSummary, BatchError> {
        let jobs = self.plan(operation, &params, devices, options)?;
        let devices: Vec<Arc<dyn Device>> = jobs.iter().map(|j| j.device.clone()).collect();
        Ok(self
            .run(operation, jobs, options, |index, outcome| {
                sink(devices[index].id(), outcome)
            })
            .await)
    }

    /// Waits for every batch and device operation in flight to finish, then closes every
    /// device's connections. Later batches fail with [`BatchError::ShutDown`].
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.in_flight.close();
        self.inner.in_flight.wait().await;
        for device in self.inner.pool.devices() {
            device.close().await;
        }
    }

    /// Checks the whole request and builds one job per requested device.
    fn plan(
        &self,
        operation: &str,
        params: &Value,
        devices: Option<&[&str]>,
        options: &BatchOptions,
    ) -> Result<Vec<Job>, BatchError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(BatchError::ShutDown);
        }
        if options.concurrency == 0 {
            return Err(BatchError::InvalidOptions(
                "concurrency must be at least 1".into(),
            ));
        }
        if options.canary == Some(0) {
            return Err(BatchError::InvalidOptions(
                "a canary needs at least 1 device".into(),
            ));
        }
        if options.timeout.is_some_and(|t| t.is_zero()) {
            return Err(BatchError::InvalidOptions(
                "a timeout must be more than zero".into(),
            ));
        }
        match options.failure_policy {
            FailurePolicy::MaxFailures(0) => {
                return Err(BatchError::InvalidOptions(
                    "MaxFailures needs at least 1 failure (FailFast stops at the first)".into(),
                ));
            }
            FailurePolicy::MaxFailurePercent(p) if !(p > 0.0 && p <= 100.0) => {
                return Err(BatchError::InvalidOptions(format!(
                    "MaxFailurePercent must be more than 0 and at most 100, got {p}"
                )));
            }
            _ => {}
        }
        let registry = &self.inner.registry;
        if !registry.has_operation(operation) {
            return Err(OperationError::Unknown {
                name: operation.to_string(),
                known: registry.operation_names(),
            }
            .into());
        }
        let pool = &self.inner.pool;
        let selected: Vec<Arc<dyn Device>> = match devices {
            None => pool.devices().to_vec(),
            Some(ids) => {
                let unknown: Vec<String> = ids
                    .iter()
                    .filter(|id| pool.get_device(id).is_none())
                    .map(|s| s.to_string())
                    .collect();
                if !unknown.is_empty() {
                    return Err(DeviceError::NotFound { ids: unknown }.into());
                }
                let mut seen = HashSet::new();
                ids.iter()
                    .filter(|id| seen.insert(**id))
                    .map(|id| pool.get_device(id).expect("checked above").clone())
                    .collect()
            }
        };
        // Validate the params once per distinct implementation the devices need. A device whose
        // backend has no implementation is checked against the first one registered: it can
        // still answer through `Device::intercept` (mock devices), else it is `unsupported`.
        let mut validated: Vec<(Arc<dyn Operation>, Arc<Params>)> = Vec::new();
        let mut jobs = Vec::with_capacity(selected.len());
        for (index, device) in selected.into_iter().enumerate() {
            let (op, native) = match registry.resolve(operation, device.backend()) {
                Some(op) => (op, true),
                None => (
                    registry
                        .any_implementation(operation)
                        .expect("the name is registered"),
                    false,
                ),
            };
            let params = match validated.iter().find(|(o, _)| Arc::ptr_eq(o, op)) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = validate_params(operation, &op.params(), params)?;
                    op.validate(&p)?;
                    let p = Arc::new(p);
                    validated.push((op.clone(), p.clone()));
                    p
                }
            };
            jobs.push(Job {
                index,
                device,
                op: op.clone(),
                params,
                native,
            });
        }
        Ok(jobs)
    }

    /// The engine: runs planned jobs; `sink` receives each outcome by job index as soon as it
    /// is produced, exactly once per job.
    async fn run(
        &self,
        operation: &str,
        jobs: Vec<Job>,
        options: &BatchOptions,
        mut sink: impl FnMut(usize, DeviceOutcome),
    ) -> BatchSummary {
        let _in_flight = self.inner.in_flight.token();
        let started = Instant::now();
        let total = jobs.len();
        let stop = match &options.cancel {
            Some(handle) => handle.token().child_token(),
            None => CancellationToken::new(),
        };
        let shared = Arc::new(Shared {
            operation: operation.to_string(),
            providers: self
                .inner
                .registry
                .backends_providing(operation)
                .into_iter()
                .map(str::to_string)
                .collect(),
            stop: stop.clone(),
            stop_reason: AtomicU8::new(REASON_CANCELLED),
            deadline: options.deadline,
            options: options.clone(),
            observer: options.observer.clone(),
            observer_panicked: AtomicBool::new(false),
        });
        // A deadline too far away for an `Instant` to hold is no deadline.
        let deadline_at = options.deadline.and_then(|d| started.checked_add(d));

        let mut summary = BatchSummary::default();
        let devices: Vec<Arc<dyn Device>> = jobs.iter().map(|j| j.device.clone()).collect();
        let mut pending = jobs.into_iter();
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut stopped: Option<StopReason> = None;
        // Canaries are the first `canaries` jobs; nothing else starts until they all finished.
        let canaries = options.canary.map_or(0, |n| n.min(total));
        let mut canaries_finished = 0;
        let mut started_jobs = 0;
        let mut record = |index: usize, outcome: DeviceOutcome, summary: &mut BatchSummary| {
            summary.count(&outcome);
            let id = devices[index].id();
            shared.emit(BatchEvent::Finished {
                device_id: id,
                outcome: &outcome,
            });
            sink(index, outcome);
        };

        loop {
            while stopped.is_none() && running.len() < options.concurrency {
                if started_jobs >= canaries && canaries_finished < canaries {
                    break;
                }
                let Some(job) = pending.next() else { break };
                started_jobs += 1;
                running.spawn(
                    self.inner
                        .in_flight
                        .track_future(run_job(job, shared.clone())),
                );
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                joined = running.join_next() => {
                    let Some(joined) = joined else { continue };
                    let Finished { index, outcome } =
                        joined.expect("device tasks catch their own panics and are never aborted");
                    let failed = !outcome.is_success();
                    record(index, outcome, &mut summary);
                    if index < canaries {
                        canaries_finished += 1;
                        if failed && stopped.is_none() {
                            stopped = Some(StopReason::CanaryFailed);
                        }
                    }
                    if stopped.is_none() && options.failure_policy.should_stop(summary.failed, total) {
                        stopped = Some(StopReason::FailureLimit);
                    }
                }
                () = stop.cancelled(), if !stop.is_cancelled() => {}
                () = sleep_until_opt(deadline_at), if !stop.is_cancelled() => {
                    shared.stop_reason.store(REASON_DEADLINE, Ordering::Release);
                    stop.cancel();
                }
            }
            if stop.is_cancelled() && stopped.is_none_or(|r| r < StopReason::Deadline) {
                stopped = Some(
                    if shared.stop_reason.load(Ordering::Acquire) == REASON_DEADLINE {
                        StopReason::Deadline
                    } else {
                        StopReason::Cancelled
                    },
                );
            }
        }

        // Every device never started still gets its one outcome.
        let reason = stopped.unwrap_or(StopReason::Cancelled);
        let mut pending = pending.peekable();
        // A failure policy that fired when every device had already started stopped nothing
        // (cancellation and the deadline stop running devices, so they always count).
        if pending.peek().is_none()
            && matches!(
                stopped,
                Some(StopReason::CanaryFailed | StopReason::FailureLimit)
            )
        {
            stopped = None;
        }
        for job in pending {
            let (kind, message) = reason.not_started();
            let outcome =
                DeviceOutcome::error_with_kind(kind, message.to_string(), None, 0, Duration::ZERO);
            record(job.index, outcome, &mut summary);
        }
        summary.stopped = stopped;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one device's job to its outcome: attempts, timeouts, retries, cancellation, panics.
async fn run_job(job: Job, shared: Arc<Shared>) -> Finished {
    let started = Instant::now();
    let index = job.index;
    let device = job.device;
    let (op, params) = (job.op, job.params);
    if job.native
        && let Some(missing) = device.missing_capability(op.required_capabilities())
    {
        let err = DeviceError::Unsupported(format!(
            "operation '{}' needs the {missing} capability, which this {} device lacks",
            shared.operation,
            device.backend()
        ));
        return Finished {
            index,
            outcome: DeviceOutcome::error(&err, None, 0, started.elapsed()),
        };
    }
    if shared.stop.is_cancelled() {
        let err = shared.stop_error();
        return Finished {
            index,
            outcome: DeviceOutcome::error(&err, None, 0, started.elapsed()),
        };
    }
    let options = &shared.options;
    let timeout = options.timeout.unwrap_or_else(|| op.default_timeout());
    let mut attempt = 0;
    loop {
        attempt += 1;
        shared.emit(BatchEvent::Started {
            device_id: device.id(),
            attempt,
        });
        let ctx = OperationContext {
            cancel: shared.stop.clone(),
            max_output: options.max_output,
            attempt,
            timeout,
        };
        let execution = AssertUnwindSafe(async {
            if let Some(answer) = device.intercept(&shared.operation, &params, &ctx).await {
                return Some(answer);
            }
            if job.native {
                Some(op.execute(device.as_ref(), &params, &ctx).await)
            } else {
                None
            }
        })
        .catch_unwind();
        let failure = tokio::select! {
            biased;
            () = shared.stop.cancelled() => crate::error::OperationFailure::from(shared.stop_error()),
            r = tokio::time::timeout(timeout, execution) => match r {
                Err(_) => DeviceError::Timeout(timeout).into(),
                Ok(Err(panic)) => {
                    let message = format!("operation panicked: {}", panic_message(panic.as_ref()));
                    tracing::error!(device = device.id(), "{message}");
                    let outcome = DeviceOutcome::error_with_kind(
                        ErrorKind::Panicked, message, None, attempt, started.elapsed());
                    return Finished { index, outcome };
                }
                Ok(Ok(None)) => {
                    let err = DeviceError::Unsupported(unsupported_message(&shared, device.backend()));
                    return Finished { index, outcome: DeviceOutcome::error(&err, None, 0, started.elapsed()) };
                }
                Ok(Ok(Some(Ok(value)))) => {
                    let outcome = DeviceOutcome::success(value, attempt, started.elapsed());
                    return Finished { index, outcome };
                }
                Ok(Ok(Some(Err(failure)))) => failure,
            },
        };
        let error = &failure.error;
        let may_retry = attempt <= options.retry.max_retries
            && error.is_retryable()
            && (op.idempotent() || error.never_started())
            && !shared.stop.is_cancelled();
        if may_retry {
            let delay = options.retry.backoff(attempt);
            shared.emit(BatchEvent::Retrying {
                device_id: device.id(),
                attempt,
                error,
                delay,
            });
            tracing::debug!(device = device.id(), attempt, %error, ?delay, "retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => continue,
                () = shared.stop.cancelled() => {
                    let err = shared.stop_error();
                    let outcome = DeviceOutcome::error(&err, failure.partial, attempt, started.elapsed());
                    return Finished { index, outcome };
                }
            }
        }
        let outcome = DeviceOutcome::error(error, failure.partial, attempt, started.elapsed());
        return Finished { index, outcome };
    }
}

fn unsupported_message(shared: &Shared, backend: &str) -> String {
    let providers = &shared.providers;
    if providers.is_empty() {
        format!(
            "operation '{}' is not available for {backend} devices",
            shared.operation
        )
    } else {
        format!(
            "operation '{}' is not available for {backend} devices (it is provided for: {})",
            shared.operation,
            providers.join(", ")
        )
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}
