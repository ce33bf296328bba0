//! The command layer's state cache: a cached aggregate still sees every event appended since,
//! by this process or any other, and decides on it.

use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand};
use nullops_domain::{DomainError, Issuer};
use nullops_events::EventMetadata;
use nullops_store::commands::{execute, execute_with, CommandError, StateCache};
use nullops_store::sqlite::SqliteEventStore;

fn create_team(name: &str) -> CatalogCommand {
    CatalogCommand { by: Issuer::System, action: CatalogAction::CreateTeam { team_id: uuid::Uuid::now_v7(), name: name.into() } }
}

#[tokio::test]
async fn a_cached_state_catches_up_with_appends_made_around_it() {
    let dir = std::env::temp_dir().join(format!("nullops-cache-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteEventStore::open(&dir.join("events.db")).await.unwrap();
    let cache = StateCache::<Catalog>::new(1);
    let meta = EventMetadata::system();

    let (empty, version) = cache.load(&store, "main").await.unwrap();
    assert_eq!((empty.teams.len(), version), (0, 0));
    execute_with::<Catalog>(&store, Some(&cache), "main", &create_team("qa"), &meta).await.unwrap();
    // Another writer, not going through this cache.
    execute::<Catalog>(&store, "main", &create_team("dev"), &meta).await.unwrap();

    let (state, version) = cache.load(&store, "main").await.unwrap();
    assert_eq!(version, 2);
    let mut names: Vec<_> = state.teams.values().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["dev", "qa"]);
    let again = execute_with::<Catalog>(&store, Some(&cache), "main", &create_team("dev"), &meta).await;
    assert!(matches!(again, Err(CommandError::Domain(DomainError::AlreadyExists(_)))), "decided on the fresh state");

    // Beyond its capacity the cache still answers, reading the whole stream.
    let (other, _) = cache.load(&store, "other").await.unwrap();
    assert!(other.teams.is_empty());
}

/// Another process writing to the same stream without pause (here a task that bypasses this
/// process's turns, as another server does) does not starve a command: it keeps deciding again
/// on the fresh state until it wins, and every write of both lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_wins_against_another_process_writing_to_its_stream_without_pause() {
    use nullops_domain::Decider;
    use nullops_events::{DomainEvent, NewEvent};
    use nullops_store::EventStore;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!("nullops-race-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap());
    let meta = EventMetadata::system();
    let done = Arc::new(AtomicBool::new(false));
    let other_wrote = Arc::new(AtomicUsize::new(0));
    let other = {
        let (store, done, other_wrote, meta) = (store.clone(), done.clone(), other_wrote.clone(), meta.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let (state, version) = nullops_store::commands::load::<Catalog>(store.as_ref(), "main").await.unwrap();
                let events: Vec<DomainEvent> = Catalog::decide(&create_team(&format!("other-{n}")), &state).unwrap().into_iter().map(Into::into).collect();
                let new: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e, meta.clone())).collect();
                if store.append(&Catalog::stream_id("main"), version, &new).await.is_ok() {
                    n += 1;
                    other_wrote.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    while other_wrote.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    for i in 0..40 {
        execute::<Catalog>(store.as_ref(), "main", &create_team(&format!("mine-{i}")), &meta).await.unwrap_or_else(|e| panic!("command {i}: {e}"));
    }
    done.store(true, Ordering::Relaxed);
    other.await.unwrap();
    let (state, _) = nullops_store::commands::load::<Catalog>(store.as_ref(), "main").await.unwrap();
    assert_eq!(state.teams.len(), 40 + other_wrote.load(Ordering::Relaxed));
}
