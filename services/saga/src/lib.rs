//! Sagas: reactions that span several streams, run as named processes that follow the event
//! log from a checkpoint kept in the store, like the projections do. A saga reacts to an event
//! by issuing commands; the checkpoint moves past the event only once the reaction is done, so
//! a crash at any point means the reaction runs again on restart. Every reaction is therefore
//! idempotent: it looks at the aggregates as they are now and does only what is still missing.
//!
//! `runner.rs` follows the log (one active runner per saga, lease `saga:<name>`);
//! `deployment.rs` is the deployment saga (a name, capacity and a node for each request; both
//! given back when the deployment no longer needs them); `admission.rs` chooses the node;
//! `placements.rs` decides the placements waiting at once in batches;
//! `fault.rs` is the fault-injection hook the crash tests use.

pub mod admission;
pub mod core;
pub mod deployment;
pub mod fault;
pub mod key_sweep;
pub mod pacing;
pub mod periodic;
pub mod placements;
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
use nullops_projections::{WorkingRows, WorkingWrite};

pub use core::{Core, DispatchError};
pub use deployment::DeploymentSaga;
pub use pacing::{Pacing, PacingError};
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
    /// What stopped the batch of placements this reaction's was decided in.
    #[error(transparent)]
    Batch(std::sync::Arc<SagaError>),
    /// The batch this reaction's placement was in was not decided: the one deciding it stopped.
    #[error("the batch of placements this deployment was in was not decided; it is placed again")]
    Abandoned,
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
    /// A saga's reaction to `event`: the commands it calls for. Runs again for the same event
    /// after a crash, so it must be idempotent.
    async fn react(&self, _event: &StoredEvent) -> Result<(), SagaError> {
        Ok(())
    }
    /// A worker's reaction to `event`: what it adds to the worker's working rows, written by
    /// the runner in one transaction with the checkpoint (see [`Saga::working_rows`]).
    async fn record(&self, _event: &StoredEvent) -> Result<Vec<WorkingWrite>, SagaError> {
        Ok(vec![])
    }
    /// A worker's rows: its checkpoint is kept beside them and moves with what `record`
    /// stages. `None` for a saga, whose checkpoint is in the store and whose reaction is `react`.
    fn working_rows(&self) -> Option<WorkingRows> {
        None
    }
    /// How many streams' events a saga reacts to at once (a worker's are recorded one by one).
    /// Events of one stream are always reacted to in order; events of different streams only
    /// when their reactions cannot race each other into a wrong result, because whatever they
    /// share is decided on a stream of its own (the deployment saga: room on a node's capacity
    /// stream, a name on its name stream). 1: one event at a time.
    fn concurrency(&self) -> usize {
        1
    }
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
