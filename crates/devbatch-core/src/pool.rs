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

    /// Adds a device; a second device with the same id is refused.
    pub fn add(&mut self, device: Arc<dyn Device>) -> Result<(), PoolError> {
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
