//! Runs one saga: follows the log from the saga's checkpoint (kept in the store, beside the
//! relay's), reacts to each event it handles, and moves the checkpoint past an event only once
//! the reaction is done. Only the holder of the lease `saga:<name>` runs it, so reactions never
//! race each other across servers; a crashed holder's successor starts from the checkpoint.
//!
//! It wakes on every bus message and every local append, and looks at the store at least once
//! a second in case both were missed: the store is the source of truth, the bus only a nudge.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nullops_bus::Bus;
use nullops_events::LogPosition;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Saga, SagaError};

/// Events read from the store at a time.
const BATCH: u32 = 256;
/// Even with a silent bus, look at the store this often.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// How often the saga's waiting work is looked at.
pub const TICK: Duration = Duration::from_millis(500);
/// Pauses before trying a failed reaction again: growing, capped.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct SagaRunner {
    pub saga: Arc<dyn Saga>,
    pub store: Arc<dyn EventStore>,
    pub bus: Arc<dyn Bus>,
}

impl SagaRunner {
    /// Runs until `shutdown`, whenever this process holds the saga's lease.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        while !shutdown.is_cancelled() {
            match self.run_while_leader(&shutdown).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    tracing::warn!(saga = self.saga.name(), error = %e, retry_in = ?backoff, "saga paused");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    fn checkpoint_name(&self) -> String {
        format!("saga:{}", self.saga.name())
    }

    async fn run_while_leader(&self, shutdown: &CancellationToken) -> Result<(), SagaError> {
        let Some(mut lease) = self.store.try_lease(&self.checkpoint_name()).await? else { return Ok(()) };
        // Subscribe before catching up, so nothing appended meanwhile goes unnoticed.
        let mut bus = match self.bus.subscribe().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(saga = self.saga.name(), error = %e, "bus unavailable; following the store only");
                Box::pin(futures::stream::pending())
            }
        };
        let mut appended = self.store.append_signal();
        let mut checkpoint = self.store.load_checkpoint(&self.checkpoint_name()).await?;
        self.saga.resume(checkpoint).await?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.catch_up(&mut checkpoint, shutdown).await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => self.saga.tick().await?,
                delivery = bus.next() => {
                    if delivery.is_none() {
                        bus = Box::pin(futures::stream::pending());
                    }
                }
                _ = appended.changed() => {}
                _ = tokio::time::sleep(SAFETY_POLL) => {
                    if !lease.is_held().await {
                        tracing::warn!(saga = self.saga.name(), "saga lease lost");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reacts to every event after `checkpoint`, moving it along.
    async fn catch_up(&self, checkpoint: &mut LogPosition, shutdown: &CancellationToken) -> Result<(), SagaError> {
        let name = self.checkpoint_name();
        loop {
            let batch = self.store.read_all(*checkpoint, BATCH).await?;
            let Some(last) = batch.last().map(|e| e.position) else { return Ok(()) };
            for event in batch.iter().filter(|e| self.saga.handles(&e.event_type)) {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                // The reaction joins the trace of the command whose event it reacts to.
                let span = tracing::info_span!("saga.react", saga = self.saga.name(), event = event.event_type.as_str());
                nullops_telemetry::follows(&span, event.metadata.trace_context.as_deref());
                self.saga.react(event).instrument(span).await?;
                self.store.save_checkpoint(&name, event.position).await?;
                *checkpoint = event.position;
            }
            if *checkpoint != last {
                self.store.save_checkpoint(&name, last).await?;
                *checkpoint = last;
            }
        }
    }
}
