//! The boundary: the object-safe traits through which the host calls plugin objects.
//!
//! A plugin author never implements these. [`PluginRegistrar`](crate::PluginRegistrar) wraps
//! the author's [`Operation`](devbatch_core::Operation)s, [`Backend`](devbatch_core::Backend)s
//! and [`Device`]s in guards (compiled into the plugin, so they use the plugin's copy of the
//! standard library) that catch every panic and return it as [`Panicked`]. On the host side,
//! proxies turn these traits back into the core traits. Nothing ever unwinds across the
//! boundary, in either direction: a panic raised by one copy of the standard library cannot be
//! caught by another copy (the unwinder sees a foreign exception and aborts the process).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, CommandOutput, ConfigError, Device, DeviceError, DeviceSpec, DeviceState,
    Labels, OperationContext, OperationError, OperationFailure, ParamSpec, Params, RebootMode,
    TransferStats,
};
use serde_json::Value;

/// A panic caught inside plugin code, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl Panicked {
    /// The message of a caught panic payload (`&str` and `String` payloads; others are named
    /// as such).
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        Panicked(panic_message(payload))
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

/// The result of a call into plugin code: the call's own result, or the panic it raised.
pub type Guarded<T> = Result<T, Panicked>;

/// What an operation says about itself; read once when the plugin is loaded.
#[derive(Debug, Clone)]
pub struct OperationInfo {
    /// [`Operation::name`](devbatch_core::Operation::name).
    pub name: String,
    /// [`Operation::description`](devbatch_core::Operation::description).
    pub description: String,
    /// [`Operation::backend`](devbatch_core::Operation::backend).
    pub backend: Option<String>,
    /// [`Operation::params`](devbatch_core::Operation::params).
    pub params: Vec<ParamSpec>,
    /// [`Operation::idempotent`](devbatch_core::Operation::idempotent).
    pub idempotent: bool,
    /// [`Operation::default_timeout`](devbatch_core::Operation::default_timeout).
    pub default_timeout: Duration,
    /// [`Operation::required_capabilities`](devbatch_core::Operation::required_capabilities).
    pub required_capabilities: Vec<Capability>,
}

/// What a device says about itself; read once when the device is opened.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// [`Device::id`].
    pub id: String,
    /// [`Device::backend`].
    pub backend: String,
    /// [`Device::labels`].
    pub labels: Labels,
    /// [`Device::capabilities`].
    pub capabilities: Vec<Capability>,
}

/// An operation implemented in a plugin, as the host calls it.
#[async_trait]
pub trait ForeignOperation: Send + Sync + 'static {
    /// Everything the operation says about itself.
    fn info(&self) -> Guarded<OperationInfo>;

    /// [`Operation::validate`](devbatch_core::Operation::validate).
    fn validate(&self, params: &Params) -> Guarded<Result<(), OperationError>>;

    /// [`Operation::execute`](devbatch_core::Operation::execute). `device` is a host object
    /// that never unwinds into the plugin.
    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Guarded<Result<Value, OperationFailure>>;
}

/// A backend implemented in a plugin, as the host calls it.
#[async_trait]
pub trait ForeignBackend: Send + Sync + 'static {
    /// Its name and description.
    fn info(&self) -> Guarded<(String, String)>;

    /// [`Backend::open`](devbatch_core::Backend::open), each device guarded.
    async fn open(
        &self,
        spec: DeviceSpec,
    ) -> Guarded<Result<Vec<std::sync::Arc<dyn ForeignDevice>>, ConfigError>>;
}

/// A device of a plugin backend, as the host calls it.
#[async_trait]
pub trait ForeignDevice: Send + Sync + 'static {
    /// Its id, backend, labels and capabilities.
    fn info(&self) -> Guarded<DeviceInfo>;

    /// [`Device::state`].
    fn state(&self) -> Guarded<DeviceState>;

    /// [`Device::run`].
    async fn run(&self, command: &Command) -> Guarded<Result<CommandOutput, DeviceError>>;

    /// [`Device::push`].
    async fn push(&self, local: &Path, remote: &str)
    -> Guarded<Result<TransferStats, DeviceError>>;

    /// [`Device::pull`].
    async fn pull(&self, remote: &str, local: &Path)
    -> Guarded<Result<TransferStats, DeviceError>>;

    /// [`Device::reboot`].
    async fn reboot(&self, mode: RebootMode, wait: bool) -> Guarded<Result<(), DeviceError>>;

    /// [`Device::intercept`].
    async fn intercept(
        &self,
        operation: &str,
        params: &Params,
        ctx: &OperationContext,
    ) -> Guarded<Option<Result<Value, OperationFailure>>>;

    /// [`Device::close`].
    async fn close(&self) -> Guarded<()>;
}
