//! The nodes read model: each node's registration, trust and connection as the log records them,
//! and what the control plane has reserved on it for deployments (projection `nodes`); and beside
//! it `node_usage`, the latest resource sample each agent reported.
//!
//! `node_usage` is telemetry, not history: samples arrive every few seconds per node, so they
//! are not events. The connector overwrites one row per node; nothing else writes it, and a
//! projection rebuild leaves it alone. So is `node_images`: what each agent last said it holds of
//! the images it was asked to prefetch.

use async_trait::async_trait;
use nullops_events::capacity::CapacityEvent;
use nullops_events::node::{NodeEvent, Refusal};
use nullops_events::{DomainEvent, StoredEvent};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::rows::{write_all, OnConflict, Shape, Then, Value, Write};
use crate::{Projection, ProjectionError, ReadModelDb};

/// The name of this read model (its checkpoint's key; what `nullops projections rebuild` takes).
pub const NAME: &str = "nodes";

pub struct NodesProjection;

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, environment TEXT NOT NULL, host TEXT NOT NULL,
        port BIGINT NOT NULL, enabled BIGINT NOT NULL, has_token BIGINT NOT NULL, pinned TEXT, pending TEXT,
        link TEXT NOT NULL, link_detail TEXT NOT NULL, agent_version TEXT NOT NULL, added_at BIGINT NOT NULL,
        changed_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS nodes_by_environment ON nodes (environment)",
    "CREATE TABLE IF NOT EXISTS node_allocations (node_id TEXT NOT NULL, deployment_id TEXT NOT NULL,
        cpu_millis BIGINT NOT NULL, memory_mib BIGINT NOT NULL, PRIMARY KEY (node_id, deployment_id))",
    "CREATE TABLE IF NOT EXISTS node_usage (node_id TEXT PRIMARY KEY, cpu_cores BIGINT NOT NULL,
        cpu_used_millicores BIGINT NOT NULL, memory_total_bytes BIGINT NOT NULL, memory_used_bytes BIGINT NOT NULL,
        containers TEXT NOT NULL, sampled_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS node_images (node_id TEXT PRIMARY KEY, images TEXT NOT NULL, reported_at BIGINT NOT NULL)",
];

nullops_events::named_enum! {
    /// The `link` column: how the connector last found the node's agent.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LinkState {
        /// Never reached yet.
        Pending = "pending",
        Online = "online",
        Offline = "offline",
        /// The agent refuses the node's current token.
        TokenRefused = "token_refused",
        /// The agent speaks another protocol version.
        Incompatible = "incompatible",
    }
}

/// `UPDATE nodes` of `node` at `at` (`$1`, `$2`), with `assignments` whose parameters start at `$3`.
fn set(node: &str, assignments: &str, mut values: Vec<Value>, at: i64) -> Write {
    values.splice(0..0, [at.into(), node.into()]);
    Write::statement(format!("UPDATE nodes SET {assignments}, changed_at = $1 WHERE node_id = $2"), values)
}

static NODE: Shape = Shape {
    table: "nodes",
    columns: &["node_id", "environment", "host", "port", "enabled", "has_token", "link", "link_detail", "agent_version", "added_at", "changed_at"],
    on_conflict: None,
};
/// A reservation recorded twice (a replayed batch) is recorded once.
static ALLOCATION: Shape = Shape {
    table: "node_allocations",
    columns: &["node_id", "deployment_id", "cpu_millis", "memory_mib"],
    on_conflict: Some(OnConflict { key: &[0, 1], then: Then::Nothing }),
};

#[async_trait]
impl Projection for NodesProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("node.") || event_type.starts_with("capacity.")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["nodes", "node_allocations"]
    }

    fn schema_version(&self) -> u32 {
        // 2: a node never reached stays pending; an untrusted node's detail says why.
        2
    }

    async fn apply(&self, conn: &mut AnyConnection, stored: &StoredEvent) -> Result<(), ProjectionError> {
        write_all(conn, &[stored], write).await
    }

    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        write_all(conn, events, write).await
    }
}

/// What `stored` asks of the nodes tables.
fn write(stored: &StoredEvent) -> Result<Vec<Write>, ProjectionError> {
    let at = stored.occurred_at.0;
    let node = stored.stream_id.key().to_owned();
    let event = match stored.decode()?.event {
        DomainEvent::Node(event) => event,
        DomainEvent::Capacity(CapacityEvent::Reserved(r)) => {
            let row = vec![node.into(), r.deployment_id.to_string().into(), i64::from(r.cpu_millis).into(), i64::from(r.memory_mib).into()];
            return Ok(vec![Write::Row(&ALLOCATION, row)]);
        }
        DomainEvent::Capacity(CapacityEvent::Released(r)) => {
            let values = vec![node.into(), r.deployment_id.to_string().into()];
            return Ok(vec![Write::statement("DELETE FROM node_allocations WHERE node_id = $1 AND deployment_id = $2", values)]);
        }
        _ => return Ok(vec![]),
    };
    let null = || Value::Text(None);
    let write = match event {
        NodeEvent::Added(a) => {
            let row = vec![
                node.into(),
                a.environment.into(),
                a.host.into(),
                i64::from(a.port).into(),
                1i64.into(),
                1i64.into(),
                LinkState::Pending.name().into(),
                "".into(),
                "".into(),
                at.into(),
                at.into(),
            ];
            Write::Row(&NODE, row)
        }
        NodeEvent::Moved(m) => set(&node, "host = $3, port = $4", vec![m.host.into(), i64::from(m.port).into()], at),
        NodeEvent::TokenRotated(_) => set(&node, "has_token = 1", vec![], at),
        NodeEvent::TokenRevoked(_) => set(&node, "has_token = 0", vec![], at),
        NodeEvent::Disabled(_) => set(&node, "enabled = 0", vec![], at),
        NodeEvent::Enabled(_) => set(&node, "enabled = 1", vec![], at),
        NodeEvent::Removed(_) => Write::statement("DELETE FROM nodes WHERE node_id = $1", vec![node.into()]),
        NodeEvent::ThumbprintPinned(t) => set(&node, "pinned = $3, pending = $4", vec![t.thumbprint.into(), null()], at),
        NodeEvent::ThumbprintApproved(t) => {
            let detail = "the new certificate was approved; connecting";
            set(&node, "pinned = $3, pending = $4, link_detail = $5", vec![t.thumbprint.into(), null(), detail.into()], at)
        }
        NodeEvent::ThumbprintRejected(t) => {
            let detail =
                format!("the agent presented certificate {}, not the pinned one: approve it if the agent's certificate was replaced on purpose", t.thumbprint);
            set(&node, "pending = $3, link_detail = $4", vec![t.thumbprint.into(), detail.into()], at)
        }
        NodeEvent::Connected(c) => {
            let assignments = "link = $3, link_detail = $4, agent_version = $5";
            set(&node, assignments, vec![LinkState::Online.name().into(), format!("protocol {}", c.protocol).into(), c.agent_version.into()], at)
        }
        NodeEvent::Disconnected(d) => {
            // As the aggregate has it: a node never reached stays pending.
            let assignments = "link = CASE WHEN link = $5 THEN $5 ELSE $3 END, link_detail = CASE WHEN link = $5 THEN $6 ELSE $4 END";
            let pending = format!("not reached yet: {}", d.reason);
            set(&node, assignments, vec![LinkState::Offline.name().into(), d.reason.into(), LinkState::Pending.name().into(), pending.into()], at)
        }
        NodeEvent::Refused(r) => {
            let (state, detail) = match r.refusal {
                Refusal::Token => (LinkState::TokenRefused, "the agent refuses the node's current token".to_owned()),
                Refusal::Incompatible { agent_protocol } => {
                    (LinkState::Incompatible, format!("the agent speaks protocol {agent_protocol}; upgrade it to the control plane's version"))
                }
            };
            set(&node, "link = $3, link_detail = $4", vec![state.name().into(), detail.into()], at)
        }
    };
    Ok(vec![write])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: Uuid,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub enabled: bool,
    pub has_token: bool,
    pub pinned: Option<String>,
    pub pending: Option<String>,
    pub link: LinkState,
    pub link_detail: String,
    pub agent_version: String,
    pub added_at: i64,
    pub changed_at: i64,
}

const NODE_SELECT: &str = "SELECT node_id, environment, host, port, enabled, has_token, pinned, pending, link, link_detail, \
    agent_version, added_at, changed_at FROM nodes";

fn node_row(r: &sqlx::any::AnyRow) -> Result<NodeRow, ProjectionError> {
    let corrupt = |what: &str| ProjectionError::Corrupt(format!("nodes.{what}"));
    Ok(NodeRow {
        node_id: r.try_get::<String, _>(0)?.parse().map_err(|_| corrupt("node_id"))?,
        environment: r.try_get(1)?,
        host: r.try_get(2)?,
        port: u16::try_from(r.try_get::<i64, _>(3)?).map_err(|_| corrupt("port"))?,
        enabled: r.try_get::<i64, _>(4)? != 0,
        has_token: r.try_get::<i64, _>(5)? != 0,
        pinned: r.try_get(6)?,
        pending: r.try_get(7)?,
        link: LinkState::parse(&r.try_get::<String, _>(8)?).ok_or_else(|| corrupt("link"))?,
        link_detail: r.try_get(9)?,
        agent_version: r.try_get(10)?,
        added_at: r.try_get(11)?,
        changed_at: r.try_get(12)?,
    })
}

/// Every node, or those of `environment`, by environment then address.
pub async fn nodes(db: &ReadModelDb, environment: Option<&str>) -> Result<Vec<NodeRow>, ProjectionError> {
    let rows = match environment {
        Some(e) => sqlx::query(&format!("{NODE_SELECT} WHERE environment = $1 ORDER BY host, port")).bind(e.to_owned()).fetch_all(db.pool()).await?,
        None => sqlx::query(&format!("{NODE_SELECT} ORDER BY environment, host, port")).fetch_all(db.pool()).await?,
    };
    rows.iter().map(node_row).collect()
}

pub async fn node(db: &ReadModelDb, node_id: Uuid) -> Result<Option<NodeRow>, ProjectionError> {
    let row = sqlx::query(&format!("{NODE_SELECT} WHERE node_id = $1")).bind(node_id.to_string()).fetch_optional(db.pool()).await?;
    row.as_ref().map(node_row).transpose()
}

/// Whether a node already uses `host:port`.
pub async fn endpoint_taken(db: &ReadModelDb, host: &str, port: u16) -> Result<bool, ProjectionError> {
    let row = sqlx::query("SELECT 1 FROM nodes WHERE host = $1 AND port = $2").bind(host.to_owned()).bind(i64::from(port)).fetch_optional(db.pool()).await?;
    Ok(row.is_some())
}

/// What the control plane has reserved on a node for deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    pub cpu_millis: u64,
    pub memory_mib: u64,
    pub deployments: u32,
}

pub async fn allocation(db: &ReadModelDb, node_id: Uuid) -> Result<Allocation, ProjectionError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(cpu_millis), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT), COUNT(*) FROM node_allocations WHERE node_id = $1",
    )
    .bind(node_id.to_string())
    .fetch_one(db.pool())
    .await?;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Allocation {
        cpu_millis: unsigned(row.try_get(0)?),
        memory_mib: unsigned(row.try_get(1)?),
        deployments: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
    })
}

/// The latest resource sample of a node; `containers` is the agent's JSON list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub cpu_cores: u32,
    pub cpu_used_millicores: u64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub containers: String,
    pub sampled_at: i64,
}

/// Overwrites a node's sample (the connector's only write).
pub async fn record_usage(db: &ReadModelDb, node_id: Uuid, usage: &UsageRow) -> Result<(), ProjectionError> {
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO node_usage (node_id, cpu_cores, cpu_used_millicores, memory_total_bytes, memory_used_bytes, containers, sampled_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node_id) DO UPDATE SET cpu_cores = excluded.cpu_cores, \
         cpu_used_millicores = excluded.cpu_used_millicores, memory_total_bytes = excluded.memory_total_bytes, \
         memory_used_bytes = excluded.memory_used_bytes, containers = excluded.containers, sampled_at = excluded.sampled_at",
    )
    .bind(node_id.to_string())
    .bind(i64::from(usage.cpu_cores))
    .bind(big(usage.cpu_used_millicores))
    .bind(big(usage.memory_total_bytes))
    .bind(big(usage.memory_used_bytes))
    .bind(usage.containers.clone())
    .bind(usage.sampled_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Overwrites what a node holds of the images it was asked to prefetch (`images`: the agent's
/// report as JSON; the connector's only other write).
pub async fn record_images(db: &ReadModelDb, node_id: Uuid, images: &str, at: i64) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO node_images (node_id, images, reported_at) VALUES ($1, $2, $3) \
         ON CONFLICT (node_id) DO UPDATE SET images = excluded.images, reported_at = excluded.reported_at",
    )
    .bind(node_id.to_string())
    .bind(images.to_owned())
    .bind(at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// What a node last said it holds of the images it was asked to prefetch: its report as JSON.
pub async fn images(db: &ReadModelDb, node_id: Uuid) -> Result<Option<String>, ProjectionError> {
    let row = sqlx::query("SELECT images FROM node_images WHERE node_id = $1").bind(node_id.to_string()).fetch_optional(db.pool()).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// When each node's agent last reported its usage (microseconds since the epoch).
pub async fn usage_samples(db: &ReadModelDb) -> Result<Vec<(Uuid, i64)>, ProjectionError> {
    let rows = sqlx::query("SELECT node_id, sampled_at FROM node_usage").fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0)?;
            let id = id.parse().map_err(|_| ProjectionError::Corrupt(format!("node_usage: node id {id:?}")))?;
            Ok((id, r.try_get::<i64, _>(1)?))
        })
        .collect()
}

const USAGE_COLUMNS: &str = "u.cpu_cores, u.cpu_used_millicores, u.memory_total_bytes, u.memory_used_bytes, u.containers, u.sampled_at";

pub async fn usage(db: &ReadModelDb, node_id: Uuid) -> Result<Option<UsageRow>, ProjectionError> {
    let row =
        sqlx::query(&format!("SELECT {USAGE_COLUMNS} FROM node_usage u WHERE u.node_id = $1")).bind(node_id.to_string()).fetch_optional(db.pool()).await?;
    row.as_ref().map(|r| usage_row(r, 0)).transpose()
}

/// The last sample of each node of `environment` that has reported one, by node (admission
/// reads them all at once).
pub async fn usages(db: &ReadModelDb, environment: &str) -> Result<std::collections::HashMap<Uuid, UsageRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT u.node_id, {USAGE_COLUMNS} FROM node_usage u JOIN nodes n ON n.node_id = u.node_id WHERE n.environment = $1"))
        .bind(environment.to_owned())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0)?;
            let id = id.parse().map_err(|_| ProjectionError::Corrupt(format!("node_usage: node id {id:?}")))?;
            Ok((id, usage_row(r, 1)?))
        })
        .collect()
}

/// A usage sample from `r`'s columns from `first` on ([`USAGE_COLUMNS`]).
fn usage_row(r: &sqlx::any::AnyRow, first: usize) -> Result<UsageRow, ProjectionError> {
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(UsageRow {
        cpu_cores: u32::try_from(r.try_get::<i64, _>(first)?).unwrap_or(0),
        cpu_used_millicores: unsigned(r.try_get(first + 1)?),
        memory_total_bytes: unsigned(r.try_get(first + 2)?),
        memory_used_bytes: unsigned(r.try_get(first + 3)?),
        containers: r.try_get(first + 4)?,
        sampled_at: r.try_get(first + 5)?,
    })
}
