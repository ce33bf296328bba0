//! The live routing table: rebuilt from the read models (deployments, nodes, environments)
//! whenever the bus carries an event that changes where a name goes, once those read models
//! have applied it, and every few seconds in case a message was missed. Requests read the current
//! table without waiting; a request already forwarded keeps its target.
//!
//! Each table carries the read models' positions it was built from, and only a table at least
//! as new replaces it, so concurrent rebuilds never move the ingress back in time. A request
//! about to be refused (404, 503) is first checked against the read models as they are now
//! ([`RouteBook::confirmed`]): an error page never says something older than what the API
//! already answered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use nullops_bus::{Bus, Delivery};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_events::phase::Phase;
use nullops_events::LogPosition;
use nullops_projections::catalog::kind;
use nullops_projections::nodes::LinkState;
use nullops_projections::{ProjectionError, ReadModelDb};
use tokio_util::sync::CancellationToken;

use crate::{DeploymentRoute, RouteState, RoutingTable};

/// The read models the table is made of.
const SOURCES: [&str; 3] = ["deployments", "nodes", "catalog"];
/// Bound on waiting for them to apply an event before rebuilding from what they have.
const READ_MODEL_WAIT: Duration = Duration::from_secs(2);
/// Rebuilt this often even without events.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Most bus messages folded into one rebuild.
const COALESCE: usize = 1024;
/// Wait before resubscribing to a bus that failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Where each of [`SOURCES`] was when a table was built.
type Positions = [LogPosition; 3];

/// The current routing table, shared by the connections and the task that keeps it current.
#[derive(Clone)]
pub struct RouteBook(Arc<Book>);

struct Book {
    db: ReadModelDb,
    current: RwLock<(Arc<RoutingTable>, Positions)>,
    /// When the last check of the read models before a refusal started: a refusal that
    /// arrived before it may use what it found.
    checked: tokio::sync::Mutex<Option<Instant>>,
}

impl RouteBook {
    /// An empty table over `db`; [`reload`](Self::reload) fills it.
    pub fn new(db: ReadModelDb) -> Self {
        let empty = (Arc::new(RoutingTable::default()), [LogPosition::START; 3]);
        RouteBook(Arc::new(Book { db, current: RwLock::new(empty), checked: tokio::sync::Mutex::new(None) }))
    }

    pub fn current(&self) -> Arc<RoutingTable> {
        self.0.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    fn positions(&self) -> Positions {
        self.0.current.read().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Installs `table` unless the current one was built from newer read models.
    fn install(&self, table: RoutingTable, at: Positions) {
        let mut current = self.0.current.write().unwrap_or_else(|p| p.into_inner());
        if at.iter().zip(current.1.iter()).all(|(new, old)| new >= old) {
            *current = (Arc::new(table), at);
        }
    }

    /// Rebuilds the table from the read models now.
    pub async fn reload(&self) -> Result<(), ProjectionError> {
        let at = positions(&self.0.db).await?;
        let table = load(&self.0.db).await?;
        self.install(table, at);
        Ok(())
    }

    /// The table, rebuilt first if the read models have moved on since it was built: for
    /// answers that refuse. Concurrent callers share one look at the read models.
    pub async fn confirmed(&self) -> Arc<RoutingTable> {
        let arrived = Instant::now();
        let mut checked = self.0.checked.lock().await;
        if checked.is_some_and(|started| started >= arrived) {
            return self.current();
        }
        *checked = Some(Instant::now());
        let fresher = match positions(&self.0.db).await {
            Ok(now) => now.iter().zip(self.positions().iter()).any(|(now, built)| now > built),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the read models' positions; answering from the table");
                false
            }
        };
        if fresher {
            match tokio::time::timeout(READ_MODEL_WAIT, self.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot rebuild the routing table; keeping the last one"),
                Err(_) => tracing::warn!("rebuilding the routing table took over {} s; answering from the last one", READ_MODEL_WAIT.as_secs()),
            }
        }
        self.current()
    }
}

async fn positions(db: &ReadModelDb) -> Result<Positions, ProjectionError> {
    let mut at = [LogPosition::START; 3];
    for (slot, source) in at.iter_mut().zip(SOURCES) {
        *slot = db.checkpoint(source).await?.position;
    }
    Ok(at)
}

/// Whether an event can change where a name goes.
fn changes_routes(event_type: &str) -> bool {
    event_type.starts_with("environment.")
        || event_type.starts_with("node.")
        || (event_type.starts_with("deployment.") && !matches!(event_type, "deployment.step_changed" | "deployment.health_changed" | "deployment.extended"))
}

async fn load(db: &ReadModelDb) -> Result<RoutingTable, ProjectionError> {
    let environments = nullops_projections::catalog::entries::<EnvironmentDefinition>(db, kind::ENVIRONMENT).await?;
    let nodes: HashMap<_, _> =
        nullops_projections::nodes::nodes(db, None).await?.into_iter().map(|n| (n.node_id, (n.host, n.link == LinkState::Online))).collect();
    let deployments = nullops_projections::deployments::routable(db).await?;
    Ok(RoutingTable::new(
        environments.into_iter().map(|e| (e.definition.name, e.definition.base_domain)),
        deployments.into_iter().map(|d| {
            let (node_host, node_online) = d.node_id.and_then(|n| nodes.get(&n).cloned()).unwrap_or_default();
            let state = if d.phase == Phase::Running { RouteState::Running } else { RouteState::Not(d.phase.name().to_ascii_uppercase()) };
            let ports = d.endpoints.into_iter().map(|e| (e.service, e.host_port)).collect();
            ((d.environment, d.name), DeploymentRoute { state, node_host, node_online, ports })
        }),
    ))
}

/// Keeps `book` current until `shutdown`.
pub async fn follow(book: RouteBook, db: ReadModelDb, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'subscribe: loop {
        let mut deliveries = match bus.subscribe().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the ingress cannot follow the bus; rebuilding its routes every {} s", RESYNC_EVERY.as_secs());
                futures::stream::pending().boxed()
            }
        };
        // Anything that happened before the subscription is in the read models.
        rebuild(&book, &db, None).await;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = resync.tick() => { rebuild(&book, &db, None).await; continue; }
                delivery = deliveries.next() => delivery,
            };
            let mut wanted: Option<LogPosition> = None;
            let mut gap = false;
            let mut next = first;
            for _ in 0..COALESCE {
                match next {
                    Some(Delivery::Event(message)) if changes_routes(&message.event.event_type) => {
                        wanted = wanted.max(Some(message.event.position));
                    }
                    Some(Delivery::Event(_)) => {}
                    Some(Delivery::Gap) => gap = true,
                    None => {
                        tracing::warn!("the bus subscription ended; resubscribing");
                        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                        continue 'subscribe;
                    }
                }
                // Fold in whatever else has already arrived.
                match deliveries.next().now_or_never() {
                    Some(more) => next = more,
                    None => break,
                }
            }
            if gap || wanted.is_some() {
                rebuild(&book, &db, wanted).await;
            }
        }
    }
}

/// Rebuilds the table once the read models have applied `position` (or waited long enough).
async fn rebuild(book: &RouteBook, db: &ReadModelDb, position: Option<LogPosition>) {
    if let Some(position) = position {
        if let Err(e) = db.wait_for(&SOURCES, position, READ_MODEL_WAIT).await {
            tracing::debug!(error = %e, "the read models lag; routing from what they have");
        }
    }
    if let Err(e) = book.reload().await {
        tracing::warn!(error = %e, "cannot rebuild the routing table; keeping the last one");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_events_that_move_a_name_rebuild_the_table() {
        for yes in ["deployment.running", "deployment.endpoints_changed", "deployment.deletion_requested", "node.disconnected", "environment.updated"] {
            assert!(super::changes_routes(yes), "{yes}");
        }
        for no in ["deployment.step_changed", "deployment.health_changed", "user.created", "project.created"] {
            assert!(!super::changes_routes(no), "{no}");
        }
    }
}
