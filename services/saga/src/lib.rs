//! Sagas: reactions that span several streams, run as named processes that follow the event
//! log from a checkpoint kept in the store, like the projections do. A saga reacts to an event
//! by issuing commands; the checkpoint moves past the event only once the reaction is done, so
//! a crash at any point means the reaction runs again on restart. Every reaction is therefore
//! idempotent: it looks at the aggregates as they are now and does only what is still missing.
//!
//! `runner.rs` follows the log (one active runner per saga, lease `saga:<name>`);
//! `deployment.rs` is the deployment saga (a name, capacity and a node for each request; both
//! given back when the deployment no longer needs them); `admission.rs` chooses the node;
//! `fault.rs` is the fault-injection hook the crash tests use.

pub mod admission;
pub mod core;
pub mod deployment;
pub mod fault;
pub mod key_sweep;
pub mod periodic;
pub mod previews;
pub mod reaper;
pub mod request;
pub mod runner;
pub mod samplers;
pub mod slots;
pub mod tags;
pub mod webhooks;

use async_trait::async_trait;
use nullops_events::{LogPosition, StoredEvent};

pub use core::{Core, DispatchError};
pub use deployment::DeploymentSaga;
pub use request::{Ask, RequestError};
pub use runner::SagaRunner;
pub use tags::{TagLister, TagsError};

/// What stops a reaction for now; the runner tries the same event again after a pause.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Command(#[from] nullops_store::commands::CommandError),
    #[error(transparent)]
    Store(#[from] nullops_store::StoreError),
    #[error(transparent)]
    ReadModel(#[from] nullops_projections::ProjectionError),
    #[error(transparent)]
    Decode(#[from] nullops_events::DecodeError),
}

impl From<DispatchError> for SagaError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Command(e) => SagaError::Command(e),
            DispatchError::ReadModel(e) => SagaError::ReadModel(e),
        }
    }
}

#[async_trait]
pub trait Saga: Send + Sync + 'static {
    /// Stable name: its checkpoint and lease are named after it.
    fn name(&self) -> &'static str;
    /// Whether events of this type may call for a reaction.
    fn handles(&self, event_type: &str) -> bool;
    /// Reacts to `event`. Runs again for the same event after a crash, so it must be idempotent.
    async fn react(&self, event: &StoredEvent) -> Result<(), SagaError>;
    /// Called when this process becomes the saga's runner, before it catches up from
    /// `checkpoint`: takes up work a previous runner had left waiting.
    async fn resume(&self, _checkpoint: LogPosition) -> Result<(), SagaError> {
        Ok(())
    }
    /// Called every [`runner::TICK`] while running: work that waits for something other than
    /// an event (a node to come online).
    async fn tick(&self) -> Result<(), SagaError> {
        Ok(())
    }
}
