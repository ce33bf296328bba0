//! The relay: copies the event log to the bus in global order, exactly once per event as far as
//! consumers can tell.
//!
//! Only the holder of the `relay` lease publishes. It resumes from its checkpoint in the store; a
//! crash between publishing and saving the checkpoint republishes a batch, which JetStream drops by
//! message id and consumers skip by position.

use std::sync::Arc;
use std::time::Duration;

use nullops_events::LogPosition;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

use crate::{Bus, BusMessage};

const LEASE: &str = "relay";
const BATCH: u32 = 512;
/// How long an idle relay waits for a local append signal before polling the store anyway (for
/// appends made by other processes).
const IDLE_POLL: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The checkpoint is saved at most this often: a restart republishes at most this much, which
/// JetStream drops by message id and consumers skip by position. Saving per batch would add a
/// commit to every event's path.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

pub async fn run(store: Arc<dyn EventStore>, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match relay_while_leader(&*store, &*bus, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "relay interrupted");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Returns `Ok` when the lease is held by someone else or lost; errors when the store or bus fails.
async fn relay_while_leader(store: &dyn EventStore, bus: &dyn Bus, shutdown: &CancellationToken) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(mut lease) = store.try_lease(LEASE).await? else { return Ok(()) };
    tracing::info!("relay active");
    let mut checkpoint: LogPosition = store.load_checkpoint(LEASE).await?;
    let mut appended = store.append_signal();
    let mut last_lease_check = tokio::time::Instant::now();
    let mut saved = checkpoint;
    let mut last_save = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        if saved != checkpoint && last_save.elapsed() >= CHECKPOINT_EVERY {
            store.save_checkpoint(LEASE, checkpoint).await?;
            (saved, last_save) = (checkpoint, tokio::time::Instant::now());
        }
        let batch = store.read_all(checkpoint, BATCH).await?;
        if let Some(last) = batch.last().map(|e| e.position) {
            let mut previous = checkpoint;
            let messages: Vec<BusMessage> = batch
                .into_iter()
                .map(|event| {
                    let m = BusMessage { previous, event };
                    previous = m.event.position;
                    m
                })
                .collect();
            bus.publish(&messages).await?;
            checkpoint = last;
            continue;
        }
        if last_lease_check.elapsed() > Duration::from_secs(1) {
            if !lease.is_held().await {
                tracing::warn!("relay lease lost");
                return Ok(());
            }
            last_lease_check = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = appended.changed() => {}
            // Appends of other processes tell no signal here.
            _ = tokio::time::sleep(IDLE_POLL), if !store.signals_every_append() => {}
        }
    }
    if saved != checkpoint {
        store.save_checkpoint(LEASE, checkpoint).await?;
    }
    Ok(())
}
