//! The embedded bus: a bounded broadcast channel inside one process.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{Bus, BusError, BusMessage, Delivery, Subscription};

/// How many messages a slow subscriber may fall behind before it is told to catch up from the store.
const CAPACITY: usize = 4096;

pub struct InProcessBus {
    sender: broadcast::Sender<BusMessage>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus { sender: broadcast::channel(CAPACITY).0 }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError> {
        for m in messages {
            // No subscriber is not an error: the store has the event.
            let _ = self.sender.send(m.clone());
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription, BusError> {
        let rx = self.sender.subscribe();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(m) => Some((Delivery::Event(Box::new(m)), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Delivery::Gap, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })))
    }
}
