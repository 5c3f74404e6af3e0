//! [`PluginRegistrar`]: what a plugin's register function fills, and the plugin-side guards it
//! wraps every registered object in.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use devbatch_core::{
    Backend, Command, CommandOutput, ConfigError, Device, DeviceError, DeviceSpec, DeviceState,
    Operation, OperationContext, OperationError, OperationFailure, Params, RebootMode,
    TransferStats,
};
use futures_util::FutureExt;
use serde_json::Value;

use crate::foreign::{
    DeviceInfo, ForeignBackend, ForeignDevice, ForeignOperation, Guarded, OperationInfo, Panicked,
};

/// Collects what a plugin provides. The host makes one and hands it to the plugin's register
/// function (see [`export_plugin!`](crate::export_plugin)), then adds everything in it to its
/// [`Registry`](devbatch_core::Registry), refusing the whole plugin if a name clashes.
///
/// Everything added is wrapped in a guard compiled into the plugin, which catches panics with
/// the plugin's own copy of the standard library: the host cannot catch them itself.
pub struct PluginRegistrar {
    pub(crate) operations: Vec<Arc<dyn ForeignOperation>>,
    pub(crate) backends: Vec<Arc<dyn ForeignBackend>>,
}

impl std::fmt::Debug for PluginRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistrar")
            .field("operations", &self.operations.len())
            .field("backends", &self.backends.len())
            .finish()
    }
}

impl PluginRegistrar {
    pub(crate) fn new() -> Self {
        PluginRegistrar {
            operations: Vec::new(),
            backends: Vec::new(),
        }
    }

    /// Provides an operation (generic, or specific to one backend through
    /// [`Operation::backend`]).
    pub fn add_operation<O: Operation>(&mut self, operation: O) {
        self.operations.push(Arc::new(OperationGuard(operation)));
    }

    /// Provides a backend: a kind of device pool files can name with `backend = "..."`.
    pub fn add_backend<B: Backend>(&mut self, backend: B) {
        self.backends.push(Arc::new(BackendGuard(backend)));
    }
}

/// Calls a plugin author's register function with panics caught (by the plugin's copy of the
/// standard library, as this is compiled into the plugin). Used by
/// [`export_plugin!`](crate::export_plugin).
pub fn call_register(
    registrar: &mut PluginRegistrar,
    register: fn(&mut PluginRegistrar),
) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| register(registrar)))
        .map_err(|payload| Panicked::from_payload(payload.as_ref()).0)
}

/// Runs `f`, catching a panic.
fn guard<T>(f: impl FnOnce() -> T) -> Guarded<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panicked::from_payload(payload.as_ref()))
}

/// Makes a future with `make` and drives it, catching a panic in either.
async fn guard_future<F: Future>(make: impl FnOnce() -> F) -> Guarded<F::Output> {
    let future = guard(make)?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| Panicked::from_payload(payload.as_ref()))
}

/// A plugin's operation, panics caught.
struct OperationGuard<O>(O);

#[async_trait]
impl<O: Operation> ForeignOperation for OperationGuard<O> {
    fn info(&self) -> Guarded<OperationInfo> {
        guard(|| OperationInfo {
            name: self.0.name().to_string(),
            description: self.0.description().to_string(),
            backend: self.0.backend().map(str::to_string),
            params: self.0.params(),
            idempotent: self.0.idempotent(),
            default_timeout: self.0.default_timeout(),
            required_capabilities: self.0.required_capabilities().to_vec(),
        })
    }

    fn validate(&self, params: &Params) -> Guarded<Result<(), OperationError>> {
        guard(|| self.0.validate(params))
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Guarded<Result<Value, OperationFailure>> {
        guard_future(|| self.0.execute(device, params, ctx)).await
    }
}

/// A plugin's backend, panics caught; the devices it opens are guarded too.
struct BackendGuard<B>(B);

#[async_trait]
impl<B: Backend> ForeignBackend for BackendGuard<B> {
    fn info(&self) -> Guarded<(String, String)> {
        guard(|| (self.0.name().to_string(), self.0.description().to_string()))
    }

    async fn open(
        &self,
        spec: DeviceSpec,
    ) -> Guarded<Result<Vec<Arc<dyn ForeignDevice>>, ConfigError>> {
        let opened = guard_future(|| self.0.open(spec)).await?;
        Ok(opened.map(|devices| {
            devices
                .into_iter()
                .map(|d| Arc::new(DeviceGuard(d)) as Arc<dyn ForeignDevice>)
                .collect()
        }))
    }
}

/// A device of a plugin's backend, panics caught.
struct DeviceGuard(Arc<dyn Device>);

#[async_trait]
impl ForeignDevice for DeviceGuard {
    fn info(&self) -> Guarded<DeviceInfo> {
        guard(|| DeviceInfo {
            id: self.0.id().to_string(),
            backend: self.0.backend().to_string(),
            labels: self.0.labels().clone(),
            capabilities: self.0.capabilities().to_vec(),
        })
    }

    fn state(&self) -> Guarded<DeviceState> {
        guard(|| self.0.state())
    }

    async fn run(&self, command: &Command) -> Guarded<Result<CommandOutput, DeviceError>> {
        guard_future(|| self.0.run(command)).await
    }

    async fn push(
        &self,
        local: &Path,
        remote: &str,
    ) -> Guarded<Result<TransferStats, DeviceError>> {
        guard_future(|| self.0.push(local, remote)).await
    }

    async fn pull(
        &self,
        remote: &str,
        local: &Path,
    ) -> Guarded<Result<TransferStats, DeviceError>> {
        guard_future(|| self.0.pull(remote, local)).await
    }

    async fn reboot(&self, mode: RebootMode, wait: bool) -> Guarded<Result<(), DeviceError>> {
        guard_future(|| self.0.reboot(mode, wait)).await
    }

    async fn intercept(
        &self,
        operation: &str,
        params: &Params,
        ctx: &OperationContext,
    ) -> Guarded<Option<Result<Value, OperationFailure>>> {
        guard_future(|| self.0.intercept(operation, params, ctx)).await
    }

    async fn close(&self) -> Guarded<()> {
        guard_future(|| self.0.close()).await
    }
}
