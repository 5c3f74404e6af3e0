//! Operations specific to ADB devices.
