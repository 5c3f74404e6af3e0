//! `run_test` for ADB devices: Android instrumentation (`am instrument -w -r`) with the raw
//! status stream parsed into per-test results.

use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    Capability, Command, Device, DeviceError, Operation, OperationContext, OperationError,
    OperationFailure, ParamSpec, ParamType, Params,
};
use serde::Serialize;
use serde_json::{Value, json};

/// How one test ended, from its `INSTRUMENTATION_STATUS_CODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Code 0.
    Passed,
    /// Code -2 (an assertion failed).
    Failed,
    /// Code -1 (an unexpected exception).
    Error,
    /// Code -3.
    Ignored,
    /// Code -4 (an assumption did not hold: skipped).
    AssumptionFailure,
    /// Started (code 1) but no end status came: the run stopped inside this test.
    Incomplete,
}

/// One test of an instrumentation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestCase {
    /// The test class.
    pub class: String,
    /// The test method.
    pub method: String,
    /// How it ended.
    pub status: TestStatus,
    /// The stack trace of a failure or error.
    pub stack: Option<String>,
}

/// Everything parsed from an `am instrument -r` status stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstrumentationReport {
    /// Every test seen, in order.
    pub tests: Vec<TestCase>,
    /// `INSTRUMENTATION_CODE`, when the run reported its end (-1 is Activity.RESULT_OK).
    pub code: Option<i64>,
    /// Why the run itself failed: `INSTRUMENTATION_FAILED`/`ABORTED` or the result's
    /// `shortMsg` (`Process crashed.`).
    pub run_failure: Option<String>,
    /// The runner's own time (`Time: 1.234` in its result stream), in seconds.
    pub time_s: Option<f64>,
    /// The number of tests the runner announced.
    pub expected_tests: Option<u64>,
}

impl InstrumentationReport {
    fn count(&self, status: TestStatus) -> usize {
        self.tests.iter().filter(|t| t.status == status).count()
    }

    /// Why the run is a failure, or `None` when every test passed (or was skipped on purpose).
    pub fn failure(&self) -> Option<String> {
        if let Some(why) = &self.run_failure {
            return Some(format!("the instrumentation run failed: {why}"));
        }
        if let Some(t) = self
            .tests
            .iter()
            .find(|t| t.status == TestStatus::Incomplete)
        {
            return Some(format!(
                "the instrumentation stopped inside {}#{} without a result",
                t.class, t.method
            ));
        }
        let failed: Vec<&TestCase> = self
            .tests
            .iter()
            .filter(|t| matches!(t.status, TestStatus::Failed | TestStatus::Error))
            .collect();
        if !failed.is_empty() {
            let first = failed[0];
            let reason = first
                .stack
                .as_deref()
                .and_then(|s| s.lines().next())
                .unwrap_or("no stack trace");
            return Some(format!(
                "{} of {} tests failed; first: {}#{}: {reason}",
                failed.len(),
                self.tests.len(),
                first.class,
                first.method
            ));
        }
        if self.code.is_none() {
            return Some("the instrumentation reported no result (INSTRUMENTATION_CODE missing): the process crashed or the link was lost".into());
        }
        if let Some(n) = self.expected_tests
            && (self.tests.len() as u64) < n
        {
            return Some(format!(
                "the runner announced {n} tests but reported {}",
                self.tests.len()
            ));
        }
        None
    }

    /// The report as JSON, with totals.
    pub fn to_json(&self, duration_ms: u64) -> Value {
        json!({
            "tests": self.tests,
            "totals": {
                "total": self.tests.len(),
                "passed": self.count(TestStatus::Passed),
                "failed": self.count(TestStatus::Failed) + self.count(TestStatus::Error),
                "ignored": self.count(TestStatus::Ignored),
                "assumption_failures": self.count(TestStatus::AssumptionFailure),
                "incomplete": self.count(TestStatus::Incomplete),
            },
            "instrumentation_code": self.code,
            "run_failure": self.run_failure,
            "runner_time_s": self.time_s,
            "duration_ms": duration_ms,
        })
    }
}

/// Parses the raw (`-r`) output of `am instrument`.
pub fn parse_instrumentation(text: &str) -> InstrumentationReport {
    let mut report = InstrumentationReport::default();
    // The status block being read, and the key whose value continues on following lines.
    let mut status: Vec<(String, String)> = Vec::new();
    let mut result: Vec<(String, String)> = Vec::new();
    enum Into {
        Status,
        Result,
        Nothing,
    }
    let mut target = Into::Nothing;
    let get = |block: &[(String, String)], k: &str| {
        block
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(kv) = line.strip_prefix("INSTRUMENTATION_STATUS: ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            status.push((k.to_string(), v.to_string()));
            target = Into::Status;
        } else if let Some(code) = line.strip_prefix("INSTRUMENTATION_STATUS_CODE: ") {
            let code: i64 = code.trim().parse().unwrap_or(i64::MIN);
            if let Some(n) = get(&status, "numtests").and_then(|n| n.parse().ok()) {
                report.expected_tests = Some(n);
            }
            let class = get(&status, "class").unwrap_or_default();
            let method = get(&status, "test").unwrap_or_default();
            let stack = get(&status, "stack").map(|s| s.trim_end().to_string());
            let ended = match code {
                1 => None,
                0 => Some(TestStatus::Passed),
                -1 => Some(TestStatus::Error),
                -2 => Some(TestStatus::Failed),
                -3 => Some(TestStatus::Ignored),
                -4 => Some(TestStatus::AssumptionFailure),
                _ => Some(TestStatus::Error),
            };
            if !class.is_empty() || !method.is_empty() {
                match ended {
                    None => report.tests.push(TestCase {
                        class,
                        method,
                        status: TestStatus::Incomplete,
                        stack: None,
                    }),
                    Some(s) => {
                        let open = report.tests.iter_mut().rev().find(|t| {
                            t.status == TestStatus::Incomplete
                                && t.class == class
                                && t.method == method
                        });
                        match open {
                            Some(t) => {
                                t.status = s;
                                t.stack = stack;
                            }
                            None => report.tests.push(TestCase {
                                class,
                                method,
                                status: s,
                                stack,
                            }),
                        }
                    }
                }
            }
            status.clear();
            target = Into::Nothing;
        } else if let Some(kv) = line.strip_prefix("INSTRUMENTATION_RESULT: ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            result.push((k.to_string(), v.to_string()));
            target = Into::Result;
        } else if let Some(code) = line.strip_prefix("INSTRUMENTATION_CODE: ") {
            report.code = code.trim().parse().ok();
            target = Into::Nothing;
        } else if let Some(why) = line
            .strip_prefix("INSTRUMENTATION_FAILED: ")
            .or_else(|| line.strip_prefix("INSTRUMENTATION_ABORTED: "))
        {
            report.run_failure = Some(why.trim().to_string());
            target = Into::Nothing;
        } else {
            let block = match target {
                Into::Status => &mut status,
                Into::Result => &mut result,
                Into::Nothing => continue,
            };
            if let Some((_, v)) = block.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        }
    }
    if let Some(msg) = get(&result, "shortMsg") {
        let long = get(&result, "longMsg");
        report.run_failure.get_or_insert(match long {
            Some(l) if !l.is_empty() => format!("{msg} {l}"),
            _ => msg,
        });
    }
    if let Some(stream) = get(&result, "stream") {
        report.time_s = stream.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Time: ")
                .and_then(|t| t.replace(',', "").parse().ok())
        });
    }
    report
}

/// `run_test` for ADB devices: runs `am instrument -w -r` and parses the result.
///
/// With `cmd`, it behaves like the generic `run_test` (a shell command whose exit status
/// decides), so a mixed pool can use one parameter set.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AdbRunTestOperation;

#[async_trait]
impl Operation for AdbRunTestOperation {
    fn name(&self) -> &str {
        "run_test"
    }

    fn description(&self) -> &str {
        "run Android instrumentation tests (am instrument) and report each test"
    }

    fn backend(&self) -> Option<&str> {
        Some("adb")
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::optional(
                "package",
                ParamType::String,
                "the test package (com.example.app.test)",
            ),
            ParamSpec::with_default(
                "runner",
                ParamType::String,
                json!("androidx.test.runner.AndroidJUnitRunner"),
                "the instrumentation runner class",
            ),
            ParamSpec::optional(
                "test_name",
                ParamType::String,
                "a test class, or class#method, to run alone",
            ),
            ParamSpec::optional(
                "args",
                ParamType::Object,
                "extra `-e key value` arguments (string values)",
            ),
            ParamSpec::optional(
                "cmd",
                ParamType::String,
                "instead of instrumentation: a shell test command (exit status 0 = passed)",
            ),
        ]
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(1800)
    }

    fn required_capabilities(&self) -> &[Capability] {
        &[Capability::Exec]
    }

    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let bad = |param: &str, expected: &str, got: String| OperationError::InvalidParam {
            operation: "run_test".into(),
            param: param.into(),
            expected: expected.into(),
            got,
        };
        match (params.str("package"), params.str("cmd")) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "cmd",
                    "absent when `package` is given (one or the other)",
                    "both".into(),
                ));
            }
            (None, None) => {
                return Err(OperationError::MissingParam {
                    operation: "run_test".into(),
                    param: "package".into(),
                    expected:
                        "a string: the test package to instrument (or give `cmd` for a shell test)"
                            .into(),
                });
            }
            _ => {}
        }
        if let Some(Value::Object(args)) = params.get("args")
            && let Some((k, v)) = args.iter().find(|(_, v)| !v.is_string())
        {
            return Err(bad(
                "args",
                "an object of string values",
                format!("{k} = {v}"),
            ));
        }
        Ok(())
    }

    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        if params.str("cmd").is_some() {
            return devbatch_ops::RunTestOperation
                .execute(device, params, ctx)
                .await;
        }
        let package = params.str("package").unwrap_or_default();
        let runner = params
            .str("runner")
            .unwrap_or("androidx.test.runner.AndroidJUnitRunner");
        let mut argv: Vec<String> = ["am", "instrument", "-w", "-r"].map(String::from).to_vec();
        if let Some(t) = params.str("test_name") {
            argv.extend(["-e".into(), "class".into(), t.to_string()]);
        }
        if let Some(Value::Object(args)) = params.get("args") {
            for (k, v) in args {
                argv.extend([
                    "-e".into(),
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ]);
            }
        }
        let component = if runner.contains('/') {
            runner.to_string()
        } else {
            format!("{package}/{runner}")
        };
        argv.push(component);
        let started = tokio::time::Instant::now();
        let out = device
            .run(&Command::argv(argv).with_max_output(ctx.max_output()))
            .await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let text = String::from_utf8_lossy(&out.stdout);
        let report = parse_instrumentation(&text);
        let mut json = report.to_json(duration_ms);
        json["package"] = json!(package);
        json["exit_code"] = json!(out.exit_code);
        match report.failure() {
            None => Ok(json),
            Some(why) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = if report.tests.is_empty()
                    && report.run_failure.is_none()
                    && !stderr.trim().is_empty()
                {
                    format!("{why}; stderr: {}", super::first_lines(&stderr, 2))
                } else {
                    why
                };
                Err(OperationFailure::with_partial(
                    DeviceError::Failed(why),
                    json,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSING: &str = "INSTRUMENTATION_STATUS: class=com.ex.ATest\r
INSTRUMENTATION_STATUS: current=1\r
INSTRUMENTATION_STATUS: id=AndroidJUnitRunner\r
INSTRUMENTATION_STATUS: numtests=2\r
INSTRUMENTATION_STATUS: stream=\r
com.ex.ATest:\r
INSTRUMENTATION_STATUS: test=one\r
INSTRUMENTATION_STATUS_CODE: 1\r
INSTRUMENTATION_STATUS: class=com.ex.ATest\r
INSTRUMENTATION_STATUS: current=1\r
INSTRUMENTATION_STATUS: numtests=2\r
INSTRUMENTATION_STATUS: stream=.\r
INSTRUMENTATION_STATUS: test=one\r
INSTRUMENTATION_STATUS_CODE: 0\r
INSTRUMENTATION_STATUS: class=com.ex.ATest\r
INSTRUMENTATION_STATUS: numtests=2\r
INSTRUMENTATION_STATUS: test=two\r
INSTRUMENTATION_STATUS_CODE: 1\r
INSTRUMENTATION_STATUS: class=com.ex.ATest\r
INSTRUMENTATION_STATUS: numtests=2\r
INSTRUMENTATION_STATUS: test=two\r
INSTRUMENTATION_STATUS_CODE: -3\r
INSTRUMENTATION_RESULT: stream=\r
\r
Time: 1,234.5\r
\r
OK (2 tests)\r
\r
\r
INSTRUMENTATION_CODE: -1\r
";

    #[test]
    fn passing_run() {
        let r = parse_instrumentation(PASSING);
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[0].status, TestStatus::Passed);
        assert_eq!(r.tests[1].status, TestStatus::Ignored);
        assert_eq!(r.code, Some(-1));
        assert_eq!(r.time_s, Some(1234.5));
        assert_eq!(r.expected_tests, Some(2));
        assert_eq!(r.failure(), None);
        let j = r.to_json(5);
        assert_eq!(j["totals"]["passed"], 1);
        assert_eq!(j["totals"]["ignored"], 1);
    }

    #[test]
    fn failing_test_keeps_its_stack() {
        let text = "INSTRUMENTATION_STATUS: class=com.ex.BTest
INSTRUMENTATION_STATUS: numtests=1
INSTRUMENTATION_STATUS: test=broken
INSTRUMENTATION_STATUS_CODE: 1
INSTRUMENTATION_STATUS: class=com.ex.BTest
INSTRUMENTATION_STATUS: numtests=1
INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: expected:<1> but was:<2>
	at org.junit.Assert.fail(Assert.java:89)
	at com.ex.BTest.broken(BTest.java:12)

INSTRUMENTATION_STATUS: test=broken
INSTRUMENTATION_STATUS_CODE: -2
INSTRUMENTATION_RESULT: stream=
Time: 0.01
FAILURES!!!
Tests run: 1,  Failures: 1
INSTRUMENTATION_CODE: -1
";
        let r = parse_instrumentation(text);
        assert_eq!(r.tests.len(), 1);
        assert_eq!(r.tests[0].status, TestStatus::Failed);
        let stack = r.tests[0].stack.as_deref().unwrap();
        assert!(
            stack.starts_with("java.lang.AssertionError: expected:<1> but was:<2>\n\tat org.junit"),
            "{stack}"
        );
        assert!(stack.ends_with("(BTest.java:12)"), "{stack}");
        assert_eq!(
            r.failure().unwrap(),
            "1 of 1 tests failed; first: com.ex.BTest#broken: java.lang.AssertionError: expected:<1> but was:<2>"
        );
    }

    #[test]
    fn crashed_runs_fail() {
        let crashed = "INSTRUMENTATION_STATUS: class=com.ex.CTest
INSTRUMENTATION_STATUS: numtests=3
INSTRUMENTATION_STATUS: test=boom
INSTRUMENTATION_STATUS_CODE: 1
INSTRUMENTATION_RESULT: shortMsg=Process crashed.
INSTRUMENTATION_CODE: 0
";
        let r = parse_instrumentation(crashed);
        assert_eq!(r.run_failure.as_deref(), Some("Process crashed."));
        assert_eq!(r.tests[0].status, TestStatus::Incomplete);
        assert_eq!(
            r.failure().unwrap(),
            "the instrumentation run failed: Process crashed."
        );

        let r = parse_instrumentation(
            "INSTRUMENTATION_FAILED: com.ex/androidx.test.runner.AndroidJUnitRunner\nINSTRUMENTATION_CODE: 0\n",
        );
        assert!(
            r.failure().unwrap().contains("INSTRUMENTATION_FAILED")
                || r.failure().unwrap().contains("com.ex/androidx")
        );

        let r = parse_instrumentation("");
        assert!(
            r.failure()
                .unwrap()
                .contains("INSTRUMENTATION_CODE missing")
        );
    }
}
