//! Failed sign-ins, counted by key (a source address, a user and source): `login_failures`,
//! shared by every server on the database, so N servers allow no more attempts than one and a
//! restart forgets nothing. Like `node_usage` it is working data, not history: only the gateway
//! writes it, a projection rebuild leaves it alone, and rows older than the caller's window are
//! deleted as it goes.

use sqlx::Row;

use crate::{ProjectionError, ReadModelDb};

pub(crate) const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS login_failures (key TEXT PRIMARY KEY, failures BIGINT NOT NULL, last_at BIGINT NOT NULL)"];

/// A key's failures in a row and when the last was (microseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last_at: i64,
}

/// The failures recorded under each of `keys` (keys without any are left out).
pub async fn failures(db: &ReadModelDb, keys: &[String]) -> Result<Vec<(String, Failures)>, ProjectionError> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let row = sqlx::query("SELECT failures, last_at FROM login_failures WHERE key = $1").bind(key.clone()).fetch_optional(db.pool()).await?;
        if let Some(r) = row {
            out.push((key.clone(), Failures { count: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX), last_at: r.try_get(1)? }));
        }
    }
    Ok(out)
}

/// Counts one more failure under each of `keys` at `now`; a count whose last failure is older
/// than `forget_before` starts again at one. Rows older than that are deleted now and then.
pub async fn record_failure(db: &ReadModelDb, keys: &[String], now: i64, forget_before: i64) -> Result<(), ProjectionError> {
    for key in keys {
        sqlx::query(
            "INSERT INTO login_failures (key, failures, last_at) VALUES ($1, 1, $2) ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN login_failures.last_at < $3 THEN 1 ELSE login_failures.failures + 1 END, last_at = $2",
        )
        .bind(key.clone())
        .bind(now)
        .bind(forget_before)
        .execute(db.pool())
        .await?;
    }
    // A flood of distinct keys must not grow the table without bound: the old go.
    if now % 64 == 0 {
        sqlx::query("DELETE FROM login_failures WHERE last_at < $1").bind(forget_before).execute(db.pool()).await?;
    }
    Ok(())
}

/// Forgets the failures under `key` (a sign-in that succeeded).
pub async fn clear(db: &ReadModelDb, key: &str) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1").bind(key.to_owned()).execute(db.pool()).await?;
    Ok(())
}
