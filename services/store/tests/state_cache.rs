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
