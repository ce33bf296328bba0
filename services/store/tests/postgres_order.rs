//! PostgreSQL-specific: a reader following the global order never skips an event whose
//! transaction commits after a later-numbered one, and only appends still running hold it back.

use nullops_events::identity::{UserDisabled, UserEvent};
use nullops_events::{EventMetadata, LogPosition, NewEvent, StreamId};
use nullops_store::postgres::PgEventStore;
use nullops_store::EventStore;
use sqlx::{Connection, PgConnection};

fn event() -> NewEvent {
    NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system())
}

/// Opens a transaction on `url` that has written (so it has an id) and stays open.
async fn open_write(url: &str, statement: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query(statement).execute(&mut conn).await.expect("write");
    conn
}

fn ids(events: &[nullops_events::StoredEvent]) -> Vec<uuid::Uuid> {
    events.iter().map(|e| e.event_id.0).collect()
}

#[tokio::test]
async fn an_event_committed_late_is_not_skipped() {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    let store = PgEventStore::connect(&url).await.expect("store");

    // A slow writer: takes an earlier position inside a transaction that stays open.
    let slow_id = uuid::Uuid::now_v7();
    let mut slow = open_write(
        &url,
        &format!(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload, occurred_at, actor, correlation_id) \
             VALUES ('{slow_id}', 'user-slow', 1, 'user.disabled', 1, '\\x'::bytea, 0, 'system', '{slow_id}')"
        ),
    )
    .await;

    // A fast writer commits a later position first.
    let fast = event();
    store.append(&StreamId::new("user", "fast"), 0, std::slice::from_ref(&fast)).await.expect("fast append");

    // The reader must not move past the open append.
    assert!(store.read_all(LogPosition::START, 100).await.expect("read").is_empty(), "nothing is readable past an open append");

    sqlx::query("COMMIT").execute(&mut slow).await.expect("commit");
    // At once: no other transaction on the server holds readers back.
    let all = store.read_all(LogPosition::START, 100).await.expect("read");
    assert_eq!(ids(&all), vec![slow_id, fast.event_id.0], "both, in commit-safe order");
}

/// A long write elsewhere on the server (another database, or a table of this one that is not
/// the log, as a read model's batch) holds no reader back: an event committed after it began is
/// readable at once. Before, one such transaction anywhere on the server hid every newer event.
#[tokio::test]
async fn a_long_write_that_appends_nothing_holds_no_reader_back() {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    let other = nullops_store::conformance::fresh_postgres_database().await;
    let store = PgEventStore::connect(&url).await.expect("store");
    let before = event();
    store.append(&StreamId::new("user", "before"), 0, std::slice::from_ref(&before)).await.expect("append");

    let _elsewhere = open_write(&other, "CREATE TABLE busy (n int)").await;
    let _beside = open_write(&url, "CREATE TABLE read_model_batch (n int)").await;
    let mut appended = vec![before.event_id.0];
    for i in 0..3 {
        let e = event();
        store.append(&StreamId::new("user", &format!("after-{i}")), 0, std::slice::from_ref(&e)).await.expect("append");
        appended.push(e.event_id.0);
        let all = store.read_all(LogPosition::START, 100).await.expect("read");
        assert_eq!(ids(&all), appended, "every committed event, at once, while the other writes run");
    }
}

/// A reader's every batch walks the global-order index from where it stopped: no sort of the
/// events after it. (Ordered by the output column `tx_id`, a cast no index covers, each batch
/// sorted the whole rest of the log: a replay of 100,000 events took 150 times a `COPY`.)
#[tokio::test]
async fn reading_the_log_walks_its_index_without_sorting() {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    let store = PgEventStore::connect(&url).await.expect("store");
    // Enough events that the planner weighs a sort against the index as it would in use.
    for i in 0..100 {
        let batch: Vec<NewEvent> = (0..200).map(|_| event()).collect();
        store.append(&StreamId::new("user", &format!("u{i}")), 0, &batch).await.expect("append");
    }
    sqlx::query("ANALYZE events").execute(store.pool()).await.expect("analyze");
    let plan = store.read_all_plan().await.expect("plan");
    assert!(plan.contains("events_global_order"), "the read follows the global-order index:\n{plan}");
    assert!(!plan.contains("Sort"), "the read sorts nothing:\n{plan}");
}
