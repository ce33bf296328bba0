//! Webhook deliveries: one row per webhook and event it is told of (`webhook_deliveries`), and
//! one per attempt to deliver it (`webhook_attempts`). Working data like `node_usage`, not
//! history: only the gateway's `webhooks` process writes it (a row is made, idempotently, when
//! the process reacts to the event, so a crash before the checkpoint moves makes it again and
//! loses nothing); a projection rebuild leaves it alone.

use sqlx::Row;
use uuid::Uuid;

use crate::WorkingRows;
use crate::{ProjectionError, ReadModelDb};

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT NOT NULL,
        subject TEXT NOT NULL, commit_pos BIGINT NOT NULL, seq_pos BIGINT NOT NULL, body TEXT NOT NULL, made_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL, next_at BIGINT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (webhook_id, event_id))",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_of ON webhook_deliveries (webhook_id, state, commit_pos, seq_pos)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, attempt BIGINT NOT NULL,
        at BIGINT NOT NULL, status BIGINT, error TEXT NOT NULL, millis BIGINT NOT NULL, PRIMARY KEY (webhook_id, event_id, attempt))",
];

nullops_events::named_enum! {
    /// The `state` column.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeliveryState {
        /// Not delivered yet: tried at `next_at`.
        Pending = "pending",
        /// A 2xx answer came.
        Delivered = "delivered",
        /// Given up after the most attempts, or its webhook was deleted.
        Abandoned = "abandoned",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub webhook_id: Uuid,
    pub event_id: String,
    pub topic: String,
    /// What it is about (a deployment, a node, a project): deliveries of one subject go out in
    /// the order of their events.
    pub subject: String,
    pub position: (i64, i64),
    /// The CloudEvent, as sent.
    pub body: String,
    pub made_at: i64,
    pub attempts: u32,
    pub next_at: i64,
    pub state: DeliveryState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub attempt: u32,
    pub at: i64,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed ('' when it did not).
    pub error: String,
    pub millis: i64,
}

const COLUMNS: &str = "webhook_id, event_id, topic, subject, commit_pos, seq_pos, body, made_at, attempts, next_at, state";

fn row(r: &sqlx::any::AnyRow) -> Result<DeliveryRow, ProjectionError> {
    let id: String = r.try_get(0)?;
    Ok(DeliveryRow {
        webhook_id: id.parse().map_err(|_| ProjectionError::Corrupt(format!("webhook_deliveries: webhook id {id:?}")))?,
        event_id: r.try_get(1)?,
        topic: r.try_get(2)?,
        subject: r.try_get(3)?,
        position: (r.try_get(4)?, r.try_get(5)?),
        body: r.try_get(6)?,
        made_at: r.try_get(7)?,
        attempts: u32::try_from(r.try_get::<i64, _>(8)?).unwrap_or(u32::MAX),
        next_at: r.try_get(9)?,
        state: {
            let stored: String = r.try_get(10)?;
            DeliveryState::parse(&stored).ok_or_else(|| ProjectionError::Corrupt(format!("webhook_deliveries: state {stored:?}")))?
        },
    })
}

/// Makes a delivery, unless one of the same webhook and event exists.
pub(crate) async fn enqueue(conn: &mut sqlx::AnyConnection, d: &DeliveryRow) -> Result<(), ProjectionError> {
    sqlx::query(&format!("INSERT INTO webhook_deliveries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"))
        .bind(d.webhook_id.to_string())
        .bind(d.event_id.clone())
        .bind(d.topic.clone())
        .bind(d.subject.clone())
        .bind(d.position.0)
        .bind(d.position.1)
        .bind(d.body.clone())
        .bind(d.made_at)
        .bind(i64::from(d.attempts))
        .bind(d.next_at)
        .bind(d.state.name())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Up to `limit` of one webhook's pending deliveries, oldest first: each webhook is scanned on
/// its own, so one's backlog never hides another's deliveries.
pub async fn pending_of(db: &ReadModelDb, webhook_id: Uuid, limit: u32) -> Result<Vec<DeliveryRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND state = $2 ORDER BY commit_pos, seq_pos LIMIT $3"))
        .bind(webhook_id.to_string())
        .bind(DeliveryState::Pending.name())
        .bind(i64::from(limit))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row).collect()
}

/// The webhooks that have pending deliveries.
pub async fn pending_webhooks(db: &ReadModelDb) -> Result<Vec<Uuid>, ProjectionError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT webhook_id FROM webhook_deliveries WHERE state = $1")
        .bind(DeliveryState::Pending.name())
        .fetch_all(db.pool())
        .await?;
    Ok(ids.iter().filter_map(|id| Uuid::try_parse(id).ok()).collect())
}

/// A webhook's deliveries, newest first.
pub async fn of_webhook(db: &ReadModelDb, webhook_id: Uuid, limit: u32) -> Result<Vec<DeliveryRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY commit_pos DESC, seq_pos DESC LIMIT $2"))
        .bind(webhook_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row).collect()
}

/// Records an attempt and what the delivery is now.
pub async fn attempted(db: &WorkingRows, d: &DeliveryRow, attempt: &AttemptRow, next_at: i64, state: DeliveryState) -> Result<(), ProjectionError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (webhook_id, event_id, attempt, at, status, error, millis) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(d.webhook_id.to_string())
    .bind(d.event_id.clone())
    .bind(i64::from(attempt.attempt))
    .bind(attempt.at)
    .bind(attempt.status.map(i64::from))
    .bind(attempt.error.clone())
    .bind(attempt.millis)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE webhook_deliveries SET attempts = $1, next_at = $2, state = $3 WHERE webhook_id = $4 AND event_id = $5")
        .bind(i64::from(attempt.attempt))
        .bind(next_at)
        .bind(state.name())
        .bind(d.webhook_id.to_string())
        .bind(d.event_id.clone())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives up what is still pending for a deleted webhook.
pub async fn abandon(db: &WorkingRows, webhook_id: Uuid) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE webhook_deliveries SET state = $1 WHERE webhook_id = $2 AND state = $3")
        .bind(DeliveryState::Abandoned.name())
        .bind(webhook_id.to_string())
        .bind(DeliveryState::Pending.name())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Forgets deliveries that ended (delivered or given up) before `before` (microseconds), with
/// their attempts: how long what was sent stays visible. How many went.
pub async fn prune(db: &WorkingRows, before: i64) -> Result<u64, ProjectionError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = webhook_attempts.webhook_id \
         AND d.event_id = webhook_attempts.event_id AND d.state <> $1 AND d.made_at < $2)",
    )
    .bind(DeliveryState::Pending.name())
    .bind(before)
    .execute(&mut *tx)
    .await?;
    let gone = sqlx::query("DELETE FROM webhook_deliveries WHERE state <> $1 AND made_at < $2")
        .bind(DeliveryState::Pending.name())
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(gone)
}

/// The attempts at one delivery, in order.
pub async fn attempts(db: &ReadModelDb, webhook_id: Uuid, event_id: &str) -> Result<Vec<AttemptRow>, ProjectionError> {
    let rows = sqlx::query("SELECT attempt, at, status, error, millis FROM webhook_attempts WHERE webhook_id = $1 AND event_id = $2 ORDER BY attempt")
        .bind(webhook_id.to_string())
        .bind(event_id.to_owned())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRow {
                attempt: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                at: r.try_get(1)?,
                status: r.try_get::<Option<i64>, _>(2)?.and_then(|s| u16::try_from(s).ok()),
                error: r.try_get(3)?,
                millis: r.try_get(4)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::WorkingWrite;

    fn delivery(event: &str, subject: &str, position: i64, made_at: i64) -> DeliveryRow {
        DeliveryRow {
            webhook_id: Uuid::from_u128(1),
            event_id: event.into(),
            topic: "io.nullops.deployment.running".into(),
            subject: subject.into(),
            position: (position, 0),
            body: "{}".into(),
            made_at,
            attempts: 0,
            next_at: made_at,
            state: DeliveryState::Pending,
        }
    }

    #[tokio::test]
    async fn deliveries_are_made_once_tried_in_order_and_forgotten_only_when_ended_and_old() {
        let path = std::env::temp_dir().join(format!("nullops-webhooks-{}.db", Uuid::now_v7()));
        let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        let (old_done, old_waiting, new_done) =
            (delivery("a", "deployment/1", 1, 10), delivery("b", "deployment/2", 2, 10), delivery("c", "deployment/1", 3, 1_000));
        // Staged by the worker and committed with its checkpoint; a delivery made twice (the
        // worker reacting to an event again) is made once.
        let writes: Vec<WorkingWrite> = [&old_done, &old_waiting, &new_done, &old_done].into_iter().cloned().map(WorkingWrite::Delivery).collect();
        let at = nullops_events::LogPosition { commit: 4, seq: 4 };
        db.working_rows().commit("webhooks", &writes, at).await.unwrap();
        assert_eq!(db.working_rows().checkpoint("webhooks").await.unwrap(), Some(at));
        assert_eq!(db.working_rows().checkpoint("previews").await.unwrap(), None);
        assert_eq!(
            pending_of(&db, old_done.webhook_id, 10).await.unwrap().iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"],
            "once each, in event order"
        );
        assert!(pending_of(&db, Uuid::from_u128(99), 10).await.unwrap().is_empty(), "another webhook's are its own");
        assert_eq!(pending_webhooks(&db).await.unwrap(), [old_done.webhook_id]);
        let ok = |attempt| AttemptRow { attempt, at: 20, status: Some(204), error: String::new(), millis: 3 };
        attempted(&db.working_rows(), &old_done, &ok(1), 20, DeliveryState::Delivered).await.unwrap();
        attempted(&db.working_rows(), &new_done, &ok(1), 1_000, DeliveryState::Delivered).await.unwrap();
        let refused = AttemptRow { attempt: 1, at: 20, status: Some(503), error: "answered 503".into(), millis: 3 };
        attempted(&db.working_rows(), &old_waiting, &refused, 2_000_000, DeliveryState::Pending).await.unwrap();
        assert_eq!(attempts(&db, old_waiting.webhook_id, "b").await.unwrap(), [refused]);

        assert_eq!(prune(&db.working_rows(), 500).await.unwrap(), 1, "only the old delivered one");
        let left: Vec<String> = of_webhook(&db, Uuid::from_u128(1), 10).await.unwrap().into_iter().map(|d| d.event_id).collect();
        assert_eq!(left, ["c", "b"], "newest first; what still waits is kept however old");
        assert!(attempts(&db, old_done.webhook_id, "a").await.unwrap().is_empty(), "its attempts went with it");
        let _ = std::fs::remove_file(path);
    }
}
