//! The deployments read model (projection `deployments`): each deployment's request, node,
//! life (what is wanted of it, what is seen of it, and the phase derived from the pair), the steps and service health of its current run, how it failed, its endpoints and its
//! expiry. The connector reads what each node should run from here; the gateway serves it.
//!
//! Beside it, `deployment_logs`: the lines agents send (pipeline progress, plugin and service
//! output). Like `node_usage` it is telemetry, not history: only the connector writes it, each
//! source keeps its latest lines, and a projection rebuild leaves it alone.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;
use nullops_events::deployment::{
    ChosenVersion, DeploymentEvent, DeploymentFailed, DeploymentPlan, DeploymentRunning, Endpoint, EndpointsChanged, RejectionCode, StepState,
};
use nullops_events::phase::{Desired, Life, Observed, Phase};
use nullops_events::{DomainEvent, StoredEvent, Timestamp};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::rows::{write_all, OnConflict, Shape, Then, Value, Write};
use crate::{Projection, ProjectionError, ReadModelDb};

/// Only a deployment that became RUNNING this recently (microseconds) is timed: a projection
/// rebuilt from an old log must not count its history again.
const TIME_TO_RUNNING_RECENT: i64 = 3_600_000_000;

/// The name of this read model (its checkpoint's key; what `nullops projections rebuild` takes).
pub const NAME: &str = "deployments";

pub struct DeploymentsProjection;

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS deployments (deployment_id TEXT PRIMARY KEY, name TEXT NOT NULL, project TEXT NOT NULL,
        project_id TEXT NOT NULL, environment TEXT NOT NULL, node_id TEXT, desired TEXT NOT NULL, observed TEXT NOT NULL,
        cancelled BIGINT NOT NULL, phase TEXT NOT NULL, rejection TEXT,
        attempt BIGINT NOT NULL, pipeline_version BIGINT NOT NULL, versions TEXT NOT NULL, plan TEXT NOT NULL,
        cpu_millis BIGINT NOT NULL, memory_mib BIGINT NOT NULL, lifetime_secs BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        failure TEXT, endpoints TEXT NOT NULL, created_by TEXT NOT NULL, created_at BIGINT NOT NULL, changed_at BIGINT NOT NULL,
        trace_context TEXT)",
    "CREATE INDEX IF NOT EXISTS deployments_by_node ON deployments (node_id, phase)",
    "CREATE INDEX IF NOT EXISTS deployments_by_environment ON deployments (environment, name)",
    "CREATE INDEX IF NOT EXISTS deployments_by_expiry ON deployments (expires_at)",
    "CREATE TABLE IF NOT EXISTS deployment_steps (deployment_id TEXT NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL,
        detail TEXT NOT NULL, changed_at BIGINT NOT NULL, started_at BIGINT, PRIMARY KEY (deployment_id, step))",
    "CREATE TABLE IF NOT EXISTS deployment_logs (seq BIGINT PRIMARY KEY, deployment_id TEXT NOT NULL, source TEXT NOT NULL,
        at BIGINT NOT NULL, line TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS deployment_logs_by_source ON deployment_logs (deployment_id, source, seq)",
    "CREATE TABLE IF NOT EXISTS deployment_health (deployment_id TEXT NOT NULL, service TEXT NOT NULL, healthy BIGINT NOT NULL,
        detail TEXT NOT NULL, changed_at BIGINT NOT NULL, PRIMARY KEY (deployment_id, service))",
];

/// The new life after `event`, as SQL assignments: written out from [`Life::after`] for every
/// life the row may have, so the read model follows the aggregate's one transition function.
/// `phase` is written from [`Life::phase`] beside the pair it is derived from (queries select on
/// it). Empty when `event` changes no life.
fn life_after(event: &DeploymentEvent) -> &'static [String] {
    // They depend only on the event's kind (`Life::after` reads nothing else of it), so each
    // kind's are written once per process, not on every event a replay applies.
    type ByKind = HashMap<std::mem::Discriminant<DeploymentEvent>, &'static [String]>;
    static BY_KIND: OnceLock<Mutex<ByKind>> = OnceLock::new();
    let mut by_kind = BY_KIND.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    by_kind.entry(std::mem::discriminant(event)).or_insert_with(|| Box::leak(life_assignments(event).into_boxed_slice()))
}

fn life_assignments(event: &DeploymentEvent) -> Vec<String> {
    let mut arms: [(&str, String); 4] = [("desired", String::new()), ("observed", String::new()), ("cancelled", String::new()), ("phase", String::new())];
    for from in Life::all() {
        let Some(to) = Life::after(Some(from), event).filter(|to| *to != from) else { continue };
        let when = format!(" WHEN desired = '{}' AND observed = '{}' AND cancelled = {}", from.desired.name(), from.observed.name(), i64::from(from.cancelled));
        let changes = [
            (to.desired != from.desired).then(|| format!("'{}'", to.desired.name())),
            (to.observed != from.observed).then(|| format!("'{}'", to.observed.name())),
            (to.cancelled != from.cancelled).then(|| i64::from(to.cancelled).to_string()),
            (to.phase() != from.phase()).then(|| format!("'{}'", to.phase().name())),
        ];
        for ((_, column_arms), change) in arms.iter_mut().zip(changes) {
            if let Some(value) = change {
                column_arms.push_str(&format!("{when} THEN {value}"));
            }
        }
    }
    arms.into_iter().filter(|(_, a)| !a.is_empty()).map(|(column, a)| format!("{column} = CASE{a} ELSE {column} END")).collect()
}

/// `'a', 'b'` for `phase IN (...)`: the phases for which `rule` holds.
fn phases_where(rule: fn(Phase) -> bool) -> String {
    Phase::names_where(rule).iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("events serialize as JSON")
}

#[async_trait]
impl Projection for DeploymentsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("deployment.")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["deployments", "deployment_steps", "deployment_health"]
    }

    fn schema_version(&self) -> u32 {
        // 2: the phase names of `Phase` (cancelling, rejected) and the rejection code;
        // 3: when each step started; 4: the trace context of its placement; 5: what is wanted
        // of it apart from what is seen of it (`desired`, `observed`, `cancelled`).
        5
    }

    async fn apply(&self, conn: &mut AnyConnection, stored: &StoredEvent) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[stored]).await
    }

    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        write_all(conn, events, write).await?;
        time_to_running(conn, events).await
    }
}

static DEPLOYMENT: Shape = Shape {
    table: "deployments",
    columns: &[
        "deployment_id",
        "name",
        "project",
        "project_id",
        "environment",
        "node_id",
        "desired",
        "observed",
        "cancelled",
        "phase",
        "rejection",
        "attempt",
        "pipeline_version",
        "versions",
        "plan",
        "cpu_millis",
        "memory_mib",
        "lifetime_secs",
        "expires_at",
        "failure",
        "endpoints",
        "created_by",
        "created_at",
        "changed_at",
    ],
    on_conflict: None,
};
static STEP: Shape = Shape {
    table: "deployment_steps",
    columns: &["deployment_id", "step", "state", "detail", "changed_at", "started_at"],
    // A step starts when it first turns running (a retry starts with no steps); later changes,
    // a running step's new detail too, keep that start.
    on_conflict: Some(OnConflict {
        key: &[0, 1],
        then: Then::Update(
            "state = excluded.state, detail = excluded.detail, changed_at = excluded.changed_at, \
              started_at = COALESCE(deployment_steps.started_at, excluded.started_at)",
        ),
    }),
};
static HEALTH: Shape = Shape {
    table: "deployment_health",
    columns: &["deployment_id", "service", "healthy", "detail", "changed_at"],
    on_conflict: Some(OnConflict {
        key: &[0, 1],
        then: Then::Update("healthy = excluded.healthy, detail = excluded.detail, changed_at = excluded.changed_at"),
    }),
};

/// What `stored` asks of the deployments tables.
fn write(stored: &StoredEvent) -> Result<Vec<Write>, ProjectionError> {
    let at = stored.occurred_at.0;
    let id = stored.stream_id.key().to_owned();
    let DomainEvent::Deployment(event) = stored.decode()?.event else { return Ok(vec![]) };
    let life = life_after(&event);
    // The row's new life and `assignments` (parameters from `$3`), at `at`.
    let set = |assignments: &str, mut values: Vec<Value>| {
        let assignments = life.iter().map(String::as_str).chain((!assignments.is_empty()).then_some(assignments));
        let sql = format!("UPDATE deployments SET {}, changed_at = $1 WHERE deployment_id = $2", assignments.collect::<Vec<_>>().join(", "));
        values.splice(0..0, [at.into(), id.clone().into()]);
        Write::statement(sql, values)
    };
    let writes = match &event {
        DeploymentEvent::Requested(r) => {
            let Some(life) = Life::after(None, &event) else { return Ok(vec![]) };
            let row = vec![
                id.clone().into(),
                r.name.clone().into(),
                r.project.clone().into(),
                r.project_id.to_string().into(),
                r.environment.clone().into(),
                Value::Text(None),
                life.desired.name().into(),
                life.observed.name().into(),
                i64::from(life.cancelled).into(),
                life.phase().name().into(),
                Value::Text(None),
                1i64.into(),
                i64::from(r.pipeline_version).into(),
                json(&r.versions).into(),
                json(&r.plan).into(),
                i64::from(r.cpu_millis).into(),
                i64::from(r.memory_mib).into(),
                i64::try_from(r.lifetime_secs).unwrap_or(i64::MAX).into(),
                r.expires_at.into(),
                Value::Text(None),
                "[]".into(),
                stored.metadata.actor.to_stored().into(),
                at.into(),
                at.into(),
            ];
            vec![Write::Row(&DEPLOYMENT, row)]
        }
        DeploymentEvent::Retried(r) => {
            let mut writes = vec![set(
                "attempt = attempt + 1, pipeline_version = $3, plan = $4, failure = NULL, endpoints = '[]'",
                vec![i64::from(r.pipeline_version).into(), json(&r.plan).into()],
            )];
            for table in ["deployment_steps", "deployment_health"] {
                writes.push(Write::statement(format!("DELETE FROM {table} WHERE deployment_id = $1"), vec![id.clone().into()]));
            }
            writes
        }
        DeploymentEvent::Scheduled(s) => {
            vec![set("node_id = $3, trace_context = $4", vec![s.node_id.to_string().into(), stored.metadata.trace_context.clone().into()])]
        }
        DeploymentEvent::StepChanged(s) => {
            let row = vec![
                id.clone().into(),
                s.step.clone().into(),
                s.state.name().into(),
                s.detail.clone().into(),
                at.into(),
                (s.state == StepState::Running).then_some(at).into(),
            ];
            vec![Write::Row(&STEP, row)]
        }
        DeploymentEvent::HealthChanged(h) => {
            let row = vec![id.clone().into(), h.service.clone().into(), i64::from(h.healthy).into(), h.detail.clone().into(), at.into()];
            vec![Write::Row(&HEALTH, row)]
        }
        DeploymentEvent::Running(DeploymentRunning { endpoints }) | DeploymentEvent::EndpointsChanged(EndpointsChanged { endpoints }) => {
            vec![set("endpoints = $3", vec![json(endpoints).into()])]
        }
        DeploymentEvent::Failed(f) => vec![set("failure = $3", vec![json(f).into()])],
        DeploymentEvent::Rejected(r) => {
            let failure = DeploymentFailed { step: None, reason: r.reason.clone(), exit_code: None, oom_killed: false };
            vec![set("rejection = $3, failure = $4", vec![r.code.name().into(), json(&failure).into()])]
        }
        DeploymentEvent::Removed(_) => vec![set("endpoints = '[]'", vec![])],
        DeploymentEvent::Extended(e) => vec![set("expires_at = $3", vec![e.expires_at.into()])],
        DeploymentEvent::RunStarted(_) | DeploymentEvent::DeletionRequested(_) => vec![set("", vec![])],
    };
    Ok(writes)
}

/// Times each deployment of `events` that turned RUNNING lately, from its request (a replay of
/// an old log counts nothing again): after the batch's writes, which left every row's
/// `created_at` as its request set it.
async fn time_to_running(conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
    let Some(metrics) = nullops_metrics::recording() else { return Ok(()) };
    for stored in events {
        let at = stored.occurred_at.0;
        if stored.event_type != nullops_events::codec::types::DEPLOYMENT_RUNNING.0 || Timestamp::now().0.saturating_sub(at) >= TIME_TO_RUNNING_RECENT {
            continue;
        }
        let created: Option<i64> = sqlx::query_scalar("SELECT created_at FROM deployments WHERE deployment_id = $1")
            .bind(stored.stream_id.key().to_owned())
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(created) = created {
            metrics.time_to_running_seconds.observe(at.saturating_sub(created) as f64 / 1e6);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRow {
    pub deployment_id: Uuid,
    pub name: String,
    pub project: String,
    pub project_id: Uuid,
    pub environment: String,
    pub node_id: Option<Uuid>,
    /// What is wanted of it and what is seen of it (its phase is derived: [`DeploymentRow::phase`]).
    pub life: Life,
    /// Why it was never placed, when it was rejected.
    pub rejection: Option<RejectionCode>,
    pub attempt: u32,
    pub pipeline_version: u32,
    /// The tags chosen per service.
    pub versions: Vec<ChosenVersion>,
    pub plan: DeploymentPlan,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub lifetime_secs: u64,
    pub expires_at: i64,
    /// Why its run failed, when it did.
    pub failure: Option<DeploymentFailed>,
    /// Where its services answer on its node.
    pub endpoints: Vec<Endpoint>,
    pub created_by: String,
    pub created_at: i64,
    pub changed_at: i64,
    /// The W3C trace context its run belongs to (its placement's), when traced.
    pub trace_context: Option<String>,
}

impl DeploymentRow {
    pub fn phase(&self) -> Phase {
        self.life.phase()
    }
}

const SELECT: &str =
    "SELECT deployment_id, name, project, project_id, environment, node_id, desired, observed, cancelled, rejection, attempt, pipeline_version, \
    versions, plan, cpu_millis, memory_mib, lifetime_secs, expires_at, failure, endpoints, created_by, created_at, changed_at, trace_context FROM deployments";

fn row(r: &sqlx::any::AnyRow) -> Result<DeploymentRow, ProjectionError> {
    let corrupt = |what: &str| ProjectionError::Corrupt(format!("deployments.{what}"));
    let small = |v: i64, what: &str| u32::try_from(v).map_err(|_| corrupt(what));
    Ok(DeploymentRow {
        deployment_id: r.try_get::<String, _>(0)?.parse().map_err(|_| corrupt("deployment_id"))?,
        name: r.try_get(1)?,
        project: r.try_get(2)?,
        project_id: r.try_get::<String, _>(3)?.parse().map_err(|_| corrupt("project_id"))?,
        environment: r.try_get(4)?,
        node_id: r.try_get::<Option<String>, _>(5)?.map(|n| n.parse()).transpose().map_err(|_| corrupt("node_id"))?,
        life: Life {
            desired: Desired::parse(&r.try_get::<String, _>(6)?).ok_or_else(|| corrupt("desired"))?,
            observed: Observed::parse(&r.try_get::<String, _>(7)?).ok_or_else(|| corrupt("observed"))?,
            cancelled: r.try_get::<i64, _>(8)? != 0,
        },
        rejection: r.try_get::<Option<String>, _>(9)?.map(|c| RejectionCode::parse(&c).ok_or_else(|| corrupt("rejection"))).transpose()?,
        attempt: small(r.try_get(10)?, "attempt")?,
        pipeline_version: small(r.try_get(11)?, "pipeline_version")?,
        versions: serde_json::from_str(&r.try_get::<String, _>(12)?).map_err(|_| corrupt("versions"))?,
        plan: serde_json::from_str(&r.try_get::<String, _>(13)?).map_err(|_| corrupt("plan"))?,
        cpu_millis: small(r.try_get(14)?, "cpu_millis")?,
        memory_mib: small(r.try_get(15)?, "memory_mib")?,
        lifetime_secs: u64::try_from(r.try_get::<i64, _>(16)?).map_err(|_| corrupt("lifetime_secs"))?,
        expires_at: r.try_get(17)?,
        failure: r.try_get::<Option<String>, _>(18)?.map(|f| serde_json::from_str(&f)).transpose().map_err(|_| corrupt("failure"))?,
        endpoints: serde_json::from_str(&r.try_get::<String, _>(19)?).map_err(|_| corrupt("endpoints"))?,
        created_by: r.try_get(20)?,
        created_at: r.try_get(21)?,
        changed_at: r.try_get(22)?,
        trace_context: r.try_get(23)?,
    })
}

pub async fn deployment(db: &ReadModelDb, id: Uuid) -> Result<Option<DeploymentRow>, ProjectionError> {
    let found = sqlx::query(&format!("{SELECT} WHERE deployment_id = $1")).bind(id.to_string()).fetch_optional(db.pool()).await?;
    found.as_ref().map(row).transpose()
}

/// Deployments of `project` and/or `environment` (both when `None`), newest first; ended ones
/// only when `include_ended`.
pub async fn deployments(
    db: &ReadModelDb,
    project: Option<&str>,
    environment: Option<&str>,
    include_ended: bool,
) -> Result<Vec<DeploymentRow>, ProjectionError> {
    let ended = if include_ended { String::new() } else { format!(" AND phase NOT IN ({})", phases_where(Phase::ended)) };
    let sql = format!("{SELECT} WHERE ($1 = '' OR project = $1) AND ($2 = '' OR environment = $2){ended} ORDER BY created_at DESC");
    let rows = sqlx::query(&sql).bind(project.unwrap_or("").to_owned()).bind(environment.unwrap_or("").to_owned()).fetch_all(db.pool()).await?;
    rows.iter().map(row).collect()
}

/// The live deployment of `environment` named `name`, if any.
/// How many deployments are in each phase that has not ended.
pub async fn count_by_phase(db: &ReadModelDb) -> Result<Vec<(Phase, i64)>, ProjectionError> {
    let sql = format!("SELECT phase, COUNT(*) FROM deployments WHERE phase NOT IN ({}) GROUP BY phase", phases_where(Phase::ended));
    let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
    let mut counts = Vec::new();
    for r in &rows {
        let name: String = r.try_get(0)?;
        if let Some(phase) = Phase::ALL.into_iter().find(|p| p.name() == name) {
            counts.push((phase, r.try_get::<i64, _>(1)?));
        }
    }
    Ok(counts)
}

pub async fn by_name(db: &ReadModelDb, environment: &str, name: &str) -> Result<Option<DeploymentRow>, ProjectionError> {
    let sql = format!("{SELECT} WHERE environment = $1 AND name = $2 AND phase NOT IN ({})", phases_where(Phase::ended));
    let found = sqlx::query(&sql).bind(environment.to_owned()).bind(name.to_owned()).fetch_optional(db.pool()).await?;
    found.as_ref().map(row).transpose()
}

/// A deployment as the ingress routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub environment: String,
    pub name: String,
    pub phase: Phase,
    pub node_id: Option<Uuid>,
    pub endpoints: Vec<Endpoint>,
}

/// Every deployment the ingress serves or explains: neither ended nor being deleted (a deleted
/// deployment's URLs stop answering at once, not when its node has cleaned up).
pub async fn routable(db: &ReadModelDb) -> Result<Vec<RouteRow>, ProjectionError> {
    let sql = format!("SELECT environment, name, phase, node_id, endpoints FROM deployments WHERE phase IN ({})", phases_where(Phase::live));
    let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
    let corrupt = |what: &str| ProjectionError::Corrupt(format!("deployments.{what}"));
    rows.iter()
        .map(|r| {
            Ok(RouteRow {
                environment: r.try_get(0)?,
                name: r.try_get(1)?,
                phase: Phase::parse(&r.try_get::<String, _>(2)?).ok_or_else(|| corrupt("phase"))?,
                node_id: r.try_get::<Option<String>, _>(3)?.map(|n| n.parse()).transpose().map_err(|_| corrupt("node_id"))?,
                endpoints: serde_json::from_str(&r.try_get::<String, _>(4)?).map_err(|_| corrupt("endpoints"))?,
            })
        })
        .collect()
}

/// What a node should run and what it should remove ([`Life::on_node`], [`Life::removing`]: the
/// phases derived from those lives).
pub async fn on_node(db: &ReadModelDb, node_id: Uuid) -> Result<Vec<DeploymentRow>, ProjectionError> {
    let sql = format!("{SELECT} WHERE node_id = $1 AND phase IN ({}) ORDER BY created_at", phases_where(|p| p.on_node() || p.removing()));
    let rows = sqlx::query(&sql).bind(node_id.to_string()).fetch_all(db.pool()).await?;
    rows.iter().map(row).collect()
}

/// Deployments waiting for the saga to place them.
pub async fn pending(db: &ReadModelDb) -> Result<Vec<DeploymentRow>, ProjectionError> {
    // `Life::awaiting_placement`.
    let sql = format!("{SELECT} WHERE desired = '{}' AND observed = '{}' ORDER BY created_at", Desired::Run.name(), Observed::Pending.name());
    let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
    rows.iter().map(row).collect()
}

/// Live deployments whose lifetime ended before `now` (microseconds).
pub async fn expired(db: &ReadModelDb, now: i64) -> Result<Vec<DeploymentRow>, ProjectionError> {
    let sql = format!("{SELECT} WHERE expires_at < $1 AND phase IN ({}) ORDER BY expires_at", phases_where(Phase::live));
    let rows = sqlx::query(&sql).bind(now).fetch_all(db.pool()).await?;
    rows.iter().map(row).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub step: String,
    pub state: StepState,
    pub detail: String,
    pub changed_at: i64,
    /// When it turned running (absent if it never ran).
    pub started_at: Option<i64>,
}

pub async fn steps(db: &ReadModelDb, id: Uuid) -> Result<Vec<StepRow>, ProjectionError> {
    let rows = sqlx::query("SELECT step, state, detail, changed_at, started_at FROM deployment_steps WHERE deployment_id = $1 ORDER BY changed_at, step")
        .bind(id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let state = StepState::parse(&r.try_get::<String, _>(1)?).ok_or_else(|| ProjectionError::Corrupt("deployment_steps.state".into()))?;
            Ok(StepRow { step: r.try_get(0)?, state, detail: r.try_get(2)?, changed_at: r.try_get(3)?, started_at: r.try_get::<Option<i64>, _>(4)? })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub service: String,
    pub healthy: bool,
    pub detail: String,
    pub changed_at: i64,
}

pub async fn health(db: &ReadModelDb, id: Uuid) -> Result<Vec<HealthRow>, ProjectionError> {
    let rows = sqlx::query("SELECT service, healthy, detail, changed_at FROM deployment_health WHERE deployment_id = $1 ORDER BY service")
        .bind(id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok(HealthRow { service: r.try_get(0)?, healthy: r.try_get::<i64, _>(1)? != 0, detail: r.try_get(2)?, changed_at: r.try_get(3)? }))
        .collect()
}

/// The health rows of many deployments at once (a list page), by deployment.
pub async fn health_of(db: &ReadModelDb, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, Vec<HealthRow>>, ProjectionError> {
    // Bounded statements: well under every backend's limit on bound parameters.
    const CHUNK: usize = 500;
    let mut out: std::collections::HashMap<Uuid, Vec<HealthRow>> = std::collections::HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT deployment_id, service, healthy, detail, changed_at FROM deployment_health WHERE deployment_id IN ({}) ORDER BY service",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for r in query.fetch_all(db.pool()).await? {
            let id: String = r.try_get(0)?;
            let Ok(id) = Uuid::parse_str(&id) else { continue };
            let row = HealthRow { service: r.try_get(1)?, healthy: r.try_get::<i64, _>(2)? != 0, detail: r.try_get(3)?, changed_at: r.try_get(4)? };
            out.entry(id).or_default().push(row);
        }
    }
    Ok(out)
}

/// Lines kept per deployment and source.
pub const LOG_LINES_KEPT: i64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// Increases with every line written.
    pub seq: i64,
    pub deployment_id: Uuid,
    pub source: String,
    /// Microseconds since the epoch, as the agent stamped it.
    pub at: i64,
    pub line: String,
}

/// Appends lines (the connector's only write here); `seq` must increase.
pub async fn record_logs(db: &ReadModelDb, rows: &[LogRow]) -> Result<(), ProjectionError> {
    let mut tx = db.pool().begin().await?;
    for r in rows {
        sqlx::query("INSERT INTO deployment_logs (seq, deployment_id, source, at, line) VALUES ($1, $2, $3, $4, $5)")
            .bind(r.seq)
            .bind(r.deployment_id.to_string())
            .bind(r.source.clone())
            .bind(r.at)
            .bind(r.line.clone())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Drops all but the latest [`LOG_LINES_KEPT`] lines of a deployment's source.
pub async fn trim_logs(db: &ReadModelDb, deployment_id: Uuid, source: &str) -> Result<(), ProjectionError> {
    sqlx::query(
        "DELETE FROM deployment_logs WHERE deployment_id = $1 AND source = $2 AND seq <= \
         (SELECT seq FROM deployment_logs WHERE deployment_id = $1 AND source = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
    )
    .bind(deployment_id.to_string())
    .bind(source.to_owned())
    .bind(LOG_LINES_KEPT)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The highest `seq` written, 0 when none.
pub async fn last_log_seq(db: &ReadModelDb) -> Result<i64, ProjectionError> {
    Ok(sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM deployment_logs").fetch_one(db.pool()).await?.try_get(0)?)
}

/// Lines of a deployment (of `source` when given) with `seq` above `after` and `at` from
/// `since`, the latest `limit` of them, oldest first.
pub async fn logs(db: &ReadModelDb, deployment_id: Uuid, source: Option<&str>, after: i64, since: i64, limit: i64) -> Result<Vec<LogRow>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT seq, deployment_id, source, at, line FROM deployment_logs WHERE deployment_id = $1 AND ($2 = '' OR source = $2) \
         AND seq > $3 AND at >= $4 ORDER BY seq DESC LIMIT $5",
    )
    .bind(deployment_id.to_string())
    .bind(source.unwrap_or("").to_owned())
    .bind(after)
    .bind(since)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(LogRow {
                seq: r.try_get(0)?,
                deployment_id: r.try_get::<String, _>(1)?.parse().map_err(|_| ProjectionError::Corrupt("deployment_logs.deployment_id".into()))?,
                source: r.try_get(2)?,
                at: r.try_get(3)?,
                line: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, ProjectionError>>()?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use nullops_events::deployment::*;
    use nullops_events::{EventMetadata, NewEvent, StreamId};

    use super::*;

    fn stored(deployment_id: Uuid, version: u64, event: DeploymentEvent) -> StoredEvent {
        let new = NewEvent::new(&DomainEvent::Deployment(event), EventMetadata::system());
        StoredEvent {
            event_id: new.event_id,
            stream_id: StreamId::new("deployment", &deployment_id.to_string()),
            stream_version: version,
            position: nullops_events::LogPosition { commit: version, seq: version },
            event_type: new.event_type.to_owned(),
            schema_version: new.schema_version,
            payload: new.payload,
            occurred_at: new.occurred_at,
            metadata: new.metadata,
        }
    }

    fn plan() -> DeploymentPlan {
        DeploymentPlan { steps: vec![], edges: vec![] }
    }

    /// Every event that changes a deployment's life, after its request.
    fn changes() -> Vec<DeploymentEvent> {
        vec![
            DeploymentEvent::Scheduled(DeploymentScheduled { node_id: Uuid::from_u128(9) }),
            DeploymentEvent::RunStarted(RunStarted {}),
            DeploymentEvent::Running(DeploymentRunning { endpoints: vec![] }),
            DeploymentEvent::Failed(DeploymentFailed { step: None, reason: "exit code 1".into(), exit_code: Some(1), oom_killed: false }),
            DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::User }),
            DeploymentEvent::Removed(DeploymentRemoved {}),
            DeploymentEvent::Retried(DeploymentRetried { pipeline_version: 2, plan: plan() }),
            DeploymentEvent::Rejected(DeploymentRejected { code: RejectionCode::NoRoom, reason: "full".into() }),
        ]
    }

    /// Given a request and any 3 changes after it (the read model applies what the log holds,
    /// reachable or not), the row holds the life the aggregate's transition function gives, and
    /// the phase derived from it.
    #[tokio::test]
    async fn the_row_follows_the_one_transition_function_along_every_short_path() {
        let path = std::env::temp_dir().join(format!("nullops-deployments-{}.db", Uuid::now_v7()));
        let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let changes = changes();
        let n = changes.len();
        for path_index in 0..n * n * n {
            let deployment_id = Uuid::from_u128(path_index as u128 + 1);
            let request = DeploymentEvent::Requested(DeploymentRequested {
                deployment_id,
                project_id: Uuid::from_u128(1),
                project: "shop".into(),
                environment: "staging".into(),
                name: format!("d{path_index}"),
                versions: vec![],
                pipeline_version: 1,
                plan: plan(),
                cpu_millis: 1,
                memory_mib: 1,
                lifetime_secs: 60,
                expires_at: 1,
            });
            let steps = [changes[path_index % n].clone(), changes[path_index / n % n].clone(), changes[path_index / (n * n)].clone()];
            let mut expected = None;
            for (version, event) in std::iter::once(request).chain(steps).enumerate() {
                expected = Life::after(expected, &event);
                DeploymentsProjection.apply(&mut conn, &stored(deployment_id, version as u64 + 1, event.clone())).await.unwrap();
                let row = deployment(&db, deployment_id).await.unwrap().unwrap();
                assert_eq!(Some(row.life), expected, "path {path_index}, after {event:?}");
                let phase: String = sqlx::query_scalar("SELECT phase FROM deployments WHERE deployment_id = $1")
                    .bind(deployment_id.to_string())
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                assert_eq!(phase, row.phase().name(), "path {path_index}: the stored phase is the one derived from the pair");
            }
        }
        drop(conn);
        let _ = std::fs::remove_file(path);
    }
}
