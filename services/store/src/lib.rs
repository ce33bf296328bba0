//! The event store: the source of truth of NullOps.
//!
//! [`EventStore`] has two implementations that pass one conformance suite ([`conformance`]):
//! [`postgres::PgEventStore`] for production and [`sqlite::SqliteEventStore`] for the embedded
//! mode. [`commands::execute`] is the command layer on top: load, decide, append, retry.

pub mod commands;
#[cfg(feature = "conformance")]
pub mod conformance;
mod lease;
mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use lease::Lease;

use async_trait::async_trait;
use nullops_events::{LogPosition, NewEvent, StoredEvent, StreamId};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone appended to the stream since it was read: reload and decide again.
    #[error("stream {stream_id} is no longer at version {expected}")]
    Conflict { stream_id: StreamId, expected: u64 },
    #[error("event store unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
    /// The call itself was wrong (an append of no events).
    #[error("invalid append: {0}")]
    Invalid(&'static str),
}

/// Where appended events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first: LogPosition,
    pub last: LogPosition,
    /// The stream's version after the append.
    pub stream_version: u64,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends all `events` to `stream` atomically, if the stream is at `expected_version`
    /// (0: the stream does not exist yet); otherwise [`StoreError::Conflict`] and nothing is written.
    async fn append(&self, stream: &StreamId, expected_version: u64, events: &[NewEvent]) -> Result<Appended, StoreError>;

    /// Events of one stream with a version above `after_version`, in version order.
    async fn read_stream(&self, stream: &StreamId, after_version: u64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Up to `limit` events after `after` in the global order. Never returns an event while an
    /// event before it in that order may still commit: readers that follow it skip nothing.
    async fn read_all(&self, after: LogPosition, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// The highest `seq` any event has been given: how far the log reaches, for progress
    /// ("N of M events"). Not a read position: an event below it may still be committing.
    async fn head(&self) -> Result<u64, StoreError>;

    /// Bumped after every append made through this handle, so local followers wake at once.
    fn append_signal(&self) -> watch::Receiver<u64>;

    /// Whether [`EventStore::append_signal`] tells of every append to this log, so that a
    /// follower never needs to poll: true where one process owns the log (the embedded store,
    /// by its data directory's lock), false where other processes append too.
    fn signals_every_append(&self) -> bool {
        false
    }

    /// Named reader positions kept by the store itself (the bus relay's).
    async fn load_checkpoint(&self, name: &str) -> Result<LogPosition, StoreError>;
    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> Result<(), StoreError>;

    /// Tries to become the one active holder of `name` among all processes on this store.
    /// `None` when someone else holds it; dropping the lease releases it.
    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;
}
