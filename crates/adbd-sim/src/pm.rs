//! The simulated package manager: installed packages and scripted install outcomes.

use std::collections::BTreeMap;

/// Installed packages of one device.
#[derive(Debug, Default)]
pub(crate) struct PackageManager {
    pub(crate) packages: BTreeMap<String, u64>,
}
