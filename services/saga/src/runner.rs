//! Runs one saga or worker: follows the log from its checkpoint, reacts to each event it
//! handles, and moves the checkpoint past an event only once the reaction is done. A saga's
//! checkpoint is kept in the store, beside the relay's, and saved after each reaction; a
//! worker's beside its working rows, committed in one transaction with what it recorded.
//! Only the holder of the lease `saga:<name>` runs it, so reactions never race each other
//! across servers; a crashed holder's successor starts from the checkpoint.
//!
//! It wakes on every bus message and every local append, and looks at the store at least once
//! a second in case both were missed: the store is the source of truth, the bus only a nudge.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nullops_bus::Bus;
use nullops_events::LogPosition;
use nullops_projections::WorkingRows;
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
        let mut checkpoint = self.load_checkpoint().await?;
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

    /// A worker's checkpoint is beside its rows (or, before it kept one there, where a saga's
    /// is: the store); a saga's is in the store.
    async fn load_checkpoint(&self) -> Result<LogPosition, SagaError> {
        let name = self.checkpoint_name();
        if let Some(rows) = self.saga.working_rows() {
            if let Some(at) = rows.checkpoint(&name).await? {
                return Ok(at);
            }
        }
        Ok(self.store.load_checkpoint(&name).await?)
    }

    /// Reacts to every event after `checkpoint`, moving it along.
    async fn catch_up(&self, checkpoint: &mut LogPosition, shutdown: &CancellationToken) -> Result<(), SagaError> {
        if let Some(rows) = self.saga.working_rows() {
            return self.record(&rows, checkpoint, shutdown).await;
        }
        let name = self.checkpoint_name();
        loop {
            let batch = self.store.read_all(*checkpoint, BATCH).await?;
            let Some(last) = batch.last().map(|e| e.position) else { return Ok(()) };
            if self.saga.concurrency() > 1 {
                // The checkpoint moves past the batch once every reaction in it is done; after
                // a crash midway the batch is reacted to again (reactions are idempotent).
                self.react_side_by_side(&batch, shutdown).await?;
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                self.store.save_checkpoint(&name, last).await?;
                *checkpoint = last;
                continue;
            }
            for event in batch.iter().filter(|e| self.saga.handles(&e.event_type)) {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                self.react_to(event).await?;
                self.store.save_checkpoint(&name, event.position).await?;
                *checkpoint = event.position;
            }
            if *checkpoint != last {
                self.store.save_checkpoint(&name, last).await?;
                *checkpoint = last;
            }
        }
    }

    /// Reacts to the events of `batch` the saga handles, each stream's in order, up to
    /// [`Saga::concurrency`] streams at once.
    async fn react_side_by_side(&self, batch: &[nullops_events::StoredEvent], shutdown: &CancellationToken) -> Result<(), SagaError> {
        let streams = by_stream(batch, |t| self.saga.handles(t));
        // Boxed: a future borrowing the batch, named, is what keeps the whole runner `Send`.
        let reactions: Vec<futures::future::BoxFuture<'_, Result<(), SagaError>>> = streams
            .into_iter()
            .map(|events| {
                Box::pin(async move {
                    for event in events {
                        if shutdown.is_cancelled() {
                            return Ok(());
                        }
                        self.react_to(event).await?;
                    }
                    Ok(())
                }) as futures::future::BoxFuture<'_, Result<(), SagaError>>
            })
            .collect();
        let reactions = futures::stream::iter(reactions).buffer_unordered(self.saga.concurrency());
        futures::pin_mut!(reactions);
        while let Some(done) = reactions.next().await {
            done?;
        }
        Ok(())
    }

    /// One reaction, in the trace of the command whose event it reacts to.
    async fn react_to(&self, event: &nullops_events::StoredEvent) -> Result<(), SagaError> {
        let span = tracing::info_span!("saga.react", saga = self.saga.name(), event = event.event_type.as_str());
        nullops_telemetry::follows(&span, event.metadata.trace_context.as_deref());
        self.saga.react(event).instrument(span).await
    }

    /// A worker's catch-up: each batch's writes and the checkpoint past it commit together.
    /// Stopped mid-batch, nothing of the batch is written and the next runner records it.
    async fn record(&self, rows: &WorkingRows, checkpoint: &mut LogPosition, shutdown: &CancellationToken) -> Result<(), SagaError> {
        let name = self.checkpoint_name();
        loop {
            let batch = self.store.read_all(*checkpoint, BATCH).await?;
            let Some(last) = batch.last().map(|e| e.position) else { return Ok(()) };
            let mut writes = Vec::new();
            for event in batch.iter().filter(|e| self.saga.handles(&e.event_type)) {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let span = tracing::info_span!("saga.record", saga = self.saga.name(), event = event.event_type.as_str());
                nullops_telemetry::follows(&span, event.metadata.trace_context.as_deref());
                writes.extend(self.saga.record(event).instrument(span).await?);
            }
            rows.commit(&name, &writes, last).await?;
            *checkpoint = last;
        }
    }
}

/// The events of `batch` of the types `handled`, by stream, each stream's in log order, the
/// streams in the order of their first event.
fn by_stream(batch: &[nullops_events::StoredEvent], handled: impl Fn(&str) -> bool) -> Vec<Vec<&nullops_events::StoredEvent>> {
    let mut streams: Vec<Vec<&nullops_events::StoredEvent>> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for event in batch.iter().filter(|e| handled(&e.event_type)) {
        let at = *index.entry(event.stream_id.as_str()).or_insert_with(|| {
            streams.push(Vec::new());
            streams.len() - 1
        });
        streams[at].push(event);
    }
    streams
}

#[cfg(test)]
mod tests {
    use nullops_events::deployment::{DeploymentEvent, DeploymentRemoved, RunStarted};
    use nullops_events::{DomainEvent, EventMetadata, LogPosition, NewEvent, StoredEvent, StreamId};

    use super::by_stream;

    fn stored(stream: &str, seq: u64, event: DeploymentEvent) -> StoredEvent {
        let new = NewEvent::new(&DomainEvent::Deployment(event), EventMetadata::system());
        StoredEvent {
            event_id: new.event_id,
            stream_id: StreamId::new("deployment", stream),
            stream_version: seq,
            position: LogPosition { commit: seq, seq },
            event_type: new.event_type.to_owned(),
            schema_version: new.schema_version,
            payload: new.payload,
            occurred_at: new.occurred_at,
            metadata: new.metadata,
        }
    }

    #[test]
    fn each_streams_events_stay_in_order_and_unhandled_ones_are_left_out() {
        // Given a batch interleaving two deployments' events, one of a type not handled …
        let started = || DeploymentEvent::RunStarted(RunStarted {});
        let removed = || DeploymentEvent::Removed(DeploymentRemoved {});
        let batch = [stored("a", 1, removed()), stored("b", 2, removed()), stored("a", 3, started()), stored("b", 4, removed()), stored("a", 5, removed())];
        // … when grouped for reacting side by side …
        let streams = by_stream(&batch, |t| t == "deployment.removed");
        // … then each stream is one group, its events in log order, in the order streams first appear.
        let seqs: Vec<Vec<u64>> = streams.iter().map(|s| s.iter().map(|e| e.position.seq).collect()).collect();
        assert_eq!(seqs, vec![vec![1, 5], vec![2, 4]]);
    }
}
