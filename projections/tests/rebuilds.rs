//! A read model replaying the log from its start (new in a release, in an older shape, or
//! reset) says so until its runner has caught up once: the server is not ready meanwhile.

use std::sync::Arc;

use nullops_bus::InProcessBus;
use nullops_events::identity::{UserDisabled, UserEvent};
use nullops_events::{EventMetadata, NewEvent, StreamId};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;

#[tokio::test]
async fn a_replay_from_the_start_is_marked_until_it_has_caught_up() {
    let dir = std::env::temp_dir().join(format!("nullops-rebuilds-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("readmodels.db").display());
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap());
    let event = || NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());
    store.append(&StreamId::new("user", "rebuilt"), 0, &(0..120).map(|_| event()).collect::<Vec<_>>()).await.unwrap();
    let audit = nullops_projections::all().into_iter().find(|p| p.name() == "audit").unwrap();
    let runner = |db: &ReadModelDb| Runner { projection: audit.clone(), db: db.clone(), store: store.clone(), bus: Arc::new(InProcessBus::default()) };
    let marked = |db: ReadModelDb| async move { db.rebuilding().await.unwrap().into_iter().map(|r| (r.name, r.events_applied)).collect::<Vec<_>>() };

    // Given a first start: every read model is new, and partial until it has replayed the log.
    let db = ReadModelDb::open(&url).await.unwrap();
    let all: Vec<String> = nullops_projections::all().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(marked(db.clone()).await.into_iter().map(|(n, _)| n).collect::<Vec<_>>(), {
        let mut a = all.clone();
        a.sort();
        a
    });
    // When audit's runner has caught up, it is whole; the others are still marked.
    runner(&db).catch_up_once().await.unwrap();
    assert!(!marked(db.clone()).await.iter().any(|(n, _)| n == "audit"));

    // Given a restart after an upgrade that reshaped audit: marked again, and its count starts over.
    sqlx::query("UPDATE projection_schemas SET version = 0 WHERE name = 'audit'").execute(db.pool()).await.unwrap();
    drop(db);
    let db = ReadModelDb::open(&url).await.unwrap();
    assert!(marked(db.clone()).await.contains(&("audit".into(), 0)), "{:?}", marked(db.clone()).await);
    runner(&db).catch_up_once().await.unwrap();
    assert!(!marked(db.clone()).await.iter().any(|(n, _)| n == "audit"));

    // A reset (`nullops projections rebuild`) marks it too, until it is replayed.
    db.reset(&*audit).await.unwrap();
    assert!(marked(db.clone()).await.contains(&("audit".into(), 0)));
    runner(&db).catch_up_once().await.unwrap();
    assert!(!marked(db.clone()).await.iter().any(|(n, _)| n == "audit"));
    assert_eq!(db.checkpoint("audit").await.unwrap().events_applied, 120, "the whole log, once");
}

/// A reset under a running runner is replayed at its next safety poll, with no new event to
/// prompt it (a quiet platform has none), and the mark goes when the replay is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_under_a_running_runner_is_replayed_without_a_new_event() {
    let dir = std::env::temp_dir().join(format!("nullops-rebuilds-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap());
    let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", dir.join("readmodels.db").display())).await.unwrap();
    let event = || NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());
    let last = store.append(&StreamId::new("user", "quiet"), 0, &(0..40).map(|_| event()).collect::<Vec<_>>()).await.unwrap().last;
    let audit = nullops_projections::all().into_iter().find(|p| p.name() == "audit").unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runner = Runner { projection: audit.clone(), db: db.clone(), store: store.clone(), bus: Arc::new(InProcessBus::default()) };
    tokio::spawn(runner.run(shutdown.clone()));
    db.wait_for(&["audit"], last, std::time::Duration::from_secs(30)).await.unwrap();

    db.reset(&*audit).await.unwrap();
    assert_eq!(db.checkpoint("audit").await.unwrap().events_applied, 0);
    // Replayed from the start by the running runner (generous bound for a loaded machine).
    db.wait_for(&["audit"], last, std::time::Duration::from_secs(30)).await.unwrap();
    // The mark goes when the runner says the read model is whole, which wakes the advance signal.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut advanced = db.advances();
    while db.rebuilding().await.unwrap().iter().any(|r| r.name == "audit") {
        let woke = tokio::time::timeout_at(deadline, advanced.changed()).await;
        assert!(matches!(woke, Ok(Ok(()))), "the mark outlived the replay");
    }
    assert_eq!(db.checkpoint("audit").await.unwrap().events_applied, 40, "the whole log, once");
    shutdown.cancel();
}

/// Read models replayed together read the log once and each applies every event it handles
/// exactly once, whether it starts from the beginning or further on; each is whole at the end.
#[tokio::test]
async fn read_models_replayed_together_each_apply_every_event_once() {
    let dir = std::env::temp_dir().join(format!("nullops-rebuilds-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap());
    let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", dir.join("readmodels.db").display())).await.unwrap();
    let event = || NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());
    // More than one read's worth (500), so the batches and the read ahead both matter.
    for i in 0..3 {
        store.append(&StreamId::new("user", &format!("u{i}")), 0, &(0..450).map(|_| event()).collect::<Vec<_>>()).await.unwrap();
    }
    let bus: Arc<dyn nullops_bus::Bus> = Arc::new(InProcessBus::default());
    let runner = |name: &str| {
        let projection = nullops_projections::all().into_iter().find(|p| p.name() == name).unwrap();
        Runner { projection, db: db.clone(), store: store.clone(), bus: bus.clone() }
    };
    // Given audit already applied the first 450 events, and nodes nothing.
    let first = store.read_all(nullops_events::LogPosition::START, 450).await.unwrap();
    let mut tx = db.pool().begin().await.unwrap();
    let audit = runner("audit");
    audit.projection.apply_all(&mut tx, &first.iter().collect::<Vec<_>>()).await.unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (name, commit_pos, seq, events_applied, updated_at) VALUES ('audit', $1, $2, 450, 0)")
        .bind(first[449].position.commit as i64)
        .bind(first[449].position.seq as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    // (It is whole as far as it got: its replay ended before the last events came.)
    sqlx::query("DELETE FROM projection_rebuilds WHERE name = 'audit'").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    // When both are replayed together.
    let runners = [audit, runner("nodes")];
    let reached = Runner::catch_up_together(&runners).await.unwrap();

    // Then both are at the head; audit applied the rest once, nodes (which handles no user
    // event) applied none; neither is marked as rebuilding any more.
    let head = store.read_all(first[449].position, 10_000).await.unwrap().last().unwrap().position;
    assert_eq!(reached, vec![head, head]);
    assert_eq!(db.checkpoint("audit").await.unwrap().events_applied, 1350, "each event once");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(db.pool()).await.unwrap();
    assert_eq!(rows, 1350);
    assert_eq!(db.checkpoint("nodes").await.unwrap().events_applied, 0);
    let marked: Vec<String> = db.rebuilding().await.unwrap().into_iter().map(|r| r.name).collect();
    assert!(!marked.iter().any(|n| n == "audit" || n == "nodes"), "still marked: {marked:?}");
}
