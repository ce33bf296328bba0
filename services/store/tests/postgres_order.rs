//! PostgreSQL-specific: a reader following the global order never skips an event whose
//! transaction commits after a later-numbered one.

use nullops_events::identity::{UserDisabled, UserEvent};
use nullops_events::{EventMetadata, LogPosition, NewEvent, StreamId};
use nullops_store::postgres::PgEventStore;
use nullops_store::EventStore;
use sqlx::Connection;

#[tokio::test]
async fn an_event_committed_late_is_not_skipped() {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    let store = PgEventStore::connect(&url).await.expect("store");
    let event = || NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());

    // A slow writer: takes an earlier position inside a transaction that stays open.
    let mut slow = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut slow).await.expect("begin");
    let slow_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload, occurred_at, actor, correlation_id) \
         VALUES ($1, 'user-slow', 1, 'user.disabled', 1, '\\x'::bytea, 0, 'system', $1)",
    )
    .bind(slow_id)
    .execute(&mut slow)
    .await
    .expect("slow insert");

    // A fast writer commits a later position first.
    let fast = event();
    store.append(&StreamId::new("user", "fast"), 0, std::slice::from_ref(&fast)).await.expect("fast append");

    // The reader must not move past the open transaction.
    assert!(store.read_all(LogPosition::START, 100).await.expect("read").is_empty(), "nothing is readable past an open transaction");

    sqlx::query("COMMIT").execute(&mut slow).await.expect("commit");
    // Other transactions on the cluster (other tests) may still hold readers back a moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let all = loop {
        let all = store.read_all(LogPosition::START, 100).await.expect("read");
        if all.len() >= 2 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let ids: Vec<_> = all.iter().map(|e| e.event_id.0).collect();
    assert_eq!(ids, vec![slow_id, fast.event_id.0], "both, in commit-safe order");
}
