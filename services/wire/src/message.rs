//! The messages, one JSON object per WebSocket text frame, tagged by `type`.
//!
//! Decoding checks the frame size before parsing. Every field the agent turns into a Docker
//! object is validated deployment by deployment ([`check_deployment`]): the connector checks each
//! before sending it and the agent again before running it, and a deployment that fails is
//! refused on its own, never the whole desired state of its node.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{FrameError, MAX_DEPLOYMENT_BYTES, MAX_FRAME_BYTES};

/// Identifies a request so that a request delivered twice takes effect once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub Uuid);

impl RequestId {
    pub fn new() -> Self {
        RequestId(Uuid::now_v7())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// From the control plane to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Everything the node should run, sent on every connect and on every change, in parts of
    /// one frame each (see [`desired_state_parts`]): all but the last say `more`. Once the last
    /// part is in, the agent makes its containers match the whole and answers
    /// [`FromAgent::ActualState`] with the same request id.
    DesiredState {
        request_id: RequestId,
        deployments: Vec<DesiredDeployment>,
        /// More parts of this request follow.
        #[serde(default)]
        more: bool,
    },
    /// The images the node should hold before any deployment needs them (the plugins and pinned
    /// services of the latest pipelines of its environment's projects), sent on every connect
    /// and whenever that list changes; the whole list each time. The agent pulls what it lacks,
    /// a few at a time and within its disk budget, and answers [`FromAgent::Images`].
    Prefetch {
        images: Vec<String>,
        /// Credentials for the registries of `images`: used to pull, held in memory only.
        #[serde(default)]
        registry_auth: Vec<RegistryAuth>,
    },
}

/// From an agent to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// The first frame of every connection; `protocol` lets the control plane refuse a mismatch
    /// too (the agent already refused one at the upgrade).
    Hello { agent_version: String, protocol: u32, node: NodeFacts },
    /// What the agent runs after applying request `request_id`.
    ActualState { request_id: RequestId, deployments: Vec<ActualDeployment> },
    /// Resource use, every few seconds.
    Usage(Usage),
    /// Lines of deployments' logs: their pipelines' progress and plugins' output while they
    /// run, their services' output after; secrets redacted.
    Logs { lines: Vec<LogLine> },
    /// What the node holds of the images it was asked to prefetch, after every change.
    Images { images: Vec<HeldImage> },
}

/// One image a node was asked to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldImage {
    /// As asked: `host/repository:tag` or `host/repository@sha256:…`.
    pub image: String,
    /// The engine's digest of it (`sha256:…` of the registry's manifest), when held and known.
    #[serde(default)]
    pub digest: Option<String>,
    pub present: bool,
    /// Why it is not held (a failed pull, the disk budget), or what is going on ("pulling").
    #[serde(default)]
    pub detail: String,
}

/// Most images one prefetch may name, and bytes of one image reference.
pub const MAX_PREFETCH_IMAGES: usize = 256;
pub const MAX_IMAGE_REFERENCE: usize = 512;

/// Whether `image` can be an image reference: not empty, not too long, no blanks or controls.
pub fn is_image_reference(image: &str) -> bool {
    !image.is_empty() && image.len() <= MAX_IMAGE_REFERENCE && !image.chars().any(|ch| ch.is_whitespace() || ch.is_control())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub deployment: String,
    /// [`PIPELINE_LOG`], or the service whose output it is.
    pub source: String,
    /// Microseconds since the epoch.
    pub at: i64,
    pub text: String,
}

/// The source of a deployment's pipeline log lines.
pub const PIPELINE_LOG: &str = "pipeline";
/// Most lines in one [`FromAgent::Logs`], and bytes in one line.
pub const MAX_LOG_LINES: usize = 500;
pub const MAX_LOG_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub hostname: String,
    pub docker_version: String,
}

/// One deployment as a node should run it: a run of its pipeline, then its services kept running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredDeployment {
    /// A DNS label, unique on the node; also part of the container names.
    pub id: String,
    /// Which run of the deployment this is: a retry is a new attempt, run from the start.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The pipeline's nodes; a step starts when every step it `needs` has succeeded.
    pub steps: Vec<Step>,
    /// The project's secrets, for `${{ secrets.NAME }}` in parameters and environments: held in
    /// memory only, never written to the agent's disk or logs.
    #[serde(default)]
    pub secrets: Secrets,
    /// Credentials for the registries its images come from: used to pull, held in memory only,
    /// never written to the agent's disk.
    #[serde(default)]
    pub registry_auth: Vec<RegistryAuth>,
    /// What plugins are told about the deployment (`context` of their input): project,
    /// environment, name, node (which also labels its containers).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The W3C `traceparent` of the placement that asked for this run, when traced: the
    /// agent's spans of the run join its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

impl DesiredDeployment {
    /// Attempt 1 of `steps`, with no secrets, credentials or context.
    pub fn new(id: impl Into<String>, steps: Vec<Step>) -> Self {
        DesiredDeployment { id: id.into(), attempt: 1, steps, secrets: Secrets::default(), registry_auth: vec![], context: BTreeMap::new(), trace: None }
    }

    /// The control plane's id of the node it runs on (`context.node`), "" when not given.
    pub fn node(&self) -> &str {
        self.context.get("node").map_or("", String::as_str)
    }

    /// The service steps' containers.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerSpec> {
        self.steps.iter().filter_map(|s| match &s.action {
            StepAction::Service(service) => Some(&service.container),
            StepAction::Plugin(_) => None,
        })
    }
}

/// Secret values by name; `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The pipeline node's id.
    pub id: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub action: StepAction,
}

impl Step {
    /// A service step that needs nothing before it.
    pub fn service(container: ContainerSpec) -> Step {
        Step { id: container.name.clone(), needs: vec![], action: StepAction::Service(ServiceStep { container, health: None }) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepAction {
    /// Start a service and wait until it is healthy.
    Service(ServiceStep),
    /// Run a plugin container to its end.
    Plugin(PluginStep),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStep {
    /// Environment values may hold `${{ … }}` expressions, filled on the node.
    pub container: ContainerSpec,
    #[serde(default)]
    pub health: Option<HealthProbe>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub check: ProbeCheck,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    /// Failed probes in a row after which the service is unhealthy.
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeCheck {
    /// An HTTP GET of this path on the container's port answers 2xx or 3xx.
    Http { path: String },
    /// This command, run in the container, exits 0.
    Command { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStep {
    pub plugin: String,
    pub image: String,
    /// The plugin's `action` input.
    #[serde(default)]
    pub action: String,
    /// The parameters, whose strings may hold `${{ … }}` expressions, filled on the node.
    pub parameters: serde_json::Value,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub timeout_secs: u32,
    /// Whether it joins the deployment's network (else it has none).
    pub joins_network: bool,
}

/// Credentials for one registry, decrypted by the control plane for this run.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// `host[:port]` as image references name it, or `docker.io`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}, {}, ***)", self.registry, self.username)
    }
}

/// The registry an image reference pulls from: its first component when that names a host
/// (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// A DNS label, unique within the deployment.
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub command: Vec<String>,
    /// CPU limit Docker enforces, in thousandths of a core; 0 for none.
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory limit Docker enforces, in MiB; 0 for none. Beyond it the container is killed, and
    /// reported so rather than restarted.
    #[serde(default)]
    pub memory_mib: u32,
    /// A container port to publish on an ephemeral port of the node, for the ingress.
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualDeployment {
    pub id: String,
    pub attempt: u32,
    pub run: RunStatus,
    pub containers: Vec<ActualContainer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualContainer {
    pub name: String,
    pub state: ContainerState,
    /// The node port its container port is published on.
    #[serde(default)]
    pub host_port: Option<u16>,
}

/// Where a deployment's run stands, as a whole: the connector records what is new in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    pub phase: RunPhase,
    pub steps: Vec<StepStatus>,
    pub health: Vec<ServiceHealth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum RunPhase {
    #[default]
    Deploying,
    /// Every step succeeded; the services are kept running.
    Running,
    /// A step failed (or the agent lost the run); everything it created was removed.
    Failed { step: Option<String>, reason: String, exit_code: Option<i64>, oom_killed: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    pub id: String,
    pub state: StepRunState,
    /// The last output, exit code or error, secrets redacted.
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRunState {
    Pending,
    Running,
    Succeeded,
    Failed,
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub service: String,
    pub healthy: bool,
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ContainerState {
    Running,
    /// Could not be created or started; `reason` says why (e.g. the image is missing).
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_cores: u32,
    /// CPU in use across the node, in thousandths of a core, averaged over about a minute (what
    /// admission counts: sustained load, not a burst).
    pub cpu_used_millicores: u64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub deployment: String,
    pub name: String,
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
}

pub use nullops_events::catalog::{MAX_SECRETS, MAX_SECRETS_BYTES, MAX_SECRET_VALUE_BYTES};

/// Most deployments one desired state may hold, and containers one deployment may hold.
pub const MAX_DEPLOYMENTS: usize = 1000;
pub const MAX_CONTAINERS: usize = 64;
/// Most steps one deployment's pipeline may have (the pipeline's own limit).
pub const MAX_STEPS: usize = 200;
/// Most bytes of details one deployment's run report may carry.
pub const MAX_REPORT_TEXT: usize = 64 << 10;

fn run_text_len(run: &RunStatus) -> usize {
    let failure = match &run.phase {
        RunPhase::Failed { step, reason, .. } => reason.len() + step.as_ref().map_or(0, String::len),
        _ => 0,
    };
    failure + run.steps.iter().map(|s| s.id.len() + s.detail.len()).sum::<usize>() + run.health.iter().map(|h| h.service.len() + h.detail.len()).sum::<usize>()
}

/// Decodes a frame from the control plane (what the agent calls). Its deployments are not
/// judged here: each is, on its own, by [`check_deployment`].
pub fn decode_to_agent(frame: &[u8]) -> Result<ToAgent, FrameError> {
    let message: ToAgent = decode(frame)?;
    match &message {
        ToAgent::DesiredState { deployments, .. } if deployments.len() > MAX_DEPLOYMENTS => {
            Err(FrameError::Invalid(format!("{} deployments, at most {MAX_DEPLOYMENTS}", deployments.len())))
        }
        ToAgent::DesiredState { .. } => Ok(message),
        ToAgent::Prefetch { images, registry_auth } => {
            if images.len() > MAX_PREFETCH_IMAGES || registry_auth.len() > MAX_PREFETCH_IMAGES {
                return Err(FrameError::Invalid(format!("a prefetch of over {MAX_PREFETCH_IMAGES} images")));
            }
            match images.iter().find(|i| !is_image_reference(i)) {
                Some(bad) => Err(FrameError::Invalid(format!("{bad:?} is not an image reference"))),
                None => Ok(message),
            }
        }
    }
}

/// A node's desired state as the frames that carry it: deployments packed in order into parts of
/// at most [`MAX_FRAME_BYTES`], all but the last marked `more` (an empty state is one part). Each
/// deployment must pass [`check_deployment`] (so it fits a part on its own).
pub fn desired_state_parts(request_id: RequestId, deployments: Vec<DesiredDeployment>) -> Vec<ToAgent> {
    /// Room for the envelope: type, request id, `more` and the list's brackets.
    const ENVELOPE: usize = 256;
    let mut parts: Vec<Vec<DesiredDeployment>> = vec![vec![]];
    let mut size = ENVELOPE;
    for d in deployments {
        let len = encoded_len(&d) + 1;
        let current = parts.last_mut().expect("at least one part");
        if !current.is_empty() && (size + len > MAX_FRAME_BYTES || current.len() == MAX_DEPLOYMENTS) {
            parts.push(vec![]);
            size = ENVELOPE;
        }
        size += len;
        parts.last_mut().expect("at least one part").push(d);
    }
    let count = parts.len();
    parts.into_iter().enumerate().map(|(i, deployments)| ToAgent::DesiredState { request_id, deployments, more: i + 1 < count }).collect()
}

/// How many bytes a deployment takes in a frame.
pub fn encoded_len(d: &DesiredDeployment) -> usize {
    serde_json::to_vec(d).map_or(usize::MAX, |v| v.len())
}

/// Why a node cannot be given a deployment, for people: an agent sends it back, the connector
/// records it in the deployment's history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    #[error("deployment id {id:?} is not a DNS label")]
    IdNotDnsLabel { id: String },
    #[error("deployment {id} is given twice")]
    GivenTwice { id: String },
    #[error("deployment {id} takes {bytes} bytes to send, over the {MAX_DEPLOYMENT_BYTES}-byte limit of one deployment")]
    TooLarge { id: String, bytes: usize },
    #[error("deployment {id} carries too many or too long registry credentials")]
    RegistryCredentials { id: String },
    #[error("deployment {id} carries a secret named {name:?}, which is not a variable name")]
    SecretName { id: String, name: String },
    #[error("its project has {count} secrets, over the limit of {MAX_SECRETS} a project may hold")]
    TooManySecrets { count: usize },
    #[error("its project's secret {name} is over the limit of {MAX_SECRET_VALUE_BYTES} bytes a value may take")]
    SecretTooLong { name: String },
    #[error("its project's secrets take {bytes} bytes, over the limit of {MAX_SECRETS_BYTES} bytes (1 MiB) of names and values together")]
    SecretsTooLarge { bytes: usize },
    #[error("deployment {id} carries too much context")]
    TooMuchContext { id: String },
    #[error("deployment {id} has {count} steps, at most {MAX_STEPS}")]
    TooManySteps { id: String, count: usize },
    #[error("two steps of deployment {id} have one id")]
    StepIdsRepeat { id: String },
    #[error("step id {step:?} in deployment {id} is invalid")]
    BadStepId { id: String, step: String },
    #[error("step {step} of deployment {id} needs {need:?}, which is not another of its steps")]
    UnknownNeed { id: String, step: String, need: String },
    #[error("container name {name:?} in deployment {id} is not a unique DNS label")]
    ContainerName { id: String, name: String },
    #[error("environment variable name {name:?} in container {container} is invalid")]
    EnvName { container: String, name: String },
    #[error("container {container} of deployment {id} publishes port 0")]
    PortZero { id: String, container: String },
    #[error("plugin step {step} of deployment {id} needs a timeout and CPU and memory limits")]
    PluginLimits { id: String, step: String },
    #[error("image of step {step} in deployment {id} is not an image reference")]
    NotAnImage { id: String, step: String },
    #[error("deployment {id} has {count} containers, at most {MAX_CONTAINERS}")]
    TooManyContainers { id: String, count: usize },
    #[error("the steps of deployment {id} depend on each other in a cycle")]
    Cycle { id: String },
}

/// Whether a node can be given `d`: every field valid ([`validate_deployment`]) and small enough
/// to travel ([`MAX_DEPLOYMENT_BYTES`]).
pub fn check_deployment(d: &DesiredDeployment) -> Result<(), Unfit> {
    validate_deployment(d)?;
    let bytes = encoded_len(d);
    if bytes > MAX_DEPLOYMENT_BYTES {
        return Err(Unfit::TooLarge { id: d.id.clone(), bytes });
    }
    Ok(())
}

/// Decodes a frame from an agent (what the connector calls).
pub fn decode_from_agent(frame: &[u8]) -> Result<FromAgent, FrameError> {
    let message: FromAgent = decode(frame)?;
    let bounded = match &message {
        FromAgent::Hello { agent_version, node, .. } => agent_version.len() <= 64 && node.hostname.len() <= 255 && node.docker_version.len() <= 64,
        FromAgent::ActualState { deployments, .. } => {
            deployments.len() <= MAX_DEPLOYMENTS
                && deployments.iter().all(|d| {
                    d.containers.len() <= MAX_CONTAINERS
                        && d.run.steps.len() <= MAX_STEPS
                        && d.run.health.len() <= MAX_CONTAINERS
                        && run_text_len(&d.run) <= MAX_REPORT_TEXT
                })
        }
        FromAgent::Usage(u) => u.containers.len() <= MAX_DEPLOYMENTS * 4,
        FromAgent::Logs { lines } => {
            lines.len() <= MAX_LOG_LINES && lines.iter().all(|l| l.text.len() <= MAX_LOG_LINE_BYTES && l.source.len() <= 63 && l.deployment.len() <= 63)
        }
        FromAgent::Images { images } => {
            images.len() <= MAX_PREFETCH_IMAGES
                && images.iter().all(|i| i.image.len() <= MAX_IMAGE_REFERENCE && i.digest.as_ref().is_none_or(|d| d.len() <= 128) && i.detail.len() <= 1024)
        }
    };
    if !bounded {
        return Err(FrameError::Invalid("a field is over its size limit".into()));
    }
    Ok(message)
}

pub fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol messages serialize")
}

fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len()));
    }
    serde_json::from_slice(frame).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A whole desired state: at most [`MAX_DEPLOYMENTS`], unique ids, each valid.
pub fn validate_desired(deployments: &[DesiredDeployment]) -> Result<(), FrameError> {
    if deployments.len() > MAX_DEPLOYMENTS {
        return Err(FrameError::Invalid(format!("{} deployments, at most {MAX_DEPLOYMENTS}", deployments.len())));
    }
    let mut ids = std::collections::HashSet::new();
    for d in deployments {
        if !ids.insert(&d.id) {
            return Err(FrameError::Invalid(Unfit::GivenTwice { id: d.id.clone() }.to_string()));
        }
        validate_deployment(d).map_err(|unfit| FrameError::Invalid(unfit.to_string()))?;
    }
    Ok(())
}

/// Every field of one deployment that the agent turns into a Docker object, and the limits of
/// what it carries; why not, for people.
pub fn validate_deployment(d: &DesiredDeployment) -> Result<(), Unfit> {
    let id = || d.id.clone();
    if !is_dns_label(&d.id) {
        return Err(Unfit::IdNotDnsLabel { id: id() });
    }
    if d.registry_auth.len() > 16 || d.registry_auth.iter().any(|a| a.registry.len() > 255 || a.username.len() > 255 || a.password.len() > 4096) {
        return Err(Unfit::RegistryCredentials { id: id() });
    }
    if let Some(name) = d.secrets.0.keys().find(|k| !is_env_name(k)) {
        return Err(Unfit::SecretName { id: id(), name: name.clone() });
    }
    if d.secrets.0.len() > MAX_SECRETS {
        return Err(Unfit::TooManySecrets { count: d.secrets.0.len() });
    }
    if let Some((name, _)) = d.secrets.0.iter().find(|(_, v)| v.len() > MAX_SECRET_VALUE_BYTES) {
        return Err(Unfit::SecretTooLong { name: name.clone() });
    }
    let bytes: usize = d.secrets.0.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_SECRETS_BYTES {
        return Err(Unfit::SecretsTooLarge { bytes });
    }
    if d.context.len() > 16 || d.context.iter().any(|(k, v)| k.len() > 64 || v.len() > 255) {
        return Err(Unfit::TooMuchContext { id: id() });
    }
    if d.steps.len() > MAX_STEPS {
        return Err(Unfit::TooManySteps { id: id(), count: d.steps.len() });
    }
    let ids: std::collections::HashSet<&str> = d.steps.iter().map(|s| s.id.as_str()).collect();
    if ids.len() != d.steps.len() {
        return Err(Unfit::StepIdsRepeat { id: id() });
    }
    let mut names = std::collections::HashSet::new();
    for step in &d.steps {
        let named = || (id(), step.id.clone());
        if step.id.is_empty() || step.id.len() > 63 || !step.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            let (id, step) = named();
            return Err(Unfit::BadStepId { id, step });
        }
        if let Some(unknown) = step.needs.iter().find(|n| !ids.contains(n.as_str()) || **n == step.id) {
            let (id, step) = named();
            return Err(Unfit::UnknownNeed { id, step, need: unknown.clone() });
        }
        let image = match &step.action {
            StepAction::Service(service) => {
                let c = &service.container;
                if !is_dns_label(&c.name) || !names.insert(&c.name) {
                    return Err(Unfit::ContainerName { id: id(), name: c.name.clone() });
                }
                if let Some(k) = c.env.keys().find(|k| !is_env_name(k)) {
                    return Err(Unfit::EnvName { container: c.name.clone(), name: k.clone() });
                }
                if c.port == Some(0) {
                    return Err(Unfit::PortZero { id: id(), container: c.name.clone() });
                }
                &c.image
            }
            StepAction::Plugin(plugin) => {
                if plugin.timeout_secs == 0 || plugin.memory_mib == 0 || plugin.cpu_millis == 0 {
                    let (id, step) = named();
                    return Err(Unfit::PluginLimits { id, step });
                }
                &plugin.image
            }
        };
        if !is_image_reference(image) {
            let (id, step) = named();
            return Err(Unfit::NotAnImage { id, step });
        }
    }
    if names.len() > MAX_CONTAINERS {
        return Err(Unfit::TooManyContainers { id: id(), count: names.len() });
    }
    if has_cycle(&d.steps) {
        return Err(Unfit::Cycle { id: id() });
    }
    Ok(())
}

/// Whether following `needs` from some step leads back to it.
fn has_cycle(steps: &[Step]) -> bool {
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    // Kahn's algorithm: repeatedly take steps whose needs are all taken.
    loop {
        let before = done.len();
        for s in steps {
            if !done.contains(s.id.as_str()) && s.needs.iter().all(|n| done.contains(n.as_str())) {
                done.insert(&s.id);
            }
        }
        if done.len() == steps.len() {
            return false;
        }
        if done.len() == before {
            return true;
        }
    }
}

/// 1 to 63 lower-case letters, digits and inner hyphens.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.starts_with('-') && !s.ends_with('-') && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && s.len() <= 256
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deployment(id: &str, name: &str, image: &str) -> DesiredDeployment {
        DesiredDeployment {
            id: id.into(),
            attempt: 1,
            steps: vec![Step::service(ContainerSpec { name: name.into(), image: image.into(), ..Default::default() })],
            secrets: Secrets::default(),
            registry_auth: vec![],
            context: BTreeMap::new(),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    fn desired(id: &str, name: &str, image: &str) -> ToAgent {
        ToAgent::DesiredState { request_id: RequestId::new(), deployments: vec![deployment(id, name, image)], more: false }
    }

    #[test]
    fn messages_round_trip() {
        let m = desired("pr-42", "api", "127.0.0.1:5050/shop/api:1.2");
        assert_eq!(decode_to_agent(encode(&m).as_bytes()), Ok(m));
    }

    #[test]
    fn a_prefetch_names_image_references_only_and_its_answer_is_bounded() {
        let ok = ToAgent::Prefetch { images: vec!["127.0.0.1:5050/nullops/http-check@sha256:ab".into()], registry_auth: vec![] };
        assert_eq!(decode_to_agent(encode(&ok).as_bytes()), Ok(ok));
        for bad in ["", "a b", "x\n"] {
            let frame = encode(&ToAgent::Prefetch { images: vec![bad.into()], registry_auth: vec![] });
            assert!(matches!(decode_to_agent(frame.as_bytes()), Err(FrameError::Invalid(_))), "{bad:?}");
        }
        let many = ToAgent::Prefetch { images: vec!["x".into(); MAX_PREFETCH_IMAGES + 1], registry_auth: vec![] };
        assert!(decode_to_agent(encode(&many).as_bytes()).is_err());
        let held = |detail: String| FromAgent::Images { images: vec![HeldImage { image: "x".into(), digest: None, present: false, detail }] };
        assert!(decode_from_agent(encode(&held("pulling".into())).as_bytes()).is_ok());
        assert!(decode_from_agent(encode(&held("d".repeat(2000))).as_bytes()).is_err());
    }

    #[test]
    fn an_unsafe_field_refuses_its_deployment_not_the_frame() {
        for (id, name, image) in [("PR 42", "api", "x"), ("pr", "../etc", "x"), ("pr", "api", "a b"), ("pr", "api", "")] {
            let frame = encode(&ToAgent::DesiredState {
                request_id: RequestId::new(),
                deployments: vec![deployment("ok", "web", "x"), deployment(id, name, image)],
                more: false,
            });
            let Ok(ToAgent::DesiredState { deployments, .. }) = decode_to_agent(frame.as_bytes()) else { panic!("{frame}") };
            assert_eq!(check_deployment(&deployments[0]), Ok(()));
            assert!(check_deployment(&deployments[1]).is_err(), "{frame}");
        }
        let twice = vec![DesiredDeployment::new("a", vec![]); 2];
        assert!(matches!(validate_desired(&twice), Err(FrameError::Invalid(m)) if m.contains("twice")));
        // Steps that need each other, or a step that is not there, are refused.
        let ToAgent::DesiredState { deployments, .. } = desired("pr", "api", "x") else { unreachable!("a desired state") };
        let mut looped = deployments[0].clone();
        let mut db = Step::service(ContainerSpec { name: "db".into(), image: "x".into(), ..Default::default() });
        db.needs = vec!["api".into()];
        looped.steps[0].needs = vec!["db".into()];
        looped.steps.push(db);
        assert!(matches!(validate_desired(&[looped.clone()]), Err(FrameError::Invalid(m)) if m.contains("cycle")));
        looped.steps[0].needs = vec!["nope".into()];
        assert!(matches!(validate_desired(&[looped]), Err(FrameError::Invalid(m)) if m.contains("nope")));
    }

    fn with_secrets(secrets: impl IntoIterator<Item = (String, String)>) -> DesiredDeployment {
        DesiredDeployment { secrets: Secrets(secrets.into_iter().collect()), ..deployment("pr-1", "web", "x") }
    }

    #[test]
    fn a_deployment_carries_at_most_the_secrets_a_project_may_hold() {
        let many = |n: usize| with_secrets((0..n).map(|i| (format!("S{i}"), "v".to_owned())));
        assert_eq!(check_deployment(&many(MAX_SECRETS)), Ok(()));
        assert_eq!(check_deployment(&many(MAX_SECRETS + 1)), Err(Unfit::TooManySecrets { count: 257 }));
        assert!(check_deployment(&many(MAX_SECRETS + 1)).unwrap_err().to_string().contains("256"));
        // 1 MiB of names and values together: 16 values of 64 KiB less their names fit exactly.
        let value = |name: &str| "x".repeat(MAX_SECRET_VALUE_BYTES - name.len());
        let full: Vec<(String, String)> = (0..16).map(|i| format!("S{i:02}")).map(|n| (n.clone(), value(&n))).collect();
        assert_eq!(full.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(), MAX_SECRETS_BYTES);
        assert_eq!(check_deployment(&with_secrets(full.clone())), Ok(()));
        let over = full.into_iter().chain([("ONE_MORE".to_owned(), "x".to_owned())]);
        assert!(check_deployment(&with_secrets(over)).unwrap_err().to_string().contains("1 MiB"));
        let huge = with_secrets([("BIG".to_owned(), "x".repeat(MAX_SECRET_VALUE_BYTES + 1))]);
        assert_eq!(check_deployment(&huge), Err(Unfit::SecretTooLong { name: "BIG".into() }));
    }

    #[test]
    fn a_desired_state_goes_in_parts_that_each_fit_a_frame() {
        let request_id = RequestId::new();
        assert_eq!(desired_state_parts(request_id, vec![]), vec![ToAgent::DesiredState { request_id, deployments: vec![], more: false }]);
        // Twelve deployments of about 1.5 MiB each (escaped control characters take six bytes).
        let big = |i: usize| with_secrets((0..4).map(|k| (format!("S{k}"), "\u{1}".repeat(60_000)))).clone_as(&format!("d-{i}"));
        let all: Vec<DesiredDeployment> = (0..12).map(big).collect();
        assert!(all.iter().all(|d| check_deployment(d).is_ok()));
        let parts = desired_state_parts(request_id, all.clone());
        assert!(parts.len() >= 2, "{} parts", parts.len());
        let mut carried = vec![];
        for (i, part) in parts.iter().enumerate() {
            assert!(encode(part).len() <= MAX_FRAME_BYTES);
            let Ok(ToAgent::DesiredState { deployments, more, .. }) = decode_to_agent(encode(part).as_bytes()) else { panic!("a desired state part") };
            assert_eq!(more, i + 1 < parts.len());
            carried.extend(deployments);
        }
        assert_eq!(carried, all, "every deployment, in order");
    }

    impl DesiredDeployment {
        fn clone_as(&self, id: &str) -> DesiredDeployment {
            DesiredDeployment { id: id.into(), ..self.clone() }
        }
    }

    #[test]
    fn images_name_their_registry() {
        assert_eq!(registry_of("127.0.0.1:5050/nullops/demo:v1"), "127.0.0.1:5050");
        assert_eq!(registry_of("ghcr.io/acme/api:1"), "ghcr.io");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("shop/api:v2"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
        let auth = RegistryAuth { registry: "r".into(), username: "u".into(), password: "hunter22".into() };
        assert!(!format!("{auth:?}").contains("hunter22"));
        let secrets = Secrets([("DB".to_owned(), "hunter22".to_owned())].into());
        assert!(!format!("{secrets:?}").contains("hunter22"));
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let frame = vec![b' '; MAX_FRAME_BYTES + 1];
        assert_eq!(decode_to_agent(&frame), Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1)));
        assert_eq!(decode_from_agent(&frame), Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1)));
    }

    #[test]
    fn messages_of_another_shape_are_malformed() {
        for frame in [&b"{\"type\":\"launch_missiles\"}"[..], b"null", b"\xff\xfe", b"{\"type\":\"desired_state\"}"] {
            assert!(matches!(decode_to_agent(frame), Err(FrameError::Malformed(_))));
            assert!(matches!(decode_from_agent(frame), Err(FrameError::Malformed(_))));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes at all: decoding and judging what decodes return, never panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(ToAgent::DesiredState { deployments, .. }) = decode_to_agent(&bytes) {
                for d in &deployments {
                    let _ = check_deployment(d);
                }
            }
            let _ = decode_from_agent(&bytes);
        }

        /// Valid messages with one byte changed: still no panic, and never a message that
        /// breaks the rules.
        #[test]
        fn mutated_messages_never_panic(id in "[a-z][a-z0-9-]{0,20}", at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut frame = encode(&desired(&id, "web", "registry.local/web:1")).into_bytes();
            let i = at.index(frame.len());
            frame[i] = byte;
            if let Ok(ToAgent::DesiredState { deployments, .. }) = decode_to_agent(&frame) {
                for d in &deployments {
                    if check_deployment(d).is_ok() {
                        prop_assert!(is_dns_label(&d.id) && d.containers().all(|c| is_dns_label(&c.name)));
                    }
                }
            }
        }
    }
}
