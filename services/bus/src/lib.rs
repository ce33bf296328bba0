//! The message bus: how events reach every consumer in every process after they are stored.
//!
//! The store is the source of truth and the bus is a fast path. Every [`BusMessage`] names the
//! position of the event before it in the global order, so a consumer knows it has missed nothing
//! when `previous` equals its own checkpoint, and otherwise catches up from the store.

mod in_process;
mod nats;
pub mod relay;

pub use in_process::InProcessBus;
pub use nats::NatsBus;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use nullops_events::{LogPosition, StoredEvent};
use serde::{Deserialize, Serialize};

/// One event on the bus, linked to its predecessor in the global order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusMessage {
    pub previous: LogPosition,
    pub event: StoredEvent,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Box<BusMessage>),
    /// Messages were lost (the subscriber lagged, or one did not decode): catch up from the store.
    Gap,
}

pub type Subscription = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes messages in order; returns once the bus has accepted all of them.
    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError>;

    /// Messages published from now on, in order.
    async fn subscribe(&self) -> Result<Subscription, BusError>;
}
