//! One plugin step: an ephemeral container that gets the step's input on stdin and answers on
//! stdout (the contract of `nullops-plugin`).
//!
//! The container is attached before it starts, so no output is lost, and its stdin is closed
//! after the input, so the plugin sees end of file. It runs with the step's CPU and memory limits,
//! a pids limit, no new privileges and no capabilities; it is killed at its timeout; what it
//! prints is capped. Whatever happens, the container is removed.

use crate::words::{engine_refused, io_lost, EngineError};
use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions};
use futures::StreamExt;
use nullops_plugin::PluginResult;
use tokio::io::AsyncWriteExt;

use crate::docker::{Engine, LABEL_PLUGIN_RUN, LABEL_SCOPE};

/// Most bytes of stdout kept: the result document. More fails the step.
pub const MAX_STDOUT_BYTES: usize = 1 << 20;
/// Most bytes of stderr kept as the step's log; the rest is dropped and said so.
pub const MAX_LOG_BYTES: usize = 256 << 10;
const PIDS_LIMIT: i64 = 256;

/// What to run.
pub struct PluginRun<'a> {
    pub image: &'a str,
    /// The image's own entrypoint and command when empty.
    pub command: Vec<String>,
    /// The JSON document written to stdin.
    pub input: &'a [u8],
    pub timeout: Duration,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// The deployment's network; none at all when absent.
    pub network: Option<&'a str>,
    pub labels: HashMap<String, String>,
    /// Credentials for pulling the image, in memory only.
    pub registry_auth: Vec<nullops_wire::message::RegistryAuth>,
}

/// Why a plugin run left no result to use, as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoResult {
    #[error("the plugin did not finish within {secs} s")]
    TimedOut { secs: u64 },
    #[error("the plugin printed over {MAX_STDOUT_BYTES} bytes")]
    TooLong,
    #[error("the plugin's output is not a result (one JSON object with \"success\"): {shown:?}")]
    NotAResult { shown: String },
}

/// How it went.
#[derive(Debug)]
pub struct PluginOutcome {
    /// The result the plugin printed, or why there is none usable.
    pub result: Result<PluginResult, NoResult>,
    pub exit_code: Option<i64>,
    /// stderr, capped at [`MAX_LOG_BYTES`].
    pub log: String,
    pub timed_out: bool,
    pub oom_killed: bool,
}

impl PluginOutcome {
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0) && self.result.as_ref().is_ok_and(|r| r.success)
    }
}

/// The repository of `image`, without its registry's tag or digest: a plugin's name as the
/// metrics label it (bounded by the catalog's plugins).
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

impl Engine {
    /// Runs a plugin to its end (or its timeout), counted in the node's metrics.
    pub async fn run_plugin(&self, run: &PluginRun<'_>) -> Result<PluginOutcome, EngineError> {
        let started = std::time::Instant::now();
        let outcome = self.run_plugin_once(run).await;
        if let Some(metrics) = nullops_metrics::recording() {
            let plugin = repository(run.image).to_owned();
            let result = match &outcome {
                Ok(o) if o.timed_out => nullops_metrics::PluginOutcome::timed_out,
                Ok(o) if o.succeeded() => nullops_metrics::PluginOutcome::succeeded,
                _ => nullops_metrics::PluginOutcome::failed,
            };
            metrics.plugin_runs.get_or_create(&nullops_metrics::PluginLabels { plugin: plugin.clone(), outcome: result }).inc();
            metrics.plugin_seconds.get_or_create(&nullops_metrics::NameLabel { name: plugin }).observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    async fn run_plugin_once(&self, run: &PluginRun<'_>) -> Result<PluginOutcome, EngineError> {
        // Marked before the container exists, so a sweep in between cannot take it.
        let run_id = uuid::Uuid::now_v7().to_string();
        let _in_progress = self.plugin_run(&run_id);
        let mut labels = run.labels.clone();
        labels.insert(LABEL_SCOPE.to_owned(), self.scope().to_owned());
        labels.insert(LABEL_PLUGIN_RUN.to_owned(), run_id);
        let body = ContainerCreateBody {
            image: Some(run.image.to_owned()),
            cmd: (!run.command.is_empty()).then(|| run.command.clone()),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory: Some(i64::from(run.memory_mib) << 20),
                nano_cpus: Some(i64::from(run.cpu_millis) * 1_000_000),
                pids_limit: Some(PIDS_LIMIT),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                network_mode: Some(run.network.unwrap_or("none").to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self.create_pulling(run.image, CreateContainerOptions::default(), body, &run.registry_auth).await?;
        let outcome = self.attach_and_run(&id, run).await;
        let remove = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        if let Err(e) = self.client().remove_container(&id, Some(remove)).await {
            tracing::warn!(container = %id, error = %e, "cannot remove a plugin container; the sweep will");
        }
        outcome
    }

    async fn attach_and_run(&self, id: &str, run: &PluginRun<'_>) -> Result<PluginOutcome, EngineError> {
        let client = self.client();
        let attach = AttachContainerOptions { stream: true, stdin: true, stdout: true, stderr: true, ..Default::default() };
        let mut attached = client.attach_container(id, Some(attach)).await.map_err(|e| engine_refused("cannot attach to the plugin", &e))?;
        client.start_container(id, None).await.map_err(|e| engine_refused("cannot start the plugin", &e))?;
        let mut stdout = Vec::new();
        let mut log = Vec::new();
        let (mut stdout_over, mut log_over) = (false, false);
        let collect = async {
            attached.input.write_all(run.input).await.map_err(|e| io_lost("cannot write the plugin's input", &e))?;
            attached.input.shutdown().await.map_err(|e| io_lost("cannot close the plugin's input", &e))?;
            while let Some(frame) = attached.output.next().await {
                match frame {
                    Ok(bollard::container::LogOutput::StdOut { message }) => keep(&mut stdout, &message, MAX_STDOUT_BYTES, &mut stdout_over),
                    Ok(bollard::container::LogOutput::StdErr { message }) => keep(&mut log, &message, MAX_LOG_BYTES, &mut log_over),
                    Ok(_) => {}
                    Err(e) => return Err(engine_refused("lost the plugin's output", &e)),
                }
            }
            Ok(())
        };
        let timed_out = match tokio::time::timeout(run.timeout, collect).await {
            Ok(collected) => {
                collected?;
                false
            }
            Err(_) => {
                let _ = client.kill_container(id, None::<KillContainerOptions>).await;
                true
            }
        };
        let state = client.inspect_container(id, None).await.ok().and_then(|i| i.state);
        let exit_code = state.as_ref().and_then(|s| s.exit_code);
        let oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
        let mut log = String::from_utf8_lossy(&log).into_owned();
        if log_over {
            log.push_str(&format!("\n[log cut at {MAX_LOG_BYTES} bytes]"));
        }
        let result = if timed_out {
            Err(NoResult::TimedOut { secs: run.timeout.as_secs() })
        } else if stdout_over {
            Err(NoResult::TooLong)
        } else {
            serde_json::from_slice::<PluginResult>(&stdout).map_err(|e| {
                // The parser's words go to the log; a person reads ours and what was printed.
                tracing::info!(image = run.image, error = %e, "a plugin's output is not a result");
                NoResult::NotAResult { shown: String::from_utf8_lossy(&stdout).chars().take(200).collect() }
            })
        };
        Ok(PluginOutcome { result, exit_code, log, timed_out, oom_killed })
    }
}

/// Appends `bytes` to `buffer` up to `limit`; sets `over` when some were dropped.
fn keep(buffer: &mut Vec<u8>, bytes: &[u8], limit: usize, over: &mut bool) {
    let room = limit.saturating_sub(buffer.len());
    buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    *over |= bytes.len() > room;
}

#[cfg(test)]
mod repository_tests {
    #[test]
    fn a_plugins_label_is_its_repository() {
        assert_eq!(super::repository("127.0.0.1:5050/nullops/http-check@sha256:abc"), "127.0.0.1:5050/nullops/http-check");
        assert_eq!(super::repository("127.0.0.1:5050/nullops/http-check:1.2"), "127.0.0.1:5050/nullops/http-check");
        assert_eq!(super::repository("127.0.0.1:5050/nullops/http-check"), "127.0.0.1:5050/nullops/http-check");
    }
}
