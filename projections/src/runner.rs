//! Runs one projection: follows the bus when it is in step, catches up from the store when not.
//!
//! Only the holder of the lease `projection:<name>` writes, so two servers never race on one read
//! model. Each batch commits the rows and the advanced checkpoint together; the checkpoint update
//! is conditional on the old value, so a batch that someone else already applied is rolled back.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use nullops_bus::{Bus, Delivery};
use nullops_events::{LogPosition, StoredEvent, Timestamp};
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

use crate::{Projection, ProjectionError, ReadModelDb};

const CATCH_UP_BATCH: u32 = 500;
/// Most bus messages applied in one transaction.
const BUS_BATCH: usize = 256;
/// Even with a silent bus, re-read the store this often: the store is the source of truth.
const SAFETY_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a bus delivery relates to what the projection has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The next event: applied from the bus.
    Next,
    /// Already applied (the bus is replaying a backlog).
    Stale,
    /// Beyond a gap: the projection must catch up from the store.
    Out,
}

pub struct Runner {
    pub projection: Arc<dyn Projection>,
    pub db: ReadModelDb,
    pub store: Arc<dyn EventStore>,
    pub bus: Arc<dyn Bus>,
}

impl Runner {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.run_while_leader(&shutdown).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::error!(projection = self.projection.name(), error = %e, retry_in = ?backoff, "projection stopped");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Runs to the head of the log once and returns (for `projections rebuild`).
    pub async fn catch_up_once(&self) -> Result<LogPosition, ProjectionError> {
        let mut checkpoint = self.db.checkpoint(self.projection.name()).await?.position;
        self.catch_up(&mut checkpoint).await?;
        Ok(checkpoint)
    }

    /// Runs `runners` to the head of the log together (for `projections rebuild`): the log is
    /// read once for all of them, the next batch while every runner applies the last one side
    /// by side. A replay of every read model then reads the log once, not once each. Returns
    /// where each got, in the order given.
    pub async fn catch_up_together(runners: &[Runner]) -> Result<Vec<LogPosition>, ProjectionError> {
        let Some(first) = runners.first() else { return Ok(vec![]) };
        let mut checkpoints = Vec::with_capacity(runners.len());
        for runner in runners {
            checkpoints.push(runner.db.checkpoint(runner.projection.name()).await?.position);
        }
        let mut replaying: Vec<bool> = checkpoints.iter().map(|c| *c == LogPosition::START).collect();
        let store = first.store.clone();
        let mut read_from = checkpoints.iter().copied().min().unwrap_or(LogPosition::START);
        let mut batch = store.read_all(read_from, CATCH_UP_BATCH).await?;
        while !batch.is_empty() {
            // The batch follows `read_after` directly.
            let read_after = read_from;
            read_from = batch.last().map_or(read_from, |e| e.position);
            let applies = runners.iter().zip(&checkpoints).map(|(runner, &at)| {
                let rest = unapplied(&batch, read_after, at);
                async move {
                    match rest {
                        [] => Ok(at),
                        rest => runner.apply_batch(at, rest).await,
                    }
                }
            });
            // (On SQLite the batches wait their turn to write: see `ReadModelDb::begin_batch`.)
            let (next, applied) = tokio::join!(store.read_all(read_from, CATCH_UP_BATCH), futures::future::join_all(applies));
            for (checkpoint, applied) in checkpoints.iter_mut().zip(applied) {
                *checkpoint = applied?;
            }
            for (replaying, checkpoint) in replaying.iter_mut().zip(&checkpoints) {
                // (Found reset midway: another process reset the read model.)
                *replaying |= *checkpoint == LogPosition::START;
            }
            batch = next?;
        }
        // Each is whole now, but for one moved meanwhile by someone else (past what was read, or
        // reset behind it): it catches up alone.
        for ((runner, checkpoint), replaying) in runners.iter().zip(checkpoints.iter_mut()).zip(replaying) {
            runner.catch_up(checkpoint).await?;
            if replaying {
                runner.db.rebuilt(runner.projection.name()).await?;
            }
        }
        Ok(checkpoints)
    }

    async fn run_while_leader(&self, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
        let lease_name = format!("projection:{}", self.projection.name());
        let Some(mut lease) = self.store.try_lease(&lease_name).await? else { return Ok(()) };
        // Subscribe before catching up, so nothing published meanwhile is missed.
        let mut bus = match self.bus.subscribe().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "bus unavailable; following the store only");
                Box::pin(futures::stream::pending())
            }
        };
        let mut checkpoint = self.db.checkpoint(self.projection.name()).await?.position;
        self.catch_up(&mut checkpoint).await?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                delivery = bus.next() => {
                    let Some(first) = delivery else { return Ok(()) };
                    let mut batch = Vec::new();
                    let mut step = self.take_in_step(first, checkpoint, &mut batch);
                    let mut stale = step == Step::Stale;
                    while step != Step::Out && batch.len() < BUS_BATCH {
                        let Some(Some(next)) = bus.next().now_or_never() else { break };
                        let tail = batch.last().map_or(checkpoint, |e: &StoredEvent| e.position);
                        step = self.take_in_step(next, tail, &mut batch);
                        stale |= step == Step::Stale;
                    }
                    if !batch.is_empty() {
                        checkpoint = self.apply_batch(checkpoint, &batch).await?;
                    }
                    // Out of step, or the bus is replaying events already applied (a backlog,
                    // e.g. after the relay resumed): newer events wait behind that backlog on
                    // the bus, so read them from the store now.
                    if step == Step::Out || stale {
                        self.catch_up(&mut checkpoint).await?;
                    }
                }
                _ = tokio::time::sleep(SAFETY_POLL) => {
                    if !lease.is_held().await {
                        tracing::warn!(projection = self.projection.name(), "projection lease lost");
                        return Ok(());
                    }
                    // Only a reset (`nullops projections rebuild`) moves the stored checkpoint
                    // back: replay now, not at the next event (a quiet platform has none).
                    let stored = self.db.checkpoint(self.projection.name()).await?.position;
                    if stored < checkpoint {
                        checkpoint = stored;
                    }
                    self.catch_up(&mut checkpoint).await?;
                }
            }
        }
    }

    /// Adds a delivered event to `batch` if it directly follows `tail`.
    fn take_in_step(&self, delivery: Delivery, tail: LogPosition, batch: &mut Vec<StoredEvent>) -> Step {
        match delivery {
            Delivery::Event(m) if m.event.position <= tail => Step::Stale,
            Delivery::Event(m) if m.previous == tail => {
                batch.push(m.event);
                Step::Next
            }
            Delivery::Event(_) | Delivery::Gap => Step::Out,
        }
    }

    /// Applies everything the store holds after `checkpoint`. A replay from the log's start
    /// (a new, reshaped or reset read model) is whole once it gets to the end: said so then.
    async fn catch_up(&self, checkpoint: &mut LogPosition) -> Result<(), ProjectionError> {
        let mut replaying = false;
        loop {
            // (The checkpoint may be found reset midway: another process reset the read model.)
            replaying |= *checkpoint == LogPosition::START;
            let batch = self.store.read_all(*checkpoint, CATCH_UP_BATCH).await?;
            if batch.is_empty() {
                if replaying {
                    self.db.rebuilt(self.projection.name()).await?;
                }
                return Ok(());
            }
            *checkpoint = self.apply_batch(*checkpoint, &batch).await?;
        }
    }

    /// Applies `batch` (which directly follows `from`) and advances the checkpoint, atomically.
    async fn apply_batch(&self, from: LogPosition, batch: &[StoredEvent]) -> Result<LogPosition, ProjectionError> {
        let name = self.projection.name();
        let to = batch.last().map_or(from, |e| e.position);
        let applied = batch.iter().filter(|e| self.projection.handles(&e.event_type)).count() as i64;
        let (mut tx, _turn) = self.db.begin_batch().await?;
        // The checkpoint write comes first: it takes SQLite's write lock before any read.
        let moved = if from == LogPosition::START {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, commit_pos, seq, events_applied, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(to.commit as i64)
            .bind(to.seq as i64)
            .bind(applied)
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE projection_checkpoints SET commit_pos = $1, seq = $2, events_applied = events_applied + $3, \
                 updated_at = $4 WHERE name = $5 AND commit_pos = $6 AND seq = $7",
            )
            .bind(to.commit as i64)
            .bind(to.seq as i64)
            .bind(applied)
            .bind(Timestamp::now().0)
            .bind(name)
            .bind(from.commit as i64)
            .bind(from.seq as i64)
            .execute(&mut *tx)
            .await?
        };
        if moved.rows_affected() != 1 {
            // Someone else applied past `from`: take their checkpoint, apply nothing.
            tx.rollback().await?;
            return Ok(self.db.checkpoint(name).await?.position);
        }
        let handled: Vec<&StoredEvent> = batch.iter().filter(|e| self.projection.handles(&e.event_type)).collect();
        self.projection.apply_all(&mut tx, &handled).await?;
        self.db.announce(&mut tx, name).await?;
        tx.commit().await?;
        self.db.notify_advanced();
        Ok(to)
    }
}

/// What a read model at `at` has still to apply of `batch`, read after `read_after`: it may
/// start further on (the tail after `at`); one found reset behind the batch (someone reset it
/// meanwhile) applies none of it, as events before the batch would be missing.
fn unapplied(batch: &[StoredEvent], read_after: LogPosition, at: LogPosition) -> &[StoredEvent] {
    if at < read_after {
        return &[];
    }
    &batch[batch.partition_point(|e| e.position <= at)..]
}

#[cfg(test)]
mod tests {
    use nullops_events::identity::{UserDisabled, UserEvent};
    use nullops_events::{EventMetadata, NewEvent, StreamId};

    use super::*;

    fn at(seq: u64) -> LogPosition {
        LogPosition { commit: seq, seq }
    }

    /// Events at positions 11..=15, as read after position 10.
    fn batch() -> Vec<StoredEvent> {
        (11..=15)
            .map(|seq| {
                let new = NewEvent::new(&UserEvent::Disabled(UserDisabled {}).into(), EventMetadata::system());
                StoredEvent {
                    event_id: new.event_id,
                    stream_id: StreamId::new("user", "u"),
                    stream_version: seq,
                    position: at(seq),
                    event_type: new.event_type.to_owned(),
                    schema_version: new.schema_version,
                    payload: new.payload,
                    occurred_at: new.occurred_at,
                    metadata: new.metadata,
                }
            })
            .collect()
    }

    fn positions(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|e| e.position.seq).collect()
    }

    #[test]
    fn a_read_model_applies_what_it_has_not_yet_and_nothing_across_a_gap() {
        let batch = batch();
        // Given a read model where the batch starts: all of it.
        assert_eq!(positions(unapplied(&batch, at(10), at(10))), [11, 12, 13, 14, 15]);
        // Further on: the rest.
        assert_eq!(positions(unapplied(&batch, at(10), at(13))), [14, 15]);
        // Past it: nothing.
        assert_eq!(positions(unapplied(&batch, at(10), at(20))), Vec::<u64>::new());
        // Reset behind it (events 1..=10 not applied): nothing, or it would skip them.
        assert_eq!(positions(unapplied(&batch, at(10), LogPosition::START)), Vec::<u64>::new());
        assert_eq!(positions(unapplied(&batch, at(10), at(9))), Vec::<u64>::new());
    }
}
