//! The audit history: one row per event of the log, with who, what, when and to what.

use async_trait::async_trait;
use nullops_events::{LogPosition, StoredEvent};
use sqlx::{AnyConnection, Row};

use crate::{Projection, ProjectionError, ReadModelDb};

pub struct AuditProjection;

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    async fn apply(&self, conn: &mut AnyConnection, e: &StoredEvent) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO audit_log (event_id, commit_pos, seq, stream_id, stream_version, event_type, actor, \
             occurred_at, correlation_id, causation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
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
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub stream_id: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    /// Inclusive lower bound, microseconds since the epoch.
    pub from: Option<i64>,
    /// Exclusive upper bound.
    pub to: Option<i64>,
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
}

/// Newest first, up to `limit` entries strictly before `before` (a keyset cursor).
pub async fn query(db: &ReadModelDb, filter: &AuditFilter, before: Option<LogPosition>, limit: u32) -> Result<Vec<AuditEntry>, ProjectionError> {
    let mut sql = String::from(
        "SELECT commit_pos, seq, event_id, stream_id, stream_version, event_type, actor, occurred_at, \
         correlation_id, causation_id FROM audit_log WHERE 1 = 1",
    );
    let mut texts: Vec<String> = Vec::new();
    let mut numbers: Vec<i64> = Vec::new();
    // Text conditions first, then numeric ones: placeholders are numbered in that bind order.
    for (column, value) in
        [("actor", &filter.actor), ("stream_id", &filter.stream_id), ("event_type", &filter.event_type), ("correlation_id", &filter.correlation_id)]
    {
        if let Some(v) = value {
            texts.push(v.clone());
            sql.push_str(&format!(" AND {column} = ${}", texts.len()));
        }
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
            })
        })
        .collect()
}
