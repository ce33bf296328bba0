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
