//! Periodic processes: work done every so often rather than in reaction to one event (expired
//! deployments deleted, orphaned data keys destroyed, the platform's own figures sampled). One
//! skeleton runs them all, so each is named, paced, traced and (where the work must happen once
//! across servers) leased the same way:
//!
//! - [`Scope::Leased`]: only the holder of the lease named after the process runs it; the
//!   lease is kept between turns and checked before each, so a crashed holder's successor takes
//!   over within one turn.
//! - [`Scope::EachServer`]: every server runs it, for what only that server sees (its own
//!   command counts, its ingress's traffic).
//!
//! A failed turn is logged and the next turn tries again: periodic work looks at the world as
//! it is each time, so there is nothing to resume.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nullops_store::{EventStore, Lease};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where a periodic process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On one server at a time: the holder of the lease named after the process.
    Leased,
    /// On every server.
    EachServer,
}

#[async_trait]
pub trait Periodic: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;
    /// Stable name: its lease (when leased) and its spans and logs are named after it.
    const NAME: &'static str;
    const SCOPE: Scope;
    /// One turn of its work.
    async fn run_once(&self) -> Result<(), Self::Error>;
}

/// Runs `process` every `every` until `shutdown` (the first turn at once).
pub async fn run<P: Periodic>(process: P, every: Duration, store: Arc<dyn EventStore>, shutdown: CancellationToken) {
    let mut turns = tokio::time::interval(every);
    turns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease: Option<Lease> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = turns.tick() => {}
        }
        if P::SCOPE == Scope::Leased && !holds(&mut lease, &*store, P::NAME).await {
            continue;
        }
        let span = tracing::info_span!("process.turn", process = P::NAME);
        if let Err(e) = process.run_once().instrument(span).await {
            tracing::warn!(process = P::NAME, error = %e, "a periodic process's turn failed; the next turn tries again");
        }
    }
}

/// Whether this server holds the lease `name`, taking it when free.
async fn holds(lease: &mut Option<Lease>, store: &dyn EventStore, name: &str) -> bool {
    if let Some(held) = lease {
        if held.is_held().await {
            return true;
        }
        tracing::warn!(process = name, "lease lost");
        *lease = None;
    }
    match store.try_lease(name).await {
        Ok(taken) => *lease = taken,
        Err(e) => tracing::warn!(process = name, error = %e, "cannot take the lease"),
    }
    lease.is_some()
}
