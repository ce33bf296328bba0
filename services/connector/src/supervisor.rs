//! Which nodes have a link: every node the log says is dialable (enabled, trusted, holding a
//! token), each with the token hash it holds now.
//!
//! The bus wakes the supervisor on every node event, so a revoked, rotated or disabled node is
//! cut off at once; a periodic resync from the read model and the store covers missed messages.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use nullops_bus::Delivery;
use nullops_domain::catalog::Catalog;
use nullops_domain::deployment::Deployment;
use nullops_domain::node::{token_purpose, CertThumbprint, Node, NodeState};
use nullops_domain::pipeline::Pipeline;
use nullops_domain::Decider;
use nullops_events::codec::types;
use nullops_events::LogPosition;
use nullops_store::commands::load;
use nullops_wire::TokenHash;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dial::Target;
use crate::link::{self, LinkHandle};
use crate::Connector;

const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Nodes without a link read from the log and unsealed at once, at a connector's start.
const LOADS_AT_ONCE: usize = 16;
/// The deployment events after which its node runs something else (progress reports do not).
const CHANGES_DESIRED_STATE: [&str; 4] =
    [types::DEPLOYMENT_SCHEDULED.0, types::DEPLOYMENT_RETRIED.0, types::DEPLOYMENT_FAILED.0, types::DEPLOYMENT_DELETION_REQUESTED.0];
/// The catalog events after which the images nodes should hold may differ (a pipeline saved, a
/// plugin, service, project or registry changed): every link works its prefetch out again.
fn changes_prefetch(event_type: &str) -> bool {
    event_type == types::PIPELINE_VERSION_SAVED.0 || ["plugin.", "service.", "project.", "registry."].iter().any(|p| event_type.starts_with(p))
}
/// How long a deployment change may take to reach the read model before its node is told.
const READ_MODEL_WAIT: Duration = Duration::from_secs(3);
/// How long a stopping link may take to record its disconnection.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the connector until `shutdown`, while this process holds the `connector` lease.
pub async fn run(connector: Connector, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match connector.store.try_lease("connector").await {
            Ok(Some(lease)) => supervise(&connector, lease, &shutdown).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the connector cannot take its lease; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC_EVERY) => {}
        }
    }
}

/// One running link and the token it was started with.
struct Running {
    handle: LinkHandle,
    token_key: Uuid,
}

impl Running {
    /// The node's deployments or images changed: the link sends the new desired state.
    fn desired_changed(&self) {
        self.handle.shared.desired_changed.notify_one();
    }
}

async fn supervise(connector: &Connector, mut lease: nullops_store::Lease, shutdown: &CancellationToken) {
    let mut bus = match connector.bus.subscribe().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "bus unavailable; the connector follows the read model only");
            Box::pin(futures::stream::pending())
        }
    };
    let mut links: HashMap<Uuid, Running> = HashMap::new();
    let mut seen = Seen::default();
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = resync.tick() => {
                if !lease.is_held().await {
                    tracing::warn!("the connector lost its lease; stopping its links");
                    break;
                }
                resync_all(connector, &mut links, &mut seen).await;
            }
            delivery = bus.next() => match delivery {
                Some(Delivery::Event(message)) => {
                    let stream = &message.event.stream_id;
                    if stream.kind() == Node::KIND {
                        if let Ok(node_id) = stream.key().parse() {
                            refresh(connector, &mut links, node_id).await;
                            seen.rows.remove(&node_id);
                        }
                    } else if stream.kind() == Deployment::KIND && CHANGES_DESIRED_STATE.contains(&message.event.event_type.as_str()) {
                        if let Ok(deployment_id) = stream.key().parse() {
                            deployment_changed(connector, &links, deployment_id, message.event.position).await;
                        }
                    } else if [Pipeline::KIND, Catalog::KIND].contains(&stream.kind()) && changes_prefetch(&message.event.event_type) {
                        // The pipeline versions are read from the catalog read model.
                        if let Err(e) = connector.read_models.wait_for(&["catalog"], message.event.position, READ_MODEL_WAIT).await {
                            tracing::warn!(error = %e, "the catalog read model lags; working the prefetch out from what it has");
                        }
                        for running in links.values() {
                            running.desired_changed();
                        }
                    }
                }
                Some(Delivery::Gap) => {
                    seen = Seen::default();
                    resync_all(connector, &mut links, &mut seen).await;
                    for running in links.values() {
                        running.desired_changed();
                    }
                }
                None => {
                    tracing::warn!("the bus subscription ended; following the read model only");
                    bus = Box::pin(futures::stream::pending());
                }
            },
        }
    }
    for running in links.values() {
        running.handle.stop("the control plane is shutting down");
    }
    for (_, running) in links {
        let _ = tokio::time::timeout(STOP_GRACE, running.handle.task).await;
    }
}

/// Tells the link of the deployment's node to send its new desired state, once the deployments
/// read model has the change.
async fn deployment_changed(connector: &Connector, links: &HashMap<Uuid, Running>, deployment_id: Uuid, position: LogPosition) {
    if let Err(e) = connector.read_models.wait_for(&["deployments"], position, READ_MODEL_WAIT).await {
        tracing::warn!(deployment = %deployment_id, error = %e, "the deployments read model lags; sending what it has");
    }
    match nullops_projections::deployments::deployment(&connector.read_models, deployment_id).await {
        Ok(Some(row)) => {
            if let Some(running) = row.node_id.and_then(|n| links.get(&n)) {
                running.desired_changed();
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(deployment = %deployment_id, error = %e, "cannot read the deployment"),
    }
}

/// What the supervisor last saw of the nodes read model.
#[derive(Default)]
struct Seen {
    /// Each node's `changed_at` when last refreshed.
    rows: HashMap<Uuid, i64>,
    /// The read model's position when last listed: while it stays there, no node changed.
    at: Option<LogPosition>,
}

/// Refreshes every node whose read model row changed since it was last looked at, and every
/// link whose node is gone: a bus message that was missed is caught here, while a steady fleet
/// costs one small query (the read model's position), not a listing of every node.
async fn resync_all(connector: &Connector, links: &mut HashMap<Uuid, Running>, seen: &mut Seen) {
    let at = match connector.read_models.checkpoint(nullops_projections::nodes::NAME).await {
        Ok(status) => Some(status.position),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read where the nodes read model is");
            None
        }
    };
    if at.is_some() && at == seen.at {
        return;
    }
    let rows = match nullops_projections::nodes::nodes(&connector.read_models, None).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list nodes");
            return;
        }
    };
    let listed: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.node_id).collect();
    let started = std::time::Instant::now();
    let changed: Vec<(Uuid, i64)> = rows.iter().filter(|r| seen.rows.get(&r.node_id) != Some(&r.changed_at)).map(|r| (r.node_id, r.changed_at)).collect();
    let (linked, unlinked): (Vec<_>, Vec<_>) = changed.iter().partition(|(id, _)| links.contains_key(id));
    for (node_id, _) in linked {
        refresh(connector, links, node_id).await;
    }
    // Nodes without a link (all of them when a connector starts or takes over) are read and
    // unsealed a few at once: their store reads overlap instead of queueing one after another.
    let mut starting =
        futures::stream::iter(unlinked).map(|(node_id, _)| async move { (node_id, ready_node(connector, node_id).await) }).buffer_unordered(LOADS_AT_ONCE);
    while let Some((node_id, ready)) = starting.next().await {
        if let Some(ready) = ready {
            start(connector, links, node_id, ready);
        }
    }
    if !changed.is_empty() {
        tracing::debug!(refreshed = changed.len(), elapsed_ms = started.elapsed().as_millis() as u64, "nodes refreshed from the read model");
    }
    seen.rows.extend(changed);
    let gone: Vec<Uuid> = links.keys().filter(|id| !listed.contains(id)).copied().collect();
    for node_id in gone {
        refresh(connector, links, node_id).await;
    }
    seen.rows.retain(|id, _| listed.contains(id));
    seen.at = at;
}

/// Starts, restarts or stops the link of `node_id` to match the log.
async fn refresh(connector: &Connector, links: &mut HashMap<Uuid, Running>, node_id: Uuid) {
    let Some(mut state) = load_node(connector, node_id).await else { return };
    if let Some(running) = links.get(&node_id) {
        let wanted = wanted_token(&state);
        if Some(running.token_key) == wanted && !running.handle.task.is_finished() {
            // Same token: only the address or the pin may have changed.
            let (host, port, pinned) = where_to(&state);
            let mut target = running.handle.shared.target.lock().expect("target lock");
            (target.host, target.port, target.pinned) = (host, port, pinned);
            return;
        }
        running.handle.stop(why_stopped(&state, Some(running.token_key) != wanted && wanted.is_some()));
        // The old link records its disconnection before a new one records anything, and the
        // new one starts from what the log says then: two links of one node interleaving their
        // records could leave the log on the older one's word.
        if let Some(old) = links.remove(&node_id) {
            let _ = tokio::time::timeout(STOP_GRACE, old.handle.task).await;
        }
        let Some(now) = load_node(connector, node_id).await else { return };
        state = now;
    }
    if let Some(ready) = ready(connector, node_id, &state).await {
        start(connector, links, node_id, ready);
    }
}

/// The key of the token a link of the node should hold: `None` when the node is not dialable.
fn wanted_token(state: &NodeState) -> Option<Uuid> {
    state.dialable().then(|| state.token.as_ref().map(|t| t.key_id)).flatten()
}

/// What a node's new link starts from.
struct Ready {
    token_key: Uuid,
    target: Target,
    link: nullops_domain::node::Link,
}

/// A node that has no link, read from the log: what its link starts from, if it is dialable.
async fn ready_node(connector: &Connector, node_id: Uuid) -> Option<Ready> {
    let state = load_node(connector, node_id).await?;
    ready(connector, node_id, &state).await
}

/// What a link of `state` starts from: `None` when it is not dialable or its token hash cannot be
/// unsealed.
async fn ready(connector: &Connector, node_id: Uuid, state: &NodeState) -> Option<Ready> {
    let token_key = wanted_token(state)?;
    let sealed = state.token.as_ref().expect("a dialable node has a token");
    let token_hash = match connector.keyring.unseal(sealed, &token_purpose(node_id)).await {
        Ok(plain) => match TokenHash::from_bytes(&plain) {
            Some(h) => h,
            None => {
                tracing::error!(node = %node_id, "the node's sealed token hash has the wrong length");
                return None;
            }
        },
        Err(e) => {
            tracing::error!(node = %node_id, error = %e, "cannot unseal the node's token hash; the node is not dialled");
            return None;
        }
    };
    let (host, port, pinned) = where_to(state);
    Some(Ready { token_key, target: Target { host, port, pinned, token_hash }, link: state.link })
}

fn start(connector: &Connector, links: &mut HashMap<Uuid, Running>, node_id: Uuid, ready: Ready) {
    let handle = link::spawn(connector.clone(), node_id, ready.target, ready.link);
    links.insert(node_id, Running { handle, token_key: ready.token_key });
}

async fn load_node(connector: &Connector, node_id: Uuid) -> Option<NodeState> {
    match load::<Node>(&*connector.store, &node_id.to_string()).await {
        Ok((state, _)) => Some(state),
        Err(e) => {
            tracing::warn!(node = %node_id, error = %e, "cannot load the node");
            None
        }
    }
}

/// A dialable node's address and pinned thumbprint.
fn where_to(state: &NodeState) -> (String, u16, Option<CertThumbprint>) {
    let r = state.registration.as_ref().expect("a dialable node is registered");
    (r.host.clone(), r.port, state.pinned.as_deref().and_then(|p| CertThumbprint::parse(p).ok()))
}

fn why_stopped(state: &NodeState, rotated: bool) -> &'static str {
    if !state.exists() {
        "the node was removed"
    } else if !state.enabled {
        "the node was disabled"
    } else if state.token.is_none() {
        "the node's token was revoked"
    } else if rotated {
        "the node's token was rotated"
    } else if !state.trusted() {
        "the agent's certificate is not trusted"
    } else {
        "the link ended"
    }
}
