//! The NullOps node agent.
//!
//! A TLS WebSocket server (it never dials out, so it needs no control plane address). The control
//! plane connects, proves it knows the node token, and sends the full desired state; the agent
//! makes the local Docker engine match it, reports what runs, and reports CPU and memory use every
//! few seconds. One control plane connection at a time: a new authenticated one replaces the old.
//!
//! `handshake.rs` checks each incoming connection, `session.rs` serves one, `docker.rs` and
//! `usage.rs` touch the machine, `state.rs` and `identity.rs` keep what must survive restarts.

mod cgroup;
mod docker;
mod files;
mod handshake;
pub mod identity;
mod logs;
mod pipeline_run;
pub mod plugin_run;
pub mod prefetch;
mod probe;
mod runner;
mod session;
pub mod state;
pub mod subnets;
mod usage;
mod words;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullops_wire::message::{ActualDeployment, ContainerState, DesiredDeployment, RunPhase, RunStatus, ServiceHealth, Usage};
use nullops_wire::{NodeToken, RequestId, Thumbprint, TokenHash};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use docker::{Engine, LABEL_SCOPE};

/// How often the agent reports resource use.
const USAGE_EVERY: Duration = Duration::from_secs(3);
/// Connections in the TLS and WebSocket handshake at once. Every connection is accepted at
/// once (none waits behind a silent one); past this many, the oldest handshake still going is
/// dropped for the newcomer: a crowd of silent sockets ages out first, while the control
/// plane's handshake takes milliseconds. Each handshake is bounded in time, too
/// (see `handshake.rs`).
const MAX_HANDSHAKES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent identity: {0}")]
    Identity(String),
    #[error("{0}")]
    Io(String),
    #[error("Docker engine: {0}")]
    Docker(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
}

pub struct AgentConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token: NodeToken,
    /// Names this agent's containers; agents sharing one Docker engine need distinct scopes.
    pub scope: String,
    /// The protocol version spoken: [`nullops_wire::PROTOCOL_VERSION`] but in compatibility tests.
    pub protocol: u32,
    /// How often the engine is reconciled again with the last desired state, so containers that
    /// stopped or appeared behind the agent's back are dealt with without waiting for a change.
    pub reconcile_every: Duration,
    /// Where deployment networks take their subnets.
    pub network_pool: subnets::Pool,
    /// What images pulled ahead of need may take on the engine's disk, in MiB
    /// ([`prefetch::DEFAULT_BUDGET_MIB`] unless set).
    pub prefetch_budget_mib: u64,
    /// The reconcile loop does not run: the baseline of `nullops bench idle` (the same agent
    /// serving its session, its engine untouched). Never set otherwise.
    pub reconcile_paused: bool,
}

/// The default of [`AgentConfig::reconcile_every`].
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// The desired state the agent was last given, and by which request.
#[derive(Debug, Clone, Default)]
struct Desired {
    request_id: Option<RequestId>,
    deployments: Vec<DesiredDeployment>,
    /// Deployments of that request the agent cannot take: reported failed, never run.
    refused: Vec<Refused>,
}

/// A deployment refused on its own (see `nullops_wire::message::check_deployment`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    id: String,
    attempt: u32,
    reason: String,
}

impl Refused {
    /// How it is reported: a run that failed before it started.
    fn report(&self) -> ActualDeployment {
        let phase = RunPhase::Failed { step: None, reason: format!("the node's agent refused it: {}", self.reason), exit_code: None, oom_killed: false };
        ActualDeployment { id: self.id.clone(), attempt: self.attempt, run: RunStatus { phase, steps: vec![], health: vec![] }, containers: vec![] }
    }
}

/// What runs after applying a request.
#[derive(Debug, Clone, PartialEq)]
struct Actual {
    request_id: Option<RequestId>,
    deployments: Vec<ActualDeployment>,
}

/// What sessions share.
struct Shared {
    protocol: u32,
    token_hash: TokenHash,
    saved: state::Saved,
    desired: watch::Sender<Desired>,
    actual: watch::Receiver<Option<Actual>>,
    usage: watch::Receiver<Option<Usage>>,
    /// Cancels the live session when a newer one is authenticated.
    current: Mutex<Option<CancellationToken>>,
    runs: Arc<runner::Runs>,
    logs: Arc<logs::LogBook>,
    /// The images the control plane last asked the node to hold, and what it holds of them.
    prefetch: watch::Sender<prefetch::Wanted>,
    held: watch::Receiver<Vec<nullops_wire::message::HeldImage>>,
    hostname: String,
    docker_version: String,
}

/// An agent bound to its port, not yet serving.
pub struct Agent {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    thumbprint: Thumbprint,
    engine: docker::Engine,
    shared: Arc<Shared>,
    actual_tx: watch::Sender<Option<Actual>>,
    usage_tx: watch::Sender<Option<Usage>>,
    held_tx: watch::Sender<Vec<nullops_wire::message::HeldImage>>,
    reconcile_every: Duration,
    prefetch_budget_mib: u64,
    reconcile_paused: bool,
}

impl Agent {
    pub async fn bind(config: AgentConfig) -> Result<Agent, AgentError> {
        if !nullops_wire::message::is_dns_label(&config.scope) {
            return Err(AgentError::Config(format!("scope {:?} is not a DNS label (lower-case letters, digits, '-')", config.scope)));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| AgentError::Io(format!("{}: {e}", config.data_dir.display())))?;
        let identity = identity::load_or_generate(&config.data_dir)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AgentError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![identity.cert.clone()], identity.key)
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let listener = TcpListener::bind(config.listen).await.map_err(|error| AgentError::Listen { addr: config.listen, error })?;

        let saved = state::Saved::load(&config.data_dir);
        let (desired_before, runs_before) = saved.read(|s| (s.desired.clone(), s.runs.clone()));
        let engine = docker::Engine::connect(&config.scope, config.network_pool)?;
        let docker_version = tokio::time::timeout(Duration::from_secs(3), engine.version()).await.unwrap_or_default();
        let (desired, _) = watch::channel(Desired { request_id: None, deployments: desired_before, refused: vec![] });
        let logs = Arc::new(logs::LogBook::default());
        let runs = runner::Runs::restore(runs_before, logs.clone());
        let (actual_tx, actual) = watch::channel(None);
        let (usage_tx, usage) = watch::channel(None);
        let (prefetch, _) = watch::channel(prefetch::Wanted::default());
        let (held_tx, held) = watch::channel(Vec::new());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let shared = Arc::new(Shared {
            protocol: config.protocol,
            token_hash: config.token.hash(),
            saved,
            desired,
            actual,
            usage,
            current: Mutex::new(None),
            runs,
            logs,
            prefetch,
            held,
            hostname,
            docker_version,
        });
        Ok(Agent {
            listener,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            thumbprint: identity.thumbprint,
            engine,
            shared,
            actual_tx,
            usage_tx,
            held_tx,
            reconcile_every: config.reconcile_every,
            prefetch_budget_mib: config.prefetch_budget_mib,
            reconcile_paused: config.reconcile_paused,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) {
        let Agent { listener, tls, engine, shared, actual_tx, usage_tx, held_tx, reconcile_every, prefetch_budget_mib, reconcile_paused, .. } = self;
        let mut tasks = tokio::task::JoinSet::new();
        let engine_changed = Arc::new(tokio::sync::Notify::new());
        tasks.spawn(watch_engine(engine.clone(), engine_changed.clone(), shutdown.clone()));
        // The running containers each reconcile pass found, for the usage loop: it needs no
        // listing of its own.
        let (running_tx, running) = watch::channel(Vec::new());
        if reconcile_paused {
            tracing::warn!("the reconcile loop is paused: this agent leaves its engine as it is");
        } else {
            tasks.spawn(reconcile_loop(engine.clone(), shared.clone(), actual_tx, running_tx, engine_changed, reconcile_every, shutdown.clone()));
        }
        tasks.spawn(prefetch::run(engine.clone(), shared.prefetch.subscribe(), held_tx, prefetch_budget_mib, shutdown.clone()));
        tasks.spawn(usage_loop(engine.clone(), usage_tx, running, shutdown.clone()));
        let handshakes = Arc::new(Handshakes::default());
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (tls, shared, shutdown, handshakes) = (tls.clone(), shared.clone(), shutdown.clone(), handshakes.clone());
            let (id, dropped) = handshakes.begin();
            tokio::spawn(async move {
                let ws = tokio::select! {
                    _ = dropped.cancelled() => {
                        handshake::refused(nullops_metrics::Refusal::slow, &peer, &format!("still in its handshake when {MAX_HANDSHAKES} newer ones came"));
                        None
                    }
                    ws = handshake::accept(tcp, peer, &tls, &shared) => ws,
                };
                handshakes.end(id);
                if let Some(ws) = ws {
                    session::run(ws, peer, shared, shutdown).await;
                }
            });
        }
        if let Some(current) = shared.current.lock().expect("session lock").take() {
            current.cancel();
        }
        tasks.shutdown().await;
        // A plugin's container cannot outlive this process's run of it (its input and output
        // are attached here): each one in progress is ended now, not left running until the
        // next start. Services keep running: the next start takes them over.
        match tokio::time::timeout(STOP_PLUGINS_WITHIN, engine.end_plugin_runs()).await {
            Ok(0) => {}
            Ok(ended) => tracing::info!(plugins = ended, "ended the plugin containers of runs in progress"),
            Err(_) => tracing::warn!("could not end every plugin container within {} s; the next start sweeps the rest", STOP_PLUGINS_WITHIN.as_secs()),
        }
    }
}

/// Bound on ending the plugin containers in progress when the agent stops.
const STOP_PLUGINS_WITHIN: Duration = Duration::from_secs(3);

/// The handshakes going on, oldest first, each with a token that drops it.
#[derive(Default)]
struct Handshakes {
    going: Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
}

impl Handshakes {
    /// Registers a new handshake; drops the oldest when there are too many.
    fn begin(&self) -> (u64, CancellationToken) {
        let mut going = self.going.lock().expect("handshakes lock");
        going.0 += 1;
        let id = going.0;
        let token = CancellationToken::new();
        going.1.push_back((id, token.clone()));
        if going.1.len() > MAX_HANDSHAKES {
            if let Some((_, oldest)) = going.1.pop_front() {
                oldest.cancel();
            }
        }
        (id, token)
    }

    fn end(&self, id: u64) {
        let mut going = self.going.lock().expect("handshakes lock");
        going.1.retain(|(i, _)| *i != id);
    }
}

/// Applies every new desired state: starts and cancels runs, keeps the services of finished runs
/// running and removes everything else, again every `every`, whenever a run progresses and
/// whenever one of its containers dies or vanishes;
/// publishes the outcome when it differs from the last and saves how the runs went.
async fn reconcile_loop(
    engine: docker::Engine,
    shared: Arc<Shared>,
    actual: watch::Sender<Option<Actual>>,
    running: watch::Sender<Vec<docker::RunningContainer>>,
    engine_changed: Arc<tokio::sync::Notify>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut desired = shared.desired.subscribe();
    let mut progressed = shared.runs.subscribe();
    let mut saved = shared.runs.records();
    loop {
        let target = desired.borrow_and_update().clone();
        progressed.mark_unchanged();
        // Only what the control plane sent is applied: the saved state before any connection
        // is just a memory, the next connection brings the truth.
        if target.request_id.is_some() {
            let (mut deployments, running_now) = apply(&engine, &shared.runs, &shared.logs, &target.deployments).await;
            running.send_if_modified(|last| {
                let changed = *last != running_now;
                if changed {
                    *last = running_now;
                }
                changed
            });
            deployments.extend(target.refused.iter().map(Refused::report));
            deployments.sort_by(|a, b| a.id.cmp(&b.id));
            let now = Some(Actual { request_id: target.request_id, deployments });
            actual.send_if_modified(|last| {
                let changed = *last != now;
                if changed {
                    *last = now;
                }
                changed
            });
            let records = shared.runs.records();
            if records != saved {
                let kept = records.clone();
                shared.persist(|state| state.runs = kept).await;
                saved = records;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            changed = desired.changed() => if changed.is_err() { return },
            _ = progressed.changed() => {}
            // A container of ours died or vanished: deal with it now, not at the next tick.
            _ = engine_changed.notified() => {}
        }
    }
}

/// Follows the engine's events about this agent's containers and wakes the reconcile loop on
/// each death, removal or OOM kill; resubscribes when the stream ends, after a pause that grows
/// while the stream keeps ending at once (an engine that refuses it must not cost a pass every
/// few milliseconds).
async fn watch_engine(engine: docker::Engine, changed: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    let mut pause = RESUBSCRIBE_MIN;
    while !shutdown.is_cancelled() {
        let subscribed = tokio::time::Instant::now();
        let mut events = engine.container_events();
        loop {
            let changed_now = tokio::select! {
                _ = shutdown.cancelled() => return,
                changed_now = docker::Engine::container_changed(&mut events) => changed_now,
            };
            // An ended stream may have missed something: look once, then resubscribe.
            changed.notify_one();
            if !changed_now {
                break;
            }
        }
        pause = resubscribe_pause(pause, subscribed.elapsed());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

const RESUBSCRIBE_MIN: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(10);

/// The pause before subscribing again to the engine's events: the least after a stream that
/// lasted, doubling (up to 10 s) after one that ended within a second.
fn resubscribe_pause(last: Duration, lasted: Duration) -> Duration {
    if lasted >= Duration::from_secs(1) {
        RESUBSCRIBE_MIN
    } else {
        (last * 2).min(RESUBSCRIBE_MAX)
    }
}

/// One pass: runs in step with `desired`, the engine in step with the runs; what each
/// deployment's run and containers are now, and which containers run.
async fn apply(
    engine: &docker::Engine,
    runs: &Arc<runner::Runs>,
    logs: &Arc<logs::LogBook>,
    desired: &[DesiredDeployment],
) -> (Vec<ActualDeployment>, Vec<docker::RunningContainer>) {
    runs.sync(engine, desired);
    let view = runs.view();
    let in_run: HashSet<String> = view.iter().filter(|(_, v)| v.active).map(|(id, _)| id.clone()).collect();
    let mut maintained = Vec::new();
    for d in desired {
        let Some(v) = view.get(&d.id).filter(|v| !v.active && v.record.attempt == d.attempt && v.record.status.phase == RunPhase::Running) else { continue };
        match runner::service_specs(d, &v.record.outputs) {
            Ok(containers) => maintained.push(docker::Maintained { id: &d.id, node: d.node(), containers, registry_auth: &d.registry_auth }),
            Err((step, e)) => tracing::warn!(deployment = %d.id, %step, error = %e, "cannot rebuild a service's container"),
        }
    }
    let mut containers: std::collections::HashMap<String, ActualDeployment> =
        engine.reconcile(&maintained, &in_run).await.into_iter().map(|a| (a.id.clone(), a)).collect();
    // Services of finished runs have their output followed (again, after a restart of the
    // agent: from now on).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i32);
    for d in desired.iter().filter(|d| maintained.iter().any(|m| m.id == d.id)) {
        runs.watch_health(engine, d);
    }
    let running = engine.running_containers().await;
    for c in &running {
        if let Some(d) = maintained.iter().find(|m| m.id == c.deployment).and_then(|m| desired.iter().find(|d| d.id == m.id)) {
            logs.follow(engine, &c.id, &c.deployment, &c.name, now, d.secrets.0.clone());
        }
    }
    // Desired deployments, and those still being cancelled.
    let reported = view.into_iter().filter(|(id, v)| v.active || desired.iter().any(|d| &d.id == id));
    let mut actual: Vec<ActualDeployment> = reported
        .map(|(id, v)| {
            let mut run = v.record.status;
            let containers = containers.remove(&id).map(|a| a.containers).unwrap_or_default();
            if run.phase == RunPhase::Running {
                // Once running, a service is healthy while its container runs and its probes
                // (see `runner::watch`) pass.
                let probed = std::mem::take(&mut run.health);
                run.health = containers
                    .iter()
                    .map(|c| match &c.state {
                        ContainerState::Failed { reason } => ServiceHealth { service: c.name.clone(), healthy: false, detail: reason.clone() },
                        ContainerState::Running => probed.iter().find(|h| h.service == c.name).cloned().unwrap_or_else(|| ServiceHealth {
                            service: c.name.clone(),
                            healthy: true,
                            detail: "running".into(),
                        }),
                    })
                    .collect();
            }
            ActualDeployment { id, attempt: v.record.attempt, run, containers }
        })
        .collect();
    actual.sort_by(|a, b| a.id.cmp(&b.id));
    (actual, running)
}

impl Shared {
    /// Changes the saved state and writes it (fsync off the runtime's threads); a failure is
    /// logged.
    async fn persist(&self, change: impl FnOnce(&mut state::AgentState)) {
        if let Err(e) = self.saved.change(change).await {
            tracing::error!(error = %e, "cannot save the agent state");
        }
    }
}

async fn usage_loop(
    engine: docker::Engine,
    usage: watch::Sender<Option<Usage>>,
    running: watch::Receiver<Vec<docker::RunningContainer>>,
    shutdown: CancellationToken,
) {
    let mut sampler = usage::Sampler::default();
    let mut containers = usage::ContainerSampler::default();
    let mut every = tokio::time::interval(USAGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        // The node's own figures always (a new connection gets them at once, and admission
        // needs them); the containers' only while someone listens.
        let sampled = if usage.receiver_count() > 1 {
            let now = running.borrow().clone();
            containers.sample(&engine, now).await
        } else {
            vec![]
        };
        usage.send_replace(Some(sampler.sample(sampled).await));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stream_that_keeps_failing_is_resubscribed_ever_more_slowly() {
        let quick = Duration::from_millis(5);
        let mut pause = RESUBSCRIBE_MIN;
        let pauses: Vec<Duration> = (0..8)
            .map(|_| {
                pause = resubscribe_pause(pause, quick);
                pause
            })
            .collect();
        assert_eq!(pauses[0], Duration::from_millis(400));
        assert_eq!(*pauses.last().unwrap(), RESUBSCRIBE_MAX);
        assert_eq!(resubscribe_pause(RESUBSCRIBE_MAX, Duration::from_secs(60)), RESUBSCRIBE_MIN);
    }
}
