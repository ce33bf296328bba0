//! Samples for the console's charts (`samples`): a node's and each service's CPU and memory, a
//! deployment's ingress traffic, the platform's command rate and projection lag, one row per
//! series per [`SAMPLE_SECS`] (the first one written in that window stays), kept for
//! [`KEEP_SECS`]. Telemetry like `node_usage`, not facts: written by the connector (usage), the
//! ingress (its traffic) and the server (its own figures); never rebuilt from the log.

use sqlx::Row;
use uuid::Uuid;

use crate::WorkingRows;
use crate::{ProjectionError, ReadModelDb};

pub(crate) const SCHEMA: &[&str] =
    &["CREATE TABLE IF NOT EXISTS samples (series TEXT NOT NULL, at BIGINT NOT NULL, a BIGINT NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (series, at))"];

/// One sample per series per this many seconds.
pub const SAMPLE_SECS: i64 = 10;
/// How long samples are kept: a day.
pub const KEEP_SECS: i64 = 24 * 3600;
/// The most points a history answers with (older windows are averaged into as many).
pub const MAX_POINTS: i64 = 360;

/// What a series measures; `a` and `b` are its two figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Series {
    /// A node: CPU used (millicores), memory used (bytes).
    Node(Uuid),
    /// A node: CPU (millicores) and memory (bytes) its deployments have reserved.
    NodeReserved(Uuid),
    /// One service of a deployment: CPU used (millicores), memory used (bytes).
    Service { deployment: Uuid, service: String },
    /// A deployment's ingress traffic: requests, and those answered 5xx, in the window.
    Traffic { environment: String, deployment: String },
    /// The platform's commands in the window: decided, and refused or failed.
    Commands,
    /// A projection: events not applied yet, and the oldest one's age (milliseconds).
    Lag(String),
}

impl Series {
    fn key(&self) -> String {
        match self {
            Series::Node(id) => format!("node:{id}"),
            Series::NodeReserved(id) => format!("reserved:{id}"),
            Series::Service { deployment, service } => format!("service:{deployment}:{service}"),
            Series::Traffic { environment, deployment } => format!("traffic:{environment}.{deployment}"),
            Series::Commands => "commands".to_owned(),
            Series::Lag(projection) => format!("lag:{projection}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The window's start (microseconds).
    pub at: i64,
    pub a: i64,
    pub b: i64,
}

fn window(at: i64) -> i64 {
    let step = SAMPLE_SECS * 1_000_000;
    at - at.rem_euclid(step)
}

/// Records `a` and `b` of `series` at `at` (microseconds), unless its window has one already.
pub async fn record(db: &WorkingRows, series: &Series, at: i64, a: i64, b: i64) -> Result<(), ProjectionError> {
    write(db, "ON CONFLICT DO NOTHING", series, at, a, b).await
}

/// Adds `a` and `b` to `series`'s sample of the window of `at` (counts, such as traffic, that
/// several writers may add to).
pub async fn add(db: &WorkingRows, series: &Series, at: i64, a: i64, b: i64) -> Result<(), ProjectionError> {
    write(db, "ON CONFLICT (series, at) DO UPDATE SET a = samples.a + excluded.a, b = samples.b + excluded.b", series, at, a, b).await
}

async fn write(db: &WorkingRows, on_conflict: &str, series: &Series, at: i64, a: i64, b: i64) -> Result<(), ProjectionError> {
    sqlx::query(&format!("INSERT INTO samples (series, at, a, b) VALUES ($1, $2, $3, $4) {on_conflict}"))
        .bind(series.key())
        .bind(window(at))
        .bind(a)
        .bind(b)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// `series` since `since` (microseconds), oldest first: every sample, or when there are more
/// than [`MAX_POINTS`] windows, their averages over as many equal spans (for counts, the
/// average per window).
pub async fn history(db: &ReadModelDb, series: &Series, since: i64, now: i64) -> Result<Vec<Sample>, ProjectionError> {
    let span = (now - since).max(1);
    // Windows aligned to the bucket: a span of N buckets touches at most N + 1 of them.
    let bucket = ((span + MAX_POINTS - 2) / (MAX_POINTS - 1)).max(SAMPLE_SECS * 1_000_000);
    let rows = sqlx::query(
        "SELECT CAST((at / $3) * $3 AS BIGINT) AS t, CAST(AVG(a) AS BIGINT), CAST(AVG(b) AS BIGINT) FROM samples \
         WHERE series = $1 AND at >= $2 GROUP BY t ORDER BY t",
    )
    .bind(series.key())
    .bind(since)
    .bind(bucket)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| Ok(Sample { at: r.try_get(0)?, a: r.try_get(1)?, b: r.try_get(2)? })).collect()
}

/// Forgets samples older than [`KEEP_SECS`] before `now`; how many went.
pub async fn prune(db: &WorkingRows, now: i64) -> Result<u64, ProjectionError> {
    let done = sqlx::query("DELETE FROM samples WHERE at < $1").bind(now - KEEP_SECS * 1_000_000).execute(db.pool()).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_sample_per_window_counts_add_up_histories_average_and_old_ones_go() {
        let path = std::env::temp_dir().join(format!("nullops-samples-{}.db", Uuid::now_v7()));
        let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        let node = Series::Node(Uuid::from_u128(1));
        let s = 1_000_000;
        let base = 1_700_000_000 * s;
        record(&db.working_rows(), &node, base + s, 100, 1000).await.unwrap();
        record(&db.working_rows(), &node, base + 2 * s, 999, 999).await.unwrap(); // same window: kept out
        record(&db.working_rows(), &node, base + 12 * s, 300, 3000).await.unwrap();
        let got = history(&db, &node, base, base + 60 * s).await.unwrap();
        assert_eq!(got, [Sample { at: base, a: 100, b: 1000 }, Sample { at: base + 10 * s, a: 300, b: 3000 }]);

        let traffic = Series::Traffic { environment: "qa".into(), deployment: "pr-7".into() };
        add(&db.working_rows(), &traffic, base + s, 10, 1).await.unwrap();
        add(&db.working_rows(), &traffic, base + 3 * s, 5, 0).await.unwrap();
        assert_eq!(history(&db, &traffic, base, base + 10 * s).await.unwrap(), [Sample { at: base, a: 15, b: 1 }]);

        // A day of samples answers with at most MAX_POINTS points.
        for i in 0..(2 * MAX_POINTS) {
            record(&db.working_rows(), &Series::Commands, base + i * 60 * s, i, 0).await.unwrap();
        }
        let day = history(&db, &Series::Commands, base, base + 2 * MAX_POINTS * 60 * s).await.unwrap();
        assert!(day.len() as i64 <= MAX_POINTS && day.len() as i64 >= MAX_POINTS - 1, "{}", day.len());

        assert!(prune(&db.working_rows(), base + (KEEP_SECS + 11) * s).await.unwrap() >= 2);
        assert!(history(&db, &node, 0, base + 60 * s).await.unwrap().is_empty());
        let _ = std::fs::remove_file(path);
    }
}
