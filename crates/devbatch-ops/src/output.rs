//! How command output becomes JSON: text fields, plus the exact bytes in base64 when they are
//! not valid UTF-8.

use base64::Engine;
use devbatch_core::CommandOutput;
use serde_json::{Map, Value, json};

/// Puts `bytes` into `map` as `name` (text, lossy where not UTF-8) and, when the bytes are not
/// valid UTF-8, also as `name_base64` with the exact bytes.
pub fn bytes_field(map: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            map.insert(name.to_string(), Value::String(text.to_string()));
        }
        Err(_) => {
            map.insert(
                name.to_string(),
                Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
            map.insert(
                format!("{name}_base64"),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }
}

/// `{exit_code, stdout, stderr}` (+ `stdout_base64`/`stderr_base64` for non-UTF-8 output).
pub fn command_output_json(out: &CommandOutput) -> Value {
    let mut map = Map::new();
    map.insert("exit_code".into(), json!(out.exit_code));
    bytes_field(&mut map, "stdout", &out.stdout);
    bytes_field(&mut map, "stderr", &out.stderr);
    Value::Object(map)
}

/// The first non-empty line of `bytes`, shortened, for error messages.
pub(crate) fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(if line.chars().count() > 200 {
        format!("{}...", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_keeps_the_exact_bytes() {
        let out = CommandOutput {
            exit_code: 0,
            stdout: b"\xff\xfeok".to_vec(),
            stderr: b"fine".to_vec(),
        };
        let v = command_output_json(&out);
        assert_eq!(v["stdout"], "\u{fffd}\u{fffd}ok");
        assert_eq!(v["stdout_base64"], "//5vaw==");
        assert_eq!(v["stderr"], "fine");
        assert!(v.get("stderr_base64").is_none());
    }
}
