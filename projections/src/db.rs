//! The read-model database: connection, schema, checkpoints, and waiting for them.

use std::time::Duration;

use nullops_events::LogPosition;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::watch;

use crate::ProjectionError;

/// The runners' own tables: made first, kept across schema versions.
const BOOKKEEPING: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (
        name TEXT PRIMARY KEY, commit_pos BIGINT NOT NULL, seq BIGINT NOT NULL,
        events_applied BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_schemas (name TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    // Read models replaying the log from its start (new, in an older shape, or reset): until
    // their runner has caught up once, what they hold is partial. `since`: microseconds.
    "CREATE TABLE IF NOT EXISTS projection_rebuilds (name TEXT PRIMARY KEY, since BIGINT NOT NULL)",
    // A worker's checkpoint, beside its working rows: both move in one transaction.
    "CREATE TABLE IF NOT EXISTS worker_checkpoints (name TEXT PRIMARY KEY, commit_pos BIGINT NOT NULL, seq BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
];

/// The identity projection's tables. (The others are beside their projections.)
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        username TEXT PRIMARY KEY, user_id TEXT NOT NULL, role TEXT NOT NULL, disabled BIGINT NOT NULL,
        password_hash TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (
        token_hash TEXT PRIMARY KEY, session_id TEXT NOT NULL UNIQUE, username TEXT NOT NULL,
        started_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, ended BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_tokens (
        token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, username TEXT NOT NULL, name TEXT NOT NULL,
        created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS api_tokens_by_user ON api_tokens (username)",
];

/// A read model replaying the log from its start: partial until its runner has caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilding {
    pub name: String,
    /// When the replay began (microseconds since the epoch).
    pub since: i64,
    pub events_applied: u64,
    /// The `seq` of the last event it has read (against the store's head: "N of M events").
    pub at_seq: u64,
}

async fn mark_rebuilding(tx: &mut sqlx::Transaction<'static, sqlx::Any>, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO projection_rebuilds (name, since) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(nullops_events::Timestamp::now().0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A projection's progress, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub position: LogPosition,
    pub events_applied: u64,
    pub updated_at: i64,
}

/// The read models being rebuilt, and the count of `advanced` when they were read.
type SeenRebuilds = (u64, std::sync::Arc<[Rebuilding]>);

/// Handle to the read models. Cheap to clone.
#[derive(Clone)]
pub struct ReadModelDb {
    pool: AnyPool,
    postgres: bool,
    /// Bumped when a runner of this process commits, so local waiters re-check at once.
    advanced: std::sync::Arc<watch::Sender<u64>>,
    /// The read models being rebuilt, as read when `advanced` stood at the number beside them:
    /// the API asks before every query, and reads the table again only after a runner moved.
    rebuilds: std::sync::Arc<std::sync::Mutex<Option<SeenRebuilds>>>,
    /// On SQLite, which writes one transaction at a time: the turn to write a batch. The
    /// runners and workers of this process wait for it in order, instead of in SQLite's busy
    /// handler, which sleeps up to 100 ms at a time (a replay of every read model took twice
    /// as long with them side by side as one after another).
    write_turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Every read model's checkpoint as last read, for [`ReadModelDb::wait_for`]: its waiters
    /// share one read per advance instead of one each (a burst of commands, each waiting for
    /// its writes, otherwise queries the checkpoints waiters × advances times, and the runners
    /// queue behind those queries for the pool). Held while it is read, so one waiter reads.
    checkpoints: std::sync::Arc<tokio::sync::Mutex<Option<SeenCheckpoints>>>,
}

/// A batch's turn to write (SQLite): held until its transaction ends.
pub(crate) type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// The checkpoints as read when `advanced` stood at `generation`, at `read_at`.
struct SeenCheckpoints {
    generation: u64,
    read_at: tokio::time::Instant,
    positions: std::collections::HashMap<String, LogPosition>,
}

/// A waiter re-reads the checkpoints this often even when told nothing: a runner in another
/// process announces its commits over PostgreSQL's NOTIFY, and one lost while the listener
/// reconnects must not leave a waiter stuck until its timeout.
pub const SAFETY_RECHECK: Duration = Duration::from_millis(250);
/// The PostgreSQL channel on which runners announce that a read model advanced.
const ADVANCED_CHANNEL: &str = "nullops_read_models";
/// The longest pause before the listener of that channel connects again.
const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The working rows of the background processes (webhook deliveries, previews, chart samples):
/// tables beside the read models that only their process writes, not rebuilt from the log.
/// Their write functions take this handle and only a process makes one
/// ([`ReadModelDb::working_rows`]); the API never does (`tests/tidy.rs` checks that the gateway
/// does not name it), so its reads cannot turn into writes.
#[derive(Clone)]
pub struct WorkingRows(ReadModelDb);

impl WorkingRows {
    pub(crate) fn pool(&self) -> &AnyPool {
        self.0.pool()
    }

    /// Where worker `name` has got in the log, kept beside its rows (`None`: never committed
    /// here).
    pub async fn checkpoint(&self, name: &str) -> Result<Option<LogPosition>, ProjectionError> {
        let row = sqlx::query("SELECT commit_pos, seq FROM worker_checkpoints WHERE name = $1").bind(name).fetch_optional(self.pool()).await?;
        let corrupt = || ProjectionError::Corrupt("worker_checkpoints".into());
        row.map(|r| {
            let commit = u64::try_from(r.try_get::<i64, _>(0)?).map_err(|_| corrupt())?;
            let seq = u64::try_from(r.try_get::<i64, _>(1)?).map_err(|_| corrupt())?;
            Ok(LogPosition { commit, seq })
        })
        .transpose()
    }

    /// Applies `writes` and moves worker `name`'s checkpoint to `position` in one transaction:
    /// after a crash both are there or neither is, so the worker records each event once.
    pub async fn commit(&self, name: &str, writes: &[WorkingWrite], position: LogPosition) -> Result<(), ProjectionError> {
        let (mut tx, _turn) = self.0.begin_batch().await?;
        for write in writes {
            match write {
                WorkingWrite::Delivery(d) => crate::webhooks::enqueue(&mut tx, d).await?,
                WorkingWrite::Preview(p) => crate::previews::record(&mut tx, p).await?,
                WorkingWrite::WakePreviews(deployment_id) => crate::previews::wake(&mut tx, *deployment_id).await?,
            }
        }
        let at = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO worker_checkpoints (name, commit_pos, seq, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET commit_pos = excluded.commit_pos, seq = excluded.seq, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(at(position.commit))
        .bind(at(position.seq))
        .bind(nullops_events::Timestamp::now().0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What a worker's reaction to an event adds to its working rows: staged while it reacts,
/// applied by [`WorkingRows::commit`] together with its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkingWrite {
    /// A webhook delivery to make (once per webhook and event).
    Delivery(crate::webhooks::DeliveryRow),
    /// A pull request's newest preview request (an older one changes nothing).
    Preview(Box<crate::previews::PreviewRow>),
    /// The previews that follow this deployment look again now.
    WakePreviews(uuid::Uuid),
}

impl ReadModelDb {
    /// The handle a background process writes its working rows through.
    pub fn working_rows(&self) -> WorkingRows {
        WorkingRows(self.clone())
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`) and creates missing tables.
    pub async fn open(url: &str) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Rebuildable data: durable against a crash of the process is enough.
                        sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        for statement in BOOKKEEPING {
            sqlx::query(statement).execute(&pool).await?;
        }
        let db = ReadModelDb {
            pool,
            postgres: !sqlite,
            advanced: std::sync::Arc::new(watch::channel(0).0),
            rebuilds: Default::default(),
            write_turn: sqlite.then(Default::default),
            checkpoints: Default::default(),
        };
        if !sqlite {
            tokio::spawn(listen_for_advances(url.to_owned(), std::sync::Arc::downgrade(&db.advanced)));
        }
        // Tables in an older shape go before any table is made, so that they are made anew.
        db.drop_outdated(&crate::all()).await?;
        let tables = SCHEMA.iter().chain(crate::audit::SCHEMA).chain(crate::catalog::SCHEMA).chain(crate::nodes::SCHEMA);
        for statement in tables
            .chain(crate::deployments::SCHEMA)
            .chain(crate::logins::SCHEMA)
            .chain(crate::webhooks::SCHEMA)
            .chain(crate::previews::SCHEMA)
            .chain(crate::samples::SCHEMA)
        {
            sqlx::query(statement).execute(&db.pool).await?;
        }
        for projection in crate::all() {
            sqlx::query("INSERT INTO projection_schemas (name, version) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET version = excluded.version")
                .bind(projection.name())
                .bind(i64::from(projection.schema_version()))
                .execute(&db.pool)
                .await?;
        }
        Ok(db)
    }

    /// Drops the tables and checkpoint of every projection stored in another schema version
    /// (a database from before versions were kept holds version 1), so that its tables are made
    /// again in the current shape and its runner replays the log into them.
    async fn drop_outdated(&self, projections: &[std::sync::Arc<dyn crate::Projection>]) -> Result<(), ProjectionError> {
        for projection in projections {
            let stored: Option<i64> = sqlx::query("SELECT version FROM projection_schemas WHERE name = $1")
                .bind(projection.name())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let stored = match stored {
                Some(version) => version,
                // Never opened: a new install (an empty log), or a read model new in this
                // release, which replays the log from its start: partial until it is done.
                None if self.checkpoint(projection.name()).await?.position == LogPosition::START => {
                    let mut tx = self.pool.begin().await?;
                    mark_rebuilding(&mut tx, projection.name()).await?;
                    tx.commit().await?;
                    continue;
                }
                None => 1,
            };
            if stored == i64::from(projection.schema_version()) {
                continue;
            }
            tracing::info!(
                projection = projection.name(),
                from = stored,
                to = projection.schema_version(),
                "read model in an older shape: rebuilding it from the log"
            );
            let mut tx = self.pool.begin().await?;
            for table in projection.tables() {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(projection.name()).execute(&mut *tx).await?;
            mark_rebuilding(&mut tx, projection.name()).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The read models replaying the log from its start, with how far each has got.
    pub async fn rebuilding(&self) -> Result<Vec<Rebuilding>, ProjectionError> {
        let rows = sqlx::query(
            "SELECT r.name, r.since, COALESCE(c.events_applied, 0), COALESCE(c.seq, 0) FROM projection_rebuilds r \
             LEFT JOIN projection_checkpoints c ON c.name = r.name ORDER BY r.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Rebuilding {
                    name: r.try_get(0)?,
                    since: r.try_get(1)?,
                    events_applied: r.try_get::<i64, _>(2)?.max(0) as u64,
                    at_seq: r.try_get::<i64, _>(3)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// [`Self::rebuilding`], read again only when a runner of this process (or, on PostgreSQL,
    /// of any) has moved since the last read: cheap enough to ask before every query.
    pub async fn rebuilding_now(&self) -> Result<std::sync::Arc<[Rebuilding]>, ProjectionError> {
        let generation = *self.advanced.borrow();
        if let Some((seen, rebuilds)) = &*self.rebuilds.lock().expect("rebuilds lock") {
            if *seen == generation {
                return Ok(rebuilds.clone());
            }
        }
        // Kept under the generation read before: a move during the read makes the next ask read again.
        let fresh: std::sync::Arc<[Rebuilding]> = self.rebuilding().await?.into();
        *self.rebuilds.lock().expect("rebuilds lock") = Some((generation, fresh.clone()));
        Ok(fresh)
    }

    /// A read model marked as replaying an empty log is whole already (a new install, whose
    /// first start marks every read model as new): the marks go, so that nothing says
    /// "rebuilding" while there is nothing to rebuild.
    pub async fn whole_if_the_log_is_empty(&self, store: &dyn nullops_store::EventStore) -> Result<(), ProjectionError> {
        if store.head().await? == 0 {
            sqlx::query("DELETE FROM projection_rebuilds").execute(&self.pool).await?;
            self.notify_advanced();
        }
        Ok(())
    }

    /// `name` has replayed the log up to its head: whole again.
    pub(crate) async fn rebuilt(&self, name: &str) -> Result<(), ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM projection_rebuilds WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() > 0 {
            self.announce(&mut tx, name).await?;
            tx.commit().await?;
            self.notify_advanced();
            tracing::info!(projection = name, "read model rebuilt from the log");
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction for a projection batch, with this process's turn to write it (keep
    /// the turn until the transaction ends). On PostgreSQL it does not wait for the WAL flush: a
    /// crash can lose only whole batches (rows and checkpoint commit together), which the runner
    /// applies again from the store.
    pub(crate) async fn begin_batch(&self) -> Result<(sqlx::Transaction<'static, sqlx::Any>, Option<WriteTurn>), sqlx::Error> {
        let turn = match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        }
        Ok((tx, turn))
    }

    pub(crate) fn notify_advanced(&self) {
        self.advanced.send_modify(|n| *n += 1);
    }

    /// Tells every process sharing these read models, when `tx` commits, that `name` advanced
    /// (PostgreSQL only: SQLite's read models belong to one process).
    pub(crate) async fn announce(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, name: &str) -> Result<(), sqlx::Error> {
        if self.postgres {
            sqlx::query("SELECT pg_notify($1, $2)").bind(ADVANCED_CHANNEL).bind(name).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Changes whenever a read model may have advanced, in this process or (on PostgreSQL)
    /// another: a waiter re-reads what it waits for then, instead of polling.
    pub fn advances(&self) -> watch::Receiver<u64> {
        self.advanced.subscribe()
    }

    pub async fn checkpoint(&self, name: &str) -> Result<Status, ProjectionError> {
        let row = sqlx::query("SELECT commit_pos, seq, events_applied, updated_at FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Status {
                name: name.to_owned(),
                position: LogPosition { commit: r.try_get::<i64, _>(0)? as u64, seq: r.try_get::<i64, _>(1)? as u64 },
                events_applied: r.try_get::<i64, _>(2)? as u64,
                updated_at: r.try_get(3)?,
            },
            None => Status { name: name.to_owned(), position: LogPosition::START, events_applied: 0, updated_at: 0 },
        })
    }

    /// Waits until every named projection has applied everything up to `position`: a command's
    /// caller then reads its own writes. Bounded by `timeout`.
    pub async fn wait_for(&self, names: &[&str], position: LogPosition, timeout: Duration) -> Result<(), ProjectionError> {
        let started = tokio::time::Instant::now();
        let mut advanced = self.advanced.subscribe();
        for name in names {
            loop {
                let at = self.shared_position(name).await?;
                if at >= position {
                    break;
                }
                if started.elapsed() >= timeout {
                    return Err(ProjectionError::CatchUpTimeout {
                        projection: (*name).to_owned(),
                        wanted: position,
                        at,
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
                tokio::select! {
                    _ = advanced.changed() => {}
                    _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                }
            }
        }
        Ok(())
    }

    /// Where `name` has got, as read once for every waiter since the read models last advanced
    /// (read again after half a [`SAFETY_RECHECK`] in any case: an advance in another process
    /// may have gone unannounced).
    async fn shared_position(&self, name: &str) -> Result<LogPosition, ProjectionError> {
        let mut seen = self.checkpoints.lock().await;
        let generation = *self.advanced.borrow();
        let fresh = seen.as_ref().is_some_and(|s| s.generation == generation && s.read_at.elapsed() < SAFETY_RECHECK / 2);
        if !fresh {
            let read_at = tokio::time::Instant::now();
            let rows = sqlx::query("SELECT name, commit_pos, seq FROM projection_checkpoints").fetch_all(&self.pool).await?;
            let positions = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, LogPosition { commit: r.try_get::<i64, _>(1)? as u64, seq: r.try_get::<i64, _>(2)? as u64 })))
                .collect::<Result<_, sqlx::Error>>()?;
            *seen = Some(SeenCheckpoints { generation, read_at, positions });
        }
        Ok(seen.as_ref().and_then(|s| s.positions.get(name).copied()).unwrap_or(LogPosition::START))
    }

    /// Empties a projection's tables and checkpoint in one transaction; its runner then replays
    /// the log from the start.
    pub async fn reset(&self, projection: &dyn crate::Projection) -> Result<(), ProjectionError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(projection.name()).execute(&mut *tx).await?;
        mark_rebuilding(&mut tx, projection.name()).await?;
        for table in projection.tables() {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }
        // Every server's API learns at once that this read model is partial now.
        self.announce(&mut tx, projection.name()).await?;
        tx.commit().await?;
        self.notify_advanced();
        Ok(())
    }
}

/// Follows the runners' announcements on PostgreSQL and passes each on to this process's
/// waiters, until the read models' handle is gone (noticed at the next announcement; the
/// listener's read is not cancelled midway, as it may be in the middle of a message).
/// Reconnects with growing pauses; after a reconnect the waiters are woken once, as
/// announcements may have been missed meanwhile.
async fn listen_for_advances(url: String, advanced: std::sync::Weak<watch::Sender<u64>>) {
    let wake = || advanced.upgrade().map(|sender| sender.send_modify(|n| *n += 1)).is_some();
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(ADVANCED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                if !wake() {
                    return;
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "the read models' listener lost its connection");
                            break;
                        }
                    }
                    if !wake() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for read model advances; waiters re-check every 250 ms"),
        }
        if advanced.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
    }
}
