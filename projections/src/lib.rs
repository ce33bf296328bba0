//! Read models and the runner that keeps them up to date.
//!
//! A [`Projection`] turns events into rows of its own tables. The [`runner`] applies events in the
//! global order and stores the projection's checkpoint in the same transaction as the rows, so an
//! event is applied exactly once even across crashes. Read models are disposable: `nullops
//! projections rebuild NAME` empties a projection's tables and replays the log.
//!
//! Both backends (PostgreSQL, SQLite) run the same SQL through sqlx's `Any` driver: the schema and
//! queries here stick to what both understand (`$n` parameters, BIGINT, TEXT, `ON CONFLICT`).

pub mod audit;
mod audit_summary;
pub mod catalog;
mod db;
pub mod deployments;
pub mod identity;
pub mod logins;
pub mod nodes;
pub mod previews;
mod rows;
pub mod runner;
pub mod samples;
pub mod webhooks;

pub use db::{ReadModelDb, Rebuilding, Status, WorkingRows, WorkingWrite, SAFETY_RECHECK};

use async_trait::async_trait;
use nullops_events::StoredEvent;
use sqlx::AnyConnection;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read model database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] nullops_events::DecodeError),
    #[error(transparent)]
    Store(#[from] nullops_store::StoreError),
    #[error("timed out after {waited_ms} ms waiting for projection {projection} to reach {wanted} (it is at {at})")]
    CatchUpTimeout { projection: String, wanted: nullops_events::LogPosition, at: nullops_events::LogPosition, waited_ms: u128 },
    #[error("read model holds data it cannot read: {0}")]
    Corrupt(String),
    #[error("no projection named {0}")]
    Unknown(String),
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the key of its checkpoint.
    fn name(&self) -> &'static str;
    /// Whether events of this type change this projection's tables.
    fn handles(&self, event_type: &str) -> bool;
    /// The tables it owns; a rebuild empties them.
    fn tables(&self) -> &'static [&'static str];
    /// The shape of its tables. A new shape is a new version: a read model stored in another
    /// version has its tables dropped and made again, and is replayed from the log.
    fn schema_version(&self) -> u32 {
        1
    }
    /// Applies one event inside the runner's transaction. Must only write (or read after its first
    /// write): SQLite then never has to upgrade a read lock.
    async fn apply(&self, conn: &mut AnyConnection, event: &StoredEvent) -> Result<(), ProjectionError>;
    /// Applies `events`, in order, inside the runner's transaction, as [`Projection::apply`]
    /// on each would. A projection whose rows can be written together overrides it (the audit
    /// writes a batch in a few statements: replaying the log is bound by round trips).
    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }
}

/// Every projection of NullOps.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(identity::IdentityProjection),
        std::sync::Arc::new(catalog::CatalogProjection),
        std::sync::Arc::new(audit::AuditProjection),
        std::sync::Arc::new(nodes::NodesProjection),
        std::sync::Arc::new(deployments::DeploymentsProjection),
    ]
}
