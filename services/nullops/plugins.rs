//! Example plugins built on `nullops-plugin`, shipped as `nullops plugin NAME` and packaged as
//! `FROM scratch` images by `infra/demo-images.sh`.
//!
//! `http-check` waits until a URL (inside the deployment's network) answers with the expected
//! status. `render-config` fills `{{name}}` placeholders of a template from given values.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nullops_plugin::{run, PluginError, PluginInput, PluginResult};
use serde_json::Value;

pub fn http_check() -> ExitCode {
    run(|input| {
        let url = input.parameter_str("url")?;
        if !url.starts_with("http://") {
            return Err(PluginError::Parameter { name: "url".into(), message: "must be an http:// URL".into() });
        }
        let timeout = Duration::from_secs(input.parameter_u64("timeout_secs", 60)?);
        let interval = Duration::from_millis(input.parameter_u64("interval_ms", 500)?.max(50));
        let expected = input.parameter_u64("expect_status", 200)?;
        // The plugin runs on the binary's async runtime; the SDK's callback is synchronous.
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(poll(url, timeout, interval, expected)))
    })
}

async fn poll(url: &str, timeout: Duration, interval: Duration, expected: u64) -> Result<PluginResult, PluginError> {
    let client = reqwest::Client::builder()
        .timeout(interval.max(Duration::from_secs(2)))
        .build()
        .map_err(|e| PluginError::Failed(format!("cannot make an HTTP client: {e}")))?;
    let started = Instant::now();
    let mut attempts = 0u64;
    let mut last = String::from("no attempt");
    while started.elapsed() < timeout {
        attempts += 1;
        match client.get(url).send().await {
            Ok(r) if u64::from(r.status().as_u16()) == expected => {
                return Ok(PluginResult::ok(format!("{url} answered {expected} after {attempts} attempts"))
                    .with_output("status", expected)
                    .with_output("attempts", attempts)
                    .with_output("elapsedMs", started.elapsed().as_millis() as u64));
            }
            Ok(r) => last = format!("answered {}", r.status().as_u16()),
            Err(e) => last = format!("did not answer ({e})"),
        }
        eprintln!("attempt {attempts}: {url} {last}");
        tokio::time::sleep(interval).await;
    }
    Ok(PluginResult::failed(format!("{url} did not answer {expected} within {} s: last it {last}", timeout.as_secs())).with_output("attempts", attempts))
}

pub fn render_config() -> ExitCode {
    run(|input| {
        let template = input.parameter_str("template")?;
        let values = match input.parameter("values") {
            Some(Value::Object(map)) => map.clone(),
            None => Default::default(),
            Some(_) => return Err(PluginError::Parameter { name: "values".into(), message: "must be an object".into() }),
        };
        let rendered = render(template, &values, input)?;
        Ok(PluginResult::ok(format!("rendered {} bytes", rendered.len())).with_output("config", rendered))
    })
}

/// Replaces `{{name}}` with `values.name`, or `{{secrets.NAME}}` with that secret; an unknown
/// name is an error naming it, never an empty string.
fn render(template: &str, values: &serde_json::Map<String, Value>, input: &PluginInput) -> Result<String, PluginError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| PluginError::Failed("a {{ is not closed by }}".into()))?;
        let name = after[..end].trim();
        let secrets: &BTreeMap<String, String> = &input.secrets;
        let value = match name.strip_prefix("secrets.") {
            Some(secret) => secrets.get(secret).cloned(),
            None => values.get(name).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        out.push_str(&value.ok_or_else(|| PluginError::Failed(format!("the template uses {name}, which has no value")))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> PluginInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn renders_values_and_secrets_and_names_what_is_missing() {
        let i = input(r#"{"secrets":{"PASSWORD":"pw"}}"#);
        let values = serde_json::from_str(r#"{"host":"db","port":5432}"#).unwrap();
        assert_eq!(render("postgres://app:{{secrets.PASSWORD}}@{{ host }}:{{port}}/qa", &values, &i).unwrap(), "postgres://app:pw@db:5432/qa");
        assert!(render("{{nope}}", &values, &i).unwrap_err().to_string().contains("nope"));
        assert!(render("{{host", &values, &i).is_err());
    }
}
