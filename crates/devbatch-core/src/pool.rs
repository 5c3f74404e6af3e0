//! [`DevicePool`]: the devices a manager can run on, by id, with label selection.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use crate::device::Device;

/// Why a device could not be added to a pool, or a selector not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Another device already has this id.
    #[error("duplicate device id '{id}' (backends {first} and {second})")]
    DuplicateId {
        /// The id.
        id: String,
        /// The backend of the device already in the pool.
        first: String,
        /// The backend of the device being added.
        second: String,
    },
    /// The id could not be selected from a command line (`--devices a,b`), so it is refused.
    #[error("invalid device id {id:?} (backend {backend}): {reason}")]
    InvalidId {
        /// The id, as the backend gave it.
        id: String,
        /// The backend of the device.
        backend: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label selector was not `key=value`.
    #[error("invalid selector '{0}': expected KEY=VALUE, for example os=android")]
    InvalidSelector(String),
}

/// A `key=value` label filter. The key `backend` also matches the device's backend name when
/// the device has no label of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    /// The label's name.
    pub key: String,
    /// The value it must have.
    pub value: String,
}

impl FromStr for LabelSelector {
    type Err = PoolError;

    fn from_str(s: &str) -> Result<Self, PoolError> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(LabelSelector {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => Err(PoolError::InvalidSelector(s.to_string())),
        }
    }
}

impl LabelSelector {
    /// Whether `device` carries this label.
    pub fn matches(&self, device: &dyn Device) -> bool {
        match device.labels().get(&self.key) {
            Some(v) => *v == self.value,
            None => self.key == "backend" && device.backend() == self.value,
        }
    }
}

/// Checks that `id` can be written on a command line and selected with `--devices a,b`:
/// not empty, no leading or trailing whitespace, no `,` (the list separator) and no control
/// character (newline, NUL, ESC...). Anything else is fine: adb serials such as
/// `127.0.0.1:5555` or `emulator-5554`, host names, `user@host`, `a/b`.
///
/// Returns what is wrong, as a lowercase fragment.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a device id must not be empty".into());
    }
    if id.trim() != id {
        return Err("a device id must not start or end with whitespace".into());
    }
    if id.contains(',') {
        return Err("a device id must not contain ',' (it separates ids in --devices)".into());
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "a device id must not contain control characters (found {})",
            c.escape_unicode()
        ));
    }
    Ok(())
}

/// The devices a [`BatchOperationManager`](crate::BatchOperationManager) runs on, in the order
/// they were added. Ids are unique.
#[derive(Debug, Clone, Default)]
pub struct DevicePool {
    devices: Vec<Arc<dyn Device>>,
    by_id: HashMap<String, usize>,
}

impl DevicePool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A pool of these devices; fails on the first duplicate id.
    pub fn from_devices(
        devices: impl IntoIterator<Item = Arc<dyn Device>>,
    ) -> Result<Self, PoolError> {
        let mut pool = DevicePool::new();
        for d in devices {
            pool.add(d)?;
        }
        Ok(pool)
    }

    /// Adds a device; a second device with the same id is refused, and so is an id that could
    /// not be selected from a command line (see [`check_device_id`]).
    pub fn add(&mut self, device: Arc<dyn Device>) -> Result<(), PoolError> {
        if let Err(reason) = check_device_id(device.id()) {
            return Err(PoolError::InvalidId {
                id: device.id().to_string(),
                backend: device.backend().to_string(),
                reason,
            });
        }
        if let Some(&i) = self.by_id.get(device.id()) {
            return Err(PoolError::DuplicateId {
                id: device.id().to_string(),
                first: self.devices[i].backend().to_string(),
                second: device.backend().to_string(),
            });
        }
        self.by_id
            .insert(device.id().to_string(), self.devices.len());
        self.devices.push(device);
        Ok(())
    }

    /// The device with this id.
    pub fn get_device(&self, id: &str) -> Option<&Arc<dyn Device>> {
        self.by_id.get(id).map(|&i| &self.devices[i])
    }

    /// Every device, in the order added.
    pub fn devices(&self) -> &[Arc<dyn Device>] {
        &self.devices
    }

    /// How many devices there are.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The devices matching every selector (all of them for no selectors), in pool order.
    pub fn select(&self, selectors: &[LabelSelector]) -> Vec<Arc<dyn Device>> {
        self.devices
            .iter()
            .filter(|d| selectors.iter().all(|s| s.matches(d.as_ref())))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Capability, Command, CommandOutput, Labels, TransferStats};
    use crate::error::DeviceError;
    use async_trait::async_trait;
    use std::path::Path;

    #[derive(Debug)]
    struct Named(String, Labels);

    #[async_trait]
    impl Device for Named {
        fn id(&self) -> &str {
            &self.0
        }
        fn backend(&self) -> &str {
            "test"
        }
        fn labels(&self) -> &Labels {
            &self.1
        }
        fn capabilities(&self) -> &[Capability] {
            &[]
        }
        async fn run(&self, _: &Command) -> Result<CommandOutput, DeviceError> {
            unreachable!()
        }
        async fn push(&self, _: &Path, _: &str) -> Result<TransferStats, DeviceError> {
            unreachable!()
        }
        async fn pull(&self, _: &str, _: &Path) -> Result<TransferStats, DeviceError> {
            unreachable!()
        }
    }

    fn add(pool: &mut DevicePool, id: &str) -> Result<(), PoolError> {
        pool.add(Arc::new(Named(id.to_string(), Labels::new())))
    }

    #[test]
    fn ids_that_a_command_line_cannot_select_are_refused() {
        let mut pool = DevicePool::new();
        let refused = |id: &str| add(&mut DevicePool::new(), id).unwrap_err().to_string();
        assert_eq!(
            refused(""),
            "invalid device id \"\" (backend test): a device id must not be empty"
        );
        assert_eq!(
            refused(" phone"),
            "invalid device id \" phone\" (backend test): a device id must not start or end with whitespace"
        );
        assert_eq!(
            refused("phone\t"),
            "invalid device id \"phone\\t\" (backend test): a device id must not start or end with whitespace"
        );
        assert_eq!(
            refused("a,b"),
            "invalid device id \"a,b\" (backend test): a device id must not contain ',' (it separates ids in --devices)"
        );
        assert_eq!(
            refused("a\nb"),
            "invalid device id \"a\\nb\" (backend test): a device id must not contain control characters (found \\u{a})"
        );
        assert_eq!(
            refused("a\0b"),
            "invalid device id \"a\\0b\" (backend test): a device id must not contain control characters (found \\u{0})"
        );
        assert_eq!(
            refused("a\u{1b}[31mb"),
            "invalid device id \"a\\u{1b}[31mb\" (backend test): a device id must not contain control characters (found \\u{1b})"
        );
        assert!(matches!(
            add(&mut pool, "a,b"),
            Err(PoolError::InvalidId { id, .. }) if id == "a,b"
        ));
        assert!(pool.is_empty(), "a refused device is not added");
        for id in [
            "127.0.0.1:5555",
            "emulator-5554",
            "R58M123ABC",
            "root@web-1.example.com",
            "phone-001",
            "a/b",
            "a b",
        ] {
            add(&mut pool, id).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
        assert_eq!(pool.len(), 7);
    }
}
