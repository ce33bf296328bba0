//! The agent's hands: makes the Docker engine run what the desired state says, and reads what
//! the containers use.
//!
//! Every container the agent manages carries labels naming its scope, deployment, name and a hash
//! of its spec; containers without this agent's scope label are never touched, so several agents
//! (or other tools) can share one engine. Each deployment has a network of its own (labelled the
//! same way) on which its containers answer by their names, and which no other deployment joins.

use crate::words::{engine_refused, EngineError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions, StatsOptions};
use futures::{StreamExt, TryStreamExt};
use nullops_wire::message::{registry_of, ActualContainer, ActualDeployment, ContainerSpec, ContainerState, ContainerUsage, RegistryAuth};
use sha2::{Digest, Sha256};

use crate::subnets::{Pool, Subnet};
use crate::AgentError;

/// How often, and how far apart, a limited container killed with no out-of-memory mark is
/// inspected again (Docker may learn of the kill after the exit).
const OOM_LOOKS: u32 = 5;
const OOM_LOOK_AGAIN: Duration = Duration::from_millis(100);

pub const LABEL_SCOPE: &str = "nullops.scope";
pub const LABEL_DEPLOYMENT: &str = "nullops.deployment";
pub const LABEL_CONTAINER: &str = "nullops.container";
pub const LABEL_SPEC: &str = "nullops.spec";
/// The control plane's id of the node, when it said (the deployment's `context.node`).
pub const LABEL_NODE: &str = "nullops.node";
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
    /// The agent's own container when it runs in one: it joins each deployment's network to
    /// probe the services' health there.
    own_container: Option<String>,
    /// Plugin runs in progress (their `nullops.plugin-run` label values): the sweep spares them.
    plugin_runs: Arc<Mutex<HashSet<String>>>,
    /// Where deployment networks take their subnets.
    pool: Pool,
    /// Networks are made one at a time, so runs starting together never pick one subnet.
    making_network: Arc<tokio::sync::Mutex<()>>,
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
    /// Published ports: container port to node port.
    ports: HashMap<u16, u16>,
}

/// A deployment whose run succeeded: its services are kept running as specified.
pub struct Maintained<'a> {
    pub id: &'a str,
    /// The node's id, for the containers' labels ("" when not given).
    pub node: &'a str,
    pub containers: Vec<ContainerSpec>,
    pub registry_auth: &'a [RegistryAuth],
}

/// A container of a deployment as it stands after the run started it.
pub struct Started {
    pub id: String,
    /// Its address on the deployment's network.
    pub ip: Option<std::net::IpAddr>,
    pub host_port: Option<u16>,
}

/// A running service container of this agent's scope, as the last reconcile pass saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub deployment: String,
    pub name: String,
    pub id: String,
}

/// Why a started container is not running.
pub struct Exited {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

impl Engine {
    /// Connects lazily to the engine at `DOCKER_HOST` (a unix socket) or /var/run/docker.sock;
    /// deployment networks take their subnets from `pool`.
    pub fn connect(scope: &str, pool: Pool) -> Result<Self, AgentError> {
        let client = bollard::Docker::connect_with_unix_defaults()
            .map_err(|e| AgentError::Docker(e.to_string()))?
            .with_timeout(Duration::from_secs(ENGINE_TIMEOUT_SECS));
        Ok(Engine { client, scope: scope.to_owned(), own_container: own_container_id(), plugin_runs: Arc::default(), pool, making_network: Arc::default() })
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub(crate) fn client(&self) -> &bollard::Docker {
        &self.client
    }

    /// Creates a container, pulling its image first when the engine does not have it.
    pub(crate) async fn create_pulling(
        &self,
        image: &str,
        options: CreateContainerOptions,
        body: ContainerCreateBody,
        auth: &[RegistryAuth],
    ) -> Result<String, EngineError> {
        let created = match self.client.create_container(Some(options.clone()), body.clone()).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                self.pull(image, auth).await?;
                self.client.create_container(Some(options), body).await
            }
            other => other,
        };
        created.map(|c| c.id).map_err(|e| engine_refused(&format!("cannot create a container from {image}"), &e))
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

    /// Keeps the containers of `maintained` deployments running as specified (recreating those
    /// missing or changed, starting those stopped, leaving and reporting those killed for their
    /// memory), leaves deployments in `in_run` to their runs, and removes every other container
    /// and network of this scope. Failures are reported per container.
    pub async fn reconcile(&self, maintained: &[Maintained<'_>], in_run: &HashSet<String>) -> Vec<ActualDeployment> {
        self.sweep_plugin_leftovers().await;
        let existing = match self.managed(false).await {
            Ok(existing) => existing,
            Err(e) => return failed_everywhere(maintained, &engine_refused("cannot list containers", &e)),
        };
        let wanted: HashMap<(&str, &str), String> =
            maintained.iter().flat_map(|d| d.containers.iter().map(move |c| ((d.id, c.name.as_str()), spec_hash(c)))).collect();
        let mut kept: HashMap<(String, String), Managed> = HashMap::new();
        for m in existing {
            if in_run.contains(&m.deployment) {
                continue;
            }
            if wanted.get(&(m.deployment.as_str(), m.name.as_str())) == Some(&m.spec_hash) {
                kept.insert((m.deployment.clone(), m.name.clone()), m);
                continue;
            }
            tracing::info!(deployment = %m.deployment, container = %m.name, "removing a container that should not run");
            self.remove_container(&m.id).await;
        }
        let keep_networks: HashSet<&str> = maintained.iter().map(|d| d.id).chain(in_run.iter().map(String::as_str)).collect();
        let mut networks = self.networks_except(&keep_networks).await;
        let mut actual = Vec::with_capacity(maintained.len());
        for d in maintained {
            let network = match self.ensure_network(d.id, &mut networks).await {
                Ok(network) => network,
                Err(reason) => {
                    actual.extend(failed_everywhere(std::slice::from_ref(d), &reason));
                    continue;
                }
            };
            let mut containers = Vec::with_capacity(d.containers.len());
            for spec in &d.containers {
                let (state, host_port) = match kept.get(&(d.id.to_owned(), spec.name.clone())) {
                    Some(m) if m.running => (ContainerState::Running, spec.port.and_then(|p| m.ports.get(&p).copied())),
                    Some(m) if self.exited(&m.id).await.is_some_and(|e| e.oom_killed) => {
                        (ContainerState::Failed { reason: format!("killed: out of memory (limit {} MiB)", spec.memory_mib) }, None)
                    }
                    Some(m) => (self.start(&m.id).await, self.host_port(&m.id, spec.port).await),
                    None => match self.create_and_start(d.id, d.node, &network, spec, d.registry_auth).await {
                        Ok(started) => (ContainerState::Running, started.host_port),
                        Err(reason) => (ContainerState::Failed { reason: reason.to_string() }, None),
                    },
                };
                containers.push(ActualContainer { name: spec.name.clone(), state, host_port });
            }
            actual.push(ActualDeployment { id: d.id.to_owned(), attempt: 0, run: Default::default(), containers });
        }
        actual
    }

    /// Removes every container (plugins' too, with their anonymous volumes) and the network of
    /// `deployment`: the rollback of a run, and the end of a deleted deployment.
    pub async fn remove_deployment(&self, deployment: &str) -> Result<(), EngineError> {
        let label = |k: &str, v: &str| format!("{k}={v}");
        let filters = HashMap::from([("label".to_owned(), vec![label(LABEL_SCOPE, &self.scope), label(LABEL_DEPLOYMENT, deployment)])]);
        let options = ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
        let containers = self.client.list_containers(Some(options)).await.map_err(|e| engine_refused("cannot list containers", &e))?;
        for c in containers.into_iter().filter_map(|c| c.id) {
            self.remove_container(&c).await;
        }
        let networks =
            self.client.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.map_err(|e| engine_refused("cannot list networks", &e))?;
        for id in networks.into_iter().filter_map(|n| n.id) {
            self.remove_network(&id).await?;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot remove container"),
        }
    }

    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        if let Some(own) = &self.own_container {
            let request = bollard::models::NetworkDisconnectRequest { container: own.clone(), force: Some(true) };
            let _ = self.client.disconnect_network(id, request).await;
        }
        match self.client.remove_network(id).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(engine_refused(&format!("cannot remove network {id}"), &e)),
        }
    }

    /// The deployment's network, created (and joined by the agent's own container) when missing.
    /// Only this deployment's networks are looked at: runs start side by side, and another
    /// run's network is not this one's to judge (the reconcile sweeps strays).
    pub async fn deployment_network(&self, deployment: &str) -> Result<String, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope), format!("{LABEL_DEPLOYMENT}={deployment}")])]);
        let networks =
            self.client.list_networks(Some(ListNetworksOptions { filters: Some(filters) })).await.map_err(|e| engine_refused("cannot list networks", &e))?;
        let mut existing = HashMap::new();
        if let Some(id) = networks.into_iter().find_map(|n| n.id) {
            existing.insert(deployment.to_owned(), id);
        }
        self.ensure_network(deployment, &mut existing).await
    }

    /// A container of `deployment` (by id or name) as it runs now: its id, its address on the
    /// deployment's network and its node port.
    pub async fn started(&self, container: &str, deployment: &str, port: Option<u16>) -> Result<Started, EngineError> {
        let inspected = self.client.inspect_container(container, None).await.map_err(|e| engine_refused("cannot inspect the container", &e))?;
        let settings = inspected.network_settings.unwrap_or_default();
        let ip =
            settings.networks.as_ref().and_then(|n| n.get(&self.network_name(deployment))).and_then(|e| e.ip_address.as_ref()).and_then(|ip| ip.parse().ok());
        let host_port = port.and_then(|p| published(settings.ports.as_ref(), p));
        Ok(Started { id: inspected.id.unwrap_or_else(|| container.to_owned()), ip, host_port })
    }

    /// Service `name` of `deployment` as it runs now, or `None` when it is not there.
    pub async fn service_container(&self, deployment: &str, name: &str, port: Option<u16>) -> Option<Started> {
        self.started(&self.container_name(deployment, name), deployment, port).await.ok()
    }

    fn network_name(&self, deployment: &str) -> String {
        format!("nullops-{}-{deployment}", self.scope)
    }

    fn container_name(&self, deployment: &str, name: &str) -> String {
        format!("nullops-{}-{deployment}-{name}", self.scope)
    }

    /// Why the container stopped, or `None` while it runs.
    pub async fn exited(&self, id: &str) -> Option<Exited> {
        for look in 0..=OOM_LOOKS {
            let inspected = self.client.inspect_container(id, None).await.ok()?;
            let limited = inspected.host_config.as_ref().and_then(|h| h.memory).is_some_and(|m| m > 0);
            let state = inspected.state?;
            if state.running == Some(true) {
                return None;
            }
            let oom_killed = state.oom_killed.unwrap_or(false);
            // Docker marks an out-of-memory kill when the kernel's event reaches it, which can
            // be after the exit is seen: a limited container killed (137) is looked at again.
            if oom_killed || state.exit_code != Some(137) || !limited || look == OOM_LOOKS {
                return Some(Exited { exit_code: state.exit_code, oom_killed });
            }
            tokio::time::sleep(OOM_LOOK_AGAIN).await;
        }
        None
    }

    async fn host_port(&self, id: &str, port: Option<u16>) -> Option<u16> {
        let port = port?;
        let inspected = self.client.inspect_container(id, None).await.ok()?;
        published(inspected.network_settings?.ports.as_ref(), port)
    }

    /// Runs `argv` in the container; whether it exited 0 within `timeout`.
    pub async fn exec_succeeds(&self, id: &str, argv: &[String], timeout: Duration) -> bool {
        let exec = async {
            let options = bollard::models::ExecConfig { cmd: Some(argv.to_vec()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
            let created = self.client.create_exec(id, options).await.ok()?;
            if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) = self.client.start_exec(&created.id, None).await {
                // Drain until the command ends.
                while output.next().await.is_some() {}
            }
            self.client.inspect_exec(&created.id).await.ok()?.exit_code
        };
        matches!(tokio::time::timeout(timeout, exec).await, Ok(Some(0)))
    }

    async fn start(&self, id: &str) -> ContainerState {
        match self.client.start_container(id, None).await {
            Ok(()) => ContainerState::Running,
            Err(e) => ContainerState::Failed { reason: engine_refused("cannot start", &e).to_string() },
        }
    }

    /// Marks a plugin run as in progress until the guard drops, so the sweep spares its container.
    pub(crate) fn plugin_run(&self, run_id: &str) -> PluginRunGuard {
        self.plugin_runs.lock().expect("plugin runs lock").insert(run_id.to_owned());
        PluginRunGuard { runs: self.plugin_runs.clone(), run_id: run_id.to_owned() }
    }

    /// Removes every plugin container of this scope (the agent is stopping); how many. Not only
    /// those of the runs still marked in progress: a run cancelled by the stop has dropped its
    /// mark (and its own removal) by now, and its container must not outlive this process either.
    pub async fn end_plugin_runs(&self) -> usize {
        self.remove_plugin_containers(false).await
    }

    /// Removes plugin containers of this scope that no run in progress owns: left by a crash of
    /// the agent between starting a plugin and removing it.
    async fn sweep_plugin_leftovers(&self) {
        self.remove_plugin_containers(true).await;
    }

    /// Removes this scope's plugin containers, sparing those of runs in progress when
    /// `spare_running`; how many were removed.
    async fn remove_plugin_containers(&self, spare_running: bool) -> usize {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope), LABEL_PLUGIN_RUN.to_owned()])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let Ok(containers) = self.client.list_containers(Some(options)).await else { return 0 };
        let mut removed = 0;
        for c in containers {
            let run = c.labels.as_ref().and_then(|l| l.get(LABEL_PLUGIN_RUN)).cloned().unwrap_or_default();
            if spare_running && self.plugin_runs.lock().expect("plugin runs lock").contains(&run) {
                continue;
            }
            let Some(id) = c.id else { continue };
            tracing::info!(container = %id, "removing a plugin container no run will remove");
            if self.client.remove_container(&id, Some(RemoveContainerOptions { force: true, v: true, ..Default::default() })).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The deployment's network (by id, since the engine allows two networks of one name),
    /// created when `existing` has none.
    async fn ensure_network(&self, deployment: &str, existing: &mut HashMap<String, String>) -> Result<String, EngineError> {
        if let Some(id) = existing.get(deployment) {
            return Ok(id.clone());
        }
        let created = self.create_network(deployment).await?;
        if let Some(own) = &self.own_container {
            let request = bollard::models::NetworkConnectRequest { container: own.clone(), endpoint_config: None };
            if let Err(e) = self.client.connect_network(&created.id, request).await {
                tracing::warn!(error = %e, "cannot join the deployment's network; its health probes will fail");
            }
        }
        existing.insert(deployment.to_owned(), created.id.clone());
        Ok(created.id)
    }

    /// Creates the deployment's network on a /24 of the pool that no network of the engine
    /// overlaps (another agent sharing the engine may take one meanwhile: then the next).
    async fn create_network(&self, deployment: &str) -> Result<bollard::models::NetworkCreateResponse, EngineError> {
        const TRIES: usize = 16;
        let _one_at_a_time = self.making_network.lock().await;
        let networks = self.client.list_networks(None::<ListNetworksOptions>).await.map_err(|e| engine_refused("cannot list networks", &e))?;
        let used: Vec<Subnet> =
            networks.iter().filter_map(|n| n.ipam.as_ref()?.config.as_ref()).flatten().filter_map(|c| Subnet::parse(c.subnet.as_deref()?).ok()).collect();
        let labels = HashMap::from([(LABEL_SCOPE.to_owned(), self.scope.clone()), (LABEL_DEPLOYMENT.to_owned(), deployment.to_owned())]);
        let mut last = EngineError::PoolExhausted { pool: self.pool.to_string() };
        for subnet in self.pool.free(&used).take(TRIES) {
            let ipam = Ipam { config: Some(vec![IpamConfig { subnet: Some(subnet.to_string()), ..Default::default() }]), ..Default::default() };
            let request = NetworkCreateRequest {
                name: self.network_name(deployment),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ipam: Some(ipam),
                ..Default::default()
            };
            match self.client.create_network(request).await {
                Ok(created) => return Ok(created),
                // Taken since the list: by another agent on the engine.
                Err(e) if e.to_string().contains("overlap") => last = EngineError::SubnetOverlaps { subnet: subnet.to_string() },
                Err(e) => return Err(engine_refused("cannot create the deployment's network", &e)),
            }
        }
        Err(last)
    }

    /// This agent's networks of the deployments in `keep`, deployment to network id; the others
    /// are removed (their containers are gone by now), as are duplicates.
    async fn networks_except(&self, keep: &HashSet<&str>) -> HashMap<String, String> {
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
            if keep.contains(deployment.as_str()) && !kept.contains_key(&deployment) {
                kept.insert(deployment, id);
                continue;
            }
            if let Err(e) = self.remove_network(&id).await {
                tracing::warn!(network = %id, error = %e, "cannot remove a network that should not exist");
            }
        }
        kept
    }

    /// Creates and starts a service container on the deployment's network.
    pub async fn create_and_start(
        &self,
        deployment: &str,
        node: &str,
        network: &str,
        spec: &ContainerSpec,
        auth: &[RegistryAuth],
    ) -> Result<Started, EngineError> {
        let name = self.container_name(deployment, &spec.name);
        let mut labels = HashMap::from([
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_DEPLOYMENT.to_owned(), deployment.to_owned()),
            (LABEL_CONTAINER.to_owned(), spec.name.clone()),
            (LABEL_SPEC.to_owned(), spec_hash(spec)),
        ]);
        if !node.is_empty() {
            labels.insert(LABEL_NODE.to_owned(), node.to_owned());
        }
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
                // An ephemeral node port, on every interface: the ingress may run elsewhere.
                port_bindings: spec.port.map(|p| {
                    HashMap::from([(format!("{p}/tcp"), Some(vec![PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(String::new()) }]))])
                }),
                ..Default::default()
            }),
            exposed_ports: spec.port.map(|p| vec![format!("{p}/tcp")]),
            // Others in the deployment reach it by its name.
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings { aliases: Some(vec![spec.name.clone()]), ..Default::default() },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        let id = self.create_pulling(&spec.image, options, body, auth).await?;
        self.client.start_container(&id, None).await.map_err(|e| engine_refused("cannot start", &e))?;
        self.started(&id, deployment, spec.port).await
    }

    /// The engine's digest of `image` (when it knows one) and its size in bytes, if it has it.
    pub(crate) async fn inspect_image(&self, image: &str) -> Option<(Option<String>, u64)> {
        let found = self.client.inspect_image(image).await.ok()?;
        let repository = image.split_once('@').map_or_else(|| image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(image, |(r, _)| r), |(r, _)| r);
        let digest = image.split_once('@').map(|(_, d)| d.to_owned()).or_else(|| {
            let digests = found.repo_digests.unwrap_or_default();
            digests
                .iter()
                .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repository))
                .or(digests.first())
                .and_then(|d| d.split_once('@'))
                .map(|(_, d)| d.to_owned())
        });
        Some((digest, u64::try_from(found.size.unwrap_or(0)).unwrap_or(0)))
    }

    /// Pulls `image` unless the engine has it: how long the pull took, or `None` when there was
    /// none.
    pub(crate) async fn ensure_image(&self, image: &str, auth: &[RegistryAuth]) -> Result<Option<Duration>, EngineError> {
        if self.client.inspect_image(image).await.is_ok() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        self.pull(image, auth).await?;
        Ok(Some(started.elapsed()))
    }

    /// Pulls `image`, with the credentials of its registry when `auth` has them.
    pub(crate) async fn pull(&self, image: &str, auth: &[RegistryAuth]) -> Result<(), EngineError> {
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let registry = registry_of(image);
        let credentials = auth.iter().find(|a| a.registry == registry).map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.registry.clone()),
            ..Default::default()
        });
        let pull = self.client.create_image(Some(options), None, credentials).try_collect::<Vec<_>>();
        let started = std::time::Instant::now();
        let pulled = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(engine_refused(&format!("cannot pull {image}"), &e)),
            Err(_) => Err(EngineError::PullTimedOut { image: image.to_owned(), secs: PULL_TIMEOUT.as_secs() }),
        };
        if let Some(metrics) = nullops_metrics::recording() {
            let outcome = if pulled.is_ok() { nullops_metrics::PullOutcome::pulled } else { nullops_metrics::PullOutcome::failed };
            metrics.image_pulls.get_or_create(&nullops_metrics::PullLabels { outcome }).inc();
            metrics.image_pull_seconds.observe(started.elapsed().as_secs_f64());
        }
        pulled
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
                    ports: s.ports.unwrap_or_default().iter().filter_map(|p| Some((p.private_port, p.public_port?))).collect(),
                })
            })
            .collect())
    }

    /// Waits until a container of this scope dies, is removed or runs out of memory (true), or
    /// the engine's event stream ends (false).
    pub async fn container_changed(events: &mut (impl futures::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>> + Unpin)) -> bool {
        while let Some(Ok(event)) = events.next().await {
            if matches!(event.action.as_deref(), Some("die" | "destroy" | "oom")) {
                return true;
            }
        }
        false
    }

    /// The engine's events about this scope's containers.
    pub fn container_events(&self) -> impl futures::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>> + Unpin + '_ {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![format!("{LABEL_SCOPE}={}", self.scope)]),
            ("event".to_owned(), vec!["die".to_owned(), "destroy".to_owned(), "oom".to_owned()]),
        ]);
        Box::pin(self.client.events(Some(bollard::query_parameters::EventsOptions { filters: Some(filters), ..Default::default() })))
    }

    /// Every running service container of this scope.
    pub async fn running_containers(&self) -> Vec<RunningContainer> {
        self.managed(true).await.unwrap_or_default().into_iter().map(|m| RunningContainer { deployment: m.deployment, name: m.name, id: m.id }).collect()
    }

    /// CPU and memory of `containers` as the engine's stats give them: one API call each, so
    /// only for containers whose control group the agent cannot read (see `cgroup.rs`).
    pub async fn container_stats(&self, containers: Vec<RunningContainer>) -> Vec<ContainerUsage> {
        futures::stream::iter(containers)
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

fn failed_everywhere(maintained: &[Maintained<'_>], reason: &EngineError) -> Vec<ActualDeployment> {
    let reason = reason.to_string();
    maintained
        .iter()
        .map(|d| ActualDeployment {
            id: d.id.to_owned(),
            attempt: 0,
            run: Default::default(),
            containers: d
                .containers
                .iter()
                .map(|c| ActualContainer { name: c.name.clone(), state: ContainerState::Failed { reason: reason.clone() }, host_port: None })
                .collect(),
        })
        .collect()
}

/// The node port `port/tcp` is published on.
fn published(ports: Option<&bollard::models::PortMap>, port: u16) -> Option<u16> {
    let bindings = ports?.get(&format!("{port}/tcp"))?.as_ref()?;
    bindings.iter().find_map(|b| b.host_port.as_ref()?.parse().ok())
}

/// The id of the container this process runs in, if any: Docker bind-mounts the container's
/// own `hostname` file from `/var/lib/docker/containers/<id>/`, which `/proc/self/mountinfo`
/// shows whatever the cgroup layout.
fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) && rest.contains("/hostname")).then(|| id.to_owned())
    })
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
