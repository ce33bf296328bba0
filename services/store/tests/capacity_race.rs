//! Admission under contention, on both stores: eight reservations racing for a node that fits
//! five give exactly five reservations and three RESOURCES_EXHAUSTED refusals, because every
//! reservation is decided on the node's capacity stream with optimistic concurrency.

use std::sync::Arc;

use nullops_domain::capacity::{Capacity, CapacityCommand, Resources};
use nullops_domain::DomainError;
use nullops_events::EventMetadata;
use nullops_store::commands::{execute, load, CommandError};
use nullops_store::postgres::PgEventStore;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use uuid::Uuid;

async fn eight_race_for_five(store: Arc<dyn EventStore>) {
    let node = Uuid::now_v7().to_string();
    let total = Resources { cpu_millis: 2000, memory_mib: 5 * 512 };
    let request = Resources { cpu_millis: 100, memory_mib: 512 };
    let racers = (0..8).map(|_| {
        let (store, node) = (store.clone(), node.clone());
        tokio::spawn(async move {
            let command = CapacityCommand::Reserve { deployment_id: Uuid::now_v7(), request, total, used: Resources::default() };
            execute::<Capacity>(&*store, &node, &command, &EventMetadata::system()).await
        })
    });
    let mut reserved = 0;
    let mut exhausted = 0;
    for outcome in futures::future::join_all(racers).await {
        match outcome.expect("task") {
            Ok(executed) => {
                assert_eq!(executed.events.len(), 1);
                reserved += 1;
            }
            Err(CommandError::Domain(DomainError::ResourcesExhausted(_))) => exhausted += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((reserved, exhausted), (5, 3));
    let (state, _) = load::<Capacity>(&*store, &node).await.unwrap();
    assert_eq!(state.reserved(), Resources { cpu_millis: 500, memory_mib: 5 * 512 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_never_overcommit_a_node_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("nullops-capacity-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    eight_race_for_five(Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_never_overcommit_a_node_on_postgres() {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    eight_race_for_five(Arc::new(PgEventStore::connect(&url).await.unwrap())).await;
}

/// A command decided on a state the caller read earlier: when the stream has moved on since,
/// it is decided again on the stream as it is, whether the stale state said "append", "no-op"
/// or "refuse".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_decided_on_a_stale_known_state_is_decided_again_on_the_stream() {
    use nullops_store::commands::execute_known;
    let dir = std::env::temp_dir().join(format!("nullops-known-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteEventStore::open(&dir.join("events.db")).await.unwrap();
    let node = Uuid::now_v7().to_string();
    let total = Resources { cpu_millis: 1000, memory_mib: 1024 };
    let request = Resources { cpu_millis: 100, memory_mib: 512 };
    let reserve = |id: Uuid| CapacityCommand::Reserve { deployment_id: id, request, total, used: Resources::default() };
    let meta = EventMetadata::system();
    let (empty, at) = load::<Capacity>(&store, &node).await.unwrap();
    // Given the node filled since `empty` was read …
    for _ in 0..2 {
        execute::<Capacity>(&store, &node, &reserve(Uuid::now_v7()), &meta).await.unwrap();
    }
    // … when a reservation is decided on `empty` (which says it fits), then the stream refuses it.
    let stale = execute_known::<Capacity>(&store, &node, (empty.clone(), at), &reserve(Uuid::now_v7()), &meta).await;
    assert!(matches!(stale, Err(CommandError::Domain(DomainError::ResourcesExhausted(_)))), "{stale:?}");
    // Given a release since a full state was read, a reservation it would refuse is made.
    let (full, at) = load::<Capacity>(&store, &node).await.unwrap();
    let first = *full.reservations.keys().next().unwrap();
    execute::<Capacity>(&store, &node, &CapacityCommand::Release { deployment_id: first }, &meta).await.unwrap();
    let made = execute_known::<Capacity>(&store, &node, (full.clone(), at), &reserve(Uuid::now_v7()), &meta).await.unwrap();
    assert_eq!(made.events.len(), 1);
    // Given `first` no longer holds room, a state saying it does (a no-op) is decided again.
    let again = execute_known::<Capacity>(&store, &node, (full, at), &reserve(first), &meta).await;
    assert!(matches!(again, Err(CommandError::Domain(DomainError::ResourcesExhausted(_)))), "{again:?}");
}
