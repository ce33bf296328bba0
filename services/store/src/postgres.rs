//! The PostgreSQL event store.
//!
//! One append is one statement (so one round trip and one implicit transaction): a CTE claims the
//! stream's next version in `streams` and inserts the events only if the claim succeeded. Appends
//! to different streams share no lock. Readers follow `(tx_id, position)` below the oldest running
//! transaction (`pg_snapshot_xmin`), so an event is never skipped when transactions commit out of
//! order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nullops_events::{LogPosition, NewEvent, StoredEvent, StreamId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::migrate::{self, Migration};
use crate::rows::{self, to_i64, EVENT_COLUMNS};
use crate::{Appended, EventStore, Lease, StoreError};

const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("migrations/postgres_0001_events.sql") }];

/// Serialises migrations of concurrently starting servers.
const MIGRATION_LOCK: i64 = 0x6e75_6c6c_6f70_7301;

pub struct PgEventStore {
    pool: PgPool,
    options: PgConnectOptions,
    appended: Arc<watch::Sender<u64>>,
}

impl PgEventStore {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        migrate(&pool).await?;
        Ok(PgEventStore { pool, options, appended: Arc::new(watch::channel(0).0) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    migrate::apply(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

/// `$1` stream, `$2` expected version, `$3` new version, `$4..$12` the events as parallel arrays.
const INSERT_EVENTS: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload,
                    occurred_at, actor, correlation_id, causation_id, trace_context)
SELECT e.event_id, claimed.stream_id, $2 + e.ord, e.event_type, e.schema_version, e.payload,
       e.occurred_at, e.actor, e.correlation_id, e.causation_id, e.trace_context
FROM claimed,
     unnest($4::uuid[], $5::text[], $6::int[], $7::bytea[], $8::bigint[], $9::text[], $10::uuid[],
            $11::uuid[], $12::text[])
       WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, occurred_at, actor,
                            correlation_id, causation_id, trace_context, ord)
ORDER BY e.ord
RETURNING tx_id::text::bigint, position";

fn append_sql(expected_version: u64) -> String {
    let claim = if expected_version == 0 {
        // A new stream: the insert loses to any concurrent creator (it waits, then does nothing).
        "INSERT INTO streams (stream_id, version) VALUES ($1, $3) ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id"
    } else {
        // The row lock orders concurrent appenders; the loser re-checks the version and matches nothing.
        "UPDATE streams SET version = $3 WHERE stream_id = $1 AND version = $2 RETURNING stream_id"
    };
    format!("WITH claimed AS ({claim}) {INSERT_EVENTS}")
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, stream: &StreamId, expected_version: u64, events: &[NewEvent]) -> Result<Appended, StoreError> {
        let conflict = || StoreError::Conflict { stream_id: stream.clone(), expected: expected_version };
        let new_version = expected_version + events.len() as u64;
        let result = sqlx::query(&append_sql(expected_version))
            .bind(stream.as_str())
            .bind(to_i64(expected_version))
            .bind(to_i64(new_version))
            .bind(events.iter().map(|e| e.event_id.0).collect::<Vec<Uuid>>())
            .bind(events.iter().map(|e| e.event_type).collect::<Vec<&str>>())
            .bind(events.iter().map(|e| i32::from(e.schema_version)).collect::<Vec<i32>>())
            .bind(events.iter().map(|e| e.payload.as_slice()).collect::<Vec<&[u8]>>())
            .bind(events.iter().map(|e| e.occurred_at.0).collect::<Vec<i64>>())
            .bind(events.iter().map(|e| e.metadata.actor.to_stored()).collect::<Vec<String>>())
            .bind(events.iter().map(|e| e.metadata.correlation_id.0).collect::<Vec<Uuid>>())
            .bind(events.iter().map(|e| e.metadata.causation_id).collect::<Vec<Option<Uuid>>>())
            .bind(events.iter().map(|e| e.metadata.trace_context.as_deref()).collect::<Vec<Option<&str>>>())
            .fetch_all(&self.pool)
            .await;
        let rows = match result {
            Ok(rows) => rows,
            Err(e) if is_unique_violation(&e) => return Err(conflict()),
            Err(e) => return Err(e.into()),
        };
        if rows.len() != events.len() {
            return Err(conflict());
        }
        let mut positions = Vec::with_capacity(rows.len());
        for row in &rows {
            let commit: i64 = row.try_get(0)?;
            let seq: i64 = row.try_get(1)?;
            positions.push(LogPosition { commit: commit as u64, seq: seq as u64 });
        }
        positions.sort();
        self.appended.send_modify(|n| *n += 1);
        Ok(Appended {
            first: positions[0],
            last: positions[positions.len() - 1],
            stream_version: new_version,
        })
    }

    async fn read_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT tx_id::text::bigint, position, {EVENT_COLUMNS} FROM events \
             WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        );
        let rows = sqlx::query(&sql).bind(stream.as_str()).bind(to_i64(after_version)).fetch_all(&self.pool).await?;
        rows.iter().map(rows::stored_event).collect()
    }

    async fn read_all(&self, after: LogPosition, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT tx_id::text::bigint, position, {EVENT_COLUMNS} FROM events \
             WHERE (tx_id, position) > ($1::text::xid8, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after.commit.to_string())
            .bind(to_i64(after.seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::stored_event).collect()
    }

    fn append_signal(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    async fn load_checkpoint(&self, name: &str) -> Result<LogPosition, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT commit_pos, seq FROM store_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map_or(LogPosition::START, |(c, s)| LogPosition { commit: c as u64, seq: s as u64 }))
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO store_checkpoints (name, commit_pos, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET commit_pos = EXCLUDED.commit_pos, seq = EXCLUDED.seq",
        )
        .bind(name)
        .bind(to_i64(position.commit))
        .bind(to_i64(position.seq))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        // A dedicated connection, not a pooled one: the advisory lock lives as long as it does.
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Lease::postgres(conn)))
        } else {
            conn.close().await.ok();
            Ok(None)
        }
    }
}
