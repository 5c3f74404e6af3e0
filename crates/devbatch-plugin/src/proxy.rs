//! Host-side proxies: the plugin's guarded objects seen as core [`Operation`]s, [`Backend`]s
//! and [`Device`]s, and the [`Shield`] host devices wear when a plugin operation uses them.
//!
//! A panic in plugin code arrives here as [`Panicked`] and is raised again as a host panic
//! (with [`resume_unwind`], so the panic hook does not print it a second time): the engine
//! catches it per device like any operation's panic, and the device's outcome has error kind
//! `panicked`. Where no engine is around to catch (a backend's `open`, a device's `state`,
//! `close`, an operation's `validate`), the panic becomes an error or a state instead.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Backend, Capability, Command, CommandOutput, ConfigError, Device, DeviceError, DeviceSpec,
    DeviceState, Labels, Operation, OperationContext, OperationError, OperationFailure, ParamSpec,
    Params, RebootMode, TransferStats,
};
use futures_util::FutureExt;
use serde_json::Value;

use crate::foreign::{
    DeviceInfo, ForeignBackend, ForeignDevice, ForeignOperation, OperationInfo, Panicked,
    panic_message,
};

/// Raises a plugin's panic again on the host side, saying where it came from.
fn resume(Panicked(message): Panicked, place: fmt::Arguments<'_>) -> ! {
    resume_unwind(Box::new(format!("{message} (in {place})")))
}

/// A plugin operation as a core [`Operation`].
pub(crate) struct HostOperation {
    inner: Arc<dyn ForeignOperation>,
    info: OperationInfo,
    source: Arc<str>,
}

impl HostOperation {
    pub(crate) fn new(
        inner: Arc<dyn ForeignOperation>,
        info: OperationInfo,
        source: Arc<str>,
    ) -> Self {
        HostOperation {
            inner,
            info,
            source,
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Operation for HostOperation {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn description(&self) -> &str {
        &self.info.description
    }

    fn backend(&self) -> Option<&str> {
        self.info.backend.as_deref()
    }

    fn params(&self) -> Vec<ParamSpec> {
        self.info.params.clone()
    }

    fn idempotent(&self) -> bool {
        self.info.idempotent
    }

    fn default_timeout(&self) -> Duration {
        self.info.default_timeout
    }

    fn required_capabilities(&self) -> &[Capability] {
        &self.info.required_capabilities
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        match self.inner.validate(params) {
            Ok(result) => result,
            // Validation runs before the batch, outside the engine's per-device panic
            // catching: report the panic as invalid params rather than end the program.
            Err(Panicked(message)) => Err(OperationError::InvalidParam {
                operation: self.info.name.clone(),
                param: "params".into(),
                expected: format!("accepted by the validate() of {}", self.source),
                got: format!("a panic: {message}"),
            }),
        }
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        let shield = Shield::new(device);
        let result = self.inner.execute(&shield, params, ctx).await;
        shield.resume_host_panic();
        match result {
            Ok(result) => result,
            Err(panicked) => resume(
                panicked,
                format_args!("operation `{}` of {}", self.info.name, self.source),
            ),
        }
    }
}

/// A plugin backend as a core [`Backend`].
pub(crate) struct HostBackend {
    inner: Arc<dyn ForeignBackend>,
    name: String,
    description: String,
    source: Arc<str>,
}

impl HostBackend {
    pub(crate) fn new(
        inner: Arc<dyn ForeignBackend>,
        name: String,
        description: String,
        source: Arc<str>,
    ) -> Self {
        HostBackend {
            inner,
            name,
            description,
            source,
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Backend for HostBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn open(&self, spec: DeviceSpec) -> Result<Vec<Arc<dyn Device>>, ConfigError> {
        let devices = match self.inner.open(spec).await {
            Ok(result) => result?,
            Err(Panicked(message)) => {
                return Err(ConfigError::Setup(format!(
                    "the {} backend of {} panicked: {message}",
                    self.name, self.source
                )));
            }
        };
        devices
            .into_iter()
            .map(|inner| match inner.info() {
                Ok(info) => Ok(Arc::new(HostDevice {
                    inner,
                    info,
                    source: self.source.clone(),
                }) as Arc<dyn Device>),
                Err(Panicked(message)) => Err(ConfigError::Setup(format!(
                    "a device of the {} backend of {} panicked while describing itself: {message}",
                    self.name, self.source
                ))),
            })
            .collect()
    }
}

/// A device of a plugin backend as a core [`Device`]. Its id, backend, labels and capabilities
/// are read once, when it is opened.
pub(crate) struct HostDevice {
    inner: Arc<dyn ForeignDevice>,
    info: DeviceInfo,
    source: Arc<str>,
}

impl fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostDevice")
            .field("id", &self.info.id)
            .field("backend", &self.info.backend)
            .field("source", &self.source)
            .finish()
    }
}

impl HostDevice {
    fn resume(&self, panicked: Panicked, method: &str) -> ! {
        resume(
            panicked,
            format_args!(
                "`{method}` of device {} of the {} backend of {}",
                self.info.id, self.info.backend, self.source
            ),
        )
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Device for HostDevice {
    fn id(&self) -> &str {
        &self.info.id
    }

    fn backend(&self) -> &str {
        &self.info.backend
    }

    fn labels(&self) -> &Labels {
        &self.info.labels
    }

    fn capabilities(&self) -> &[Capability] {
        &self.info.capabilities
    }

    fn state(&self) -> DeviceState {
        match self.inner.state() {
            Ok(state) => state,
            Err(Panicked(message)) => DeviceState::NotReady {
                state: "panicked".into(),
                hint: format!(
                    "{} panicked reporting the device's state: {message}",
                    self.source
                ),
            },
        }
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        match self.inner.run(command).await {
            Ok(result) => result,
            Err(panicked) => self.resume(panicked, "run"),
        }
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        match self.inner.push(local, remote).await {
            Ok(result) => result,
            Err(panicked) => self.resume(panicked, "push"),
        }
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        match self.inner.pull(remote, local).await {
            Ok(result) => result,
            Err(panicked) => self.resume(panicked, "pull"),
        }
    }

    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        match self.inner.reboot(mode, wait).await {
            Ok(result) => result,
            Err(panicked) => self.resume(panicked, "reboot"),
        }
    }

    async fn intercept(
        &self,
        operation: &str,
        params: &Params,
        ctx: &OperationContext,
    ) -> Option<Result<Value, OperationFailure>> {
        match self.inner.intercept(operation, params, ctx).await {
            Ok(answer) => answer,
            Err(panicked) => self.resume(panicked, "intercept"),
        }
    }

    async fn close(&self) {
        if let Err(Panicked(message)) = self.inner.close().await {
            tracing::error!(
                device = self.info.id,
                "closing the device panicked in {}: {message}",
                self.source
            );
        }
    }
}

/// A host device lent to a plugin operation for one call of `execute`.
///
/// A panic in the host's device code must not unwind into plugin frames (the plugin's copy of
/// the standard library would meet a foreign exception and abort). The shield catches it,
/// keeps the payload, and gives the plugin an error instead; when the plugin's `execute`
/// returns, [`resume_host_panic`](Self::resume_host_panic) raises the panic again on the host
/// side, so the device's outcome is `panicked` as if no plugin were involved.
pub(crate) struct Shield {
    /// The lent device. `'static` only in name: see [`Shield::new`].
    device: &'static dyn Device,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl fmt::Debug for Shield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.device, f)
    }
}

impl Shield {
    /// Wraps `device` for the duration of one `execute` call.
    ///
    /// [`Device`] requires `'static` (it extends [`Any`]), while `execute` only borrows the
    /// device, so the borrow is stretched. Callers keep the shield on their stack for the call
    /// and drop it before `device`'s borrow ends: [`HostOperation::execute`] is the only
    /// caller, and its future owns both the shield and the plugin's future that borrows it.
    fn new(device: &dyn Device) -> Self {
        // SAFETY: only the lifetime changes; the pointer and its vtable stay as they are. The
        // shield lives inside `HostOperation::execute`'s future, which borrows `device` for
        // its whole life, so `device` outlives every use the shield makes of it. The field is
        // private and never handed out: the plugin only ever gets `&Shield` (through `&dyn
        // Device`) for the duration of its `execute` call, bounded by the same future.
        let device = unsafe { std::mem::transmute::<&dyn Device, &'static dyn Device>(device) };
        Shield {
            device,
            panic: Mutex::new(None),
        }
    }

    /// Keeps the first host panic caught.
    fn keep(&self, payload: Box<dyn Any + Send>) -> String {
        let message = panic_message(payload.as_ref());
        let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(payload);
        }
        message
    }

    /// Runs a sync method of the device, catching a panic.
    fn sync<T>(&self, f: impl FnOnce(&'static dyn Device) -> T, fallback: T) -> T {
        match catch_unwind(AssertUnwindSafe(|| f(self.device))) {
            Ok(value) => value,
            Err(payload) => {
                self.keep(payload);
                fallback
            }
        }
    }

    /// Drives an async method of the device, turning a panic into an error for the plugin.
    async fn call<T>(
        &self,
        future: impl Future<Output = Result<T, DeviceError>>,
    ) -> Result<T, DeviceError> {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(result) => result,
            Err(payload) => Err(DeviceError::Failed(format!(
                "the device panicked: {}",
                self.keep(payload)
            ))),
        }
    }

    /// Raises again, on the host side, a panic the device raised during the call.
    fn resume_host_panic(&self) {
        let payload = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = payload {
            resume_unwind(payload);
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Device for Shield {
    fn id(&self) -> &str {
        self.sync(|d| d.id(), "")
    }

    fn backend(&self) -> &str {
        self.sync(|d| d.backend(), "")
    }

    fn labels(&self) -> &Labels {
        static EMPTY: Labels = Labels::new();
        self.sync(|d| d.labels(), &EMPTY)
    }

    fn capabilities(&self) -> &[Capability] {
        self.sync(|d| d.capabilities(), &[])
    }

    fn state(&self) -> DeviceState {
        self.sync(
            |d| d.state(),
            DeviceState::NotReady {
                state: "panicked".into(),
                hint: "the device panicked reporting its state".into(),
            },
        )
    }

    async fn run(&self, command: &Command) -> Result<CommandOutput, DeviceError> {
        self.call(self.device.run(command)).await
    }

    async fn push(&self, local: &Path, remote: &str) -> Result<TransferStats, DeviceError> {
        self.call(self.device.push(local, remote)).await
    }

    async fn pull(&self, remote: &str, local: &Path) -> Result<TransferStats, DeviceError> {
        self.call(self.device.pull(remote, local)).await
    }

    async fn reboot(&self, mode: RebootMode, wait: bool) -> Result<(), DeviceError> {
        self.call(self.device.reboot(mode, wait)).await
    }

    async fn intercept(
        &self,
        operation: &str,
        params: &Params,
        ctx: &OperationContext,
    ) -> Option<Result<Value, OperationFailure>> {
        let future = self.device.intercept(operation, params, ctx);
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(answer) => answer,
            Err(payload) => Some(Err(DeviceError::Failed(format!(
                "the device panicked: {}",
                self.keep(payload)
            ))
            .into())),
        }
    }

    async fn close(&self) {
        if let Err(payload) = AssertUnwindSafe(self.device.close()).catch_unwind().await {
            self.keep(payload);
        }
    }
}
