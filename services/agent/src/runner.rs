//! Runs a deployment's pipeline on this node: every step whose needs have succeeded starts at
//! once (independent branches run in parallel), services are started on the deployment's network
//! and probed until healthy, plugins run to their end; the outputs of finished steps and the
//! project's secrets are filled into later steps. A failure or a cancel stops new starts, stops
//! what runs, and rolls back: everything the run created is removed.
//!
//! The run's progress lives in [`Runs`], which the reconcile loop reports to the control plane
//! and saves (without secrets) so that a restarted agent knows what it had finished.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline_run::{redact, substitute, substitute_json, Outputs, RunPlan};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use nullops_wire::message::{
    ContainerSpec, DesiredDeployment, HealthProbe, PluginStep, ProbeCheck, RunPhase, RunStatus, ServiceHealth, ServiceStep, StepAction, StepRunState,
    StepStatus, PIPELINE_LOG,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::docker::{Engine, LABEL_DEPLOYMENT, LABEL_NODE};
use crate::logs::LogBook;
use crate::plugin_run::PluginRun;
use crate::probe;

/// How long a service may take to become healthy, on top of its probe's interval × retries.
const STARTUP_GRACE: Duration = Duration::from_secs(60);
/// Probes while a service starts come at most this far apart (Docker's `start_interval`), so
/// a fast service is seen healthy fast whatever its steady interval.
const STARTUP_PROBE_EVERY: Duration = Duration::from_millis(200);
/// Most bytes of a step's detail (its last output or error) kept and reported.
const MAX_DETAIL: usize = 2048;
/// The detail of a step that was running when the agent stopped.
const INTERRUPTED: &str = "interrupted: the agent stopped while this step ran";

/// One deployment's run on this node, as reported and saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub attempt: u32,
    pub status: RunStatus,
    /// What finished steps returned, for later steps and for recreating services.
    pub outputs: Outputs,
}

struct Entry {
    record: RunRecord,
    /// Set while the run's task works; cancelling it stops the run and rolls it back.
    active: Option<CancellationToken>,
    /// A run interrupted by a restart of the agent: what it created is still there.
    leftovers: bool,
    /// A watcher probes the services of this (running) attempt.
    watched: bool,
}

/// The runs of this node's deployments.
pub struct Runs {
    entries: Mutex<HashMap<String, Entry>>,
    logs: Arc<LogBook>,
    /// Poked on every change of a run, so the reconcile loop reports it.
    changed: watch::Sender<()>,
}

/// What the reconcile loop sees of a run.
pub struct RunView {
    pub record: RunRecord,
    pub active: bool,
}

impl Runs {
    /// The runs a previous life of the agent saved. A run that was still going has lost its
    /// task: the steps it was running failed (interrupted), and it is rolled back like any
    /// failed run when the control plane next asks for it; until then it still reads as
    /// deploying, so that its failure is reported only once everything it made is gone.
    pub fn restore(saved: BTreeMap<String, RunRecord>, logs: Arc<LogBook>) -> Arc<Runs> {
        let entries = saved
            .into_iter()
            .map(|(id, mut record)| {
                let interrupted = record.status.phase == RunPhase::Deploying;
                if interrupted {
                    for step in record.status.steps.iter_mut().filter(|s| s.state == StepRunState::Running) {
                        step.state = StepRunState::Failed;
                        step.detail = INTERRUPTED.into();
                    }
                }
                (id, Entry { record, active: None, leftovers: interrupted, watched: false })
            })
            .collect();
        Arc::new(Runs { entries: Mutex::new(entries), logs, changed: watch::channel(()).0 })
    }

    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn view(&self) -> HashMap<String, RunView> {
        let entries = self.entries.lock().expect("runs lock");
        entries.iter().map(|(id, e)| (id.clone(), RunView { record: e.record.clone(), active: e.active.is_some() })).collect()
    }

    /// The saved form: every run's record.
    pub fn records(&self) -> BTreeMap<String, RunRecord> {
        let entries = self.entries.lock().expect("runs lock");
        entries.iter().map(|(id, e)| (id.clone(), e.record.clone())).collect()
    }

    /// Starts, stops and forgets runs so that they match `desired`: a deployment without a run
    /// of its attempt gets one (once an older attempt's rollback is over), a run of a
    /// deployment no longer desired is cancelled, and a finished one forgotten.
    ///
    /// Wakes the reconcile loop only when it changed something: a pass that finds the runs in
    /// step with `desired` must not wake the loop for another pass (an idle agent stays idle).
    pub fn sync(self: &Arc<Self>, engine: &Engine, desired: &[DesiredDeployment]) {
        let mut entries = self.entries.lock().expect("runs lock");
        let wanted: HashMap<&str, &DesiredDeployment> = desired.iter().map(|d| (d.id.as_str(), d)).collect();
        let before = entries.len();
        entries.retain(|id, entry| match (wanted.get(id.as_str()), &entry.active) {
            (Some(_), _) => true,
            (None, Some(cancel)) => {
                // Cancelling is the run's own change to report (it finishes), not this pass's.
                cancel.cancel();
                true
            }
            (None, None) => false,
        });
        let mut changed = entries.len() != before;
        for d in desired {
            match entries.get(&d.id) {
                Some(e) if e.record.attempt == d.attempt => {
                    if e.leftovers && e.active.is_none() {
                        self.start_rollback(engine, &d.id, &mut entries);
                        changed = true;
                    }
                }
                Some(Entry { active: Some(cancel), .. }) => cancel.cancel(),
                _ => {
                    changed = true;
                    let cancel = CancellationToken::new();
                    let status = RunStatus {
                        phase: RunPhase::Deploying,
                        steps: d.steps.iter().map(|s| StepStatus { id: s.id.clone(), state: StepRunState::Pending, detail: String::new() }).collect(),
                        health: vec![],
                    };
                    let record = RunRecord { attempt: d.attempt, status, outputs: Outputs::new() };
                    entries.insert(d.id.clone(), Entry { record, active: Some(cancel.clone()), leftovers: false, watched: false });
                    // The run joins the trace of the placement that asked for it.
                    let span = tracing::info_span!("agent.run", deployment = d.id.as_str(), attempt = d.attempt, steps = d.steps.len());
                    nullops_telemetry::follows(&span, d.trace.as_deref());
                    tokio::spawn(run(engine.clone(), d.clone(), self.clone(), cancel).instrument(span));
                }
            }
        }
        drop(entries);
        if changed {
            self.changed.send_replace(());
        }
    }

    /// Removes what an interrupted run left, marking its started steps rolled back, then
    /// fails the run naming the step that failed (or was interrupted), as any rollback does.
    fn start_rollback(self: &Arc<Self>, engine: &Engine, id: &str, entries: &mut HashMap<String, Entry>) {
        let Some(entry) = entries.get_mut(id) else { return };
        entry.active = Some(CancellationToken::new());
        entry.leftovers = false;
        let (engine, runs, id) = (engine.clone(), self.clone(), id.to_owned());
        tokio::spawn(async move {
            runs.logs.write(&id, PIPELINE_LOG, "the agent restarted during the run: rolling back", &BTreeMap::new());
            let removed = engine.remove_deployment(&id).await;
            if let Err(e) = &removed {
                tracing::warn!(deployment = %id, error = %e, "rollback incomplete; the reconcile sweeps the rest");
            }
            runs.update(&id, |r| {
                for step in r.status.steps.iter_mut().filter(|s| matches!(s.state, StepRunState::Running | StepRunState::Succeeded)) {
                    step.state = StepRunState::RolledBack;
                }
                r.status.phase = interrupted_failure(&r.status.steps);
                r.status.health.clear();
            });
            runs.logs.write(&id, PIPELINE_LOG, "rolled back: everything the run created is removed", &BTreeMap::new());
            runs.finish(&id);
        });
    }

    /// Changes a run's record; wakes the reconcile loop only when the record is different.
    fn update(&self, id: &str, change: impl FnOnce(&mut RunRecord)) {
        let changed = match self.entries.lock().expect("runs lock").get_mut(id) {
            Some(entry) => {
                let before = entry.record.clone();
                change(&mut entry.record);
                entry.record != before
            }
            None => false,
        };
        if changed {
            self.changed.send_replace(());
        }
    }

    fn step(&self, id: &str, step: &str, state: StepRunState, detail: String) {
        self.update(id, |r| {
            if let Some(s) = r.status.steps.iter_mut().find(|s| s.id == step) {
                s.state = state;
                s.detail = detail;
            }
        });
    }

    fn health(&self, id: &str, health: ServiceHealth) {
        self.update(id, |r| {
            r.status.health.retain(|h| h.service != health.service);
            r.status.health.push(health);
        });
    }

    /// Starts probing the services of a running deployment at their interval, unless that runs
    /// already; it ends when the deployment no longer runs this attempt.
    pub fn watch_health(self: &Arc<Self>, engine: &Engine, d: &DesiredDeployment) {
        let outputs = {
            let mut entries = self.entries.lock().expect("runs lock");
            let Some(e) = entries.get_mut(&d.id) else { return };
            if e.watched || e.active.is_some() || e.record.attempt != d.attempt || e.record.status.phase != RunPhase::Running {
                return;
            }
            e.watched = true;
            e.record.outputs.clone()
        };
        tokio::spawn(watch(engine.clone(), d.clone(), outputs, self.clone()));
    }

    /// Whether attempt `attempt` of deployment `id` is running and no other task works on it.
    fn runs_still(&self, id: &str, attempt: u32) -> bool {
        let entries = self.entries.lock().expect("runs lock");
        entries.get(id).is_some_and(|e| e.active.is_none() && e.record.attempt == attempt && e.record.status.phase == RunPhase::Running)
    }

    /// The health last recorded of a deployment's service.
    fn healthy(&self, id: &str, service: &str) -> Option<bool> {
        let entries = self.entries.lock().expect("runs lock");
        entries.get(id)?.record.status.health.iter().find(|h| h.service == service).map(|h| h.healthy)
    }

    fn unwatch(&self, id: &str) {
        if let Some(e) = self.entries.lock().expect("runs lock").get_mut(id) {
            e.watched = false;
        }
    }

    /// The run's task ended.
    fn finish(&self, id: &str) {
        let finished = self.entries.lock().expect("runs lock").get_mut(id).is_some_and(|entry| entry.active.take().is_some());
        if finished {
            self.changed.send_replace(());
        }
    }
}

/// How an interrupted run failed: at the step that failed (or was interrupted), else as a whole.
fn interrupted_failure(steps: &[StepStatus]) -> RunPhase {
    let failed = steps.iter().find(|s| s.state == StepRunState::Failed);
    let reason = match failed {
        Some(s) if s.detail == INTERRUPTED => {
            format!("step {} was interrupted: the agent restarted while it ran; everything the run created was removed", s.id)
        }
        Some(s) => s.detail.clone(),
        None => "the agent restarted during the run; everything the run created was removed".to_owned(),
    };
    RunPhase::Failed { step: failed.map(|s| s.id.clone()), reason, exit_code: None, oom_killed: false }
}

/// The containers of a deployment's services, with their environments filled in.
pub fn service_specs(d: &DesiredDeployment, outputs: &Outputs) -> Result<Vec<ContainerSpec>, (String, Unfilled)> {
    d.steps
        .iter()
        .filter_map(|s| match &s.action {
            StepAction::Service(service) => Some(fill_container(&service.container, outputs, &d.secrets.0).map_err(|e| (s.id.clone(), e))),
            StepAction::Plugin(_) => None,
        })
        .collect()
}

/// A service's environment variable whose `${{ … }}` cannot be filled in.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {variable}: {why}")]
pub struct Unfilled {
    variable: String,
    why: crate::pipeline_run::SubstituteError,
}

fn fill_container(spec: &ContainerSpec, outputs: &Outputs, secrets: &BTreeMap<String, String>) -> Result<ContainerSpec, Unfilled> {
    let mut filled = spec.clone();
    for (name, value) in filled.env.iter_mut() {
        *value = substitute(value, outputs, secrets).map_err(|why| Unfilled { variable: name.clone(), why })?.text;
    }
    Ok(filled)
}

/// A step's end: its outputs, or why it failed.
struct Failure {
    reason: String,
    exit_code: Option<i64>,
    oom_killed: bool,
}

impl Failure {
    fn new(reason: impl std::fmt::Display) -> Self {
        Failure { reason: reason.to_string(), exit_code: None, oom_killed: false }
    }
}

type StepResult = Result<(BTreeMap<String, String>, String), Failure>;

async fn run(engine: Engine, d: DesiredDeployment, runs: Arc<Runs>, cancel: CancellationToken) {
    let started = Instant::now();
    let secrets = &d.secrets.0;
    let log = |text: &str| runs.logs.write(&d.id, PIPELINE_LOG, text, secrets);
    let steps = d.steps.len();
    log(&format!("run {} started: {steps} step{}", d.attempt, if steps == 1 { "" } else { "s" }));
    let needs: BTreeMap<String, BTreeSet<String>> = d.steps.iter().map(|s| (s.id.clone(), s.needs.iter().cloned().collect())).collect();
    let mut plan = RunPlan::from_needs(needs);
    let mut outputs = Outputs::new();
    let mut failure: Option<(Option<String>, Failure)> = None;
    let network = tokio::select! {
        _ = cancel.cancelled() => Err(Failure::new("cancelled")),
        n = engine.deployment_network(&d.id) => n.map_err(Failure::new),
    };
    match network {
        Err(f) => failure = Some((None, f)),
        Ok(network) => {
            let mut running = FuturesUnordered::new();
            loop {
                for id in plan.ready() {
                    plan.start(&id);
                    runs.step(&d.id, &id, StepRunState::Running, String::new());
                    log(&format!("step {id} started"));
                    let step = d.steps.iter().find(|s| s.id == id).expect("the plan's steps are the deployment's");
                    let (engine, runs, network, outputs) = (&engine, &runs, network.as_str(), outputs.clone());
                    let d = &d;
                    running.push(Box::pin(async move {
                        let result = match &step.action {
                            StepAction::Service(service) => run_service(engine, runs, d, &step.id, network, service, &outputs).await,
                            StepAction::Plugin(plugin) => run_plugin(engine, &runs.logs, d, &step.id, network, plugin, &outputs).await,
                        };
                        (step.id.clone(), result)
                    }));
                }
                if running.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = cancel.cancelled() => {
                        plan.cancel();
                        break;
                    }
                    Some((id, result)) = running.next() => match result {
                        Ok((produced, detail)) => {
                            plan.succeeded(&id);
                            log(&format!("step {id} succeeded: {detail}"));
                            outputs.insert(id.clone(), produced);
                            runs.step(&d.id, &id, StepRunState::Succeeded, cut(&redact(&detail, secrets)));
                        }
                        Err(f) => {
                            plan.failed(&id);
                            log(&format!("step {id} failed: {}", f.reason));
                            let detail = cut(&redact(&f.reason, secrets));
                            runs.step(&d.id, &id, StepRunState::Failed, detail.clone());
                            failure = Some((Some(id), Failure { reason: detail, ..f }));
                            // Nothing else is waited for: the rollback removes what runs.
                            break;
                        }
                    },
                }
            }
        }
    }
    if failure.is_none() && !cancel.is_cancelled() && plan.succeeded_all() {
        tracing::info!(deployment = %d.id, attempt = d.attempt, elapsed_ms = started.elapsed().as_millis() as u64, "deployment running");
        log(&format!("every step succeeded in {} ms: running", started.elapsed().as_millis()));
        runs.update(&d.id, |r| {
            r.outputs = outputs;
            r.status.phase = RunPhase::Running;
        });
        runs.finish(&d.id);
        return;
    }
    // Roll back: everything of the deployment goes, and the steps that ran say so.
    let (step, f) = failure.unwrap_or_else(|| (None, Failure::new("cancelled")));
    tracing::info!(deployment = %d.id, step = ?step, "rolling back the run");
    log(&format!("rolling back: {}", f.reason));
    if let Err(e) = engine.remove_deployment(&d.id).await {
        tracing::warn!(deployment = %d.id, error = %e, "rollback incomplete; the reconcile sweeps the rest");
    }
    for id in plan.rollback_order() {
        runs.update(&d.id, |r| {
            if let Some(s) = r.status.steps.iter_mut().find(|s| s.id == id && s.state != StepRunState::Failed) {
                s.state = StepRunState::RolledBack;
            }
        });
    }
    runs.update(&d.id, |r| {
        r.status.phase = RunPhase::Failed { step, reason: f.reason, exit_code: f.exit_code, oom_killed: f.oom_killed };
        r.status.health.clear();
    });
    log("rolled back: everything the run created is removed");
    runs.finish(&d.id);
}

/// Starts a service and waits until its probe passes: the service's step succeeds with its
/// address (`host`, `port`) as outputs.
/// Says in the pipeline's log that a step waited for its image to be pulled (an image the node
/// held, prefetched or from an earlier run, says nothing).
fn pulled(logs: &LogBook, d: &DesiredDeployment, image: &str, took: Option<Duration>) {
    if let Some(took) = took {
        logs.write(&d.id, PIPELINE_LOG, &format!("pulled image {image} in {:.1} s (the node did not hold it)", took.as_secs_f64()), &d.secrets.0);
    }
}

#[tracing::instrument(name = "agent.service", skip_all, fields(service = service.container.name.as_str()))]
async fn run_service(engine: &Engine, runs: &Runs, d: &DesiredDeployment, step: &str, network: &str, service: &ServiceStep, outputs: &Outputs) -> StepResult {
    let spec = fill_container(&service.container, outputs, &d.secrets.0).map_err(Failure::new)?;
    let image = spec.image.as_str();
    let ensured = engine.ensure_image(image, &d.registry_auth).instrument(tracing::info_span!("agent.pull", image)).await.map_err(Failure::new)?;
    pulled(&runs.logs, d, &spec.image, ensured);
    let started = engine
        .create_and_start(&d.id, d.node(), network, &spec, &d.registry_auth)
        .instrument(tracing::info_span!("agent.start", container = spec.name.as_str()))
        .await
        .map_err(Failure::new)?;
    let name = spec.name.clone();
    runs.logs.follow(engine, &started.id, &d.id, &name, 0, d.secrets.0.clone());
    let healthy = |detail: String| ServiceHealth { service: name.clone(), healthy: true, detail };
    let produced = BTreeMap::from([("host".to_owned(), name.clone()), ("port".to_owned(), spec.port.map(|p| p.to_string()).unwrap_or_default())]);
    let Some(probe) = &service.health else {
        runs.health(&d.id, healthy("running (no health check)".into()));
        return Ok((produced, "running".into()));
    };
    let deadline = Instant::now() + STARTUP_GRACE + Duration::from_secs(u64::from(probe.interval_secs) * u64::from(probe.retries));
    // What the step says while the service starts: the probe's latest answer, said again only
    // when it changes (each is a record in the deployment's history).
    let mut said = String::new();
    loop {
        if let Some(exited) = engine.exited(&started.id).await {
            let reason = if exited.oom_killed {
                format!("service {name} was killed: out of memory (limit {} MiB)", spec.memory_mib)
            } else {
                format!("service {name} exited with code {}", exited.exit_code.unwrap_or(-1))
            };
            return Err(Failure { reason, exit_code: exited.exit_code, oom_killed: exited.oom_killed });
        }
        let last = match check(engine, &started, &spec, probe).instrument(tracing::info_span!("agent.probe", service = name.as_str())).await {
            Ok(()) => {
                runs.health(&d.id, healthy("healthy".into()));
                return Ok((produced, "healthy".into()));
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Failure::new(format!("service {name} did not become healthy in {} s: {last}", deadline_secs(probe))));
        }
        let now = starting_detail(&last, deadline_secs(probe));
        if now != said {
            runs.step(&d.id, step, StepRunState::Running, cut(&redact(&now, &d.secrets.0)));
            said = now;
        }
        tokio::time::sleep(STARTUP_PROBE_EVERY.min(Duration::from_secs(u64::from(probe.interval_secs.max(1))))).await;
    }
}

/// A starting service's step while its probe fails: what the probe got, and how long it may.
fn starting_detail(answer: &impl std::fmt::Display, deadline_secs: u64) -> String {
    format!("not healthy yet: {answer} (gives up after {deadline_secs} s)")
}

fn deadline_secs(probe: &HealthProbe) -> u64 {
    STARTUP_GRACE.as_secs() + u64::from(probe.interval_secs) * u64::from(probe.retries)
}

/// Why a service's health check did not pass, as its step and health say it.
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error("the container has no address on the deployment's network")]
    NoAddress,
    #[error("an HTTP probe needs the service's port")]
    NoPort,
    #[error(transparent)]
    Probe(#[from] probe::ProbeFailed),
    #[error("{command} did not exit 0")]
    CommandFailed { command: String },
}

async fn check(engine: &Engine, started: &crate::docker::Started, spec: &ContainerSpec, probe: &HealthProbe) -> Result<(), Unhealthy> {
    let timeout = Duration::from_secs(u64::from(probe.timeout_secs.max(1)));
    match &probe.check {
        ProbeCheck::Http { path } => {
            let ip = started.ip.ok_or(Unhealthy::NoAddress)?;
            let port = spec.port.ok_or(Unhealthy::NoPort)?;
            Ok(probe::http(ip, port, path, timeout).await?)
        }
        ProbeCheck::Command { argv } => {
            if engine.exec_succeeds(&started.id, argv, timeout).await {
                Ok(())
            } else {
                Err(Unhealthy::CommandFailed { command: argv.join(" ") })
            }
        }
    }
}

/// Probes a running deployment's services: `retries` failures in a row make a service
/// unhealthy, one success healthy again. (A container that stopped is the reconcile's to
/// report.)
async fn watch(engine: Engine, d: DesiredDeployment, outputs: Outputs, runs: Arc<Runs>) {
    let probes: Vec<(ContainerSpec, HealthProbe)> = d
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            StepAction::Service(ServiceStep { container, health: Some(probe) }) => {
                Some((fill_container(container, &outputs, &d.secrets.0).ok()?, probe.clone()))
            }
            _ => None,
        })
        .collect();
    let Some(every) = probes.iter().map(|(_, p)| p.interval_secs.max(1)).min() else {
        runs.unwatch(&d.id);
        return;
    };
    let mut failures: HashMap<String, u32> = HashMap::new();
    // Each service's container as last looked up. A probe that passes needs no word from the
    // engine, so a healthy deployment costs the engine nothing between changes; a failed
    // probe looks again (the container may be stopped, which is the reconcile's to report, or
    // recreated at another address).
    let mut known: HashMap<String, crate::docker::Started> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(u64::from(every))).await;
        if !runs.runs_still(&d.id, d.attempt) {
            break;
        }
        for (spec, probe) in &probes {
            let started = match known.remove(&spec.name) {
                Some(started) => started,
                None => match engine.service_container(&d.id, &spec.name, spec.port).await {
                    Some(started) => started,
                    None => continue,
                },
            };
            let mut outcome = check(&engine, &started, spec, probe).await;
            let started = if outcome.is_ok() {
                started
            } else {
                let Some(now) = engine.service_container(&d.id, &spec.name, spec.port).await else { continue };
                if engine.exited(&now.id).await.is_some() {
                    continue;
                }
                if now.id != started.id || now.ip != started.ip {
                    outcome = check(&engine, &now, spec, probe).await;
                }
                now
            };
            known.insert(spec.name.clone(), started);
            let was = runs.healthy(&d.id, &spec.name);
            match outcome {
                Ok(()) => {
                    failures.remove(&spec.name);
                    if was != Some(true) {
                        runs.logs.write(&d.id, PIPELINE_LOG, &format!("service {} is healthy again", spec.name), &d.secrets.0);
                        runs.health(&d.id, ServiceHealth { service: spec.name.clone(), healthy: true, detail: "healthy".into() });
                    }
                }
                Err(e) => {
                    let n = failures.entry(spec.name.clone()).or_default();
                    *n += 1;
                    if *n >= probe.retries.max(1) && was != Some(false) {
                        let detail = cut(&redact(&format!("{n} probes failed in a row: {e}"), &d.secrets.0));
                        runs.logs.write(&d.id, PIPELINE_LOG, &format!("service {} is unhealthy: {detail}", spec.name), &d.secrets.0);
                        runs.health(&d.id, ServiceHealth { service: spec.name.clone(), healthy: false, detail });
                    }
                }
            }
        }
    }
    runs.unwatch(&d.id);
}

/// Runs a plugin step: its outputs are what it returned.
#[tracing::instrument(name = "agent.plugin", skip_all, fields(step = step, image = plugin.image.as_str()))]
async fn run_plugin(engine: &Engine, logs: &LogBook, d: &DesiredDeployment, step: &str, network: &str, plugin: &PluginStep, outputs: &Outputs) -> StepResult {
    let mut used = BTreeSet::new();
    let parameters = substitute_json(&plugin.parameters, outputs, &d.secrets.0, &mut used).map_err(Failure::new)?;
    let mut context: serde_json::Map<String, serde_json::Value> = d.context.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    context.insert("deployment".into(), d.id.clone().into());
    context.insert("step".into(), step.into());
    context.insert("attempt".into(), d.attempt.into());
    let input = serde_json::json!({ "action": plugin.action, "parameters": parameters, "secrets": d.secrets.0, "context": context });
    let input = serde_json::to_vec(&input).expect("JSON values serialize");
    let run = PluginRun {
        image: &plugin.image,
        command: vec![],
        input: &input,
        timeout: Duration::from_secs(u64::from(plugin.timeout_secs)),
        cpu_millis: plugin.cpu_millis,
        memory_mib: plugin.memory_mib,
        network: plugin.joins_network.then_some(network),
        labels: HashMap::from([(LABEL_DEPLOYMENT.to_owned(), d.id.clone()), (LABEL_NODE.to_owned(), d.node().to_owned())]),
        registry_auth: d.registry_auth.clone(),
    };
    pulled(logs, d, &plugin.image, engine.ensure_image(&plugin.image, &d.registry_auth).await.map_err(Failure::new)?);
    let outcome = engine.run_plugin(&run).await.map_err(Failure::new)?;
    logs.write(&d.id, PIPELINE_LOG, &outcome.log, &d.secrets.0);
    let log_tail = tail(&outcome.log, 512);
    let with_log = |text: String| if log_tail.is_empty() { text } else { format!("{text}; log: {log_tail}") };
    if outcome.succeeded() {
        let result = outcome.result.expect("a success has a result");
        let produced = result.outputs.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect();
        return Ok((produced, result.output));
    }
    let reason = match (&outcome.result, outcome.timed_out, outcome.oom_killed) {
        (_, true, _) => format!("plugin {} did not finish within {} s", plugin.plugin, plugin.timeout_secs),
        (_, _, true) => format!("plugin {} was killed: out of memory (limit {} MiB)", plugin.plugin, plugin.memory_mib),
        (Ok(result), _, _) => format!("plugin {} failed (exit code {}): {}", plugin.plugin, outcome.exit_code.unwrap_or(-1), result.output),
        (Err(e), _, _) => format!("plugin {} (exit code {}): {e}", plugin.plugin, outcome.exit_code.unwrap_or(-1)),
    };
    Err(Failure { reason: with_log(reason), exit_code: outcome.exit_code, oom_killed: outcome.oom_killed })
}

/// The last `max` bytes of `text` (at a character boundary), trimmed.
fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// `text` cut to [`MAX_DETAIL`] bytes, keeping the start.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_DETAIL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, state: StepRunState) -> StepStatus {
        StepStatus { id: id.into(), state, detail: String::new() }
    }

    #[test]
    fn a_run_interrupted_by_a_restart_fails_its_running_steps_and_waits_for_its_rollback() {
        let status = RunStatus {
            phase: RunPhase::Deploying,
            steps: vec![step("web", StepRunState::Succeeded), step("seed", StepRunState::Running), step("api", StepRunState::Pending)],
            health: vec![],
        };
        let saved = BTreeMap::from([("d1".to_owned(), RunRecord { attempt: 1, status, outputs: Outputs::new() })]);
        let runs = Runs::restore(saved, Arc::new(LogBook::default()));
        let view = runs.view();
        let record = &view["d1"].record;
        // Not failed yet: that is said once the rollback has removed what the run made.
        assert_eq!(record.status.phase, RunPhase::Deploying);
        assert_eq!(record.status.steps[1].state, StepRunState::Failed);
        assert_eq!(record.status.steps[1].detail, INTERRUPTED);
        assert!(runs.entries.lock().unwrap()["d1"].leftovers);
        // The failure names the interrupted step, as a failure during a run names its step.
        let RunPhase::Failed { step, reason, .. } = interrupted_failure(&record.status.steps) else { panic!("not a failure") };
        assert_eq!(step.as_deref(), Some("seed"));
        assert!(reason.contains("step seed was interrupted"), "{reason}");
        // A step that had failed on its own before the restart keeps its own reason.
        let own = StepStatus { id: "migrate".into(), state: StepRunState::Failed, detail: "exit code 1".into() };
        assert!(matches!(interrupted_failure(&[own]), RunPhase::Failed { reason, .. } if reason == "exit code 1"));
        assert!(matches!(interrupted_failure(&[]), RunPhase::Failed { step: None, .. }));
    }

    fn running(attempt: u32) -> RunRecord {
        RunRecord {
            attempt,
            status: RunStatus { phase: RunPhase::Running, steps: vec![step("web", StepRunState::Succeeded)], health: vec![] },
            outputs: Outputs::new(),
        }
    }

    fn desired(id: &str, attempt: u32) -> DesiredDeployment {
        DesiredDeployment { id: id.into(), attempt, steps: vec![], secrets: Default::default(), registry_auth: vec![], context: BTreeMap::new(), trace: None }
    }

    #[tokio::test]
    async fn a_pass_that_finds_the_runs_in_step_does_not_wake_the_loop_again() {
        // Given a finished run of the desired attempt
        let engine = Engine::connect("test", Default::default()).unwrap();
        let runs = Runs::restore(BTreeMap::from([("d1".to_owned(), running(1))]), Arc::new(LogBook::default()));
        let mut woken = runs.subscribe();
        woken.mark_unchanged();
        // When the reconcile syncs the same desired state, again and again
        for _ in 0..3 {
            runs.sync(&engine, &[desired("d1", 1)]);
        }
        // Then nothing woke the loop
        assert!(!woken.has_changed().unwrap());
        // And a record written as it already is wakes nothing either
        runs.update("d1", |r| r.status.phase = RunPhase::Running);
        assert!(!woken.has_changed().unwrap());
        // While a real change does: the run is forgotten when no longer desired
        runs.sync(&engine, &[]);
        assert!(woken.has_changed().unwrap());
        assert!(runs.view().is_empty());
    }
}
