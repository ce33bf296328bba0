//! The `Deployment` GraphQL type and its parts, served from the deployments read model.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use nullops_domain::deployment::{status, DeploymentStatus, UserAction};
use nullops_events::catalog::Access;
use nullops_events::deployment::PlannedAction;
use nullops_events::deployment::StepState;
use nullops_events::Timestamp;
use nullops_projections::audit::{self, AuditFilter};
use nullops_projections::deployments::{self as read, DeploymentRow};
use nullops_projections::nodes::LinkState;
use nullops_wire::message::ContainerUsage;

use crate::audit::AuditEntryGql;
use crate::catalog::{AccessGql, HealthCheckGql};
use crate::context::{app, time};
use crate::error::ApiResult;
use crate::loaders::Loaders;

/// The API's face of [`DeploymentStatus`] (and so of the domain's `Phase`): a state added there
/// does not compile here until it is added.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "DeploymentState", remote = "nullops_domain::deployment::DeploymentStatus")]
pub enum DeploymentStateGql {
    /// Requested: waiting for a node with room (and its name).
    Pending,
    /// Placed on a node whose agent has not started it yet.
    Scheduled,
    /// Its pipeline runs.
    Deploying,
    /// Every step succeeded and every service is healthy.
    Running,
    /// A step failed; everything the run created was removed.
    Failed,
    /// Its node is offline: it carries on there and is taken up again when the node is back.
    Offline,
    /// Deleted while being created: its node rolls back what the run made.
    Cancelling,
    /// Being removed from its node.
    Deleting,
    Cancelled,
    Deleted,
    /// Never placed: its name was taken or no node had room (see `failure`). Nothing ran.
    Rejected,
}

/// The groups of states a client shows apart (the domain's `Stage`).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "DeploymentStage", remote = "nullops_domain::deployment::Stage")]
pub enum DeploymentStageGql {
    /// Asked for and not being deleted: PENDING, SCHEDULED, DEPLOYING, RUNNING, OFFLINE or FAILED.
    Live,
    /// Being deleted or cancelled: DELETING or CANCELLING.
    Removing,
    /// Gone for good, its name and room free again: DELETED, CANCELLED or REJECTED.
    Ended,
}

/// What is wanted of a deployment (the domain's `Desired`).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "DesiredState", remote = "nullops_events::phase::Desired")]
pub enum DesiredStateGql {
    /// Place it and run it.
    Run,
    /// Remove it and everything it runs: deleted, cancelled or expired.
    Remove,
}

/// What is seen of a deployment: its placement and what its node last reported (the domain's
/// `Observed`).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "ObservedState", remote = "nullops_events::phase::Observed")]
pub enum ObservedStateGql {
    /// Not placed yet: no node has anything of it.
    Pending,
    /// Placed on a node whose agent has not started it.
    Scheduled,
    /// Its pipeline runs on its node.
    Deploying,
    /// Every step succeeded and every service answered its health check.
    Running,
    /// Its run failed and rolled back: nothing of it runs.
    Failed,
    /// Its node removed everything it had (or it never ran anywhere).
    Gone,
    /// It could never be placed: nothing ran.
    Rejected,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "StepState")]
pub enum StepStateGql {
    Pending,
    Running,
    Succeeded,
    Failed,
    RolledBack,
}

#[derive(SimpleObject)]
#[graphql(name = "DeploymentStep")]
pub struct StepGql {
    /// The pipeline node's id.
    id: String,
    /// `service NAME` or `plugin NAME`.
    action: String,
    state: StepStateGql,
    /// Its last output or error, secrets redacted.
    detail: String,
    changed_at: Option<DateTime<Utc>>,
    /// When it started running; with `changedAt` once it has finished, how long it took.
    started_at: Option<DateTime<Utc>>,
    /// The steps it starts after (the pipeline's edges into it).
    after: Vec<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "DeploymentService")]
pub struct ServiceGql {
    name: String,
    image: String,
    tag: String,
    /// Unknown (null) until its health is first reported.
    healthy: Option<bool>,
    health_detail: String,
    /// `http://SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN`.
    url: String,
    /// Where its port is published on its node, once running.
    node_port: Option<u16>,
    /// How its health is checked; none: healthy once started.
    health_check: Option<HealthCheckGql>,
    /// CPU its container uses, as its agent last measured (every few seconds).
    cpu_millicores: Option<u64>,
    memory_bytes: Option<u64>,
}

#[derive(SimpleObject)]
#[graphql(name = "DeploymentFailure")]
pub struct FailureGql {
    /// The pipeline node that failed, when one did.
    step: Option<String>,
    reason: String,
    exit_code: Option<i64>,
    /// Docker killed it for going over its memory limit.
    oom_killed: bool,
}

/// A line of a deployment's log.
#[derive(SimpleObject)]
#[graphql(name = "LogLine")]
pub struct LogLineGql {
    /// Increases line by line: pass the last one seen to read on.
    pub seq: String,
    /// `pipeline`, or the service whose output it is.
    pub source: String,
    pub at: DateTime<Utc>,
    pub text: String,
}

impl From<read::LogRow> for LogLineGql {
    fn from(r: read::LogRow) -> Self {
        LogLineGql { seq: r.seq.to_string(), source: r.source, at: time(r.at), text: r.line }
    }
}

/// Most lines one query returns.
pub const MAX_TAIL: i32 = 5000;

#[derive(SimpleObject)]
#[graphql(name = "DeploymentNode")]
pub struct NodeRefGql {
    id: ID,
    host: String,
    online: bool,
}

/// A deployment, with the access of the caller it is shown to (which actions it offers).
pub struct DeploymentGql(pub DeploymentRow, pub Access);

/// The API's face of [`UserAction`].
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "DeploymentAction", remote = "nullops_domain::deployment::UserAction")]
pub enum UserActionGql {
    /// Stop it being created (`deleteDeployment`); its node rolls back what ran.
    Cancel,
    /// Remove it and everything it runs (`deleteDeployment`).
    Delete,
    /// Run a failed deployment again under its name (`retryDeployment`).
    Retry,
    /// Reset its lifetime in full, from now (`extendDeployment`).
    Extend,
    /// Deploy the same services again under a new name (`cloneDeployment`).
    Clone,
}

impl DeploymentGql {
    async fn node_online(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let Some(node_id) = self.0.node_id else { return Ok(false) };
        Ok(loaders(ctx).nodes.load_one(node_id).await?.is_some_and(|n| n.link == LinkState::Online))
    }
}

fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

#[Object(name = "Deployment")]
impl DeploymentGql {
    async fn id(&self) -> ID {
        ID(self.0.deployment_id.to_string())
    }
    /// A DNS label, unique in its environment: the deployment part of its URLs.
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn project(&self) -> &str {
        &self.0.project
    }
    async fn environment(&self) -> &str {
        &self.0.environment
    }
    async fn state(&self, ctx: &Context<'_>) -> ApiResult<DeploymentStateGql> {
        let online = !self.0.phase().on_node() || self.node_online(ctx).await?;
        let shown: DeploymentStatus = status(self.0.phase(), online);
        Ok(shown.into())
    }
    /// What is wanted of it. `state` is derived from this and `observed`, in one place.
    async fn desired(&self) -> DesiredStateGql {
        self.0.life.desired.into()
    }
    /// What is seen of it: its placement and what its node last reported. While its node is
    /// offline this is what it reported last (`state` says OFFLINE).
    async fn observed(&self) -> ObservedStateGql {
        self.0.life.observed.into()
    }
    /// Which group of states it is in: what a client waits for or greys out, without a list of
    /// states of its own.
    async fn stage(&self) -> DeploymentStageGql {
        self.0.phase().stage().into()
    }
    /// What the caller may do to it now: none without FULL access; else what its phase allows.
    async fn actions(&self) -> Vec<UserActionGql> {
        if self.1 != Access::Full {
            return vec![];
        }
        UserAction::ALL.into_iter().filter(|a| self.0.phase().allows(*a)).map(UserActionGql::from).collect()
    }
    /// The caller's access to it: READ_ONLY sees, FULL may change.
    async fn my_access(&self) -> AccessGql {
        match self.1 {
            Access::Full => AccessGql::Full,
            Access::ReadOnly => AccessGql::ReadOnly,
        }
    }
    /// Runs of it so far: 1, and one more per retry.
    async fn attempt(&self) -> u32 {
        self.0.attempt
    }
    async fn pipeline_version(&self) -> u32 {
        self.0.pipeline_version
    }
    async fn node(&self, ctx: &Context<'_>) -> ApiResult<Option<NodeRefGql>> {
        let Some(node_id) = self.0.node_id else { return Ok(None) };
        let row = loaders(ctx).nodes.load_one(node_id).await?;
        Ok(row.map(|n| NodeRefGql { id: ID(n.node_id.to_string()), host: n.host, online: n.link == LinkState::Online }))
    }
    async fn cpu_millicores(&self) -> u32 {
        self.0.cpu_millis
    }
    async fn memory_mib(&self) -> u32 {
        self.0.memory_mib
    }
    /// The pipeline's nodes in the current run.
    async fn steps(&self, ctx: &Context<'_>) -> ApiResult<Vec<StepGql>> {
        let reported = read::steps(&app(ctx).read_models, self.0.deployment_id).await?;
        Ok(self
            .0
            .plan
            .steps
            .iter()
            .map(|s| {
                let action = match &s.action {
                    PlannedAction::Service(p) => format!("service {}", p.service),
                    PlannedAction::Plugin(p) => format!("plugin {}", p.plugin),
                };
                let row = reported.iter().find(|r| r.step == s.id);
                let state = match row.map(|r| r.state) {
                    None => StepStateGql::Pending,
                    Some(StepState::Running) => StepStateGql::Running,
                    Some(StepState::Succeeded) => StepStateGql::Succeeded,
                    Some(StepState::Failed) => StepStateGql::Failed,
                    Some(StepState::RolledBack) => StepStateGql::RolledBack,
                };
                StepGql {
                    id: s.id.clone(),
                    action,
                    state,
                    detail: row.map(|r| r.detail.clone()).unwrap_or_default(),
                    changed_at: row.map(|r| time(r.changed_at)),
                    started_at: row.and_then(|r| r.started_at).map(time),
                    after: self.0.plan.edges.iter().filter(|e| e.to == s.id).map(|e| e.from.clone()).collect(),
                }
            })
            .collect())
    }
    /// Its services: version, health, URL.
    async fn services(&self, ctx: &Context<'_>) -> ApiResult<Vec<ServiceGql>> {
        let app = app(ctx);
        let loaders = loaders(ctx);
        // Ended, it runs nowhere: no health to ask for.
        let health = if self.0.phase().ended() { Vec::new() } else { loaders.health.load_one(self.0.deployment_id).await?.unwrap_or_default() };
        let (versions, endpoints) = (&self.0.versions, &self.0.endpoints);
        let env = loaders.environments.load_one(self.0.environment.clone()).await?;
        let usage = match self.0.node_id {
            Some(node_id) if self.0.phase().on_node() => loaders.usage.load_one(node_id).await?,
            _ => None,
        };
        let measured: Vec<ContainerUsage> = usage.and_then(|u| serde_json::from_str(&u.containers).ok()).unwrap_or_default();
        let on_node = self.0.deployment_id.simple().to_string();
        let domain = env.map(|e| e.definition.base_domain).unwrap_or_default();
        let checks: std::collections::HashMap<&str, Option<nullops_events::catalog::HealthCheck>> = self
            .0
            .plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                PlannedAction::Service(p) => Some((p.service.as_str(), p.health_check.clone())),
                PlannedAction::Plugin(_) => None,
            })
            .collect();
        Ok(versions
            .iter()
            .map(|v| {
                let h = health.iter().find(|h| h.service == v.service);
                let used = measured.iter().find(|c| c.deployment == on_node && c.name == v.service);
                ServiceGql {
                    health_check: checks.get(v.service.as_str()).cloned().flatten().map(HealthCheckGql::from),
                    cpu_millicores: used.map(|u| u.cpu_millicores),
                    memory_bytes: used.map(|u| u.memory_bytes),
                    url: app.ingress.service_url(&v.service, &self.0.name, &self.0.environment, &domain),
                    node_port: endpoints.iter().find(|e| e.service == v.service).map(|e| e.host_port),
                    healthy: h.map(|h| h.healthy),
                    health_detail: h.map(|h| h.detail.clone()).unwrap_or_default(),
                    name: v.service.clone(),
                    image: v.image.clone(),
                    tag: v.tag.clone(),
                }
            })
            .collect())
    }
    /// Why its last run failed.
    /// Each service's CPU and memory over the deployment's life (the last day at most),
    /// sampled every 10 s (longer spans averaged into at most 360 points).
    async fn usage_history(&self, ctx: &Context<'_>) -> ApiResult<Vec<crate::charts::ServiceUsage>> {
        let services = self
            .0
            .plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                nullops_events::deployment::PlannedAction::Service(svc) => Some(svc.service.clone()),
                nullops_events::deployment::PlannedAction::Plugin(_) => None,
            })
            .collect();
        crate::charts::service_histories(ctx, self.0.deployment_id, services, self.0.created_at).await
    }
    /// Its requests through the ingress over its life (the last day at most): requests per
    /// second and the share answered 5xx, per 10 s (longer spans averaged).
    async fn traffic(&self, ctx: &Context<'_>) -> ApiResult<Vec<crate::charts::TrafficSample>> {
        crate::charts::traffic(ctx, &self.0.environment, &self.0.name, self.0.created_at).await
    }
    async fn failure(&self) -> Option<FailureGql> {
        let f = self.0.failure.clone()?;
        Some(FailureGql { step: f.step, reason: f.reason, exit_code: f.exit_code, oom_killed: f.oom_killed })
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        time(self.0.created_at)
    }
    /// When the reaper deletes it unless extended.
    async fn expires_at(&self) -> DateTime<Utc> {
        time(self.0.expires_at)
    }
    /// Seconds left before it expires (0 once due).
    async fn expires_in_seconds(&self) -> i64 {
        ((self.0.expires_at - Timestamp::now().0) / 1_000_000).max(0)
    }
    /// Its log, secrets redacted: of one `service`, or of `pipeline` (each step's progress and
    /// the plugins' output), or all of it; the last `tail` lines (at most 5000), from `since`
    /// when given.
    async fn logs(
        &self,
        ctx: &Context<'_>,
        service: Option<String>,
        #[graphql(default = 200)] tail: i32,
        since: Option<DateTime<Utc>>,
    ) -> ApiResult<Vec<LogLineGql>> {
        if !(1..=MAX_TAIL).contains(&tail) {
            return Err(crate::error::ApiError::InvalidInput(format!("tail: use 1 to {MAX_TAIL} lines")));
        }
        let since = since.map_or(0, |t| t.timestamp_micros());
        let rows = read::logs(&app(ctx).read_models, self.0.deployment_id, service.as_deref(), 0, since, i64::from(tail)).await?;
        Ok(rows.into_iter().map(LogLineGql::from).collect())
    }
    /// Who did what to it, oldest first.
    async fn history(&self, ctx: &Context<'_>) -> ApiResult<Vec<AuditEntryGql>> {
        let app = app(ctx);
        // The audit read model applies the deployment's events on its own: the history is made
        // at least as new as the deployments read model this row came from, so a page never
        // shows a step's detail without the event that set it. Past the bound it answers with
        // what it has (a history a moment behind is better than none).
        let row_at = app.read_models.checkpoint("deployments").await?.position;
        if let Err(e) = app.read_models.wait_for(&["audit"], row_at, app.consistency_wait).await {
            tracing::warn!(error = %e, "a deployment's history is behind its row");
        }
        let filter = AuditFilter { stream_id: Some(format!("deployment-{}", self.0.deployment_id)), ..Default::default() };
        let mut entries = audit::query(&app.read_models, &filter, None, 500).await?;
        entries.reverse();
        Ok(entries.into_iter().map(AuditEntryGql::from).collect())
    }
}
