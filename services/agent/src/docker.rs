//! The agent's hands: makes the Docker engine run what the desired state says, and reads what
//! the containers use.
//!
//! Every container the agent manages carries labels naming its scope, deployment, name and a hash
//! of its spec; containers without this agent's scope label are never touched, so several agents
//! (or other tools) can share one engine. Each deployment has a network of its own (labelled the
//! same way) on which its containers answer by their names, and which no other deployment joins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions, StatsOptions};
use futures::{StreamExt, TryStreamExt};
use bollard::auth::DockerCredentials;
use nullops_wire::message::{registry_of, ActualContainer, ActualDeployment, ContainerSpec, ContainerState, ContainerUsage, DesiredDeployment, RegistryAuth};
use sha2::{Digest, Sha256};

use crate::AgentError;

pub const LABEL_SCOPE: &str = "nullops.scope";
pub const LABEL_DEPLOYMENT: &str = "nullops.deployment";
pub const LABEL_CONTAINER: &str = "nullops.container";
pub const LABEL_SPEC: &str = "nullops.spec";
/// On plugin containers: the run they belong to.
pub const LABEL_PLUGIN_RUN: &str = "nullops.plugin-run";

/// Bound on one image pull; other engine calls are bounded by the client's own timeout.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on reading one container's stats (the engine samples for about a second).
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Engine calls in flight at once while reading stats.
const STATS_CONCURRENCY: usize = 8;
/// Bound on every other engine call, in seconds.
const ENGINE_TIMEOUT_SECS: u64 = 60;

#[derive(Clone)]
pub struct Engine {
    client: bollard::Docker,
    scope: String,
    /// Plugin runs in progress (their `nullops.plugin-run` label values): the sweep spares them.
    plugin_runs: Arc<Mutex<HashSet<String>>>,
}

/// Keeps a plugin run marked as in progress while alive.
pub(crate) struct PluginRunGuard {
    runs: Arc<Mutex<HashSet<String>>>,
    run_id: String,
}

impl Drop for PluginRunGuard {
    fn drop(&mut self) {
        self.runs.lock().expect("plugin runs lock").remove(&self.run_id);
    }
}

/// A managed container as the engine reports it.
struct Managed {
    id: String,
    deployment: String,
    name: String,
    spec_hash: String,
    running: bool,
}

impl Engine {
    /// Connects lazily to the engine at `DOCKER_HOST` (a unix socket) or /var/run/docker.sock.
    pub fn connect(scope: &str) -> Result<Self, AgentError> {
        let client = bollard::Docker::connect_with_unix_defaults()
            .map_err(|e| AgentError::Docker(e.to_string()))?
            .with_timeout(Duration::from_secs(ENGINE_TIMEOUT_SECS));
        Ok(Engine { client, scope: scope.to_owned(), plugin_runs: Arc::default() })
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub(crate) fn client(&self) -> &bollard::Docker {
        &self.client
    }

    /// Creates a container, pulling its image first when the engine does not have it.
    pub(crate) async fn create_pulling(&self, image: &str, options: CreateContainerOptions, body: ContainerCreateBody, auth: &[RegistryAuth]) -> Result<String, String> {
        let created = match self.client.create_container(Some(options.clone()), body.clone()).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                self.pull(image, auth).await?;
                self.client.create_container(Some(options), body).await
            }
            other => other,
        };
        created.map(|c| c.id).map_err(|e| format!("cannot create from {image}: {e}"))
    }

    pub async fn version(&self) -> String {
        match self.client.version().await {
            Ok(v) => v.version.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "the Docker engine does not answer");
                String::new()
            }
        }
    }

    /// Removes managed containers that are not desired (or whose spec changed) and creates or
    /// starts every desired one that is not running. Failures are reported per container.
    pub async fn reconcile(&self, desired: &[DesiredDeployment]) -> Vec<ActualDeployment> {
        self.sweep_plugin_leftovers().await;
        let existing = match self.managed(false).await {
            Ok(existing) => existing,
            Err(e) => return failed_everywhere(desired, &format!("cannot list containers: {e}")),
        };
        let wanted: HashMap<(&str, &str), String> = desired
            .iter()
            .flat_map(|d| d.containers.iter().map(move |c| ((d.id.as_str(), c.name.as_str()), spec_hash(c))))
            .collect();
        let mut kept: HashMap<(String, String), Managed> = HashMap::new();
        for m in existing {
            if wanted.get(&(m.deployment.as_str(), m.name.as_str())) == Some(&m.spec_hash) {
                kept.insert((m.deployment.clone(), m.name.clone()), m);
                continue;
            }
            tracing::info!(deployment = %m.deployment, container = %m.name, "removing a container that should not run");
            let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            if let Err(e) = self.client.remove_container(&m.id, Some(options)).await {
                tracing::warn!(deployment = %m.deployment, container = %m.name, error = %e, "cannot remove container");
            }
        }
        let mut networks = self.networks_except(desired).await;
        let mut actual = Vec::with_capacity(desired.len());
        for d in desired {
            let network = match self.ensure_network(&d.id, &mut networks).await {
                Ok(network) => network,
                Err(reason) => {
                    actual.extend(failed_everywhere(std::slice::from_ref(d), &reason));
                    continue;
                }
            };
            let mut containers = Vec::with_capacity(d.containers.len());
            for spec in &d.containers {
                let state = match kept.get(&(d.id.clone(), spec.name.clone())) {
                    Some(m) if m.running => ContainerState::Running,
                    Some(m) if self.oom_killed(&m.id).await => {
                        ContainerState::Failed { reason: format!("killed: out of memory (limit {} MiB)", spec.memory_mib) }
                    }
                    Some(m) => self.start(&m.id).await,
                    None => self.create_and_start(&d.id, &network, spec, &d.registry_auth).await,
                };
                containers.push(ActualContainer { name: spec.name.clone(), state });
            }
            actual.push(ActualDeployment { id: d.id.clone(), containers });
        }
        actual
    }

    async fn oom_killed(&self, id: &str) -> bool {
        let inspected = self.client.inspect_container(id, None).await;
        inspected.ok().and_then(|i| i.state).and_then(|s| s.oom_killed).unwrap_or(false)
    }

    async fn start(&self, id: &str) -> ContainerState {
        match self.client.start_container(id, None).await {
            Ok(()) => ContainerState::Running,
            Err(e) => ContainerState::Failed { reason: format!("cannot start: {e}") },
        }
    }

    /// Marks a plugin run as in progress until the guard drops, so the sweep spares its container.
    pub(crate) fn plugin_run(&self, run_id: &str) -> PluginRunGuard {
        self.plugin_runs.lock().expect("plugin runs lock").insert(run_id.to_owned());
        PluginRunGuard { runs: self.plugin_runs.clone(), run_id: run_id.to_owned() }
    }

    /// Removes plugin containers of this scope that no run in progress owns: left by a crash of
    /// the agent between starting a plugin and removing it.
    async fn sweep_plugin_leftovers(&self) {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope), LABEL_PLUGIN_RUN.to_owned()])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let Ok(containers) = self.client.list_containers(Some(options)).await else { return };
        for c in containers {
            let run = c.labels.as_ref().and_then(|l| l.get(LABEL_PLUGIN_RUN)).cloned().unwrap_or_default();
            if self.plugin_runs.lock().expect("plugin runs lock").contains(&run) {
                continue;
            }
            let Some(id) = c.id else { continue };
            tracing::info!(container = %id, "removing a plugin container no run owns");
            let _ = self.client.remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
        }
    }

    /// The deployment's network (by id, since the engine allows two networks of one name),
    /// created when `existing` has none.
    async fn ensure_network(&self, deployment: &str, existing: &mut HashMap<String, String>) -> Result<String, String> {
        if let Some(id) = existing.get(deployment) {
            return Ok(id.clone());
        }
        let name = format!("nullops-{}-{deployment}", self.scope);
        let labels = HashMap::from([(LABEL_SCOPE.to_owned(), self.scope.clone()), (LABEL_DEPLOYMENT.to_owned(), deployment.to_owned())]);
        let request = NetworkCreateRequest { name, driver: Some("bridge".into()), labels: Some(labels), ..Default::default() };
        let created = self.client.create_network(request).await.map_err(|e| format!("cannot create the deployment's network: {e}"))?;
        existing.insert(deployment.to_owned(), created.id.clone());
        Ok(created.id)
    }

    /// This agent's networks of desired deployments, deployment to network id; the others are
    /// removed (their containers are gone by now), as are duplicates.
    async fn networks_except(&self, desired: &[DesiredDeployment]) -> HashMap<String, String> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope)])]);
        let networks = match self.client.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list networks");
                return HashMap::new();
            }
        };
        let mut kept = HashMap::new();
        for network in networks {
            let Some(id) = network.id else { continue };
            let deployment = network.labels.as_ref().and_then(|l| l.get(LABEL_DEPLOYMENT)).cloned().unwrap_or_default();
            if desired.iter().any(|d| d.id == deployment) && !kept.contains_key(&deployment) {
                kept.insert(deployment, id);
                continue;
            }
            if let Err(e) = self.client.remove_network(&id).await {
                tracing::warn!(network = %id, error = %e, "cannot remove a network that should not exist");
            }
        }
        kept
    }

    async fn create_and_start(&self, deployment: &str, network: &str, spec: &ContainerSpec, auth: &[RegistryAuth]) -> ContainerState {
        let name = format!("nullops-{}-{deployment}-{}", self.scope, spec.name);
        let labels = HashMap::from([
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_DEPLOYMENT.to_owned(), deployment.to_owned()),
            (LABEL_CONTAINER.to_owned(), spec.name.clone()),
            (LABEL_SPEC.to_owned(), spec_hash(spec)),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                // Not restarted by the engine: the reconcile restarts what should run, and leaves
                // (and reports) what was killed for going over its memory.
                restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
                network_mode: Some(network.to_owned()),
                memory: (spec.memory_mib > 0).then(|| i64::from(spec.memory_mib) << 20),
                nano_cpus: (spec.cpu_millis > 0).then(|| i64::from(spec.cpu_millis) * 1_000_000),
                ..Default::default()
            }),
            // Others in the deployment reach it by its name.
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network.to_owned(), EndpointSettings { aliases: Some(vec![spec.name.clone()]), ..Default::default() })])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        match self.create_pulling(&spec.image, options, body, auth).await {
            Ok(id) => self.start(&id).await,
            Err(reason) => ContainerState::Failed { reason },
        }
    }

    /// Pulls `image`, with the credentials of its registry when `auth` has them.
    async fn pull(&self, image: &str, auth: &[RegistryAuth]) -> Result<(), String> {
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let registry = registry_of(image);
        let credentials = auth.iter().find(|a| a.registry == registry).map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.registry.clone()),
            ..Default::default()
        });
        let pull = self.client.create_image(Some(options), None, credentials).try_collect::<Vec<_>>();
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot pull {image}: {e}")),
            Err(_) => Err(format!("pulling {image} took over {} s", PULL_TIMEOUT.as_secs())),
        }
    }

    async fn managed(&self, running_only: bool) -> Result<Vec<Managed>, bollard::errors::Error> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope)])]);
        let options = ListContainersOptions { all: !running_only, filters: Some(filters), ..Default::default() };
        let summaries = self.client.list_containers(Some(options)).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let labels = s.labels?;
                Some(Managed {
                    id: s.id?,
                    deployment: labels.get(LABEL_DEPLOYMENT)?.clone(),
                    name: labels.get(LABEL_CONTAINER)?.clone(),
                    spec_hash: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
                    running: matches!(s.state, Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)),
                })
            })
            .collect())
    }

    /// CPU and memory of every running managed container.
    pub async fn container_usage(&self) -> Vec<ContainerUsage> {
        let running = match self.managed(true).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list containers for stats");
                return vec![];
            }
        };
        futures::stream::iter(running)
            .map(|m| async move {
                let options = StatsOptions { stream: false, one_shot: false };
                let sample = tokio::time::timeout(STATS_TIMEOUT, self.client.stats(&m.id, Some(options)).next()).await;
                let Ok(Some(Ok(stats))) = sample else { return None };
                Some(ContainerUsage { deployment: m.deployment, name: m.name, cpu_millicores: cpu_millicores(&stats), memory_bytes: memory_bytes(&stats) })
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .filter_map(|u| async move { u })
            .collect()
            .await
    }
}

fn spec_hash(spec: &ContainerSpec) -> String {
    let json = serde_json::to_vec(spec).expect("container specs serialize");
    Sha256::digest(json).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn failed_everywhere(desired: &[DesiredDeployment], reason: &str) -> Vec<ActualDeployment> {
    desired
        .iter()
        .map(|d| ActualDeployment {
            id: d.id.clone(),
            containers: d.containers.iter().map(|c| ActualContainer { name: c.name.clone(), state: ContainerState::Failed { reason: reason.to_owned() } }).collect(),
        })
        .collect()
}

/// The container's share of the host's CPU time between the engine's two samples, in millicores.
fn cpu_millicores(stats: &bollard::models::ContainerStatsResponse) -> u64 {
    let (Some(now), Some(before)) = (&stats.cpu_stats, &stats.precpu_stats) else { return 0 };
    let used = |s: &bollard::models::ContainerCpuStats| s.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0);
    let container = used(now).saturating_sub(used(before));
    let system = now.system_cpu_usage.unwrap_or(0).saturating_sub(before.system_cpu_usage.unwrap_or(0));
    let cpus = u64::from(now.online_cpus.unwrap_or(1));
    if system == 0 {
        return 0;
    }
    (container as u128 * cpus as u128 * 1000 / system as u128) as u64
}

/// Memory in use, not counting reclaimable page cache (as `docker stats` shows it).
fn memory_bytes(stats: &bollard::models::ContainerStatsResponse) -> u64 {
    let Some(memory) = &stats.memory_stats else { return 0 };
    let cache = memory.stats.as_ref().and_then(|s| s.get("inactive_file").copied()).unwrap_or(0);
    memory.usage.unwrap_or(0).saturating_sub(cache)
}
