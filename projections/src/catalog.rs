//! The catalog read model: teams, members and grants; registries, services, plugins,
//! environments and projects (each stored as its definition in JSON); pipeline versions; and
//! the names (never the values) of project secrets.

use async_trait::async_trait;
use nullops_events::catalog::*;
use nullops_events::{DomainEvent, StoredEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::rows::{write_all, OnConflict, Shape, Then, Write};
use crate::{Projection, ProjectionError, ReadModelDb};

/// The name of this read model (its checkpoint's key; what `nullops projections rebuild` takes).
pub const NAME: &str = "catalog";

pub struct CatalogProjection;

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS teams (team_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS team_members (team_id TEXT NOT NULL, username TEXT NOT NULL, PRIMARY KEY (team_id, username))",
    "CREATE INDEX IF NOT EXISTS team_members_by_user ON team_members (username)",
    "CREATE TABLE IF NOT EXISTS grants (team_id TEXT NOT NULL, target_kind TEXT NOT NULL, target_name TEXT NOT NULL,
        access TEXT NOT NULL, PRIMARY KEY (team_id, target_kind, target_name))",
    "CREATE INDEX IF NOT EXISTS grants_by_target ON grants (target_kind, target_name)",
    "CREATE TABLE IF NOT EXISTS catalog_entries (kind TEXT NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL,
        created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (kind, name))",
    "CREATE TABLE IF NOT EXISTS pipeline_versions (project_id TEXT NOT NULL, version BIGINT NOT NULL, graph TEXT NOT NULL,
        saved_at BIGINT NOT NULL, saved_by TEXT NOT NULL, message TEXT NOT NULL, layout TEXT NOT NULL, based_on BIGINT,
        PRIMARY KEY (project_id, version))",
    "CREATE TABLE IF NOT EXISTS project_secrets (project_id TEXT NOT NULL, name TEXT NOT NULL, key_id TEXT NOT NULL,
        created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, updated_by TEXT NOT NULL, PRIMARY KEY (project_id, name))",
];

/// The kinds of `catalog_entries` rows.
pub mod kind {
    pub const REGISTRY: &str = "registry";
    pub const SERVICE: &str = "service";
    pub const PLUGIN: &str = "plugin";
    pub const ENVIRONMENT: &str = "environment";
    pub const PROJECT: &str = "project";
}

fn json<T: Serialize>(value: &T) -> String {
    // Definitions are plain data: strings, numbers, enums, byte vectors.
    serde_json::to_string(value).expect("definitions serialise to JSON")
}

static ENTRY: Shape = Shape {
    table: "catalog_entries",
    columns: &["kind", "name", "definition", "created_at", "updated_at"],
    on_conflict: Some(OnConflict { key: &[0, 1], then: Then::Update("definition = excluded.definition, updated_at = excluded.updated_at") }),
};
static TEAM: Shape = Shape { table: "teams", columns: &["team_id", "name", "created_at"], on_conflict: None };
static MEMBER: Shape = Shape { table: "team_members", columns: &["team_id", "username"], on_conflict: None };
static GRANT: Shape = Shape {
    table: "grants",
    columns: &["team_id", "target_kind", "target_name", "access"],
    on_conflict: Some(OnConflict { key: &[0, 1, 2], then: Then::Update("access = excluded.access") }),
};
static PIPELINE_VERSION: Shape = Shape {
    table: "pipeline_versions",
    columns: &["project_id", "version", "graph", "saved_at", "saved_by", "message", "layout", "based_on"],
    on_conflict: None,
};
static SECRET: Shape = Shape {
    table: "project_secrets",
    columns: &["project_id", "name", "key_id", "created_at", "updated_at", "updated_by"],
    on_conflict: Some(OnConflict {
        key: &[0, 1],
        then: Then::Update("key_id = excluded.key_id, updated_at = excluded.updated_at, updated_by = excluded.updated_by"),
    }),
};

fn put(kind: &str, name: &str, definition: String, at: i64) -> Write {
    Write::Row(&ENTRY, vec![kind.into(), name.into(), definition.into(), at.into(), at.into()])
}

fn remove(kind: &str, name: &str) -> Write {
    Write::statement("DELETE FROM catalog_entries WHERE kind = $1 AND name = $2", vec![kind.into(), name.into()])
}

fn drop_grants_on(target: &AccessTarget) -> Write {
    Write::statement("DELETE FROM grants WHERE target_kind = $1 AND target_name = $2", vec![target.kind().into(), target.name().into()])
}

fn run(sql: &str, binds: &[&str]) -> Write {
    Write::statement(sql, binds.iter().map(|&b| b.into()).collect())
}

#[async_trait]
impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_version(&self) -> u32 {
        // 2: a pipeline version's message, layout and the version it was based on.
        2
    }

    fn handles(&self, event_type: &str) -> bool {
        ["team.", "access.", "registry.", "service.", "plugin.", "environment.", "project.", "pipeline.", "secret."].iter().any(|p| event_type.starts_with(p))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["teams", "team_members", "grants", "catalog_entries", "pipeline_versions", "project_secrets"]
    }

    async fn apply(&self, conn: &mut AnyConnection, stored: &StoredEvent) -> Result<(), ProjectionError> {
        write_all(conn, &[stored], write).await
    }

    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        write_all(conn, events, write).await
    }
}

/// What `stored` asks of the catalog tables.
fn write(stored: &StoredEvent) -> Result<Vec<Write>, ProjectionError> {
    use CatalogEvent as C;
    let at = stored.occurred_at.0;
    let actor = stored.metadata.actor.to_stored();
    let writes = match stored.decode()?.event {
        DomainEvent::Catalog(event) => match event {
            C::TeamCreated(e) => vec![Write::Row(&TEAM, vec![e.team_id.to_string().into(), e.name.into(), at.into()])],
            C::TeamRenamed(e) => vec![run("UPDATE teams SET name = $1 WHERE team_id = $2", &[&e.name, &e.team_id.to_string()])],
            C::TeamDeleted(e) => {
                let id = e.team_id.to_string();
                ["teams", "team_members", "grants"].into_iter().map(|table| run(&format!("DELETE FROM {table} WHERE team_id = $1"), &[&id])).collect()
            }
            C::TeamMemberAdded(e) => vec![Write::Row(&MEMBER, vec![e.team_id.to_string().into(), e.username.into()])],
            C::TeamMemberRemoved(e) => {
                vec![run("DELETE FROM team_members WHERE team_id = $1 AND username = $2", &[&e.team_id.to_string(), &e.username])]
            }
            C::AccessGranted(e) => {
                let row = vec![e.team_id.to_string().into(), e.target.kind().into(), e.target.name().into(), e.access.as_str().into()];
                vec![Write::Row(&GRANT, row)]
            }
            C::AccessRevoked(e) => vec![run(
                "DELETE FROM grants WHERE team_id = $1 AND target_kind = $2 AND target_name = $3",
                &[&e.team_id.to_string(), e.target.kind(), e.target.name()],
            )],
            // Webhooks and repository links are read from the catalog aggregate's state
            // (their secrets are sealed there); no table of their own.
            C::WebhookCreated(_) | C::WebhookSecretRotated(_) | C::WebhookDeleted(_) | C::RepositoryLinked(_) | C::RepositoryUnlinked(_) => vec![],
            C::RegistryAdded(r) => vec![put(kind::REGISTRY, &r.name, json(&r), at)],
            C::RegistryChanged(e) => vec![put(kind::REGISTRY, &e.definition.name, json(&e.definition), at)],
            C::RegistryRemoved(e) => vec![remove(kind::REGISTRY, &e.name)],
            C::ServiceCreated(s) | C::ServiceUpdated(s) => vec![put(kind::SERVICE, &s.name, json(&s), at)],
            C::ServiceRemoved(e) => vec![remove(kind::SERVICE, &e.name)],
            C::PluginCreated(p) | C::PluginUpdated(p) => vec![put(kind::PLUGIN, &p.name, json(&p), at)],
            C::PluginRemoved(e) => vec![remove(kind::PLUGIN, &e.name)],
            C::EnvironmentCreated(e) | C::EnvironmentUpdated(e) => vec![put(kind::ENVIRONMENT, &e.name, json(&e), at)],
            C::EnvironmentRemoved(e) => vec![remove(kind::ENVIRONMENT, &e.name), drop_grants_on(&AccessTarget::Environment(e.name))],
            C::ProjectCreated(p) | C::ProjectUpdated(p) => vec![put(kind::PROJECT, &p.name, json(&p), at)],
            C::ProjectRemoved(e) => vec![remove(kind::PROJECT, &e.name), drop_grants_on(&AccessTarget::Project(e.name))],
        },
        DomainEvent::Pipeline(PipelineEvent::VersionSaved(v)) => {
            let row = vec![
                v.project_id.to_string().into(),
                i64::from(v.version).into(),
                json(&v.graph).into(),
                at.into(),
                actor.into(),
                v.message.into(),
                json(&v.layout).into(),
                v.based_on.map(i64::from).into(),
            ];
            vec![Write::Row(&PIPELINE_VERSION, row)]
        }
        // A dry run changes nothing here: it is an audit entry only.
        DomainEvent::Pipeline(PipelineEvent::DryRun(_)) => vec![],
        DomainEvent::Secret(SecretEvent::Created(s) | SecretEvent::Updated(s)) => {
            let row = vec![stored.stream_id.key().into(), s.name.into(), s.value.key_id.to_string().into(), at.into(), at.into(), actor.into()];
            vec![Write::Row(&SECRET, row)]
        }
        DomainEvent::Secret(SecretEvent::Deleted(d)) => {
            vec![run("DELETE FROM project_secrets WHERE project_id = $1 AND name = $2", &[stored.stream_id.key(), &d.name])]
        }
        DomainEvent::User(_)
        | DomainEvent::Session(_)
        | DomainEvent::ApiToken(_)
        | DomainEvent::Node(_)
        | DomainEvent::Capacity(_)
        | DomainEvent::Preview(_)
        | DomainEvent::Deployment(_)
        | DomainEvent::DeploymentName(_) => vec![],
    };
    Ok(writes)
}

// ---------------------------------------------------------------------------------------------
// Queries

/// A catalog definition with when it was created and last changed.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub definition: T,
    pub created_at: i64,
    pub updated_at: i64,
}

fn entry<T: DeserializeOwned>(r: &sqlx::any::AnyRow) -> Result<Entry<T>, ProjectionError> {
    let text: String = r.try_get(0)?;
    let definition = serde_json::from_str(&text).map_err(|e| ProjectionError::Corrupt(format!("catalog entry: {e}")))?;
    Ok(Entry { definition, created_at: r.try_get(1)?, updated_at: r.try_get(2)? })
}

pub async fn entries<T: DeserializeOwned>(db: &ReadModelDb, kind: &str) -> Result<Vec<Entry<T>>, ProjectionError> {
    let rows =
        sqlx::query("SELECT definition, created_at, updated_at FROM catalog_entries WHERE kind = $1 ORDER BY name").bind(kind).fetch_all(db.pool()).await?;
    rows.iter().map(entry).collect()
}

pub async fn entry_named<T: DeserializeOwned>(db: &ReadModelDb, kind: &str, name: &str) -> Result<Option<Entry<T>>, ProjectionError> {
    let row = sqlx::query("SELECT definition, created_at, updated_at FROM catalog_entries WHERE kind = $1 AND name = $2")
        .bind(kind)
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(entry).transpose()
}

#[derive(Debug, Clone)]
pub struct TeamRow {
    pub team_id: String,
    pub name: String,
    pub created_at: i64,
}

pub async fn teams(db: &ReadModelDb) -> Result<Vec<TeamRow>, ProjectionError> {
    let rows = sqlx::query("SELECT team_id, name, created_at FROM teams ORDER BY name").fetch_all(db.pool()).await?;
    rows.iter().map(|r| Ok(TeamRow { team_id: r.try_get(0)?, name: r.try_get(1)?, created_at: r.try_get(2)? })).collect()
}

pub async fn team_members(db: &ReadModelDb, team_id: &str) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT username FROM team_members WHERE team_id = $1 ORDER BY username").bind(team_id).fetch_all(db.pool()).await?)
}

/// The names of the teams `username` belongs to.
pub async fn teams_of(db: &ReadModelDb, username: &str) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT t.name FROM teams t JOIN team_members m ON m.team_id = t.team_id WHERE m.username = $1 ORDER BY t.name")
        .bind(username)
        .fetch_all(db.pool())
        .await?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub team: String,
    pub target_kind: String,
    pub target_name: String,
    pub access: Access,
}

fn access_of(raw: &str) -> Result<Access, ProjectionError> {
    match raw {
        "FULL" => Ok(Access::Full),
        "READ_ONLY" => Ok(Access::ReadOnly),
        other => Err(ProjectionError::Corrupt(format!("unknown access level {other}"))),
    }
}

const GRANT_SELECT: &str = "SELECT t.name, g.target_kind, g.target_name, g.access FROM grants g JOIN teams t ON t.team_id = g.team_id";

fn grant_rows(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<GrantRow>, ProjectionError> {
    rows.iter()
        .map(|r| Ok(GrantRow { team: r.try_get(0)?, target_kind: r.try_get(1)?, target_name: r.try_get(2)?, access: access_of(&r.try_get::<String, _>(3)?)? }))
        .collect()
}

pub async fn grants_of_team(db: &ReadModelDb, team_id: &str) -> Result<Vec<GrantRow>, ProjectionError> {
    let rows = sqlx::query(&format!("{GRANT_SELECT} WHERE g.team_id = $1 ORDER BY g.target_kind, g.target_name")).bind(team_id).fetch_all(db.pool()).await?;
    grant_rows(rows)
}

pub async fn grants_on(db: &ReadModelDb, target: &AccessTarget) -> Result<Vec<GrantRow>, ProjectionError> {
    let rows = sqlx::query(&format!("{GRANT_SELECT} WHERE g.target_kind = $1 AND g.target_name = $2 ORDER BY t.name"))
        .bind(target.kind())
        .bind(target.name().to_owned())
        .fetch_all(db.pool())
        .await?;
    grant_rows(rows)
}

/// Every grant held by a team `username` belongs to.
pub async fn grants_of_user(db: &ReadModelDb, username: &str) -> Result<Vec<GrantRow>, ProjectionError> {
    let rows = sqlx::query(&format!("{GRANT_SELECT} JOIN team_members m ON m.team_id = g.team_id WHERE m.username = $1 ORDER BY g.target_kind, g.target_name"))
        .bind(username)
        .fetch_all(db.pool())
        .await?;
    grant_rows(rows)
}

#[derive(Debug, Clone)]
pub struct PipelineVersionRow {
    pub version: u32,
    pub graph: PipelineGraph,
    pub saved_at: i64,
    pub saved_by: String,
    pub message: String,
    pub layout: Vec<NodePlacement>,
    pub based_on: Option<u32>,
}

const VERSION_COLUMNS: &str = "version, graph, saved_at, saved_by, message, layout, based_on";

fn version_row(r: &sqlx::any::AnyRow) -> Result<PipelineVersionRow, ProjectionError> {
    let corrupt = |e: &dyn std::fmt::Display| ProjectionError::Corrupt(format!("pipeline version: {e}"));
    let graph: String = r.try_get(1)?;
    let layout: String = r.try_get(5)?;
    Ok(PipelineVersionRow {
        version: u32::try_from(r.try_get::<i64, _>(0)?).map_err(|e| corrupt(&e))?,
        graph: serde_json::from_str(&graph).map_err(|e| corrupt(&e))?,
        saved_at: r.try_get(2)?,
        saved_by: r.try_get(3)?,
        message: r.try_get(4)?,
        layout: serde_json::from_str(&layout).map_err(|e| corrupt(&e))?,
        based_on: r.try_get::<Option<i64>, _>(6)?.map(u32::try_from).transpose().map_err(|e| corrupt(&e))?,
    })
}

/// Every version of a project's pipeline, newest first.
pub async fn pipeline_versions(db: &ReadModelDb, project_id: Uuid) -> Result<Vec<PipelineVersionRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM pipeline_versions WHERE project_id = $1 ORDER BY version DESC"))
        .bind(project_id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(version_row).collect()
}

/// A project's latest pipeline version, if one was saved.
pub async fn latest_pipeline_version(db: &ReadModelDb, project_id: Uuid) -> Result<Option<PipelineVersionRow>, ProjectionError> {
    let row = sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM pipeline_versions WHERE project_id = $1 ORDER BY version DESC LIMIT 1"))
        .bind(project_id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(version_row).transpose()
}

pub async fn pipeline_version(db: &ReadModelDb, project_id: Uuid, version: u32) -> Result<Option<PipelineVersionRow>, ProjectionError> {
    let row = sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM pipeline_versions WHERE project_id = $1 AND version = $2"))
        .bind(project_id.to_string())
        .bind(i64::from(version))
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(version_row).transpose()
}

#[derive(Debug, Clone)]
pub struct SecretRow {
    pub name: String,
    pub key_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

pub async fn secrets(db: &ReadModelDb, project_id: Uuid) -> Result<Vec<SecretRow>, ProjectionError> {
    let rows = sqlx::query("SELECT name, key_id, created_at, updated_at, updated_by FROM project_secrets WHERE project_id = $1 ORDER BY name")
        .bind(project_id.to_string())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok(SecretRow { name: r.try_get(0)?, key_id: r.try_get(1)?, created_at: r.try_get(2)?, updated_at: r.try_get(3)?, updated_by: r.try_get(4)? }))
        .collect()
}
