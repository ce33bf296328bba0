//! What the console's charts draw: histories of samples (`nullops_projections::samples`) of a
//! node, a deployment's services and its traffic, and the platform's own health (projection
//! lag, agents, command rate) for admins. The samples are written by the connector (usage), the
//! ingress (traffic) and the platform sampler (`nullops_saga::samplers`, the platform's figures).

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use nullops_events::Timestamp;
use nullops_projections::samples::{self, Sample, Series};
use uuid::Uuid;

use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};

/// The longest history asked for: what is kept.
const MAX_MINUTES: i32 = (samples::KEEP_SECS / 60) as i32;

fn since_minutes(minutes: i32) -> ApiResult<(i64, i64)> {
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::InvalidInput(format!("minutes: use 1 to {MAX_MINUTES}")));
    }
    let now = Timestamp::now().0;
    Ok((now - i64::from(minutes) * 60_000_000, now))
}

/// CPU and memory in use at one moment.
#[derive(SimpleObject)]
pub struct UsageSample {
    at: DateTime<Utc>,
    cpu_millicores: i64,
    memory_bytes: i64,
}

fn usage(samples: Vec<Sample>) -> Vec<UsageSample> {
    samples.into_iter().map(|s| UsageSample { at: time(s.at), cpu_millicores: s.a, memory_bytes: s.b }).collect()
}

/// A node's CPU and memory, in use and reserved, at one moment.
#[derive(SimpleObject)]
pub struct NodeSample {
    at: DateTime<Utc>,
    cpu_millicores: i64,
    memory_bytes: i64,
    /// What its deployments had reserved then.
    cpu_reserved_millicores: Option<i64>,
    memory_reserved_bytes: Option<i64>,
}

/// A node's CPU and memory in use and reserved over the last `minutes`.
pub async fn node_history(ctx: &Context<'_>, node_id: Uuid, minutes: i32) -> ApiResult<Vec<NodeSample>> {
    let (since, now) = since_minutes(minutes)?;
    let db = &app(ctx).read_models;
    let reserved: std::collections::HashMap<i64, Sample> =
        samples::history(db, &Series::NodeReserved(node_id), since, now).await?.into_iter().map(|s| (s.at, s)).collect();
    Ok(samples::history(db, &Series::Node(node_id), since, now)
        .await?
        .into_iter()
        .map(|s| NodeSample {
            at: time(s.at),
            cpu_millicores: s.a,
            memory_bytes: s.b,
            cpu_reserved_millicores: reserved.get(&s.at).map(|r| r.a),
            memory_reserved_bytes: reserved.get(&s.at).map(|r| r.b),
        })
        .collect())
}

/// One service's CPU and memory over its deployment's life.
#[derive(SimpleObject)]
pub struct ServiceUsage {
    service: String,
    samples: Vec<UsageSample>,
}

pub async fn service_histories(ctx: &Context<'_>, deployment: Uuid, services: Vec<String>, since: i64) -> ApiResult<Vec<ServiceUsage>> {
    let now = Timestamp::now().0;
    let since = since.max(now - samples::KEEP_SECS * 1_000_000);
    let mut out = Vec::new();
    for service in services {
        let series = Series::Service { deployment, service: service.clone() };
        out.push(ServiceUsage { service, samples: usage(samples::history(&app(ctx).read_models, &series, since, now).await?) });
    }
    Ok(out)
}

/// Requests through the ingress in one window, and those answered 5xx.
#[derive(SimpleObject)]
pub struct TrafficSample {
    at: DateTime<Utc>,
    /// Requests per second over the window.
    requests_per_second: f64,
    /// The share answered 5xx, 0 to 1.
    error_rate: f64,
}

pub async fn traffic(ctx: &Context<'_>, environment: &str, deployment: &str, since: i64) -> ApiResult<Vec<TrafficSample>> {
    let now = Timestamp::now().0;
    let since = since.max(now - samples::KEEP_SECS * 1_000_000);
    let series = Series::Traffic { environment: environment.to_owned(), deployment: deployment.to_owned() };
    let window = samples::SAMPLE_SECS as f64;
    Ok(samples::history(&app(ctx).read_models, &series, since, now)
        .await?
        .into_iter()
        .map(|s| TrafficSample { at: time(s.at), requests_per_second: s.a as f64 / window, error_rate: if s.a > 0 { s.b as f64 / s.a as f64 } else { 0.0 } })
        .collect())
}

/// How far behind the log a projection is.
#[derive(SimpleObject)]
pub struct ProjectionHealth {
    name: String,
    /// Events it has not applied yet (counted up to 10,000).
    lag_events: i64,
    lag_seconds: f64,
    /// Replaying the log from its start (new, reshaped by an upgrade, or rebuilt): what it holds
    /// is partial until it has caught up; how many events it has applied so far.
    rebuilding: Option<RebuildProgress>,
    history: Vec<LagSample>,
}

#[derive(SimpleObject)]
pub struct RebuildProgress {
    since: DateTime<Utc>,
    events_applied: i64,
}

#[derive(SimpleObject)]
pub struct LagSample {
    at: DateTime<Utc>,
    events: i64,
    seconds: f64,
}

#[derive(SimpleObject)]
pub struct AgentCount {
    /// A node status, lower case (`online`, `offline`, …).
    state: String,
    count: i64,
}

/// Commands decided in one window.
#[derive(SimpleObject)]
pub struct CommandSample {
    at: DateTime<Utc>,
    /// Decided and done, per minute.
    done_per_minute: f64,
    /// Refused or failed, per minute.
    refused_per_minute: f64,
}

/// The platform's own health, for admins.
pub struct PlatformHealth {
    minutes: i32,
}

#[Object]
impl PlatformHealth {
    async fn projections(&self, ctx: &Context<'_>) -> ApiResult<Vec<ProjectionHealth>> {
        let app = app(ctx);
        let (since, now) = since_minutes(self.minutes)?;
        let mut out = Vec::new();
        let rebuilding = app.read_models.rebuilding().await?;
        for lag in app.projection_lags().await? {
            let rebuilding = rebuilding
                .iter()
                .find(|r| r.name == lag.name)
                .map(|r| RebuildProgress { since: time(r.since), events_applied: i64::try_from(r.events_applied).unwrap_or(i64::MAX) });
            let history = samples::history(&app.read_models, &Series::Lag(lag.name.clone()), since, now)
                .await?
                .into_iter()
                .map(|s| LagSample { at: time(s.at), events: s.a, seconds: s.b as f64 / 1000.0 })
                .collect();
            out.push(ProjectionHealth { name: lag.name, lag_events: lag.events, lag_seconds: lag.seconds, rebuilding, history });
        }
        Ok(out)
    }

    async fn agents(&self, ctx: &Context<'_>) -> ApiResult<Vec<AgentCount>> {
        let state = crate::metrics::agent_counts(app(ctx)).await?;
        Ok(state.into_iter().map(|(state, count)| AgentCount { state: state.to_owned(), count }).collect())
    }

    async fn commands(&self, ctx: &Context<'_>) -> ApiResult<Vec<CommandSample>> {
        let (since, now) = since_minutes(self.minutes)?;
        let per_minute = 60.0 / samples::SAMPLE_SECS as f64;
        Ok(samples::history(&app(ctx).read_models, &Series::Commands, since, now)
            .await?
            .into_iter()
            .map(|s| CommandSample { at: time(s.at), done_per_minute: s.a as f64 * per_minute, refused_per_minute: s.b as f64 * per_minute })
            .collect())
    }
}

#[derive(Default)]
pub struct ChartsQuery;

#[Object]
impl ChartsQuery {
    /// The platform's own health over the last `minutes` (admins).
    async fn platform_health(&self, ctx: &Context<'_>, #[graphql(default = 60)] minutes: i32) -> ApiResult<PlatformHealth> {
        request(ctx).admin()?;
        since_minutes(minutes)?;
        Ok(PlatformHealth { minutes })
    }
}
