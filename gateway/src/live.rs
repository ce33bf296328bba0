//! Live events for subscriptions: one bus subscription per process, fanned out to every
//! subscriber. Gaps on the bus are filled from the store, so subscribers see every event once.

use std::sync::Arc;

use futures::StreamExt;
use nullops_bus::{Bus, Delivery};
use nullops_events::{LogPosition, StoredEvent};
use nullops_store::EventStore;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events a slow subscriber may lag behind before it is told it missed some.
const CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<StoredEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live { sender: broadcast::channel(CAPACITY).0 }
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
