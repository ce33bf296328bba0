//! The audit history: one row per event of the log, with who, what, when, to what, and what
//! changed in words (`audit_summary`).

use std::collections::HashMap;

use async_trait::async_trait;
use nullops_events::{LogPosition, StoredEvent};
use sqlx::{AnyConnection, Row};

use crate::audit_summary::{learned, summary, wanted};
use crate::rows::{placeholders, ROWS_PER_STATEMENT};
use crate::{Projection, ProjectionError, ReadModelDb};

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_log (
        event_id TEXT PRIMARY KEY, commit_pos BIGINT NOT NULL, seq BIGINT NOT NULL, stream_id TEXT NOT NULL,
        stream_version BIGINT NOT NULL, event_type TEXT NOT NULL, actor TEXT NOT NULL, occurred_at BIGINT NOT NULL,
        correlation_id TEXT NOT NULL, causation_id TEXT, summary TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_log_order ON audit_log (commit_pos, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, commit_pos, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_stream ON audit_log (stream_id, commit_pos, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_type ON audit_log (event_type, commit_pos, seq)",
    // What the summaries call things that events name by id only (see `audit_summary`).
    "CREATE TABLE IF NOT EXISTS audit_subjects (key TEXT PRIMARY KEY, label TEXT NOT NULL)",
];

/// The name of this read model (its checkpoint's key; what `nullops projections rebuild` takes).
pub const NAME: &str = "audit";

pub struct AuditProjection;

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log", "audit_subjects"]
    }

    fn schema_version(&self) -> u32 {
        // 2: each entry's summary; 3: a summary also uses the labels its own event teaches,
        // where none was known before (a sign-in names its user; a rename says the old name).
        3
    }

    async fn apply(&self, conn: &mut AnyConnection, e: &StoredEvent) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[e]).await
    }

    /// The whole batch in a few statements: the labels its events ask for read at once, the
    /// labels they teach written at once, the entries inserted `ROWS_PER_STATEMENT` at a time. Each
    /// entry's words are what applying the events one by one would have said: an event sees
    /// the labels taught by those before it.
    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        let decoded = events.iter().map(|e| Ok((*e, e.decode()?.event))).collect::<Result<Vec<_>, ProjectionError>>()?;
        let asked: std::collections::BTreeSet<String> = decoded.iter().flat_map(|(e, event)| wanted(&e.stream_id, event)).collect();
        // The runner's transaction has written already: reading here takes no new lock.
        let mut known = known_labels(conn, asked.into_iter().collect()).await?;
        let mut taught_here = HashMap::new();
        let mut entries = Vec::with_capacity(decoded.len());
        for (e, event) in &decoded {
            let mut labels: HashMap<String, String> =
                wanted(&e.stream_id, event).into_iter().filter_map(|key| known.get(&key).map(|label| (key, label.clone()))).collect();
            // What this event itself teaches names what was not known yet (a session's start
            // names its user); a name already known stays for this event's own words (a rename
            // says the old name).
            let taught = learned(&e.stream_id, event);
            for (key, label) in &taught {
                labels.entry(key.clone()).or_insert_with(|| label.clone());
            }
            entries.push((*e, summary(&e.stream_id, event, &|key| labels.get(key).cloned())));
            for (key, label) in taught {
                known.insert(key.clone(), label.clone());
                taught_here.insert(key, label);
            }
        }
        let taught_here: Vec<(String, String)> = taught_here.into_iter().collect();
        for chunk in taught_here.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_subjects (key, label) VALUES {} ON CONFLICT (key) DO UPDATE SET label = excluded.label",
                placeholders(chunk.len(), 2)
            );
            let mut insert = sqlx::query(&sql);
            for (key, label) in chunk {
                insert = insert.bind(key.clone()).bind(label.clone());
            }
            insert.execute(&mut *conn).await?;
        }
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log (event_id, commit_pos, seq, stream_id, stream_version, event_type, actor, \
                 occurred_at, correlation_id, causation_id, summary) VALUES {}",
                placeholders(chunk.len(), 11)
            );
            let mut insert = sqlx::query(&sql);
            for (e, said) in chunk {
                insert = insert
                    .bind(e.event_id.to_string())
                    .bind(e.position.commit as i64)
                    .bind(e.position.seq as i64)
                    .bind(e.stream_id.as_str().to_owned())
                    .bind(e.stream_version as i64)
                    .bind(e.event_type.clone())
                    .bind(e.metadata.actor.to_stored())
                    .bind(e.occurred_at.0)
                    .bind(e.metadata.correlation_id.0.to_string())
                    .bind(e.metadata.causation_id.map(|c| c.to_string()))
                    .bind(said.clone());
            }
            insert.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Rows written by one statement (11 parameters each for an entry: well under both backends'
/// limits on parameters).
/// The stored labels of `keys` (those that have one).
async fn known_labels(conn: &mut AnyConnection, keys: Vec<String>) -> Result<HashMap<String, String>, ProjectionError> {
    let mut known = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("SELECT key, label FROM audit_subjects WHERE key IN ({})", (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "));
        let mut select = sqlx::query(&sql);
        for key in chunk {
            select = select.bind(key.clone());
        }
        for row in select.fetch_all(&mut *conn).await? {
            known.insert(row.try_get(0)?, row.try_get(1)?);
        }
    }
    Ok(known)
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// One event, by its id.
    pub event_id: Option<String>,
    pub actor: Option<String>,
    pub stream_id: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    /// Inclusive lower bound, microseconds since the epoch.
    pub from: Option<i64>,
    /// Exclusive upper bound.
    pub to: Option<i64>,
    /// Words the summary contains, in any case: a name (a project's, a deployment's, a node's)
    /// finds what happened to it wherever it is stored.
    pub mentions: Option<String>,
}

impl AuditFilter {
    /// Whether `summary` holds what `mentions` asks for (the live feed's check; the query's is SQL).
    pub fn mentioned_in(&self, summary: &str) -> bool {
        self.mentions.as_ref().is_none_or(|m| summary.to_lowercase().contains(&m.to_lowercase()))
    }
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub position: LogPosition,
    pub event_id: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub actor: String,
    pub occurred_at: i64,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    /// What changed, in words.
    pub summary: String,
}

/// Newest first, up to `limit` entries strictly before `before` (a keyset cursor).
pub async fn query(db: &ReadModelDb, filter: &AuditFilter, before: Option<LogPosition>, limit: u32) -> Result<Vec<AuditEntry>, ProjectionError> {
    let mut sql = String::from(
        "SELECT commit_pos, seq, event_id, stream_id, stream_version, event_type, actor, occurred_at, \
         correlation_id, causation_id, summary FROM audit_log WHERE 1 = 1",
    );
    let mut texts: Vec<String> = Vec::new();
    let mut numbers: Vec<i64> = Vec::new();
    // Text conditions first, then numeric ones: placeholders are numbered in that bind order.
    for (column, value) in [
        ("event_id", &filter.event_id),
        ("actor", &filter.actor),
        ("stream_id", &filter.stream_id),
        ("event_type", &filter.event_type),
        ("correlation_id", &filter.correlation_id),
    ] {
        if let Some(v) = value {
            texts.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", texts.len()));
        }
    }
    if let Some(m) = &filter.mentions {
        // LIKE with its wildcards escaped: the words are matched as written.
        let escaped = m.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        texts.push(format!("%{escaped}%"));
        sql.push_str(&format!(" AND LOWER(summary) LIKE ${} ESCAPE '\\'", texts.len()));
    }
    let n = texts.len();
    if let Some(from) = filter.from {
        numbers.push(from);
        sql.push_str(&format!(" AND occurred_at >= ${}", n + numbers.len()));
    }
    if let Some(to) = filter.to {
        numbers.push(to);
        sql.push_str(&format!(" AND occurred_at < ${}", n + numbers.len()));
    }
    if let Some(b) = before {
        numbers.push(b.commit as i64);
        numbers.push(b.seq as i64);
        let (c, s) = (n + numbers.len() - 1, n + numbers.len());
        sql.push_str(&format!(" AND (commit_pos < ${c} OR (commit_pos = ${c} AND seq < ${s}))"));
    }
    numbers.push(i64::from(limit));
    sql.push_str(&format!(" ORDER BY commit_pos DESC, seq DESC LIMIT ${}", n + numbers.len()));
    let mut q = sqlx::query(&sql);
    for t in texts {
        q = q.bind(t);
    }
    for v in numbers {
        q = q.bind(v);
    }
    let rows = q.fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                position: LogPosition { commit: r.try_get::<i64, _>(0)? as u64, seq: r.try_get::<i64, _>(1)? as u64 },
                event_id: r.try_get(2)?,
                stream_id: r.try_get(3)?,
                stream_version: r.try_get(4)?,
                event_type: r.try_get(5)?,
                actor: r.try_get(6)?,
                occurred_at: r.try_get(7)?,
                correlation_id: r.try_get(8)?,
                causation_id: r.try_get(9)?,
                summary: r.try_get(10)?,
            })
        })
        .collect()
}
