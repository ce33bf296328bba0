//! The conformance suite every [`EventStore`] must pass. Each case takes a fresh, empty store.
//! `conformance_suite!(module, factory)` expands to one `#[tokio::test]` per case.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nullops_events::identity::{UserDisabled, UserEnabled, UserEvent};
use nullops_events::{Actor, CorrelationId, DomainEvent, EventMetadata, LogPosition, NewEvent, StreamId};
use uuid::Uuid;

use crate::{EventStore, StoreError};

fn event(n: u32) -> NewEvent {
    let e: DomainEvent = if n.is_multiple_of(2) { UserEvent::Disabled(UserDisabled {}) } else { UserEvent::Enabled(UserEnabled {}) }.into();
    NewEvent::new(&e, EventMetadata::system())
}

fn events(n: u32) -> Vec<NewEvent> {
    (0..n).map(event).collect()
}

/// Everything in the global order, once at least `expected` events are readable. Committed events
/// may stay unreadable for a moment while an older transaction runs (on PostgreSQL, anywhere in
/// the cluster), so wait for them, bounded, rather than read once.
async fn read_everything(store: &dyn EventStore, expected: usize) -> Vec<nullops_events::StoredEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        let mut after = LogPosition::START;
        loop {
            let page = store.read_all(after, 7).await.expect("read_all");
            let Some(last) = page.last() else { break };
            after = last.position;
            all.extend(page);
        }
        if all.len() >= expected || tokio::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn appends_and_reads_back_a_stream_with_its_envelope(store: &dyn EventStore) {
    let stream = StreamId::new("user", "alice");
    let metadata = EventMetadata {
        actor: Actor::User("admin".into()),
        correlation_id: CorrelationId::new(),
        causation_id: Some(Uuid::now_v7()),
        trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let new = vec![NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), metadata.clone())];
    let appended = store.append(&stream, 0, &new).await.expect("append");
    assert_eq!(appended.stream_version, 1);
    let read = store.read_stream(&stream, 0).await.expect("read");
    assert_eq!(read.len(), 1);
    let e = &read[0];
    assert_eq!(e.event_id, new[0].event_id);
    assert_eq!(e.stream_id, stream);
    assert_eq!(e.stream_version, 1);
    assert_eq!(e.position, appended.first);
    assert_eq!(e.event_type, "user.disabled");
    assert_eq!(e.schema_version, 1);
    assert_eq!(e.occurred_at, new[0].occurred_at);
    assert_eq!(e.metadata, metadata);
    assert!(matches!(e.decode().expect("decodes").event, DomainEvent::User(UserEvent::Disabled(_))));
    assert!(store.read_stream(&stream, 1).await.expect("read").is_empty());
    assert!(store.read_stream(&StreamId::new("user", "nobody"), 0).await.expect("read").is_empty());
}

pub async fn rejects_a_stale_expected_version_and_writes_nothing(store: &dyn EventStore) {
    let stream = StreamId::new("user", "bob");
    store.append(&stream, 0, &events(2)).await.expect("append");
    for wrong in [0, 1, 3, 9] {
        let err = store.append(&stream, wrong, &events(3)).await.expect_err("stale version must conflict");
        assert!(matches!(err, StoreError::Conflict { expected, .. } if expected == wrong), "{err}");
    }
    assert_eq!(store.read_stream(&stream, 0).await.expect("read").len(), 2);
    assert_eq!(read_everything(store, 2).await.len(), 2);
    store.append(&stream, 2, &events(1)).await.expect("the right version appends");
    assert_eq!(store.read_stream(&stream, 0).await.expect("read").len(), 3);
}

pub async fn an_append_of_no_events_is_refused(store: &dyn EventStore) {
    let err = store.append(&StreamId::new("user", "empty"), 0, &[]).await.expect_err("empty append");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(store.read_stream(&StreamId::new("user", "empty"), 0).await.expect("read").is_empty());
}

pub async fn appends_several_events_atomically_in_order(store: &dyn EventStore) {
    let stream = StreamId::new("user", "carol");
    let new = events(5);
    let appended = store.append(&stream, 0, &new).await.expect("append");
    assert_eq!(appended.stream_version, 5);
    let read = store.read_stream(&stream, 0).await.expect("read");
    let versions: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let ids: Vec<_> = read.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, new.iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!((read[0].position, read[4].position), (appended.first, appended.last));
}

pub async fn reads_all_streams_in_global_order_from_any_position(store: &dyn EventStore) {
    assert_eq!(store.head().await.expect("head"), 0, "an empty log reaches nowhere");
    let mut expected = Vec::new();
    for i in 0..6u32 {
        let stream = StreamId::new("user", &format!("u{}", i % 3));
        let version = u64::from(i / 3) * 2;
        let new = events(2);
        store.append(&stream, version, &new).await.expect("append");
        expected.extend(new.iter().map(|e| e.event_id));
    }
    let all = read_everything(store, expected.len()).await;
    assert_eq!(all.iter().map(|e| e.event_id).collect::<Vec<_>>(), expected);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let tail = store.read_all(all[4].position, 100).await.expect("read");
    assert_eq!(tail.len(), all.len() - 5);
    assert_eq!(tail[0].event_id, all[5].event_id);
    assert!(store.read_all(all[all.len() - 1].position, 100).await.expect("read").is_empty());
    assert_eq!(store.head().await.expect("head"), all[all.len() - 1].position.seq, "the head is the last event's seq");
}

pub async fn concurrent_creators_of_one_stream_have_exactly_one_winner(store: Arc<dyn EventStore>) {
    let stream = StreamId::new("user", "race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move { store.append(&stream, 0, &events(2)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.read_stream(&stream, 0).await.expect("read").len(), 2);
}

pub async fn concurrent_writers_to_many_streams_lose_and_skip_nothing(store: Arc<dyn EventStore>) {
    // A follower reads the global order while 12 writers append; it must see every event once.
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = LogPosition::START;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < 12 * 25 && tokio::time::Instant::now() < deadline {
                let page = store.read_all(after, 50).await.expect("read_all");
                match page.last() {
                    Some(last) => after = last.position,
                    None => tokio::task::yield_now().await,
                }
                seen.extend(page.into_iter().map(|e| e.event_id));
            }
            seen
        })
    };
    let writers: Vec<_> = (0..12)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::new("user", &format!("writer{w}"));
                for v in 0..25u64 {
                    store.append(&stream, v, &events(1)).await.expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let seen = follower.await.expect("follower");
    assert_eq!(seen.len(), 12 * 25, "the follower saw every event");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "and each once");
    let all = read_everything(&*store, seen.len()).await;
    assert_eq!(all.iter().map(|e| e.event_id).collect::<Vec<_>>(), seen, "in the same order as a later reader");
}

pub async fn racing_appends_to_one_stream_never_corrupt_it(store: Arc<dyn EventStore>) {
    // Each task appends two events to a shared stream at the version it last read, while also
    // writing to a stream of its own: batches then mix winners, losers and bystanders.
    let hot = StreamId::new("user", "hot");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (store, hot) = (store.clone(), hot.clone());
            tokio::spawn(async move {
                let own = StreamId::new("user", &format!("own{t}"));
                let mut wins = 0u64;
                for i in 0..15u64 {
                    store.append(&own, i, &events(1)).await.expect("own stream never conflicts");
                    let version = store.read_stream(&hot, 0).await.expect("read").last().map_or(0, |e| e.stream_version);
                    match store.append(&hot, version, &events(2)).await {
                        Ok(a) => {
                            assert_eq!(a.stream_version, version + 2);
                            wins += 1;
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += t.await.expect("task");
    }
    let versions: Vec<u64> = store.read_stream(&hot, 0).await.expect("read").iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=2 * wins).collect::<Vec<_>>(), "contiguous versions, two per winning append");
    for t in 0..8 {
        assert_eq!(store.read_stream(&StreamId::new("user", &format!("own{t}")), 0).await.expect("read").len(), 15);
    }
}

pub async fn checkpoints_start_at_zero_and_persist(store: &dyn EventStore) {
    assert_eq!(store.load_checkpoint("relay").await.expect("load"), LogPosition::START);
    let p = LogPosition { commit: 7, seq: 9 };
    store.save_checkpoint("relay", p).await.expect("save");
    store.save_checkpoint("other", LogPosition { commit: 1, seq: 1 }).await.expect("save");
    assert_eq!(store.load_checkpoint("relay").await.expect("load"), p);
    let q = LogPosition { commit: 8, seq: 10 };
    store.save_checkpoint("relay", q).await.expect("save");
    assert_eq!(store.load_checkpoint("relay").await.expect("load"), q);
}

pub async fn a_lease_has_one_holder_at_a_time(store: &dyn EventStore) {
    let mut first = store.try_lease("relay").await.expect("lease").expect("free lease is granted");
    assert!(first.is_held().await);
    assert!(store.try_lease("relay").await.expect("lease").is_none(), "held lease is refused");
    let other = store.try_lease("projection:users").await.expect("lease");
    assert!(other.is_some(), "other names are independent");
    drop(first);
    // Releasing may take a round trip on a server; wait for it with a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if store.try_lease("relay").await.expect("lease").is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "released lease was never granted again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn appends_wake_local_followers(store: &dyn EventStore) {
    let mut signal = store.append_signal();
    let before = *signal.borrow_and_update();
    store.append(&StreamId::new("user", "sig"), 0, &events(1)).await.expect("append");
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("woken").expect("open");
    assert!(*signal.borrow() > before);
}

/// Expands to one test per conformance case for the store built by `$factory` (an async
/// expression yielding `Arc<dyn EventStore>`).
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $factory:expr) => {
        mod $module {
            use super::*;
            use $crate::conformance as c;
            #[tokio::test]
            async fn appends_and_reads_back_a_stream_with_its_envelope() {
                c::appends_and_reads_back_a_stream_with_its_envelope(&*$factory.await).await
            }
            #[tokio::test]
            async fn rejects_a_stale_expected_version_and_writes_nothing() {
                c::rejects_a_stale_expected_version_and_writes_nothing(&*$factory.await).await
            }
            #[tokio::test]
            async fn an_append_of_no_events_is_refused() {
                c::an_append_of_no_events_is_refused(&*$factory.await).await
            }
            #[tokio::test]
            async fn appends_several_events_atomically_in_order() {
                c::appends_several_events_atomically_in_order(&*$factory.await).await
            }
            #[tokio::test]
            async fn reads_all_streams_in_global_order_from_any_position() {
                c::reads_all_streams_in_global_order_from_any_position(&*$factory.await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_creators_of_one_stream_have_exactly_one_winner() {
                c::concurrent_creators_of_one_stream_have_exactly_one_winner($factory.await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_to_many_streams_lose_and_skip_nothing() {
                c::concurrent_writers_to_many_streams_lose_and_skip_nothing($factory.await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_appends_to_one_stream_never_corrupt_it() {
                c::racing_appends_to_one_stream_never_corrupt_it($factory.await).await
            }
            #[tokio::test]
            async fn checkpoints_start_at_zero_and_persist() {
                c::checkpoints_start_at_zero_and_persist(&*$factory.await).await
            }
            #[tokio::test]
            async fn a_lease_has_one_holder_at_a_time() {
                c::a_lease_has_one_holder_at_a_time(&*$factory.await).await
            }
            #[tokio::test]
            async fn appends_wake_local_followers() {
                c::appends_wake_local_followers(&*$factory.await).await
            }
        }
    };
}

/// A new, empty PostgreSQL database for one test, on the server named by
/// `NULLOPS_TEST_DATABASE_URL` (default: the one `infra/setup.sh` starts). Returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("NULLOPS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://nullops:nullops@127.0.0.1:5432/nullops".to_owned());
    let mut conn =
        sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for this test (run infra/setup.sh): {e}"));
    let name = format!("t_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}
