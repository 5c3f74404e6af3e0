//! Rendering results: the human summary, JSON lines and JUnit XML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use devbatch_core::{BatchResult, BatchSummary, DeviceOutcome};

use crate::output::printable;
use serde_json::{Value, json};

/// Most ids printed for one group before "and N more".
const IDS_SHOWN: usize = 12;

/// How a result reads in one line of the human summary: a shell-like result shows its
/// trimmed stdout, a string itself, anything else compact JSON; long texts are cut.
fn result_line(result: &Value) -> String {
    let text = match result {
        Value::String(s) => s.trim().to_string(),
        Value::Object(m)
            if m.get("exit_code").is_some_and(|c| c == 0)
                && m.get("stderr")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.trim().is_empty())
                && m.get("stdout").is_some_and(Value::is_string) =>
        {
            m["stdout"].as_str().unwrap_or_default().trim().to_string()
        }
        Value::Null => "(no result)".to_string(),
        other => other.to_string(),
    };
    let text = printable(&text.replace('\n', " \u{23ce} ")).into_owned();
    if text.is_empty() {
        "(empty output)".to_string()
    } else if text.chars().count() > 160 {
        format!("{}...", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

fn id_list(ids: &[&str]) -> String {
    let mut s = ids
        .iter()
        .take(IDS_SHOWN)
        .map(|id| printable(id))
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > IDS_SHOWN {
        let _ = write!(s, " and {} more", ids.len() - IDS_SHOWN);
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "device" } else { "devices" }
}

/// The summary for people: failures first with their error text (identical errors grouped),
/// then successes grouped by identical result, largest group first, then the counts.
pub(crate) fn human(result: &BatchResult, operation: &str) -> String {
    let mut failures: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    let mut successes: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, o) in result.iter() {
        if o.is_success() {
            successes
                .entry(result_line(&o.result))
                .or_default()
                .push(id);
        } else {
            let kind = o.error_kind.map_or("error", |k| k.as_str()).to_string();
            failures
                .entry((kind, o.error.clone().unwrap_or_default()))
                .or_default()
                .push(id);
        }
    }
    let mut out = String::new();
    let failed: usize = failures.values().map(Vec::len).sum();
    if failed > 0 {
        let _ = writeln!(out, "FAILED: {operation} on {failed} {}", plural(failed));
        let mut groups: Vec<_> = failures.into_iter().collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        for ((kind, error), ids) in groups {
            let error = printable(&error);
            if ids.len() == 1 {
                let _ = writeln!(out, "  {} [{kind}] {error}", printable(ids[0]));
            } else {
                let _ = writeln!(
                    out,
                    "  {} {}: [{kind}] {error}",
                    ids.len(),
                    plural(ids.len())
                );
                let _ = writeln!(out, "    {}", id_list(&ids));
            }
        }
    }
    let ok: usize = successes.values().map(Vec::len).sum();
    if ok > 0 {
        let _ = writeln!(out, "SUCCEEDED: {operation} on {ok} {}", plural(ok));
        let mut groups: Vec<_> = successes.into_iter().collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        for (line, ids) in groups {
            let _ = writeln!(out, "  {} {}: {line}", ids.len(), plural(ids.len()));
            let _ = writeln!(out, "    {}", id_list(&ids));
        }
    }
    let _ = writeln!(out, "{}", result.summary());
    out
}

/// One JSON line for a finished device: `{"device": ID, "status": ..., ...}`.
pub(crate) fn jsonl_line(id: &str, outcome: &DeviceOutcome) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        device: &'a str,
        #[serde(flatten)]
        outcome: &'a DeviceOutcome,
    }
    serde_json::to_string(&Line {
        device: id,
        outcome,
    })
    .expect("outcomes always serialize")
}

/// The closing line of a JSON-lines stream.
pub(crate) fn jsonl_summary(summary: &BatchSummary, interrupted: bool) -> String {
    json!({"summary": summary, "interrupted": interrupted}).to_string()
}

/// Text for XML 1.0 content and attribute values. Characters XML cannot carry at all (most
/// control characters, U+FFFE, U+FFFF) become U+FFFD; line breaks and tabs are written as
/// character references, so that attribute values keep them too.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite for the batch, one testcase per device.
pub(crate) fn junit(result: &BatchResult, operation: &str) -> String {
    let s = result.summary();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"devbatch\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        s.total,
        s.failed,
        s.elapsed_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.3}\">",
        xml_escape(operation),
        s.total,
        s.failed,
        s.elapsed_ms as f64 / 1000.0
    );
    for (id, o) in result.iter() {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(operation),
            xml_escape(id),
            o.elapsed_ms as f64 / 1000.0
        );
        if o.is_success() {
            out.push_str("/>\n");
        } else {
            let kind = o.error_kind.map_or("error", |k| k.as_str());
            let _ = writeln!(
                out,
                ">\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>",
                xml_escape(o.error.as_deref().unwrap_or_default()),
                if o.result.is_null() {
                    String::new()
                } else {
                    xml_escape(&serde_json::to_string_pretty(&o.result).unwrap_or_default())
                }
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_results_read_as_their_output() {
        assert_eq!(
            result_line(&json!({"exit_code": 0, "stdout": "Android 14\n", "stderr": ""})),
            "Android 14"
        );
        assert_eq!(result_line(&json!("ok")), "ok");
        assert_eq!(result_line(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(
            result_line(&json!({"exit_code": 0, "stdout": "a\nb\n", "stderr": ""})),
            "a \u{23ce} b"
        );
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(
            xml_escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{fffd}"
        );
        assert_eq!(
            xml_escape("line 1\nline 2\t\u{fffe}\u{ffff}\u{1b}é"),
            "line 1&#10;line 2&#9;\u{fffd}\u{fffd}\u{fffd}é"
        );
    }
}
