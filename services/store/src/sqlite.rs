//! The embedded SQLite event store.
//!
//! SQLite allows one writer at a time, so appends go through a pool of exactly one connection and
//! commit in position order: the global order is simply `position` (`commit` mirrors `seq`).
//! Readers use their own pool and see committed data only (WAL mode).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nullops_events::{LogPosition, NewEvent, StoredEvent, StreamId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

use crate::lease::LocalLeases;
use crate::migrate::{self, Migration};
use crate::rows::{self, to_i64, EVENT_COLUMNS};
use crate::{Appended, EventStore, Lease, StoreError};

const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("migrations/sqlite_0001_events.sql") }];

pub struct SqliteEventStore {
    writer: SqlitePool,
    readers: SqlitePool,
    appended: Arc<watch::Sender<u64>>,
    leases: LocalLeases,
}

/// Connection options for a SQLite database file of NullOps: WAL, a bounded busy wait, and
/// `synchronous=FULL` so an acknowledged write survives a crash of the machine, not only of the process.
pub fn connect_options(path: &Path) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true))
}

impl SqliteEventStore {
    /// Opens (creating if needed) the event log at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = connect_options(path)?;
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        migrate(&writer).await?;
        let readers = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(SqliteEventStore { writer, readers, appended: Arc::new(watch::channel(0).0), leases: LocalLeases::default() })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    migrate::apply(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, stream: &StreamId, expected_version: u64, events: &[NewEvent]) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one event"));
        }
        let conflict = || StoreError::Conflict { stream_id: stream.clone(), expected: expected_version };
        let new_version = expected_version + events.len() as u64;
        let mut tx = self.writer.begin().await?;
        // The claim is the transaction's first statement and a write, so it takes the write lock
        // before reading anything: no lock upgrade, no SQLITE_BUSY on upgrade.
        let claimed = if expected_version == 0 {
            sqlx::query("INSERT INTO streams (stream_id, version) VALUES ($1, $2) ON CONFLICT (stream_id) DO NOTHING")
                .bind(stream.as_str())
                .bind(to_i64(new_version))
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query("UPDATE streams SET version = $1 WHERE stream_id = $2 AND version = $3")
                .bind(to_i64(new_version))
                .bind(stream.as_str())
                .bind(to_i64(expected_version))
                .execute(&mut *tx)
                .await?
        };
        if claimed.rows_affected() != 1 {
            return Err(conflict());
        }
        let mut positions = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload, \
                 occurred_at, actor, correlation_id, causation_id, trace_context) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING position",
            )
            .bind(e.event_id.0)
            .bind(stream.as_str())
            .bind(to_i64(expected_version + 1 + i as u64))
            .bind(e.event_type)
            .bind(i32::from(e.schema_version))
            .bind(&e.payload)
            .bind(e.occurred_at.0)
            .bind(e.metadata.actor.to_stored())
            .bind(e.metadata.correlation_id.0)
            .bind(e.metadata.causation_id)
            .bind(e.metadata.trace_context.as_deref())
            .fetch_one(&mut *tx)
            .await?;
            positions.push(LogPosition { commit: position as u64, seq: position as u64 });
        }
        tx.commit().await?;
        self.appended.send_modify(|n| *n += 1);
        Ok(Appended { first: positions[0], last: positions[positions.len() - 1], stream_version: new_version })
    }

    async fn read_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT position, position, {EVENT_COLUMNS} FROM events \
             WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        );
        let rows = sqlx::query(&sql).bind(stream.as_str()).bind(to_i64(after_version)).fetch_all(&self.readers).await?;
        rows.iter().map(rows::stored_event).collect()
    }

    async fn read_all(&self, after: LogPosition, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT position, position, {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
        let rows = sqlx::query(&sql).bind(to_i64(after.seq)).bind(i64::from(limit)).fetch_all(&self.readers).await?;
        rows.iter().map(rows::stored_event).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(&self.readers).await?;
        Ok(head.max(0) as u64)
    }

    fn append_signal(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    fn signals_every_append(&self) -> bool {
        // One handle per log: `nullops up` holds its data directory's lock.
        true
    }

    async fn load_checkpoint(&self, name: &str) -> Result<LogPosition, StoreError> {
        let row = sqlx::query("SELECT commit_pos, seq FROM store_checkpoints WHERE name = $1").bind(name).fetch_optional(&self.readers).await?;
        match row {
            Some(row) => Ok(LogPosition { commit: row.try_get::<i64, _>(0)? as u64, seq: row.try_get::<i64, _>(1)? as u64 }),
            None => Ok(LogPosition::START),
        }
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO store_checkpoints (name, commit_pos, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET commit_pos = excluded.commit_pos, seq = excluded.seq",
        )
        .bind(name)
        .bind(to_i64(position.commit))
        .bind(to_i64(position.seq))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.leases.try_take(name))
    }
}
