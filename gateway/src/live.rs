//! Live events for subscriptions: one bus subscription per process, fanned out to every
//! subscriber. Gaps on the bus are filled from the store, so subscribers see every event once.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use nullops_bus::{Bus, Delivery};
use nullops_events::codec::types;
use nullops_events::{LogPosition, StoredEvent};
use nullops_store::EventStore;
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
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
/// ask for the newest event's value starts the read and the others wait for it and share it, so
/// 1,000 subscribers cost one read of the database per event, not 1,000. The read runs as a
/// task of its own: a subscriber whose client stopped reading (its stream no longer polled)
/// cannot hold the others up. A subscriber that lagged behind and asks for an older event
/// reads its own. A read that fails is started again by the next subscriber to ask.
pub(crate) struct OncePerEvent<T> {
    newest: std::sync::Mutex<Option<(LogPosition, SharedRead<T>)>>,
}

type SharedRead<T> = futures::future::Shared<futures::future::BoxFuture<'static, ApiResult<T>>>;

impl<T> Default for OncePerEvent<T> {
    fn default() -> Self {
        OncePerEvent { newest: std::sync::Mutex::new(None) }
    }
}

impl<T: Clone + Send + Sync + 'static> OncePerEvent<T> {
    /// The value for the event at `at`, read by `read` unless another subscriber has started it.
    pub(crate) async fn get<Fut>(&self, at: LogPosition, read: impl FnOnce() -> Fut) -> ApiResult<T>
    where
        Fut: std::future::Future<Output = ApiResult<T>> + Send + 'static,
    {
        let shared = match self.join_or_start(at, read) {
            Ok(shared) => shared,
            Err(read) => return read().await,
        };
        let value = shared.clone().await;
        if value.is_err() {
            let mut newest = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if newest.as_ref().is_some_and(|(position, s)| *position == at && s.ptr_eq(&shared)) {
                *newest = None;
            }
        }
        value
    }

    /// The read of the event at `at` under way or done, started now if none is; `read` back when
    /// a newer event's read is the one kept (the caller reads its own).
    fn join_or_start<F, Fut>(&self, at: LogPosition, read: F) -> Result<SharedRead<T>, F>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>> + Send + 'static,
    {
        use futures::FutureExt;
        let mut newest = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*newest {
            Some((position, shared)) if *position == at => Ok(shared.clone()),
            Some((position, _)) if *position > at => Err(read),
            _ => {
                let task = tokio::spawn(read());
                let shared = async move { task.await.unwrap_or_else(|e| Err(ApiError::internal(e))) }.boxed().shared();
                *newest = Some((at, shared.clone()));
                Ok(shared)
            }
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
        let reads = Arc::new(reads);
        let read = || {
            let reads = reads.clone();
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(7)
            }
        };
        let all = futures::future::join_all((0..100).map(|_| once.get(at(5), read))).await;
        assert!(all.iter().all(|v| matches!(v, Ok(7))));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    async fn value(once: &OncePerEvent<u64>, position: LogPosition, v: u64) -> u64 {
        once.get(position, move || async move { Ok(v) }).await.unwrap()
    }

    #[tokio::test]
    async fn a_newer_event_is_read_again_and_an_older_one_alone() {
        let once = OncePerEvent::<u64>::default();
        assert_eq!(value(&once, at(5), 5).await, 5);
        assert_eq!(value(&once, at(6), 6).await, 6);
        // A lagging subscriber reads its own, and the newest stays shared.
        assert_eq!(value(&once, at(5), 55).await, 55);
        assert_eq!(value(&once, at(6), 66).await, 6);
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again_by_the_next_subscriber() {
        let once = OncePerEvent::<u64>::default();
        let failed = once.get(at(1), || async { Err(ApiError::Unavailable) }).await;
        assert!(matches!(failed, Err(ApiError::Unavailable)));
        assert_eq!(value(&once, at(1), 1).await, 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_waiting_holds_nobody_up() {
        let once = Arc::new(OncePerEvent::<u64>::default());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        // The first subscriber starts the read, then is never polled again (its client stopped
        // reading): the read goes on without it.
        let first = once.get(at(3), move || async move {
            let _ = released.await;
            Ok(3)
        });
        let mut first = Box::pin(first);
        assert!(futures::poll!(&mut first).is_pending());
        let second = tokio::spawn({
            let once = once.clone();
            async move { once.get(at(3), || async { Ok(33) }).await.unwrap() }
        });
        release.send(()).unwrap();
        let shared = tokio::time::timeout(std::time::Duration::from_secs(10), second).await;
        assert_eq!(shared.expect("the second subscriber waited on the first one's polling").unwrap(), 3);
    }
}
