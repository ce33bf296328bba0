//! A batch of events written together (rows of one shape in one statement) leaves exactly the
//! rows that applying them one at a time leaves, on both stores: an upsert of a key already in
//! the statement, an update or a delete between inserts, all keep their order.

use nullops_events::capacity::{CapacityEvent, CapacityReleased, CapacityReserved};
use nullops_events::catalog::{
    Access, AccessGranted, AccessTarget, CatalogEvent, EnvironmentDefinition, Removed, Sealed, TeamCreated, TeamMember, TeamRenamed,
};
use nullops_events::deployment::{
    DeploymentEvent, DeploymentPlan, DeploymentRequested, DeploymentRetried, DeploymentRunning, DeploymentScheduled, HealthChanged, StepChanged, StepState,
};
use nullops_events::identity::{ApiTokenCreated, ApiTokenEvent, ApiTokenRevoked, Role, UserDisabled, UserEvent, UserRegistered};
use nullops_events::node::{NodeAdded, NodeConnected, NodeDisconnected, NodeEvent};
use nullops_events::{DomainEvent, EventMetadata, LogPosition, NewEvent, StoredEvent, StreamId};
use nullops_projections::{Projection, ReadModelDb};
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use sqlx::Row;
use uuid::Uuid;

/// The log: each stream's events in order, the streams interleaved.
async fn log() -> Vec<StoredEvent> {
    let dir = std::env::temp_dir().join(format!("nullops-batched-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteEventStore::open(&dir.join("events.db")).await.unwrap();
    let (team, other) = (Uuid::now_v7(), Uuid::now_v7());
    let environment = |name: &str, domain: &str| EnvironmentDefinition { name: name.into(), base_domain: domain.into(), cleanup_after_secs: 60 };
    let granted = |team_id, access| CatalogEvent::AccessGranted(AccessGranted { team_id, target: AccessTarget::Environment("qa".into()), access });
    let catalog: Vec<DomainEvent> = vec![
        CatalogEvent::TeamCreated(TeamCreated { team_id: team, name: "core".into() }).into(),
        CatalogEvent::TeamCreated(TeamCreated { team_id: other, name: "web".into() }).into(),
        CatalogEvent::TeamMemberAdded(TeamMember { team_id: team, username: "ada".into() }).into(),
        CatalogEvent::TeamRenamed(TeamRenamed { team_id: team, name: "platform".into() }).into(),
        CatalogEvent::TeamMemberAdded(TeamMember { team_id: team, username: "bob".into() }).into(),
        granted(team, Access::ReadOnly).into(),
        granted(other, Access::Full).into(),
        // The same key again, in what would be the same statement.
        granted(team, Access::Full).into(),
        CatalogEvent::EnvironmentCreated(environment("qa", "qa.example.com")).into(),
        CatalogEvent::EnvironmentCreated(environment("staging", "st.example.com")).into(),
        CatalogEvent::EnvironmentUpdated(environment("qa", "qa2.example.com")).into(),
        CatalogEvent::EnvironmentRemoved(Removed { name: "staging".into() }).into(),
        CatalogEvent::EnvironmentCreated(environment("staging", "st3.example.com")).into(),
    ];
    let mut version = 0;
    for event in catalog {
        version = store.append(&StreamId::new("catalog", "main"), version, &[NewEvent::new(&event, EventMetadata::system())]).await.unwrap().stream_version;
    }
    for (i, name) in ["ada", "bob", "cy"].into_iter().enumerate() {
        let registered =
            UserEvent::Registered(UserRegistered { user_id: Uuid::now_v7(), username: name.into(), password_hash: format!("h{i}"), role: Role::User });
        let mut events = vec![NewEvent::new(&registered.into(), EventMetadata::system())];
        if name == "bob" {
            events.push(NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system()));
        }
        store.append(&StreamId::new("user", name), 0, &events).await.unwrap();
        let token_id = Uuid::now_v7();
        let created = ApiTokenEvent::Created(ApiTokenCreated {
            token_id,
            username: name.into(),
            name: format!("ci {i}"),
            token_hash: token_id.as_bytes().to_vec(),
            expires_at: None,
        });
        let mut events = vec![NewEvent::new(&created.into(), EventMetadata::system())];
        if i == 1 {
            events.push(NewEvent::new(&ApiTokenEvent::Revoked(ApiTokenRevoked {}).into(), EventMetadata::system()));
        }
        store.append(&StreamId::new("api_token", &token_id.to_string()), 0, &events).await.unwrap();
    }
    // Two deployments' lives, interleaved as a busy log has them: a step's states repeat its
    // key, a retry empties the steps between upserts, updates come between rows.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let request = |deployment_id: Uuid, name: &str| {
        DeploymentEvent::Requested(DeploymentRequested {
            deployment_id,
            project_id: Uuid::from_u128(1),
            project: "shop".into(),
            environment: "qa".into(),
            name: name.into(),
            versions: vec![],
            pipeline_version: 1,
            plan: DeploymentPlan { steps: vec![], edges: vec![] },
            cpu_millis: 100,
            memory_mib: 64,
            lifetime_secs: 3600,
            expires_at: 10,
        })
    };
    let step = |step: &str, state| DeploymentEvent::StepChanged(StepChanged { step: step.into(), state, detail: format!("{step} {state:?}") });
    let health = |healthy| DeploymentEvent::HealthChanged(HealthChanged { service: "web".into(), healthy, detail: String::new() });
    let lives = [
        (a, request(a, "one")),
        (b, request(b, "two")),
        (a, DeploymentEvent::Scheduled(DeploymentScheduled { node_id: Uuid::from_u128(7) })),
        (a, step("db", StepState::Running)),
        (b, DeploymentEvent::Scheduled(DeploymentScheduled { node_id: Uuid::from_u128(7) })),
        (b, step("db", StepState::Running)),
        (a, step("db", StepState::Succeeded)),
        (a, step("web", StepState::Running)),
        (a, health(false)),
        (a, health(true)),
        (a, DeploymentEvent::Running(DeploymentRunning { endpoints: vec![] })),
        (b, step("db", StepState::Failed)),
        (b, DeploymentEvent::Retried(DeploymentRetried { pipeline_version: 2, plan: DeploymentPlan { steps: vec![], edges: vec![] } })),
        (b, step("db", StepState::Running)),
    ];
    let mut versions = std::collections::HashMap::new();
    for (id, event) in lives {
        let version = versions.entry(id).or_insert(0u64);
        let stream = StreamId::new("deployment", &id.to_string());
        *version = store.append(&stream, *version, &[NewEvent::new(&event.into(), EventMetadata::system())]).await.unwrap().stream_version;
    }
    // A node's life, and reservations made together on it (one of them recorded twice).
    let node = Uuid::now_v7();
    let sealed = Sealed { key_id: Uuid::from_u128(1), nonce: vec![0; 12], ciphertext: vec![1; 16] };
    let added = NodeEvent::Added(NodeAdded { node_id: node, environment: "qa".into(), host: "10.0.0.5".into(), port: 7443, token_hash: sealed });
    let node_events: Vec<DomainEvent> = vec![
        added.into(),
        NodeEvent::Disconnected(NodeDisconnected { reason: "connection refused".into() }).into(),
        NodeEvent::Connected(NodeConnected { agent_version: "1.2.3".into(), protocol: 1 }).into(),
        NodeEvent::Disconnected(NodeDisconnected { reason: "no heartbeat for 3 s".into() }).into(),
    ];
    let node_stream = StreamId::new("node", &node.to_string());
    let mut version = 0;
    for event in node_events {
        version = store.append(&node_stream, version, &[NewEvent::new(&event, EventMetadata::system())]).await.unwrap().stream_version;
    }
    let reserved = |deployment_id| CapacityEvent::Reserved(CapacityReserved { deployment_id, cpu_millis: 100, memory_mib: 64 });
    let capacity: Vec<NewEvent> = [reserved(a), reserved(b), reserved(a), CapacityEvent::Released(CapacityReleased { deployment_id: b }), reserved(b)]
        .into_iter()
        .map(|e| NewEvent::new(&e.into(), EventMetadata::system()))
        .collect();
    store.append(&StreamId::new("capacity", &node.to_string()), 0, &capacity).await.unwrap();
    store.read_all(LogPosition::START, 1000).await.unwrap()
}

/// Every row of `projection`'s tables, in a fixed order, as text.
async fn dump(db: &ReadModelDb, projection: &dyn Projection) -> Vec<String> {
    let mut all = Vec::new();
    for table in projection.tables() {
        for row in sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(db.pool()).await.unwrap() {
            let cells: Vec<String> = (0..row.len())
                .map(|i| match row.try_get::<Option<String>, _>(i) {
                    Ok(text) => format!("{text:?}"),
                    Err(_) => format!("{:?}", row.try_get::<Option<i64>, _>(i).unwrap()),
                })
                .collect();
            all.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    all.sort();
    all
}

async fn batched_equals_one_by_one(fresh: impl Fn() -> futures::future::BoxFuture<'static, ReadModelDb>) {
    let events = log().await;
    for projection in nullops_projections::all().into_iter().filter(|p| ["identity", "catalog", "deployments", "nodes"].contains(&p.name())) {
        let handled: Vec<&StoredEvent> = events.iter().filter(|e| projection.handles(&e.event_type)).collect();
        let (one_by_one, batched) = (fresh().await, fresh().await);
        for event in &handled {
            let mut tx = one_by_one.pool().begin().await.unwrap();
            projection.apply(&mut tx, event).await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = batched.pool().begin().await.unwrap();
        projection.apply_all(&mut tx, &handled).await.unwrap();
        tx.commit().await.unwrap();
        let expected = dump(&one_by_one, &*projection).await;
        assert!(expected.len() >= 3, "{}: the log leaves rows: {expected:#?}", projection.name());
        assert_eq!(dump(&batched, &*projection).await, expected, "{}", projection.name());
    }
}

#[tokio::test]
async fn a_batch_written_together_equals_one_event_at_a_time_on_sqlite() {
    batched_equals_one_by_one(|| {
        Box::pin(async {
            let path = std::env::temp_dir().join(format!("nullops-batched-{}.db", Uuid::now_v7()));
            ReadModelDb::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap()
        })
    })
    .await;
}

#[tokio::test]
async fn a_batch_written_together_equals_one_event_at_a_time_on_postgres() {
    batched_equals_one_by_one(|| Box::pin(async { ReadModelDb::open(&nullops_store::conformance::fresh_postgres_database().await).await.unwrap() })).await;
}
