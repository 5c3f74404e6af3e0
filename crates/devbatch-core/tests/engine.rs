//! The engine's promises, pinned on mock devices: validation before anything runs, exactly one
//! outcome per device whatever happens, the concurrency limit, timeouts, cancellation, panics,
//! retries, failure policies, canaries, deadlines and result order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devbatch_core::{
    BatchError, BatchEvent, BatchOperationManager, BatchOptions, CancelHandle, Device, DevicePool,
    ErrorKind, FailurePolicy, Operation, OperationContext, OperationFailure, ParamSpec, ParamType,
    Params, Registry, RetryPolicy, Status, StopReason,
};
use devbatch_mock::{CallLog, Latency, MockDevice, Script};
use serde_json::{Value, json};

/// A test operation whose behaviour comes only from mock scripts.
struct Probe {
    name: &'static str,
    idempotent: bool,
}

#[async_trait]
impl Operation for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "answered by mock scripts"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("label", ParamType::String, "any text"),
            ParamSpec::with_default("count", ParamType::Integer, json!(1), "a number"),
        ]
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    async fn execute(
        &self,
        _: &dyn Device,
        params: &Params,
        _: &OperationContext,
    ) -> Result<Value, OperationFailure> {
        Ok(json!({"unscripted": params.str("label")}))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    devbatch_ops::register_all(&mut r).unwrap();
    r.add_operation(
        Arc::new(Probe {
            name: "probe",
            idempotent: false,
        }),
        "tests",
    )
    .unwrap();
    r.add_operation(
        Arc::new(Probe {
            name: "probe_idem",
            idempotent: true,
        }),
        "tests",
    )
    .unwrap();
    r
}

fn manager(devices: Vec<MockDevice>) -> BatchOperationManager {
    let pool =
        DevicePool::from_devices(devices.into_iter().map(|d| Arc::new(d) as Arc<dyn Device>))
            .unwrap();
    BatchOperationManager::with_registry(pool, registry())
}

fn ok_after(ms: u64) -> Script {
    Script::succeed(json!("ok")).with_latency(Latency::fixed(Duration::from_millis(ms)))
}

fn params() -> Value {
    json!({"label": "x"})
}

#[tokio::test]
async fn results_have_the_spec_shape() {
    let m = manager(vec![
        MockDevice::new("device1").on("probe", Script::succeed(json!({"v": 1}))),
        MockDevice::new("device2").on("probe", Script::fail(ErrorKind::Failed, "it broke")),
    ]);
    let r = m.execute_batch("probe", params(), None).await.unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["device1"]["status"], "success");
    assert_eq!(v["device1"]["result"], json!({"v": 1}));
    assert!(
        v["device1"].get("error").is_none(),
        "error is only present on errors"
    );
    assert_eq!(v["device2"]["status"], "error");
    assert_eq!(v["device2"]["error"], "it broke");
    assert_eq!(v["device2"]["error_kind"], "failed");
    assert_eq!(v["device2"]["attempts"], 1);
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn validation_errors_name_the_problem_and_nothing_runs() {
    let log = CallLog::new();
    let m = manager(vec![
        MockDevice::new("a").with_log(&log),
        MockDevice::new("b").with_log(&log),
    ]);

    let e = m
        .execute_batch("probe", params(), Some(&["a", "ghost", "b", "phantom"]))
        .await
        .unwrap_err();
    assert!(matches!(e, BatchError::Device(_)), "{e:?}");
    assert_eq!(e.to_string(), "unknown device ids: ghost, phantom");

    let e = m
        .execute_batch("instal_app", params(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, BatchError::Operation(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "unknown operation 'instal_app'; known operations: info, probe, probe_idem, pull, push, reboot, run_test, shell"
    );

    let e = m.execute_batch("probe", json!({}), None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "operation 'probe' needs parameter 'label' (a string: any text)"
    );
    let e = m
        .execute_batch("probe", json!({"label": 3}), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "parameter 'label' of operation 'probe' must be a string, got number 3"
    );
    let e = m
        .execute_batch("probe", json!({"label": "x", "colour": "red"}), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "operation 'probe' has no parameter 'colour'; its parameters are: label, count"
    );
    let e = m
        .execute_batch("shell", json!({"cmd": "true", "args": ["true"]}), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "parameter 'cmd' of operation 'shell' must be given alone (use either cmd or args), got both cmd and args"
    );
    let e = m
        .execute_batch(
            "push",
            json!({"local": "/no/such/file", "remote": "/x"}),
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("parameter 'local' of operation 'push' must be an existing local file or directory, got \"/no/such/file\""), "{e}");

    assert!(log.calls().is_empty(), "something ran: {:?}", log.calls());
}

#[tokio::test]
async fn one_outcome_per_device_under_panics_hangs_and_errors() {
    let m = manager(vec![
        MockDevice::new("fine").on("probe", ok_after(10)),
        MockDevice::new("panics").on("probe", Script::panic("kaboom")),
        MockDevice::new("hangs").on("probe", Script::hang()),
        MockDevice::new("fails").on("probe", Script::fail(ErrorKind::Failed, "nope")),
        MockDevice::new("fine2").on("probe", ok_after(1)),
    ]);
    let opts = BatchOptions::default().timeout(Duration::from_millis(300));
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    assert_eq!(r.len(), 5);
    let ids: Vec<&str> = r.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["fine", "panics", "hangs", "fails", "fine2"],
        "results keep request order"
    );
    assert!(r.get("fine").unwrap().is_success());
    let p = r.get("panics").unwrap();
    assert_eq!(p.error_kind, Some(ErrorKind::Panicked));
    assert_eq!(p.error.as_deref(), Some("operation panicked: kaboom"));
    let h = r.get("hangs").unwrap();
    assert_eq!(h.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(h.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(r.get("fails").unwrap().error_kind, Some(ErrorKind::Failed));
    assert!(r.get("fine2").unwrap().is_success());
    assert_eq!(r.summary().succeeded, 2);
    assert_eq!(r.summary().failed, 3);
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_is_the_operations_own() {
    let m = manager(vec![MockDevice::new("hangs").on("probe", Script::hang())]);
    let started = tokio::time::Instant::now();
    let r = m.execute_batch("probe", params(), None).await.unwrap();
    assert_eq!(
        r.get("hangs").unwrap().error.as_deref(),
        Some("timed out after 30s")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn in_flight_never_exceeds_the_limit() {
    let log = CallLog::new();
    let devices = (0..40)
        .map(|i| {
            MockDevice::new(format!("d{i:02}"))
                .with_log(&log)
                .on("probe", ok_after(10 + (i % 7) * 3))
        })
        .collect();
    let m = manager(devices);
    let r = m
        .execute_batch_with(
            "probe",
            params(),
            None,
            &BatchOptions::default().concurrency(7),
        )
        .await
        .unwrap();
    assert_eq!(r.summary().succeeded, 40);
    assert_eq!(log.max_in_flight(), 7);
    let r = m.execute_batch("probe", params(), None).await.unwrap();
    assert_eq!(r.summary().succeeded, 40);
    assert_eq!(
        log.max_in_flight(),
        10,
        "the spec's default concurrency is 10"
    );
}

#[tokio::test]
async fn cancellation_mid_batch_gives_every_device_an_outcome() {
    let devices = (0..30)
        .map(|i| {
            MockDevice::new(format!("d{i:02}"))
                .on("probe", if i < 5 { ok_after(1) } else { Script::hang() })
        })
        .collect();
    let m = manager(devices);
    let cancel = CancelHandle::new();
    let finished = Arc::new(AtomicUsize::new(0));
    let opts = {
        let (cancel, finished) = (cancel.clone(), finished.clone());
        BatchOptions::default()
            .concurrency(10)
            .cancel_handle(cancel.clone())
            .observer(move |e| {
                if let BatchEvent::Finished { .. } = e
                    && finished.fetch_add(1, Ordering::SeqCst) + 1 == 5
                {
                    cancel.cancel();
                }
            })
    };
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        m.execute_batch_with("probe", params(), None, &opts),
    )
    .await
    .expect("a cancelled batch returns promptly")
    .unwrap();
    assert_eq!(r.len(), 30);
    assert_eq!(r.summary().succeeded, 5);
    assert_eq!(r.summary().stopped, Some(StopReason::Cancelled));
    let cancelled: Vec<_> = r
        .iter()
        .filter(|(_, o)| o.error_kind == Some(ErrorKind::Cancelled))
        .collect();
    assert_eq!(cancelled.len(), 25);
    let in_flight = cancelled.iter().filter(|(_, o)| o.attempts == 1).count();
    let never_started = cancelled.iter().filter(|(_, o)| o.attempts == 0).count();
    assert_eq!(in_flight, 5, "the 5 hanging devices running when cancelled");
    assert_eq!(never_started, 20);
    assert_eq!(
        r.get("d29").unwrap().error.as_deref(),
        Some("not started: the batch was cancelled")
    );
    assert_eq!(r.get("d05").unwrap().error.as_deref(), Some("cancelled"));
}

#[tokio::test(start_paused = true)]
async fn retries_only_what_is_safe_to_retry() {
    let log = CallLog::new();
    let flaky = |id: &str, op: &str, kind: ErrorKind| {
        MockDevice::new(id).with_log(&log).on(
            op,
            Script {
                error: Some(devbatch_mock::ScriptedError {
                    kind,
                    message: "blip".into(),
                    partial: None,
                }),
                result: Some(json!("ok")),
                ..Script::default()
            }
            .flaky(2),
        )
    };
    let m = manager(vec![
        flaky("idem-disconnect", "probe_idem", ErrorKind::Disconnected),
        flaky("idem-failed", "probe_idem", ErrorKind::Failed),
        flaky("fresh-unreachable", "probe", ErrorKind::Unreachable),
        flaky("fresh-disconnect", "probe", ErrorKind::Disconnected),
    ]);
    let opts = BatchOptions::default().retry(RetryPolicy::retries(3));
    let idem = m
        .execute_batch_with(
            "probe_idem",
            params(),
            Some(&["idem-disconnect", "idem-failed"]),
            &opts,
        )
        .await
        .unwrap();
    let d = idem.get("idem-disconnect").unwrap();
    assert!(d.is_success(), "{d:?}");
    assert_eq!(d.attempts, 3, "two failures, then success");
    let f = idem.get("idem-failed").unwrap();
    assert_eq!(
        (f.status, f.attempts, f.error_kind),
        (Status::Error, 1, Some(ErrorKind::Failed)),
        "failed is not transient"
    );

    let fresh = m
        .execute_batch_with(
            "probe",
            params(),
            Some(&["fresh-unreachable", "fresh-disconnect"]),
            &opts,
        )
        .await
        .unwrap();
    let u = fresh.get("fresh-unreachable").unwrap();
    assert!(
        u.is_success(),
        "unreachable never started, so even a non-idempotent op is retried: {u:?}"
    );
    assert_eq!(u.attempts, 3);
    let dc = fresh.get("fresh-disconnect").unwrap();
    assert_eq!(
        (dc.attempts, dc.error_kind),
        (1, Some(ErrorKind::Disconnected)),
        "a non-idempotent op that may have started is not retried"
    );
    assert_eq!(log.count("fresh-disconnect", "op:probe"), 1);

    // Out of retries: the last error stands and every attempt is counted.
    let m = manager(vec![flaky(
        "stubborn",
        "probe_idem",
        ErrorKind::Unreachable,
    )]);
    let r = m
        .execute_batch_with(
            "probe_idem",
            params(),
            None,
            &BatchOptions::default().retry(RetryPolicy::retries(1)),
        )
        .await
        .unwrap();
    let s = r.get("stubborn").unwrap();
    assert_eq!(
        (s.attempts, s.error_kind),
        (2, Some(ErrorKind::Unreachable))
    );
}

#[tokio::test(start_paused = true)]
async fn fail_fast_and_failure_limits_abort_the_rest() {
    let devices = || {
        (0..10)
            .map(|i| {
                MockDevice::new(format!("d{i}")).on(
                    "probe",
                    if i == 2 || i == 3 {
                        Script::fail(ErrorKind::Failed, "bad")
                    } else {
                        ok_after(10)
                    },
                )
            })
            .collect()
    };
    let m = manager(devices());
    let opts = BatchOptions::default()
        .concurrency(1)
        .failure_policy(FailurePolicy::FailFast);
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    assert_eq!(r.len(), 10);
    assert_eq!(r.summary().succeeded, 2);
    assert_eq!(r.summary().stopped, Some(StopReason::FailureLimit));
    let aborted = r.get("d3").unwrap();
    assert_eq!(
        (aborted.error_kind, aborted.attempts),
        (Some(ErrorKind::Aborted), 0)
    );
    assert_eq!(
        aborted.error.as_deref(),
        Some("not started: the batch stopped after reaching its failure limit")
    );

    let opts = BatchOptions::default()
        .concurrency(1)
        .failure_policy(FailurePolicy::MaxFailures(2));
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    assert_eq!((r.summary().succeeded, r.summary().not_started), (2, 6));

    let opts = BatchOptions::default()
        .concurrency(1)
        .failure_policy(FailurePolicy::MaxFailurePercent(30.0));
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    assert_eq!(
        r.summary().stopped,
        None,
        "2 of 10 failures stays under 30%"
    );
    assert_eq!(r.summary().succeeded, 8);
}

#[tokio::test(start_paused = true)]
async fn canaries_gate_the_rest() {
    let log = CallLog::new();
    let m = manager(
        (0..8)
            .map(|i| {
                MockDevice::new(format!("d{i}")).with_log(&log).on(
                    "probe",
                    if i == 1 {
                        Script::fail(ErrorKind::Failed, "canary died")
                    } else {
                        ok_after(5)
                    },
                )
            })
            .collect(),
    );
    let r = m
        .execute_batch_with("probe", params(), None, &BatchOptions::default().canary(2))
        .await
        .unwrap();
    assert_eq!(r.summary().stopped, Some(StopReason::CanaryFailed));
    assert!(r.get("d0").unwrap().is_success());
    assert_eq!(r.get("d1").unwrap().error.as_deref(), Some("canary died"));
    for i in 2..8 {
        let o = r.get(&format!("d{i}")).unwrap();
        assert_eq!(
            o.error.as_deref(),
            Some("not started: the canary devices did not all succeed")
        );
    }
    assert_eq!(log.calls().len(), 2, "only the canaries ran");

    let m = manager(
        (0..8)
            .map(|i| MockDevice::new(format!("d{i}")).on("probe", ok_after(5)))
            .collect(),
    );
    let r = m
        .execute_batch_with("probe", params(), None, &BatchOptions::default().canary(3))
        .await
        .unwrap();
    assert_eq!(r.summary().succeeded, 8);

    // When every device is a canary, or the limit is reached by the last device, the policy
    // stopped nothing and the summary does not say it did.
    let failing = || {
        manager(
            (0..3)
                .map(|i| {
                    MockDevice::new(format!("d{i}")).on(
                        "probe",
                        if i == 2 {
                            Script::fail(ErrorKind::Failed, "no")
                        } else {
                            ok_after(5)
                        },
                    )
                })
                .collect(),
        )
    };
    for options in [
        BatchOptions::default().canary(3),
        BatchOptions::default()
            .concurrency(1)
            .failure_policy(FailurePolicy::FailFast),
    ] {
        let r = failing()
            .execute_batch_with("probe", params(), None, &options)
            .await
            .unwrap();
        assert_eq!(r.summary().failed, 1, "{options:?}");
        assert_eq!(r.summary().stopped, None, "{options:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_times_out_running_and_unstarted_devices() {
    let m = manager(
        (0..6)
            .map(|i| {
                MockDevice::new(format!("d{i}"))
                    .on("probe", ok_after(if i == 0 { 10 } else { 10_000 }))
            })
            .collect(),
    );
    let opts = BatchOptions::default()
        .concurrency(2)
        .deadline(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(r.get("d0").unwrap().is_success());
    let running = r.get("d1").unwrap();
    assert_eq!(
        (running.error_kind, running.attempts),
        (Some(ErrorKind::Timeout), 1)
    );
    assert_eq!(
        running.error.as_deref(),
        Some("stopped by the batch deadline (1s)"),
        "a device stopped by the deadline says so, unlike a per-attempt timeout"
    );
    let waiting = r.get("d5").unwrap();
    assert_eq!(
        (waiting.error_kind, waiting.attempts),
        (Some(ErrorKind::Timeout), 0)
    );
    assert_eq!(
        waiting.error.as_deref(),
        Some("not started: the batch's overall deadline passed")
    );
    assert_eq!(r.summary().stopped, Some(StopReason::Deadline));
}

#[tokio::test]
async fn an_operation_for_another_backend_is_unsupported() {
    struct AdbOnly;
    #[async_trait]
    impl Operation for AdbOnly {
        fn name(&self) -> &str {
            "install_app"
        }
        fn description(&self) -> &str {
            "adb only"
        }
        fn backend(&self) -> Option<&str> {
            Some("adb")
        }
        fn params(&self) -> Vec<ParamSpec> {
            vec![ParamSpec::required("app_path", ParamType::String, "apk")]
        }
        fn idempotent(&self) -> bool {
            true
        }
        fn default_timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        async fn execute(
            &self,
            _: &dyn Device,
            _: &Params,
            _: &OperationContext,
        ) -> Result<Value, OperationFailure> {
            Ok(Value::Null)
        }
    }
    let mut reg = registry();
    reg.add_operation(Arc::new(AdbOnly), "tests").unwrap();
    let pool = DevicePool::from_devices([
        Arc::new(MockDevice::new("plain")) as Arc<dyn Device>,
        Arc::new(
            MockDevice::new("scripted")
                .on("install_app", Script::succeed(json!({"package": "com.x"}))),
        ),
    ])
    .unwrap();
    let m = BatchOperationManager::with_registry(pool, reg);
    let e = m
        .execute_batch("install_app", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "operation 'install_app' needs parameter 'app_path' (a string: apk)",
        "validated against the adb spec"
    );
    let r = m
        .execute_batch("install_app", json!({"app_path": "a.apk"}), None)
        .await
        .unwrap();
    let plain = r.get("plain").unwrap();
    assert_eq!(plain.error_kind, Some(ErrorKind::Unsupported));
    assert_eq!(
        plain.error.as_deref(),
        Some(
            "unsupported: operation 'install_app' is not available for mock devices (it is provided for: adb)"
        )
    );
    assert_eq!(
        r.get("scripted").unwrap().result,
        json!({"package": "com.x"}),
        "mock devices can play any operation"
    );
}

#[tokio::test]
async fn events_report_each_start_and_exactly_one_finish_per_device() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let m = manager(
        (0..20)
            .map(|i| MockDevice::new(format!("d{i}")).on("probe", ok_after(1)))
            .collect(),
    );
    let sink = events.clone();
    let opts = BatchOptions::default().observer(move |e| {
        let line = match e {
            BatchEvent::Started { device_id, attempt } => format!("start {device_id} {attempt}"),
            BatchEvent::Finished { device_id, outcome } => {
                format!("finish {device_id} {:?}", outcome.status)
            }
            other => format!("{other:?}"),
        };
        sink.lock().unwrap().push(line);
    });
    m.execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    let events = events.lock().unwrap();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("start ")).count(),
        20
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("finish ") && e.ends_with("Success"))
            .count(),
        20
    );
}

#[tokio::test]
async fn streaming_delivers_every_outcome_without_keeping_them() {
    let m = manager(
        (0..50)
            .map(|i| {
                MockDevice::new(format!("d{i}")).on(
                    "probe",
                    if i % 10 == 0 {
                        Script::fail(ErrorKind::Failed, "x")
                    } else {
                        ok_after(1)
                    },
                )
            })
            .collect(),
    );
    let mut seen = Vec::new();
    let summary = m
        .execute_batch_streaming(
            "probe",
            params(),
            None,
            &BatchOptions::default(),
            |id, o| seen.push((id.to_string(), o.status)),
        )
        .await
        .unwrap();
    assert_eq!(seen.len(), 50);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    seen.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(seen.len(), 50, "one outcome per device");
    assert_eq!((summary.succeeded, summary.failed), (45, 5));
}

#[tokio::test]
async fn duplicate_requested_ids_run_once() {
    let log = CallLog::new();
    let m = manager(vec![
        MockDevice::new("a").with_log(&log).on("probe", ok_after(1)),
    ]);
    let r = m
        .execute_batch("probe", params(), Some(&["a", "a"]))
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(log.count("a", "op:probe"), 1);
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_work_then_refuses_new_batches() {
    let log = CallLog::new();
    let m = manager(vec![
        MockDevice::new("slow")
            .with_log(&log)
            .on("probe", ok_after(200)),
    ]);
    let running = {
        let m = m.clone();
        tokio::spawn(async move { m.execute_batch("probe", params(), None).await })
    };
    while log.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m.shutdown().await;
    assert_eq!(
        log.in_flight(),
        0,
        "shutdown returned while work was in flight"
    );
    assert!(
        running
            .await
            .unwrap()
            .unwrap()
            .get("slow")
            .unwrap()
            .is_success()
    );
    let e = m.execute_batch("probe", params(), None).await.unwrap_err();
    assert_eq!(e.to_string(), "the batch manager has been shut down");
}

#[tokio::test]
async fn not_ready_devices_fail_with_their_state_and_a_hint() {
    let m = manager(vec![MockDevice::new("off").not_ready(
        "unauthorized",
        "accept the USB debugging prompt on the device",
    )]);
    let r = m.execute_batch("probe", params(), None).await.unwrap();
    let o = r.get("off").unwrap();
    assert_eq!(o.error_kind, Some(ErrorKind::NotReady));
    assert_eq!(
        o.error.as_deref(),
        Some("device is unauthorized: accept the USB debugging prompt on the device")
    );
}

#[tokio::test]
async fn the_shell_operation_reports_exit_codes_and_keeps_partial_output() {
    let m = manager(vec![MockDevice::new("m")]);
    let r = m
        .execute_batch(
            "shell",
            json!({"cmd": "echo out; echo err >&2; exit 3"}),
            None,
        )
        .await
        .unwrap();
    let o = r.get("m").unwrap();
    assert_eq!(
        o.error.as_deref(),
        Some("command exited with status 3: err")
    );
    assert_eq!(
        o.result,
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "err\n"})
    );
    let r = m
        .execute_batch(
            "shell",
            json!({"cmd": "exit 3", "ok_exit_codes": [0, 3]}),
            None,
        )
        .await
        .unwrap();
    assert!(r.get("m").unwrap().is_success());
    let r = m
        .execute_batch(
            "shell",
            json!({"args": ["echo", "a; echo INJECTED", "$(id)"]}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        r.get("m").unwrap().result["stdout"],
        "a; echo INJECTED $(id)\n"
    );
    let r = m
        .execute_batch_with(
            "shell",
            json!({"cmd": "head -c 5000 /dev/zero"}),
            None,
            &BatchOptions::default().max_output(1000),
        )
        .await
        .unwrap();
    assert_eq!(r.get("m").unwrap().error_kind, Some(ErrorKind::OutputLimit));
}

#[tokio::test(start_paused = true)]
async fn a_running_device_stopped_by_the_deadline_names_the_deadline() {
    let m = manager(vec![
        MockDevice::new("slow").on("probe", ok_after(10_000)),
        MockDevice::new("fast").on("probe", ok_after(10)),
    ]);
    let opts = BatchOptions::default()
        .timeout(Duration::from_secs(60))
        .deadline(Duration::from_millis(400));
    let r = m
        .execute_batch_with("probe", params(), None, &opts)
        .await
        .unwrap();
    let slow = r.get("slow").unwrap();
    assert_eq!(slow.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(
        slow.error.as_deref(),
        Some("stopped by the batch deadline (400ms)")
    );
    assert_eq!(slow.attempts, 1);
    assert!(r.get("fast").unwrap().is_success());
    assert_eq!(r.summary().stopped, Some(StopReason::Deadline));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_too_far_for_an_instant_is_no_deadline() {
    for deadline in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(400 * 365 * 24 * 3600),
    ] {
        let m = manager(
            (0..3)
                .map(|i| MockDevice::new(format!("d{i}")).on("probe", ok_after(5)))
                .collect(),
        );
        let opts = BatchOptions::default().deadline(deadline);
        let r = m
            .execute_batch_with("probe", params(), None, &opts)
            .await
            .unwrap();
        assert_eq!(r.summary().succeeded, 3, "{deadline:?}");
        assert_eq!(r.summary().stopped, None, "{deadline:?}");
    }
}

/// Counts `WARN` events whose message mentions the observer; everything else is ignored.
struct WarnCounter(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_panicking_observer_is_logged_once_and_the_batch_goes_on() {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    // A current-thread runtime: the engine's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(WarnCounter(warnings.clone()));
    let seen = Arc::new(AtomicUsize::new(0));
    let opts = {
        let seen = seen.clone();
        BatchOptions::default().concurrency(3).observer(move |e| {
            seen.fetch_add(1, Ordering::SeqCst);
            match e {
                BatchEvent::Started { device_id, .. } if *device_id == "d1" => {
                    panic!("observer bug on start")
                }
                BatchEvent::Finished { .. } => panic!("observer bug on finish"),
                _ => {}
            }
        })
    };
    let m = manager(
        (0..8)
            .map(|i| MockDevice::new(format!("d{i}")).on("probe", ok_after(2)))
            .collect(),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        m.execute_batch_with("probe", params(), None, &opts),
    )
    .await
    .expect("the batch finishes")
    .unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(r.summary().succeeded, 8, "{r:?}");
    assert!(r.iter().all(|(_, o)| o.is_success() && o.attempts == 1));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        16,
        "the observer still gets every start and finish after panicking"
    );
    let warnings = warnings.lock().unwrap();
    assert_eq!(
        warnings.as_slice(),
        [
            "the batch observer panicked (further observer panics in this batch are not logged); the batch goes on: observer bug on start"
        ],
    );
}

#[tokio::test]
async fn options_that_cannot_mean_anything_are_refused_before_anything_runs() {
    let log = CallLog::new();
    let m = manager(vec![
        MockDevice::new("d1")
            .with_log(&log)
            .on("probe", Script::succeed(json!("ok"))),
    ]);
    let cases = [
        (
            BatchOptions::default().timeout(Duration::ZERO),
            "a timeout must be more than zero",
        ),
        (
            BatchOptions::default().failure_policy(FailurePolicy::MaxFailures(0)),
            "MaxFailures needs at least 1 failure (FailFast stops at the first)",
        ),
        (
            BatchOptions::default().failure_policy(FailurePolicy::MaxFailurePercent(150.0)),
            "MaxFailurePercent must be more than 0 and at most 100, got 150",
        ),
        (
            BatchOptions::default().failure_policy(FailurePolicy::MaxFailurePercent(f64::NAN)),
            "MaxFailurePercent must be more than 0 and at most 100, got NaN",
        ),
    ];
    for (options, message) in cases {
        match m
            .execute_batch_with("probe", params(), None, &options)
            .await
        {
            Err(BatchError::InvalidOptions(m)) => assert_eq!(m, message),
            other => panic!("{message}: got {other:?}"),
        }
    }
    assert_eq!(log.count("d1", "op:probe"), 0, "nothing ran");
}
