//! Live events for subscriptions: one bus subscription per process, fanned out to every
//! subscriber. Gaps on the bus are filled from the store, so subscribers see every event once.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use nullops_bus::{Bus, Delivery};
use nullops_events::codec::types;
use nullops_events::{LogPosition, StoredEvent};
use nullops_store::EventStore;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events a slow subscriber may lag behind before it is told it missed some.
const CAPACITY: usize = 1024;

/// The events after which someone may see less than before: a live feed checks its caller's
/// access again at each of them (as well as at each event it delivers).
const MAY_REVOKE_ACCESS: [&str; 8] = [
    types::USER_DISABLED.0,
    types::SESSION_ENDED.0,
    types::API_TOKEN_REVOKED.0,
    types::TEAM_DELETED.0,
    types::TEAM_MEMBER_REMOVED.0,
    types::ACCESS_REVOKED.0,
    types::PROJECT_REMOVED.0,
    types::ENVIRONMENT_REMOVED.0,
];

/// The read models that say who may see what.
pub(crate) const ACCESS_READ_MODELS: [&str; 2] = ["identity", "catalog"];

pub(crate) fn may_revoke_access(event_type: &str) -> bool {
    MAY_REVOKE_ACCESS.contains(&event_type)
}

/// The node whose link `event` changed (its agent connected or was lost): the deployments on it
/// read OFFLINE while it is, so every feed showing one of them sends it again.
pub(crate) fn node_link_changed(event: &StoredEvent) -> Option<uuid::Uuid> {
    let link = event.stream_id.kind() == "node" && [types::NODE_CONNECTED.0, types::NODE_DISCONNECTED.0].contains(&event.event_type.as_str());
    link.then(|| uuid::Uuid::try_parse(event.stream_id.key()).ok()).flatten()
}

/// Ends `stream` after its first error: the client learns why, then the feed closes.
pub(crate) fn until_error<T>(stream: impl Stream<Item = crate::error::ApiResult<T>>) -> impl Stream<Item = crate::error::ApiResult<T>> {
    stream.scan(false, |ended, item| {
        let out = if *ended { None } else { Some(item) };
        if matches!(out, Some(Err(_))) {
            *ended = true;
        }
        std::future::ready(out)
    })
}

#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<StoredEvent>>,
    /// What the feeds read for an event, read once for all of their subscribers.
    pub(crate) per_event: Arc<crate::feeds::PerEvent>,
}

impl Default for Live {
    fn default() -> Self {
        Live { sender: broadcast::channel(CAPACITY).0, per_event: Arc::default() }
    }
}

/// A value every subscriber of a feed needs for one event, read once: the first subscriber to
/// ask for the newest event's value reads it and the others wait for it and share it, so 1,000
/// subscribers cost one read of the database per event, not 1,000. A subscriber that lagged
/// behind and asks for an older event reads its own. A read that fails is tried again by the
/// next subscriber to ask.
pub(crate) struct OncePerEvent<T> {
    newest: std::sync::Mutex<Option<(LogPosition, Arc<tokio::sync::OnceCell<T>>)>>,
}

impl<T> Default for OncePerEvent<T> {
    fn default() -> Self {
        OncePerEvent { newest: std::sync::Mutex::new(None) }
    }
}

impl<T: Clone> OncePerEvent<T> {
    /// The value for the event at `at`, read by `read` unless another subscriber has read it.
    pub(crate) async fn get<E, Fut>(&self, at: LogPosition, read: impl FnOnce() -> Fut) -> Result<T, E>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut newest = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*newest {
                Some((position, cell)) if *position == at => Some(cell.clone()),
                Some((position, _)) if *position > at => None,
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    *newest = Some((at, cell.clone()));
                    Some(cell)
                }
            }
        };
        match cell {
            Some(cell) => cell.get_or_try_init(read).await.cloned(),
            None => read().await,
        }
    }
}

impl Live {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.sender.subscribe()
    }

    /// Follows the bus until shutdown, resubscribing when the subscription ends.
    pub async fn follow(self, bus: Arc<dyn Bus>, store: Arc<dyn EventStore>, shutdown: CancellationToken) {
        let mut last: Option<LogPosition> = None;
        while !shutdown.is_cancelled() {
            let mut deliveries = match bus.subscribe().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "live events: bus unavailable");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let delivery = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    d = deliveries.next() => d,
                };
                match delivery {
                    None => break,
                    Some(Delivery::Event(m)) => match last {
                        Some(at) if m.event.position <= at => {}
                        Some(at) if m.previous != at => {
                            self.fill_gap(&*store, &mut last).await;
                        }
                        _ => {
                            last = Some(m.event.position);
                            let _ = self.sender.send(Arc::new(m.event));
                        }
                    },
                    Some(Delivery::Gap) => self.fill_gap(&*store, &mut last).await,
                }
            }
        }
    }

    async fn fill_gap(&self, store: &dyn EventStore, last: &mut Option<LogPosition>) {
        let Some(mut at) = *last else { return };
        loop {
            match store.read_all(at, 500).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    for e in batch {
                        at = e.position;
                        let _ = self.sender.send(Arc::new(e));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live events: cannot fill gap from the store");
                    break;
                }
            }
        }
        *last = Some(at);
    }
}

/// A broadcast receiver as a stream; `None` items mark events lost to lagging.
pub(crate) fn tokio_stream_from(rx: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>) -> impl Stream<Item = Option<Arc<StoredEvent>>> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((Some(e), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn at(seq: u64) -> LogPosition {
        LogPosition { commit: seq, seq }
    }

    #[tokio::test]
    async fn subscribers_asking_for_one_event_at_once_share_one_read() {
        let once = OncePerEvent::<u64>::default();
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(7)
        };
        let all = futures::future::join_all((0..100).map(|_| once.get(at(5), read))).await;
        assert!(all.iter().all(|v| *v == Ok(7)));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_newer_event_is_read_again_and_an_older_one_alone() {
        let once = OncePerEvent::<u64>::default();
        assert_eq!(once.get(at(5), || async { Ok::<_, ()>(5) }).await, Ok(5));
        assert_eq!(once.get(at(6), || async { Ok::<_, ()>(6) }).await, Ok(6));
        // A lagging subscriber reads its own, and the newest stays shared.
        assert_eq!(once.get(at(5), || async { Ok::<_, ()>(55) }).await, Ok(55));
        assert_eq!(once.get(at(6), || async { Ok::<_, ()>(66) }).await, Ok(6));
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again_by_the_next_subscriber() {
        let once = OncePerEvent::<u64>::default();
        assert_eq!(once.get(at(1), || async { Err::<u64, _>("the database is away") }).await, Err("the database is away"));
        assert_eq!(once.get(at(1), || async { Ok::<_, &str>(1) }).await, Ok(1));
    }
}
