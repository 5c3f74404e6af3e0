//! What a batch returns: one [`DeviceOutcome`] per requested device, in a [`BatchResult`] that
//! serializes to exactly the spec's JSON shape.

use std::fmt;
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{DeviceError, ErrorKind, fmt_duration};

/// `success` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The operation succeeded on the device.
    Success,
    /// It did not; `error` says why.
    Error,
}

/// The one outcome of an operation on one device.
///
/// Serialized as the spec's `{"status", "result", "error"}` object (`error` only on errors),
/// plus `error_kind`, `attempts` and `elapsed_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceOutcome {
    /// Whether it succeeded.
    pub status: Status,
    /// The operation's result; on error, any partial result (else `null`).
    #[serde(default)]
    pub result: Value,
    /// The error message (errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stable word for the error (errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// How many attempts were made (0 when it never started).
    #[serde(default)]
    pub attempts: u32,
    /// Wall time spent on this device, all attempts and backoff included.
    #[serde(default)]
    pub elapsed_ms: u64,
}

impl DeviceOutcome {
    /// A success with its result.
    pub fn success(result: Value, attempts: u32, elapsed: Duration) -> Self {
        DeviceOutcome {
            status: Status::Success,
            result,
            error: None,
            error_kind: None,
            attempts,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }

    /// An error, with any partial result.
    pub fn error(
        error: &DeviceError,
        partial: Option<Value>,
        attempts: u32,
        elapsed: Duration,
    ) -> Self {
        Self::error_with_kind(error.kind(), error.to_string(), partial, attempts, elapsed)
    }

    pub(crate) fn error_with_kind(
        kind: ErrorKind,
        message: String,
        partial: Option<Value>,
        attempts: u32,
        elapsed: Duration,
    ) -> Self {
        DeviceOutcome {
            status: Status::Error,
            result: partial.unwrap_or(Value::Null),
            error: Some(message),
            error_kind: Some(kind),
            attempts,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }

    /// Whether the operation succeeded.
    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }
}

/// Why a batch stopped starting devices before it had run them all. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The canary devices did not all succeed.
    CanaryFailed,
    /// The failure policy's limit was reached (fail-fast, N or P% failures).
    FailureLimit,
    /// The overall deadline passed.
    Deadline,
    /// The batch was cancelled.
    Cancelled,
}

impl StopReason {
    /// Why a device that never started did not start, as its error text says.
    pub(crate) fn not_started(self) -> (ErrorKind, &'static str) {
        match self {
            StopReason::CanaryFailed => (
                ErrorKind::Aborted,
                "not started: the canary devices did not all succeed",
            ),
            StopReason::FailureLimit => (
                ErrorKind::Aborted,
                "not started: the batch stopped after reaching its failure limit",
            ),
            StopReason::Deadline => (
                ErrorKind::Timeout,
                "not started: the batch's overall deadline passed",
            ),
            StopReason::Cancelled => (ErrorKind::Cancelled, "not started: the batch was cancelled"),
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::CanaryFailed => "canary failed",
            StopReason::FailureLimit => "failure limit reached",
            StopReason::Deadline => "deadline passed",
            StopReason::Cancelled => "cancelled",
        })
    }
}

/// Counts for a finished batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Devices requested (= outcomes produced).
    pub total: usize,
    /// Outcomes with status `success`.
    pub succeeded: usize,
    /// Outcomes with status `error`, never-started devices included.
    pub failed: usize,
    /// Devices never started (aborted, cancelled or past the deadline before starting).
    pub not_started: usize,
    /// Why the batch stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// Wall time of the whole batch, in milliseconds.
    pub elapsed_ms: u64,
}

impl BatchSummary {
    /// Whether every device succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.failed == 0
    }

    pub(crate) fn count(&mut self, outcome: &DeviceOutcome) {
        self.total += 1;
        if outcome.is_success() {
            self.succeeded += 1;
        } else {
            self.failed += 1;
            if outcome.attempts == 0 {
                self.not_started += 1;
            }
        }
    }
}

impl fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} succeeded, {} failed",
            self.total,
            if self.total == 1 { "device" } else { "devices" },
            self.succeeded,
            self.failed
        )?;
        if self.not_started > 0 {
            write!(f, " ({} not started)", self.not_started)?;
        }
        if let Some(r) = self.stopped {
            write!(f, "; stopped: {r}")?;
        }
        write!(
            f,
            " in {}",
            fmt_duration(Duration::from_millis(self.elapsed_ms))
        )
    }
}

/// One outcome per requested device, in request order (pool order for "all devices").
///
/// Serializes to the spec's document: a JSON object from device id to outcome, in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchResult {
    outcomes: Vec<(String, DeviceOutcome)>,
    summary: BatchSummary,
}

impl BatchResult {
    pub(crate) fn new(outcomes: Vec<(String, DeviceOutcome)>, summary: BatchSummary) -> Self {
        BatchResult { outcomes, summary }
    }

    /// The outcome for one device.
    pub fn get(&self, device_id: &str) -> Option<&DeviceOutcome> {
        self.outcomes
            .iter()
            .find(|(id, _)| id == device_id)
            .map(|(_, o)| o)
    }

    /// Every (device id, outcome), in request order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &DeviceOutcome)> {
        self.outcomes.iter().map(|(id, o)| (id.as_str(), o))
    }

    /// How many outcomes there are.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// The ids of the devices that did not succeed, in request order.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.iter()
            .filter(|(_, o)| !o.is_success())
            .map(|(id, _)| id)
            .collect()
    }

    /// The counts.
    pub fn summary(&self) -> &BatchSummary {
        &self.summary
    }
}

impl Serialize for BatchResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.outcomes.len()))?;
        for (id, outcome) in &self.outcomes {
            map.serialize_entry(id, outcome)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for BatchResult {
    /// Reads a report written earlier (for example to re-run the failed devices). The summary
    /// is recounted; the elapsed time is not known and reads 0.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchResult;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object from device id to outcome")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<BatchResult, A::Error> {
                let mut outcomes = Vec::new();
                let mut summary = BatchSummary::default();
                while let Some((id, outcome)) = m.next_entry::<String, DeviceOutcome>()? {
                    summary.count(&outcome);
                    outcomes.push((id, outcome));
                }
                Ok(BatchResult { outcomes, summary })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_to_the_spec_shape_in_request_order() {
        let ok = DeviceOutcome::success(json!({"x": 1}), 1, Duration::from_millis(5));
        let bad = DeviceOutcome::error(
            &DeviceError::Timeout(Duration::from_secs(2)),
            Some(json!({"stdout": "partial"})),
            2,
            Duration::from_millis(2100),
        );
        let mut summary = BatchSummary::default();
        summary.count(&ok);
        summary.count(&bad);
        let r = BatchResult::new(vec![("z".into(), ok), ("a".into(), bad)], summary);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"z":{"status":"success","result":{"x":1},"attempts":1,"elapsed_ms":5},"a":{"status":"error","result":{"stdout":"partial"},"error":"timed out after 2s","error_kind":"timeout","attempts":2,"elapsed_ms":2100}}"#
        );
        let back: BatchResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back.failed_ids(), vec!["a"]);
        assert_eq!(back.summary().succeeded, 1);
    }

    #[test]
    fn reads_the_plain_spec_shape() {
        let r: BatchResult =
            serde_json::from_str(r#"{"d1":{"status":"error","result":null,"error":"boom"}}"#)
                .unwrap();
        assert_eq!(r.get("d1").unwrap().error.as_deref(), Some("boom"));
    }
}
