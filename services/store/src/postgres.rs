//! The PostgreSQL event store.
//!
//! Appends waiting at the same moment are committed together: one statement, one transaction, one
//! WAL flush for the lot (an append alone gets a statement of its own). Optimistic
//! concurrency needs no lock of its own: the statement inserts only if the stream is at the
//! expected version (version `expected` exists, or for a new stream no event does), and the unique
//! index on `(stream_id, stream_version)` turns any race for the next version into a conflict.
//! Appends to different streams share nothing. Readers follow `(tx_id, position)` below the oldest
//! append still running (`APPEND_HORIZON`), so an event is never skipped when transactions commit
//! out of order, and no other transaction on the server holds them back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use nullops_events::{LogPosition, NewEvent, StoredEvent, StreamId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
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
    appends: mpsc::Sender<AppendRequest>,
}

/// An append waiting to be committed with whatever others are waiting.
struct AppendRequest {
    stream: StreamId,
    expected_version: u64,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Most appends committed together.
const MAX_BATCH: usize = 128;
/// Batches in flight at once: they overlap round trips and WAL flushes.
const BATCHES_IN_FLIGHT: usize = 4;
/// Appends waiting for a batch; callers wait for room beyond this.
const QUEUE: usize = 4096;

impl PgEventStore {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        // The store's statements are few and fixed, and their generic plans are as good as any:
        // left to choose, the server planned the log reader's horizon query afresh at every
        // execution (a quarter of its CPU under a burst of placements).
        let options = options.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new().max_connections(32).acquire_timeout(Duration::from_secs(10)).connect_with(options.clone()).await?;
        migrate(&pool).await?;
        let appended = Arc::new(watch::channel(0).0);
        let (appends, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run_batches(pool.clone(), queue, appended.clone()));
        Ok(PgEventStore { pool, options, appended, appends })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's plan for the log reader's query, as this store's connections run it
    /// (generic plans): what a test reads to prove that reading needs no sort.
    #[doc(hidden)]
    pub async fn read_all_plan(&self) -> Result<String, StoreError> {
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", *READ_ALL_SQL))
            .bind(LogPosition::START.commit.to_string())
            .bind(0i64)
            .bind(500i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(lines.join("\n"))
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    migrate::apply(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

/// The events after `($1, $2)` in the global order, up to `$3` of them, below the append horizon.
/// The order names the table's columns: a bare `tx_id` would be the output column of the same
/// name (`tx_id::text::bigint`), which no index orders, so every read would sort all the events
/// after the reader (a replay read the log in quadratic time).
static READ_ALL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{APPEND_HORIZON} SELECT tx_id::text::bigint, position, {EVENT_COLUMNS} FROM events \
         WHERE (tx_id, position) > ($1::text::xid8, $2) AND tx_id < (SELECT at FROM horizon) \
         ORDER BY events.tx_id, events.position LIMIT $3"
    )
});

/// The lowest transaction id that may still add events behind a reader: the oldest transaction
/// of this statement's snapshot still running that may be an append. Without this, the oldest
/// transaction still running at all (`pg_snapshot_xmin`) would do, but transaction ids are
/// cluster-wide: one long write anywhere on the server (another database, a read model's long
/// batch) would hold every reader back while it runs.
///
/// A running transaction is known not to be an append when `pg_locks` shows it running
/// (`transactionid`, held by a backend) while that backend holds no `RowExclusiveLock` on this
/// database's `events`. That proof is sound because every append is one `INSERT INTO events`
/// statement of its own, which locks `events` before it is given its id and keeps the lock
/// until it ends; and `pg_locks` reads the backends' own (fast-path) locks before the shared
/// table, so an append seen running there is seen holding its lock. A transaction not seen at
/// all (ended since the snapshot, or prepared) counts as a possible append. Only when the
/// snapshot has transactions running is `pg_locks` read at all.
const APPEND_HORIZON: &str = "
WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
locks AS MATERIALIZED (SELECT locktype, database, relation, transactionid, pid, mode, granted FROM pg_locks),
bystanders AS (
    SELECT r.transactionid::text::bigint AS xid32 FROM locks r
    WHERE r.locktype = 'transactionid' AND r.mode = 'ExclusiveLock' AND r.granted AND r.pid IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM locks a
                      WHERE a.pid = r.pid AND a.locktype = 'relation' AND a.mode = 'RowExclusiveLock'
                        AND a.relation = 'events'::regclass
                        AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database()))),
horizon AS MATERIALIZED (
    SELECT CASE WHEN pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN pg_snapshot_xmax(s)
                ELSE coalesce((SELECT min(x) FROM pg_snapshot_xip(s) AS x
                               WHERE NOT EXISTS (SELECT 1 FROM bystanders b WHERE b.xid32 = x::text::bigint % 4294967296)),
                              pg_snapshot_xmax(s)) END AS at
    FROM snap)";

/// The stream is at version `$2` (`$1` stream): shared by both append statements.
const AT_EXPECTED_VERSION: &str = "CASE WHEN $2 = 0 THEN NOT EXISTS (SELECT 1 FROM events WHERE stream_id = $1)
     ELSE EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND stream_version = $2) END";

/// The append statements with the version check filled in, built once.
static APPEND_ONE_SQL: LazyLock<String> = LazyLock::new(|| APPEND_ONE.replace("AT_EXPECTED_VERSION", AT_EXPECTED_VERSION));
static APPEND_MANY_SQL: LazyLock<String> = LazyLock::new(|| APPEND_MANY.replace("AT_EXPECTED_VERSION", AT_EXPECTED_VERSION));

/// One event (the common case): scalar parameters cost the server far less than arrays.
/// `$1` stream, `$2` expected version, `$3..$11` the event's columns.
const APPEND_ONE: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload,
                    occurred_at, actor, correlation_id, causation_id, trace_context)
SELECT $3, $1, $2 + 1, $4, $5, $6, $7, $8, $9, $10, $11
WHERE AT_EXPECTED_VERSION
RETURNING tx_id::text::bigint, position";

/// Appends to distinct streams, all in one statement: per event `$1` id, `$2` stream, `$3` its
/// version, `$4` its append's expected version, `$5..$12` the other columns.
const APPEND_TOGETHER: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload,
                    occurred_at, actor, correlation_id, causation_id, trace_context)
SELECT e.event_id, e.stream_id, e.stream_version, e.event_type, e.schema_version, e.payload,
       e.occurred_at, e.actor, e.correlation_id, e.causation_id, e.trace_context
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::bytea[],
            $8::bigint[], $9::text[], $10::uuid[], $11::uuid[], $12::text[])
       WITH ORDINALITY AS e(event_id, stream_id, stream_version, expected, event_type, schema_version,
                            payload, occurred_at, actor, correlation_id, causation_id, trace_context, ord)
WHERE CASE WHEN e.expected = 0 THEN NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id)
           ELSE EXISTS (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id AND x.stream_version = e.expected) END
ORDER BY e.ord
RETURNING tx_id::text::bigint, position, stream_id";

/// Several events: `$1` stream, `$2` expected version, `$3..$11` the events as parallel arrays.
const APPEND_MANY: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload,
                    occurred_at, actor, correlation_id, causation_id, trace_context)
SELECT e.event_id, $1, $2 + e.ord, e.event_type, e.schema_version, e.payload,
       e.occurred_at, e.actor, e.correlation_id, e.causation_id, e.trace_context
FROM unnest($3::uuid[], $4::text[], $5::int[], $6::bytea[], $7::bigint[], $8::text[], $9::uuid[],
            $10::uuid[], $11::text[])
       WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, occurred_at, actor,
                            correlation_id, causation_id, trace_context, ord)
WHERE AT_EXPECTED_VERSION
ORDER BY e.ord
RETURNING tx_id::text::bigint, position";

/// One append in its own statement and transaction.
async fn append_alone(pool: &PgPool, stream: &StreamId, expected_version: u64, events: &[NewEvent]) -> Result<Appended, StoreError> {
    let conflict = || StoreError::Conflict { stream_id: stream.clone(), expected: expected_version };
    let new_version = expected_version + events.len() as u64;
    let result = match events {
        [e] => {
            sqlx::query(&APPEND_ONE_SQL)
                .bind(stream.as_str())
                .bind(to_i64(expected_version))
                .bind(e.event_id.0)
                .bind(e.event_type)
                .bind(i32::from(e.schema_version))
                .bind(e.payload.as_slice())
                .bind(e.occurred_at.0)
                .bind(e.metadata.actor.to_stored())
                .bind(e.metadata.correlation_id.0)
                .bind(e.metadata.causation_id)
                .bind(e.metadata.trace_context.as_deref())
                .fetch_all(pool)
                .await
        }
        _ => {
            sqlx::query(&APPEND_MANY_SQL)
                .bind(stream.as_str())
                .bind(to_i64(expected_version))
                .bind(events.iter().map(|e| e.event_id.0).collect::<Vec<Uuid>>())
                .bind(events.iter().map(|e| e.event_type).collect::<Vec<&str>>())
                .bind(events.iter().map(|e| i32::from(e.schema_version)).collect::<Vec<i32>>())
                .bind(events.iter().map(|e| e.payload.as_slice()).collect::<Vec<&[u8]>>())
                .bind(events.iter().map(|e| e.occurred_at.0).collect::<Vec<i64>>())
                .bind(events.iter().map(|e| e.metadata.actor.to_stored()).collect::<Vec<String>>())
                .bind(events.iter().map(|e| e.metadata.correlation_id.0).collect::<Vec<Uuid>>())
                .bind(events.iter().map(|e| e.metadata.causation_id).collect::<Vec<Option<Uuid>>>())
                .bind(events.iter().map(|e| e.metadata.trace_context.as_deref()).collect::<Vec<Option<&str>>>())
                .fetch_all(pool)
                .await
        }
    };
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
    Ok(Appended { first: positions[0], last: positions[positions.len() - 1], stream_version: new_version })
}

/// Several appends to distinct streams in one statement and one transaction. `Err` when the
/// statement failed as a whole (a race on some stream's next version, for one): the caller then
/// appends them one by one, so each gets its own answer.
async fn append_together(pool: &PgPool, requests: &[AppendRequest]) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
    let events = || requests.iter().flat_map(|r| r.events.iter().enumerate().map(move |(i, e)| (r, i, e)));
    let rows = sqlx::query(APPEND_TOGETHER)
        .bind(events().map(|(_, _, e)| e.event_id.0).collect::<Vec<Uuid>>())
        .bind(events().map(|(r, _, _)| r.stream.as_str()).collect::<Vec<&str>>())
        .bind(events().map(|(r, i, _)| to_i64(r.expected_version + 1 + i as u64)).collect::<Vec<i64>>())
        .bind(events().map(|(r, _, _)| to_i64(r.expected_version)).collect::<Vec<i64>>())
        .bind(events().map(|(_, _, e)| e.event_type).collect::<Vec<&str>>())
        .bind(events().map(|(_, _, e)| i32::from(e.schema_version)).collect::<Vec<i32>>())
        .bind(events().map(|(_, _, e)| e.payload.as_slice()).collect::<Vec<&[u8]>>())
        .bind(events().map(|(_, _, e)| e.occurred_at.0).collect::<Vec<i64>>())
        .bind(events().map(|(_, _, e)| e.metadata.actor.to_stored()).collect::<Vec<String>>())
        .bind(events().map(|(_, _, e)| e.metadata.correlation_id.0).collect::<Vec<Uuid>>())
        .bind(events().map(|(_, _, e)| e.metadata.causation_id).collect::<Vec<Option<Uuid>>>())
        .bind(events().map(|(_, _, e)| e.metadata.trace_context.as_deref()).collect::<Vec<Option<&str>>>())
        .fetch_all(pool)
        .await?;
    let mut landed: HashMap<String, Vec<LogPosition>> = HashMap::with_capacity(requests.len());
    for row in &rows {
        let (commit, seq, stream): (i64, i64, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        landed.entry(stream).or_default().push(LogPosition { commit: commit as u64, seq: seq as u64 });
    }
    Ok(requests
        .iter()
        .map(|r| match landed.remove(r.stream.as_str()) {
            Some(mut p) if p.len() == r.events.len() => {
                p.sort();
                Ok(Appended { first: p[0], last: p[p.len() - 1], stream_version: r.expected_version + r.events.len() as u64 })
            }
            _ => Err(StoreError::Conflict { stream_id: r.stream.clone(), expected: r.expected_version }),
        })
        .collect())
}

/// Takes appends off the queue and commits whatever is waiting together, until every handle on
/// the store is dropped.
async fn run_batches(pool: PgPool, mut queue: mpsc::Receiver<AppendRequest>, appended: Arc<watch::Sender<u64>>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let (pool, appended) = (pool.clone(), appended.clone());
        let requests = std::mem::replace(&mut waiting, Vec::with_capacity(MAX_BATCH));
        tokio::spawn(async move {
            commit_batch(&pool, requests).await;
            appended.send_modify(|n| *n += 1);
            drop(permit);
        });
    }
}

async fn commit_batch(pool: &PgPool, mut requests: Vec<AppendRequest>) {
    while !requests.is_empty() {
        // One append per stream per statement; a stream's later appends wait for the next round,
        // in their order. Sorting by stream keeps the order in which rows are inserted the same
        // in every batch.
        let mut seen = HashSet::new();
        let (mut round, rest): (Vec<_>, Vec<_>) = requests.into_iter().partition(|r| seen.insert(r.stream.clone()));
        requests = rest;
        round.sort_by(|a, b| a.stream.cmp(&b.stream));
        let together = if round.len() > 1 {
            append_together(pool, &round)
                .await
                .inspect_err(|e| tracing::debug!(appends = round.len(), error = %e, "batch failed as a whole; appending one by one"))
                .ok()
        } else {
            None
        };
        match together {
            Some(results) => {
                for (r, result) in round.into_iter().zip(results) {
                    let _ = r.reply.send(result);
                }
            }
            None => {
                for r in round {
                    let result = append_alone(pool, &r.stream, r.expected_version, &r.events).await;
                    let _ = r.reply.send(result);
                }
            }
        }
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, stream: &StreamId, expected_version: u64, events: &[NewEvent]) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one event"));
        }
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest { stream: stream.clone(), expected_version, events: events.to_vec(), reply };
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        self.appends.send(request).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
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
        let rows = sqlx::query(&READ_ALL_SQL).bind(after.commit.to_string()).bind(to_i64(after.seq)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(rows::stored_event).collect()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(&self.pool).await?;
        Ok(head.max(0) as u64)
    }

    fn append_signal(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    async fn load_checkpoint(&self, name: &str) -> Result<LogPosition, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT commit_pos, seq FROM store_checkpoints WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
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
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))").bind(name).fetch_one(&mut conn).await?;
        if got {
            Ok(Some(Lease::postgres(conn)))
        } else {
            conn.close().await.ok();
            Ok(None)
        }
    }
}
