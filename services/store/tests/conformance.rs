//! Both event stores pass the same conformance suite.

use std::sync::Arc;

use nullops_store::postgres::PgEventStore;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;

async fn sqlite() -> Arc<dyn EventStore> {
    // The directory must outlive the store: leak it, the OS temp cleaner owns it.
    let dir = std::env::temp_dir().join(format!("nullops-store-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.expect("open sqlite store"))
}

async fn postgres() -> Arc<dyn EventStore> {
    let url = nullops_store::conformance::fresh_postgres_database().await;
    Arc::new(PgEventStore::connect(&url).await.expect("connect postgres store"))
}

nullops_store::conformance_suite!(sqlite_store, sqlite());
nullops_store::conformance_suite!(postgres_store, postgres());
