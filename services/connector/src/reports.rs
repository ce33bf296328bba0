//! What agents report about deployments, recorded on the deployments' aggregates.
//!
//! An agent sends its whole view after every change; the link remembers the last view it
//! recorded per deployment and records only deployments whose view changed, and the aggregate
//! itself drops what the log already says. What a failed or removed deployment held (capacity,
//! its name) the deployment saga gives back: only the deployment's own stream is written here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand, RunReport};
use nullops_domain::Issuer;
use nullops_events::deployment::{DeploymentFailed, Endpoint, HealthChanged, StepChanged, StepState};
use nullops_events::EventMetadata;
use nullops_projections::deployments::{self as logs, LogRow};
use nullops_store::commands::{execute, CommandError};
use nullops_wire::message::{ActualDeployment, LogLine, RunPhase, StepRunState};
use tracing::Instrument;
use uuid::Uuid;

use crate::Connector;

/// The reports in an agent's view of one deployment, in the order they happened.
fn reports(actual: &ActualDeployment) -> Vec<RunReport> {
    let mut out = vec![RunReport::Started];
    for step in &actual.run.steps {
        let state = match step.state {
            StepRunState::Pending => continue,
            StepRunState::Running => StepState::Running,
            StepRunState::Succeeded => StepState::Succeeded,
            StepRunState::Failed => StepState::Failed,
            StepRunState::RolledBack => StepState::RolledBack,
        };
        out.push(RunReport::Step(StepChanged { step: step.id.clone(), state, detail: step.detail.clone() }));
    }
    for h in &actual.run.health {
        out.push(RunReport::Health(HealthChanged { service: h.service.clone(), healthy: h.healthy, detail: h.detail.clone() }));
    }
    match &actual.run.phase {
        RunPhase::Deploying => {}
        RunPhase::Running => {
            let endpoints = actual.containers.iter().filter_map(|c| Some(Endpoint { service: c.name.clone(), host_port: c.host_port? })).collect();
            out.push(RunReport::Running { endpoints });
        }
        RunPhase::Failed { step, reason, exit_code, oom_killed } => {
            out.push(RunReport::Failed(DeploymentFailed { step: step.clone(), reason: reason.clone(), exit_code: *exit_code, oom_killed: *oom_killed }))
        }
    }
    out
}

/// Records an agent's views that changed since `last`; `trace_of` gives a deployment's trace
/// context, so that what the agent reports joins the trace of the run.
pub async fn record_views(
    connector: &Connector,
    node_id: Uuid,
    views: Vec<ActualDeployment>,
    last: &mut HashMap<String, ActualDeployment>,
    trace_of: &impl Fn(&str) -> Option<String>,
) {
    for view in views {
        if last.get(&view.id) == Some(&view) {
            continue;
        }
        let Ok(deployment_id) = Uuid::try_parse(&view.id) else {
            tracing::warn!(node = %node_id, deployment = %view.id, "the agent names a deployment by something that is not its id");
            continue;
        };
        let action = DeploymentAction::Report { attempt: view.attempt, reports: reports(&view) };
        let span = tracing::info_span!("connector.record", deployment = %deployment_id, attempt = view.attempt);
        nullops_telemetry::follows(&span, trace_of(&view.id).as_deref());
        match record(connector, deployment_id, action).instrument(span).await {
            Ok(()) => {
                last.insert(view.id.clone(), view);
            }
            // Not remembered: the next view records it again.
            Err(e) => tracing::warn!(node = %node_id, deployment = %deployment_id, error = %e, "cannot record the deployment's progress"),
        }
    }
}

/// Records that the node removed everything of a deleted deployment (the saga then frees its
/// capacity and its name). False if it could not be recorded now.
pub async fn record_removed(connector: &Connector, node_id: Uuid, deployment_id: Uuid) -> bool {
    match record(connector, deployment_id, DeploymentAction::Removed).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(node = %node_id, deployment = %deployment_id, error = %e, "cannot record the deployment's removal; will try again");
            false
        }
    }
}

/// Records that the node cannot be given a deployment: its run fails with `reason` (the saga
/// then gives its room back).
pub async fn record_refused(connector: &Connector, node_id: Uuid, deployment_id: Uuid, reason: String) {
    tracing::warn!(node = %node_id, deployment = %deployment_id, %reason, "the node cannot be given the deployment");
    let reason = format!("the node cannot be given it: {reason}");
    if let Err(e) = record(connector, deployment_id, DeploymentAction::Refuse { reason }).await {
        tracing::warn!(node = %node_id, deployment = %deployment_id, error = %e, "cannot record that the deployment was refused");
    }
}

/// Executes a report as the platform.
async fn record(connector: &Connector, deployment_id: Uuid, action: DeploymentAction) -> Result<(), CommandError> {
    let command = DeploymentCommand { by: Issuer::System, action };
    let metadata = EventMetadata { trace_context: nullops_telemetry::traceparent(), ..EventMetadata::system() };
    execute::<Deployment>(&*connector.store, &deployment_id.to_string(), &command, &metadata).await.map(|_| ())
}

/// Stores log lines of the deployments assigned to the node (`assigned`); others are refused.
pub async fn record_logs(connector: &Connector, node_id: Uuid, lines: Vec<LogLine>, assigned: &impl Fn(&str) -> bool) {
    let mut rows = Vec::with_capacity(lines.len());
    let mut sources = HashSet::new();
    for line in lines {
        let (true, Ok(deployment_id)) = (assigned(&line.deployment), Uuid::try_parse(&line.deployment)) else {
            tracing::warn!(node = %node_id, deployment = %line.deployment, "rejected log lines of a deployment not assigned to this node");
            continue;
        };
        sources.insert((deployment_id, line.source.clone()));
        rows.push(LogRow { seq: next_log_seq(), deployment_id, source: line.source, at: line.at, line: line.text });
    }
    if let Err(e) = logs::record_logs(&connector.read_models, &rows).await {
        tracing::warn!(node = %node_id, error = %e, "cannot store log lines");
        return;
    }
    // Trimming costs a query per source: now and then is enough.
    if LOG_TRIMS.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
        for (deployment_id, source) in sources {
            if let Err(e) = logs::trim_logs(&connector.read_models, deployment_id, &source).await {
                tracing::warn!(deployment = %deployment_id, error = %e, "cannot trim the deployment's logs");
            }
        }
    }
}

static LAST_LOG_SEQ: AtomicI64 = AtomicI64::new(0);
static LOG_TRIMS: AtomicU64 = AtomicU64::new(0);

/// Increasing log sequence numbers: the clock in microseconds, or one more than the last, so a
/// connector taking over from another carries on above it.
fn next_log_seq() -> i64 {
    let now = nullops_events::Timestamp::now().0;
    let mut last = LAST_LOG_SEQ.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_LOG_SEQ.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
