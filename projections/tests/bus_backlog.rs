//! A bus replaying a backlog of events the projection already applied must not hold back newer
//! events: the runner reads them from the store instead of waiting for the replay to end.

use std::sync::Arc;
use std::time::Duration;

use nullops_bus::{Bus, BusMessage, InProcessBus};
use nullops_events::identity::{UserDisabled, UserEvent};
use nullops_events::{EventMetadata, LogPosition, NewEvent, StreamId};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_backlog_does_not_delay_new_events() {
    let dir = std::env::temp_dir().join(format!("nullops-backlog-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap());
    let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", dir.join("readmodels.db").display())).await.unwrap();
    let bus = Arc::new(InProcessBus::default());
    let event = |_| NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());
    let stream = StreamId::new("user", "backlog");
    store.append(&stream, 0, &(0..50).map(event).collect::<Vec<_>>()).await.unwrap();
    let old = store.read_all(LogPosition::START, 1000).await.unwrap();

    // The audit projection, caught up with the log.
    let audit = nullops_projections::all().into_iter().find(|p| p.name() == "audit").unwrap();
    let shutdown = CancellationToken::new();
    let runner = Runner { projection: audit, db: db.clone(), store: store.clone(), bus: bus.clone() };
    tokio::spawn(runner.run(shutdown.clone()));
    db.wait_for(&["audit"], old.last().unwrap().position, Duration::from_secs(10)).await.unwrap();

    // The bus replays those old events, over and over, for longer than the test waits.
    let replay = {
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        let messages: Vec<BusMessage> = old
            .iter()
            .scan(LogPosition::START, |prev, e| {
                let m = BusMessage { previous: *prev, event: e.clone() };
                *prev = e.position;
                Some(m)
            })
            .collect();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                for m in &messages {
                    bus.publish(std::slice::from_ref(m)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    // A new event, stored but (no relay runs) never published: only the store has it.
    let appended = store.append(&stream, 50, &[event(0)]).await.unwrap();
    // The steady replay keeps the runner's safety poll from ever firing, so the event is applied
    // only if a stale delivery sends the runner to the store: without that, never while the
    // replay goes on. (Generous bound for a loaded machine.)
    db.wait_for(&["audit"], appended.last, Duration::from_secs(30)).await.expect("applied while the backlog replays");
    shutdown.cancel();
    replay.await.unwrap();
}
