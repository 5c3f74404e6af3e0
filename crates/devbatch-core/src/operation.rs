//! The [`Operation`] trait: a named piece of work with declared parameters that runs on one
//! device, and the [`Params`] and [`OperationContext`] it receives.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::device::{Capability, Device};
use crate::error::{OperationError, OperationFailure};

/// The JSON type a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list of strings.
    StringList,
    /// A list of whole numbers.
    IntegerList,
    /// A JSON object.
    Object,
    /// Any JSON value.
    Any,
}

impl ParamType {
    /// How the type reads in an error message or in `devbatch ops`.
    pub fn describe(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean (true or false)",
            ParamType::StringList => "a list of strings",
            ParamType::IntegerList => "a list of integers",
            ParamType::Object => "a JSON object",
            ParamType::Any => "any JSON value",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Number => v.is_number(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::StringList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            ParamType::IntegerList => v
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x.is_i64() || x.is_u64())),
            ParamType::Object => v.is_object(),
            ParamType::Any => true,
        }
    }
}

/// Names the JSON type of a value, for error messages.
pub(crate) fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => shown("string", "a string", format!("{s:?}")),
        Value::Array(_) => shown("list", "a list", v.to_string()),
        Value::Object(_) => shown("object", "an object", v.to_string()),
    }
}

/// `kind text` when the text is short enough to read in a message, else just `a kind`.
fn shown(kind: &str, unseen: &str, text: String) -> String {
    if text.chars().count() > 42 {
        unseen.into()
    } else {
        format!("{kind} {text}")
    }
}

/// One declared parameter of an operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    /// The name, as given in `params`.
    pub name: &'static str,
    /// The JSON type it takes.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Whether it must be given.
    pub required: bool,
    /// The value used when it is not given.
    pub default: Option<Value>,
    /// One line of help.
    pub help: &'static str,
}

impl ParamSpec {
    /// A parameter that must be given.
    pub fn required(name: &'static str, ty: ParamType, help: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            required: true,
            default: None,
            help,
        }
    }

    /// A parameter that may be left out; it is then absent from [`Params`].
    pub fn optional(name: &'static str, ty: ParamType, help: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            required: false,
            default: None,
            help,
        }
    }

    /// An optional parameter with a default value.
    pub fn with_default(
        name: &'static str,
        ty: ParamType,
        default: Value,
        help: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            ty,
            required: false,
            default: Some(default),
            help,
        }
    }
}

/// Checks `params` against an operation's declared parameters and fills in defaults.
///
/// `params` must be a JSON object (`null` counts as empty). Unknown names, missing required
/// parameters and wrong types each give an [`OperationError`] naming the parameter.
pub fn validate_params(
    operation: &str,
    specs: &[ParamSpec],
    params: &Value,
) -> Result<Params, OperationError> {
    let empty = Map::new();
    let given = match params {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(OperationError::ParamsNotObject {
                got: json_type(other),
            });
        }
    };
    if let Some(unknown) = given
        .keys()
        .find(|k| !specs.iter().any(|s| s.name == k.as_str()))
    {
        return Err(OperationError::UnknownParam {
            operation: operation.to_string(),
            param: unknown.clone(),
            known: specs.iter().map(|s| s.name.to_string()).collect(),
        });
    }
    let mut out = Map::new();
    for spec in specs {
        match given.get(spec.name) {
            Some(v) if spec.ty.accepts(v) => {
                out.insert(spec.name.to_string(), v.clone());
            }
            Some(v) => {
                return Err(OperationError::InvalidParam {
                    operation: operation.to_string(),
                    param: spec.name.to_string(),
                    expected: spec.ty.describe().to_string(),
                    got: json_type(v),
                });
            }
            None if spec.required => {
                return Err(OperationError::MissingParam {
                    operation: operation.to_string(),
                    param: spec.name.to_string(),
                    expected: format!("{}: {}", spec.ty.describe(), spec.help),
                });
            }
            None => {
                if let Some(d) = &spec.default {
                    out.insert(spec.name.to_string(), d.clone());
                }
            }
        }
    }
    Ok(Params(out))
}

/// Parameters after validation: every required one is present with the declared type, and
/// defaults are filled in. The getters therefore only return `None` for optional parameters
/// that were left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// The raw value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A string parameter.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A boolean parameter; `false` when absent.
    pub fn flag(&self, name: &str) -> bool {
        self.0.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    /// A list-of-strings parameter.
    pub fn strings(&self, name: &str) -> Option<Vec<&str>> {
        self.0
            .get(name)?
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
    }

    /// A list-of-integers parameter.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.0
            .get(name)?
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
    }

    /// All parameters as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// What the engine tells an operation about the attempt it runs in.
#[derive(Debug, Clone)]
pub struct OperationContext {
    pub(crate) cancel: CancellationToken,
    pub(crate) max_output: usize,
    pub(crate) attempt: u32,
    pub(crate) timeout: Duration,
}

impl OperationContext {
    /// A context for calling an operation directly, outside a batch (tests, tools).
    pub fn new(timeout: Duration, max_output: usize) -> Self {
        OperationContext {
            cancel: CancellationToken::new(),
            max_output,
            attempt: 1,
            timeout,
        }
    }

    /// Fires when the batch is cancelled. Operations rarely need it: the engine drops an
    /// operation's future on cancellation. It is for work that must notice and clean up.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The per-device output cap to put on [`Command`](crate::Command)s.
    pub fn max_output(&self) -> usize {
        self.max_output
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The time allowed for this attempt (operations that wait, such as a reboot, use it to
    /// bound their wait).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A named piece of work that runs on one device.
///
/// Operations are registered by name (see [`crate::registry`]). An operation may serve every
/// backend (`backend()` is `None`), using only [`Device`] primitives, or one backend only, in
/// which case the engine prefers it over a generic operation of the same name for that
/// backend's devices (how `install_app` on ADB devices is provided).
#[async_trait]
pub trait Operation: Send + Sync + 'static {
    /// The name users call it by.
    fn name(&self) -> &str;

    /// One line saying what it does.
    fn description(&self) -> &str;

    /// The backend this implementation is for; `None` for every backend.
    fn backend(&self) -> Option<&str> {
        None
    }

    /// The parameters it takes.
    fn params(&self) -> Vec<ParamSpec>;

    /// Whether running it twice has the same effect as once. Only idempotent operations are
    /// retried after they may have started.
    fn idempotent(&self) -> bool;

    /// How long one attempt may take unless the caller says otherwise.
    fn default_timeout(&self) -> Duration;

    /// The device capabilities it needs.
    fn required_capabilities(&self) -> &[Capability] {
        &[]
    }

    /// Checks what the declared types cannot express (one of two parameters, a local file
    /// that must exist). Runs once per batch, before anything runs on any device.
    fn validate(&self, params: &Params) -> Result<(), OperationError> {
        let _ = params;
        Ok(())
    }

    /// Runs on one device. On failure, any partial result goes in
    /// [`OperationFailure::partial`].
    async fn execute(
        &self,
        device: &dyn Device,
        params: &Params,
        ctx: &OperationContext,
    ) -> Result<Value, OperationFailure>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("cmd", ParamType::String, "the command line"),
            ParamSpec::with_default("force", ParamType::Boolean, json!(false), "force it"),
            ParamSpec::optional("codes", ParamType::IntegerList, "ok codes"),
        ]
    }

    #[test]
    fn defaults_are_filled_in() {
        let p = validate_params("shell", &specs(), &json!({"cmd": "true"})).unwrap();
        assert_eq!(p.str("cmd"), Some("true"));
        assert_eq!(p.get("force"), Some(&json!(false)));
        assert_eq!(p.get("codes"), None);
    }

    #[test]
    fn each_bad_input_is_named() {
        let e = validate_params("shell", &specs(), &json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "operation 'shell' needs parameter 'cmd' (a string: the command line)"
        );
        let e = validate_params("shell", &specs(), &json!({"cmd": 5})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter 'cmd' of operation 'shell' must be a string, got number 5"
        );
        let e = validate_params("shell", &specs(), &json!({"cmd": "x", "cmdd": 1})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "operation 'shell' has no parameter 'cmdd'; its parameters are: cmd, force, codes"
        );
        let e = validate_params("shell", &specs(), &json!({"cmd": "x", "codes": [1, "2"]}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"parameter 'codes' of operation 'shell' must be a list of integers, got list [1,"2"]"#
        );
        let e = validate_params("shell", &specs(), &json!([1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "params must be a JSON object of parameter names to values, got list [1]"
        );
        let long = json!({"cmd": "x", "codes": vec![1.5; 40]});
        let e = validate_params("shell", &specs(), &long).unwrap_err();
        assert!(e.to_string().ends_with("got a list"), "{e}");
    }
}
