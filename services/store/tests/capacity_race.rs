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
