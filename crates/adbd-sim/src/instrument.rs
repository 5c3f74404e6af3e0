//! `am instrument`: replays a scripted test run as the raw (`-r`) status stream.

use std::fmt::Write as _;
use std::time::Duration;

/// The outcome of one scripted test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// Passes (status code 0).
    Pass,
    /// Fails with this stack trace (status code -2).
    Fail(String),
    /// Is ignored (`@Ignore`, status code -3).
    Ignored,
    /// An assumption failed (status code -4) with this trace.
    AssumptionFailure(String),
}

/// One scripted test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedTest {
    /// The test class, e.g. `com.example.app.LoginTest`.
    pub class: String,
    /// The method, e.g. `logsIn`.
    pub method: String,
    /// What happens.
    pub outcome: TestOutcome,
}

/// The test run a device replays for `am instrument` (see [`crate::SimHandle::set_instrumentation`]).
///
/// ```
/// use adbd_sim::InstrumentationScript;
/// let run = InstrumentationScript::new()
///     .pass("com.example.LoginTest", "logsIn")
///     .fail("com.example.LoginTest", "rejectsBadPassword",
///           "java.lang.AssertionError: expected:<false> but was:<true>\n\tat org.junit.Assert.fail(Assert.java:89)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentationScript {
    tests: Vec<ScriptedTest>,
    crash_before: Option<(usize, String)>,
    per_test: Duration,
}

impl Default for InstrumentationScript {
    /// Three passing tests in `com.example.test.ExampleTest`.
    fn default() -> InstrumentationScript {
        InstrumentationScript::new()
            .pass("com.example.test.ExampleTest", "testOne")
            .pass("com.example.test.ExampleTest", "testTwo")
            .pass("com.example.test.ExampleTest", "testThree")
    }
}

/// A trace for a scripted crash.
pub const DEFAULT_CRASH: &str = "java.lang.NullPointerException: Attempt to invoke virtual method 'void android.view.View.performClick()' on a null object reference\n\tat com.example.app.MainActivity.onResume(MainActivity.java:42)";

impl InstrumentationScript {
    /// An empty run (no tests: `OK (0 tests)`).
    pub fn new() -> InstrumentationScript {
        InstrumentationScript { tests: Vec::new(), crash_before: None, per_test: Duration::from_millis(20) }
    }

    /// Adds a test.
    pub fn test(mut self, class: &str, method: &str, outcome: TestOutcome) -> InstrumentationScript {
        self.tests.push(ScriptedTest { class: class.into(), method: method.into(), outcome });
        self
    }

    /// Adds a passing test.
    pub fn pass(self, class: &str, method: &str) -> InstrumentationScript {
        self.test(class, method, TestOutcome::Pass)
    }

    /// Adds a failing test with its stack trace (first line: the exception and message).
    pub fn fail(self, class: &str, method: &str, stack: &str) -> InstrumentationScript {
        self.test(class, method, TestOutcome::Fail(stack.into()))
    }

    /// The process crashes when test number `index` (0-based) starts: that test is reported started, then
    /// `INSTRUMENTATION_RESULT: shortMsg=Process crashed.` and `INSTRUMENTATION_CODE: 0`.
    pub fn crash_at(mut self, index: usize, trace: &str) -> InstrumentationScript {
        self.crash_before = Some((index, trace.into()));
        self
    }

    /// How long each test takes (default 20 ms).
    pub fn per_test(mut self, duration: Duration) -> InstrumentationScript {
        self.per_test = duration;
        self
    }

    /// The tests a `-e class` filter selects (`Class`, `Class#method`, comma-separated), in order.
    fn selected(&self, filter: Option<&str>) -> Vec<&ScriptedTest> {
        let Some(filter) = filter else { return self.tests.iter().collect() };
        self.tests
            .iter()
            .filter(|t| {
                filter.split(',').any(|f| match f.split_once('#') {
                    Some((class, method)) => t.class == class && t.method == method,
                    None => t.class == f,
                })
            })
            .collect()
    }

    /// The output chunks of a run (each after `per_test`), for the raw (`-r`) format or the human one.
    pub(crate) fn replay(&self, runner_id: &str, filter: Option<&str>, raw: bool) -> Vec<(Duration, String)> {
        let tests = self.selected(filter);
        let total = tests.len();
        let mut chunks = Vec::new();
        let mut human = String::new();
        let mut failures = Vec::new();
        let mut last_class = String::new();
        let status = |out: &mut String, t: &ScriptedTest, current: usize, stream: &str, extra: &str, code: i32| {
            let _ = write!(
                out,
                "INSTRUMENTATION_STATUS: class={}\nINSTRUMENTATION_STATUS: current={current}\n\
                 INSTRUMENTATION_STATUS: id={runner_id}\nINSTRUMENTATION_STATUS: numtests={total}\n{extra}\
                 INSTRUMENTATION_STATUS: stream={stream}\nINSTRUMENTATION_STATUS: test={}\n\
                 INSTRUMENTATION_STATUS_CODE: {code}\n",
                t.class, t.method
            );
        };
        for (i, t) in tests.iter().enumerate() {
            let current = i + 1;
            let mut out = String::new();
            let header = if t.class != last_class { format!("\n{}:", t.class) } else { String::new() };
            last_class = t.class.clone();
            status(&mut out, t, current, &header, "", 1);
            human.push_str(&header);
            if let Some((at, trace)) = &self.crash_before
                && *at == i
            {
                if raw {
                    let _ = write!(
                        out,
                        "INSTRUMENTATION_RESULT: shortMsg=Process crashed.\nINSTRUMENTATION_RESULT: longMsg={}\nINSTRUMENTATION_CODE: 0\n",
                        trace.lines().next().unwrap_or("")
                    );
                    chunks.push((self.per_test, out));
                } else {
                    chunks.push((self.per_test, format!("{human}\nINSTRUMENTATION_RESULT: shortMsg=Process crashed.\nINSTRUMENTATION_CODE: 0\n")));
                }
                return chunks;
            }
            match &t.outcome {
                TestOutcome::Pass => {
                    status(&mut out, t, current, ".", "", 0);
                    human.push('.');
                }
                TestOutcome::Fail(stack) => {
                    let stream = format!("\nError in {}({}):\n{stack}\n", t.method, t.class);
                    status(&mut out, t, current, &stream, &format!("INSTRUMENTATION_STATUS: stack={stack}\n"), -2);
                    human.push('E');
                    failures.push((t, stack.clone()));
                }
                TestOutcome::Ignored => {
                    status(&mut out, t, current, "", "", -3);
                }
                TestOutcome::AssumptionFailure(stack) => {
                    status(&mut out, t, current, "", &format!("INSTRUMENTATION_STATUS: stack={stack}\n"), -4);
                }
            }
            if raw {
                chunks.push((self.per_test, out));
            }
        }
        let seconds = self.per_test.as_secs_f64() * total as f64;
        let mut summary = format!("\n\nTime: {seconds:.3}\n");
        if failures.is_empty() {
            let _ = write!(summary, "\nOK ({total} test{})\n\n\n", if total == 1 { "" } else { "s" });
        } else {
            let _ = write!(
                summary,
                "There {} {} failure{}:\n",
                if failures.len() == 1 { "was" } else { "were" },
                failures.len(),
                if failures.len() == 1 { "" } else { "s" }
            );
            for (n, (t, stack)) in failures.iter().enumerate() {
                let _ = write!(summary, "{}) {}({})\n{stack}\n", n + 1, t.method, t.class);
            }
            let _ = write!(summary, "\nFAILURES!!!\nTests run: {total},  Failures: {}\n\n\n", failures.len());
        }
        if raw {
            chunks.push((Duration::ZERO, format!("INSTRUMENTATION_RESULT: stream={summary}INSTRUMENTATION_CODE: -1\n")));
        } else {
            chunks.push((self.per_test * total as u32, format!("{human}{summary}")));
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_stream_has_start_and_end_status_per_test() {
        let script = InstrumentationScript::new()
            .pass("a.T", "one")
            .fail("a.T", "two", "java.lang.AssertionError: boom\n\tat a.T.two(T.java:9)");
        let text: String = script.replay("AndroidJUnitRunner", None, true).into_iter().map(|(_, s)| s).collect();
        assert_eq!(text.matches("INSTRUMENTATION_STATUS_CODE: 1\n").count(), 2);
        assert!(text.contains("INSTRUMENTATION_STATUS: test=one\nINSTRUMENTATION_STATUS_CODE: 0\n"), "{text}");
        assert!(text.contains("INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: boom\n\tat a.T.two(T.java:9)\n"));
        assert!(text.contains("INSTRUMENTATION_STATUS: test=two\nINSTRUMENTATION_STATUS_CODE: -2\n"));
        assert!(text.contains("FAILURES!!!\nTests run: 2,  Failures: 1\n"), "{text}");
        assert!(text.ends_with("INSTRUMENTATION_CODE: -1\n"));

        let only = script.replay("R", Some("a.T#one"), true);
        let text: String = only.into_iter().map(|(_, s)| s).collect();
        assert!(text.contains("numtests=1") && text.contains("OK (1 test)"), "{text}");

        let crash = InstrumentationScript::default().crash_at(1, DEFAULT_CRASH);
        let text: String = crash.replay("R", None, true).into_iter().map(|(_, s)| s).collect();
        assert!(text.ends_with("shortMsg=Process crashed.\nINSTRUMENTATION_RESULT: longMsg=java.lang.NullPointerException: Attempt to invoke virtual method 'void android.view.View.performClick()' on a null object reference\nINSTRUMENTATION_CODE: 0\n"), "{text}");
        assert_eq!(text.matches("INSTRUMENTATION_STATUS_CODE: 0").count(), 1);
    }
}
