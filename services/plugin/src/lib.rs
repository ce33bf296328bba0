//! The plugin contract and a small SDK for plugins written in Rust.
//!
//! A plugin is a container image. The agent runs it with the step's input as one JSON document
//! on stdin ([`PluginInput`]) and reads one JSON document from stdout ([`PluginResult`]); exit
//! code 0 means success, stderr is kept as the step's log. A plugin in any language only has to
//! honour that; in Rust, [`run`] does the reading, writing and exit code:
//!
//! ```no_run
//! use nullops_plugin::{run, PluginInput, PluginResult};
//! fn main() -> std::process::ExitCode {
//!     run(|input: &PluginInput| {
//!         let name = input.parameter_str("database")?;
//!         Ok(PluginResult::ok(format!("created {name}")).with_output("databaseName", name))
//!     })
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest input a plugin reads: far more than any step's parameters and secrets.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// What a plugin receives on stdin.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInput {
    /// What to do, e.g. `create`; plugins that do one thing may ignore it.
    #[serde(default)]
    pub action: String,
    /// The step's parameters, after `${{ … }}` substitution.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// The project's secrets the step refers to, in clear: never print them.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Where it runs: deployment, project, environment, network, ...
    #[serde(default)]
    pub context: Map<String, Value>,
}

impl fmt::Debug for PluginInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginInput")
            .field("action", &self.action)
            .field("parameters", &self.parameters)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("context", &self.context)
            .finish()
    }
}

impl PluginInput {
    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.parameters.get(name)
    }

    /// A required string parameter.
    pub fn parameter_str(&self, name: &str) -> Result<&str, PluginError> {
        match self.parameters.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(PluginError::Parameter { name: name.to_owned(), message: "must be a string".into() }),
            None => Err(PluginError::Parameter { name: name.to_owned(), message: "is required".into() }),
        }
    }

    /// An optional non-negative integer parameter, `default` when absent.
    pub fn parameter_u64(&self, name: &str, default: u64) -> Result<u64, PluginError> {
        match self.parameters.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| PluginError::Parameter { name: name.to_owned(), message: "must be a non-negative integer".into() }),
        }
    }
}

/// What a plugin writes to stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResult {
    pub success: bool,
    /// A line for people: what happened.
    #[serde(default)]
    pub output: String,
    /// Values later steps can use as `${{ steps.<id>.outputs.<name> }}`.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
}

impl PluginResult {
    pub fn ok(output: impl Into<String>) -> Self {
        PluginResult { success: true, output: output.into(), outputs: BTreeMap::new() }
    }

    pub fn failed(output: impl Into<String>) -> Self {
        PluginResult { success: false, output: output.into(), outputs: BTreeMap::new() }
    }

    pub fn with_output(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.outputs.insert(name.to_owned(), value.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("parameter {name} {message}")]
    Parameter { name: String, message: String },
    #[error("{0}")]
    Failed(String),
}

/// Reads the input from stdin, runs `plugin`, writes its result to stdout and returns the exit
/// code: 0 on success, 1 on failure, 2 when the input is not a plugin input.
pub fn run(plugin: impl FnOnce(&PluginInput) -> Result<PluginResult, PluginError>) -> ExitCode {
    run_with(&mut std::io::stdin().lock(), &mut std::io::stdout().lock(), plugin)
}

/// [`run`] over any reader and writer (for tests).
pub fn run_with(input: &mut impl Read, output: &mut impl Write, plugin: impl FnOnce(&PluginInput) -> Result<PluginResult, PluginError>) -> ExitCode {
    let mut raw = Vec::new();
    let (result, code) = match input.take(MAX_INPUT_BYTES + 1).read_to_end(&mut raw) {
        Err(e) => (PluginResult::failed(format!("cannot read the input: {e}")), 2),
        Ok(_) if raw.len() as u64 > MAX_INPUT_BYTES => (PluginResult::failed(format!("the input is over {MAX_INPUT_BYTES} bytes")), 2),
        Ok(_) => match serde_json::from_slice::<PluginInput>(&raw) {
            Err(e) => (PluginResult::failed(format!("the input is not a plugin input: {e}")), 2),
            Ok(parsed) => match plugin(&parsed) {
                Ok(result) => {
                    let code = if result.success { 0 } else { 1 };
                    (result, code)
                }
                Err(e) => (PluginResult::failed(e.to_string()), 1),
            },
        },
    };
    let json = serde_json::to_string(&result).expect("a plugin result serializes");
    if writeln!(output, "{json}").and_then(|()| output.flush()).is_err() {
        return ExitCode::from(3);
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(stdin: &str, plugin: impl FnOnce(&PluginInput) -> Result<PluginResult, PluginError>) -> (PluginResult, ExitCode) {
        let mut out = Vec::new();
        let code = run_with(&mut stdin.as_bytes(), &mut out, plugin);
        (serde_json::from_slice(&out).expect("one JSON result"), code)
    }

    #[test]
    fn success_failure_and_bad_input_map_to_exit_codes() {
        let input = r#"{"action":"create","parameters":{"database":"shop_qa"},"secrets":{"PASSWORD":"hunter2"}}"#;
        let (result, code) = call(input, |i| Ok(PluginResult::ok("made").with_output("db", i.parameter_str("database")?)));
        assert_eq!((result.success, result.outputs["db"].as_str(), code), (true, Some("shop_qa"), ExitCode::from(0)));
        let (result, code) = call(input, |i| i.parameter_str("missing").map(PluginResult::ok));
        assert_eq!((result.success, result.output.as_str(), code), (false, "parameter missing is required", ExitCode::from(1)));
        let (result, code) = call("not json", |_| Ok(PluginResult::ok("")));
        assert!(!result.success && result.output.starts_with("the input is not a plugin input"));
        assert_eq!(code, ExitCode::from(2));
        let huge = format!("{{\"action\":\"{}\"}}", "x".repeat(MAX_INPUT_BYTES as usize));
        assert_eq!(call(&huge, |_| Ok(PluginResult::ok(""))).1, ExitCode::from(2));
    }

    #[test]
    fn secrets_do_not_print() {
        let input: PluginInput = serde_json::from_str(r#"{"secrets":{"PASSWORD":"hunter2"}}"#).unwrap();
        assert!(!format!("{input:?}").contains("hunter2"));
    }
}
