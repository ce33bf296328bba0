//! One node's connection, for as long as the supervisor wants it: dial, record, serve, redial.
//!
//! Every change of the node is recorded as a command on its aggregate, which emits an event only
//! for a real transition (a node that stays unreachable is recorded OFFLINE once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use nullops_domain::node::{CertThumbprint, Link, Node, NodeAction, NodeCommand};
use nullops_domain::Issuer;
use nullops_events::node::Refusal;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{record_images, record_usage, UsageRow};
use nullops_projections::samples::{self, Series};
use nullops_store::commands::{execute, CommandError};
use nullops_wire::message::{decode_from_agent, desired_state_parts, encode, HeldImage, Usage};
use nullops_wire::{FromAgent, RequestId, ToAgent, PROTOCOL_VERSION};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::dial::{dial, AgentLink, DialError, Target};
use crate::words::{connection_lost, LinkEnded};
use crate::{reports, Backoff, Connector, NodeDesired};

/// A ping every second, and each must be answered (by any frame) before the next is due: a node
/// that goes silent is OFFLINE 1 to 2 s after it does, with a second of room for a slow answer.
/// The check rides on the ping's own tick, so a link has no timer of its own to keep pushing
/// back; and a frame waiting to be read is always read before the check (the `select!` in
/// `serve` is biased), so a busy control plane does not call a live node silent.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// Redials start fast and are capped at 2 s, so a node that comes back is ONLINE within
/// cap + connect time.
const REDIAL_FIRST: Duration = Duration::from_millis(200);
const REDIAL_CAP: Duration = Duration::from_secs(2);
/// A connection that lasted this long was healthy: after it drops, redial at once. One that
/// ended sooner (the agent refused what it was sent, say) redials after the backoff, which
/// keeps growing while connections keep ending early: never a tight loop.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Bound on writing one frame.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the supervisor and a running link share: one allocation per node, as the connector
/// holds thousands of them (channels of their own would cost hundreds of bytes each).
pub struct Shared {
    /// Where to dial. The supervisor keeps it current (a move or an approval changes it); the
    /// link reads it at each dial.
    pub target: Mutex<Target>,
    /// Notified when the node's deployments or images change: the link builds the node's desired
    /// state again. Notifications while it builds leave one permit, so none is lost and many
    /// coalesce into one more build.
    pub desired_changed: Notify,
    /// Why the supervisor stopped the link, for the disconnection event.
    reason: Mutex<Option<String>>,
    cancel: CancellationToken,
}

/// The supervisor's handle on a running link.
pub struct LinkHandle {
    pub shared: Arc<Shared>,
    pub task: tokio::task::JoinHandle<()>,
}

impl LinkHandle {
    pub fn stop(&self, reason: &str) {
        *self.shared.reason.lock().expect("reason lock") = Some(reason.to_owned());
        self.shared.cancel.cancel();
    }
}

/// Starts the link of `node_id` to `target`; `link` is the connection state the log records now.
pub fn spawn(connector: Connector, node_id: Uuid, target: Target, link: Link) -> LinkHandle {
    let shared = Arc::new(Shared { target: Mutex::new(target), desired_changed: Notify::new(), reason: Mutex::new(None), cancel: CancellationToken::new() });
    let recorder = Recorder { connector, node_id, last: link };
    let task = tokio::spawn(run(recorder, shared.clone()));
    LinkHandle { shared, task }
}

/// Records the node's connection transitions. Only the active connector records them, so the
/// last one it recorded is the log's: a node that stays unreachable costs no store round trip
/// per redial.
struct Recorder {
    connector: Connector,
    node_id: Uuid,
    last: Link,
}

impl Recorder {
    async fn link(&mut self, now: Link, action: NodeAction) -> Result<(), CommandError> {
        if self.last == now {
            return Ok(());
        }
        execute_action(&self.connector, self.node_id, action).await?;
        self.last = now;
        Ok(())
    }

    /// Records a transition; a failure is logged (the next transition records the truth again).
    async fn report(&mut self, now: Link, action: NodeAction) {
        if let Err(e) = self.link(now, action).await {
            tracing::warn!(node = %self.node_id, error = %e, "cannot record the node's state");
        }
    }

    async fn presented(&self, thumbprint: CertThumbprint) {
        if let Err(e) = execute_action(&self.connector, self.node_id, NodeAction::Presented { thumbprint }).await {
            tracing::warn!(node = %self.node_id, error = %e, "cannot record the certificate presented");
        }
    }
}

async fn run(mut recorder: Recorder, shared: Arc<Shared>) {
    let (node_id, cancel) = (recorder.node_id, &shared.cancel);
    let mut backoff = Backoff::new(REDIAL_FIRST, REDIAL_CAP);
    // The certificate this link pinned on first contact, until the supervisor passes it back.
    let mut pinned_here = None;
    while !cancel.is_cancelled() {
        let mut target = shared.target.lock().expect("target lock").clone();
        target.pinned = target.pinned.or(pinned_here);
        let dialled = tokio::select! {
            _ = cancel.cancelled() => return,
            // Boxed: a dial's state is large and short-lived; inline, every idle link would
            // carry its space for as long as it lives.
            d = Box::pin(dial(&target)) => d,
        };
        match dialled {
            Ok(connected) => {
                if target.pinned.is_none() {
                    // First contact: this certificate becomes the pin.
                    recorder.presented(connected.thumbprint).await;
                    pinned_here = Some(connected.thumbprint);
                }
                let up = NodeAction::Connected { agent_version: connected.agent_version.clone(), protocol: PROTOCOL_VERSION };
                if let Err(e) = recorder.link(Link::Online, up).await {
                    tracing::warn!(node = %node_id, error = %e, "connected, but the node may not be used now; closing");
                    close(connected.link, "not allowed").await;
                    if pause(cancel, backoff.delay()).await {
                        return;
                    }
                    continue;
                }
                tracing::info!(node = %node_id, host = %target.host, agent = %connected.agent_version, "node online");
                let connected_at = tokio::time::Instant::now();
                let why = serve(&recorder.connector, node_id, connected.link, &shared.desired_changed, cancel).await;
                let why = shared.reason.lock().expect("reason lock").clone().unwrap_or_else(|| why.to_string());
                tracing::info!(node = %node_id, reason = %why, "node offline");
                recorder.report(Link::Offline, NodeAction::Disconnected { reason: why }).await;
                if cancel.is_cancelled() {
                    return;
                }
                if connected_at.elapsed() >= HEALTHY_AFTER {
                    // Redial at once: most drops of a healthy link are brief.
                    backoff.reset();
                    continue;
                }
            }
            Err(DialError::Mismatch { presented }) => {
                tracing::warn!(node = %node_id, %presented, "the agent presents another certificate: node untrusted until an admin approves it");
                recorder.presented(presented).await;
                // Untrusted nodes are not dialled: the supervisor stops this link.
                cancel.cancelled().await;
                return;
            }
            Err(DialError::TokenRefused) => recorder.report(Link::Refused(Refusal::Token), NodeAction::Refused(Refusal::Token)).await,
            Err(DialError::Incompatible { agent_protocol }) => {
                let refusal = Refusal::Incompatible { agent_protocol };
                recorder.report(Link::Refused(refusal), NodeAction::Refused(refusal)).await
            }
            Err(e @ (DialError::Unreachable(_) | DialError::Protocol(_))) => {
                tracing::debug!(node = %node_id, error = %e, "dial failed");
                recorder.report(Link::Offline, NodeAction::Disconnected { reason: e.to_string() }).await;
            }
        }
        if pause(cancel, backoff.delay()).await {
            return;
        }
    }
}

/// Sleeps `delay`; true if cancelled meanwhile.
async fn pause(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

async fn execute_action(connector: &Connector, node_id: Uuid, action: NodeAction) -> Result<(), CommandError> {
    let command = NodeCommand { by: Issuer::System, action };
    // Boxed, as every rare and large await of a link is: inline, each idle link would carry the
    // space of a store round trip for as long as it lives.
    Box::pin(execute::<Node>(&*connector.store, &node_id.to_string(), &command, &EventMetadata::system())).await.map(|_| ())
}

/// A node's desired state being built.
type Building<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<NodeDesired, crate::desired::DesiredError>> + Send + 'a>>;

/// Serves a connected agent until it goes quiet, misbehaves or the link is cancelled; returns why
/// it ended.
async fn serve(connector: &Connector, node_id: Uuid, mut link: Box<AgentLink>, desired_changed: &Notify, cancel: &CancellationToken) -> LinkEnded {
    // A change notified before now is in the state read next.
    let _ = desired_changed.notified().now_or_never();
    let mut desired = match connector.desired.for_node(node_id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(node = %node_id, error = %e, "cannot read a node's desired state");
            close(link, "desired state unavailable").await;
            return LinkEnded::DesiredUnavailable;
        }
    };
    Box::pin(refuse(connector, node_id, &desired)).await;
    let mut request_id = RequestId::new();
    // The runs sent on this link (id, attempt): each is traced once, when first sent.
    let mut announced = HashSet::new();
    if let Err(e) = Box::pin(send_desired(&mut link, request_id, &desired, &mut announced)).await {
        return e;
    }
    if let Err(e) = Box::pin(send_prefetch(&mut link, &desired)).await {
        return e;
    }
    // The views of deployments last recorded, so that only changes are.
    let mut recorded = HashMap::new();
    // Deployments the agent no longer has whose removal could not be recorded yet: tried again
    // every second (the agent reports nothing more about them).
    let mut unrecorded: HashSet<Uuid> = HashSet::new();
    let mut ping = tokio::time::interval_at(ping_slot(tokio::time::Instant::now()), PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether any frame came since the last ping.
    let mut heard = true;
    // What the node should run now, being built while the link goes on: reading a project's
    // secrets and the catalog can take seconds on a busy server, and the agent's answers to the
    // pings must be heard meanwhile (else a busy control plane would call a live node silent).
    // One build at a time; a change during a build asks for another once it is done.
    let mut building: Option<Building<'_>> = None;
    let mut changed_while_building = false;
    // Made once and polled again at each turn: a new one each turn would register and drop a
    // waiter every time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let changed = desired_changed.notified();
    tokio::pin!(changed);
    loop {
        // In this order: the rare signals, then a frame already in (heard before silence is
        // called), then the ping.
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                close(link, "closed by the control plane").await;
                return LinkEnded::ClosedByControlPlane;
            }
            // Any change, to what runs or to what is being removed, is sent: the agent's answer
            // to it is what tells that a removed deployment is gone.
            () = &mut changed => {
                changed.set(desired_changed.notified());
                if building.is_none() {
                    building = Some(connector.desired.for_node(node_id));
                } else {
                    changed_while_building = true;
                }
            }
            Some(built) = async { Some(building.as_mut()?.await) }, if building.is_some() => {
                building = std::mem::take(&mut changed_while_building).then(|| connector.desired.for_node(node_id));
                match built {
                    Ok(now) => {
                        if !now.same_deployments(&desired) {
                            Box::pin(refuse(connector, node_id, &now)).await;
                            request_id = RequestId::new();
                            if let Err(e) = Box::pin(send_desired(&mut link, request_id, &now, &mut announced)).await {
                                return e;
                            }
                        }
                        if now.prefetch != desired.prefetch {
                            if let Err(e) = Box::pin(send_prefetch(&mut link, &now)).await {
                                return e;
                            }
                        }
                        desired = now;
                    }
                    Err(e) => tracing::warn!(node = %node_id, error = %e, "cannot read the node's desired state; keeping the last one"),
                }
            }
            frame = link.next() => {
                heard = true;
                let text = match frame {
                    None => return LinkEnded::AgentClosed,
                    Some(Err(e)) => {
                        tracing::info!(node = %node_id, error = %e, "the link to the agent broke");
                        return connection_lost(&e);
                    }
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        return match frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty()) {
                            Some(reason) => LinkEnded::AgentClosedSaying(reason),
                            None => LinkEnded::AgentClosed,
                        }
                    }
                    Some(Ok(Message::Binary(_) | Message::Frame(_))) => {
                        tracing::warn!(node = %node_id, "the agent sent a binary frame; closing");
                        close(link, "binary frames are not part of the protocol").await;
                        return LinkEnded::ProtocolBroken("binary frame");
                    }
                };
                let assigned = |id: &str| desired.removing.contains(id) || desired.run.iter().any(|d| d.id == id);
                match decode_from_agent(text.as_bytes()) {
                    Ok(FromAgent::ActualState { request_id: answered, deployments }) => {
                        let (known, unknown): (Vec<_>, Vec<_>) = deployments.into_iter().partition(|d| assigned(&d.id));
                        for d in unknown {
                            tracing::warn!(node = %node_id, deployment = %d.id, "rejected a report about a deployment not assigned to this node");
                        }
                        tracing::debug!(node = %node_id, request = %answered.0, deployments = known.len(), "agent reports its state");
                        let present: HashSet<String> = known.iter().map(|d| d.id.clone()).collect();
                        let trace_of = |id: &str| desired.run.iter().find(|d| d.id == id).and_then(|d| d.trace.clone());
                        Box::pin(reports::record_views(connector, node_id, known, &mut recorded, &trace_of)).await;
                        // Having applied our latest request, the agent no longer has what it
                        // does not report.
                        if answered == request_id {
                            let gone: Vec<String> = desired.removing.iter().filter(|id| !present.contains(*id)).cloned().collect();
                            for id in gone {
                                if let Ok(deployment_id) = Uuid::try_parse(&id) {
                                    if !Box::pin(reports::record_removed(connector, node_id, deployment_id)).await {
                                        unrecorded.insert(deployment_id);
                                    }
                                }
                                desired.removing.remove(&id);
                                recorded.remove(&id);
                            }
                        }
                    }
                    Ok(FromAgent::Usage(usage)) => Box::pin(write_usage(connector, node_id, usage, &assigned)).await,
                    Ok(FromAgent::Logs { lines }) => Box::pin(reports::record_logs(connector, node_id, lines, &assigned)).await,
                    Ok(FromAgent::Images { images }) => Box::pin(write_images(connector, node_id, &images)).await,
                    Ok(FromAgent::Hello { .. }) => {
                        close(link, "unexpected hello").await;
                        return LinkEnded::ProtocolBroken("a second hello");
                    }
                    Err(e) => {
                        tracing::warn!(node = %node_id, error = %e, "the agent sent an invalid frame; closing");
                        close(link, "invalid frame").await;
                        return LinkEnded::ProtocolBroken("a frame that is not a message it may send");
                    }
                }
                // A steady stream of frames does not hold the pings back: the agent listens for
                // us too.
                if ping.tick().now_or_never().is_some() {
                    heard = false;
                    if let Err(e) = heartbeat(connector, node_id, &mut link, &mut unrecorded).await {
                        return e;
                    }
                }
            }
            _ = ping.tick() => {
                if !heard {
                    return LinkEnded::Silent { secs: PING_EVERY.as_secs() };
                }
                heard = false;
                if let Err(e) = heartbeat(connector, node_id, &mut link, &mut unrecorded).await {
                    return e;
                }
            }
        }
    }
}

/// Links' pings fall in this many slots a second: with thousands of links, the runtime wakes once
/// per slot for a batch of pings instead of once per link.
const PING_SLOTS: u32 = 20;

/// The first slot after `now` (slots counted from the first link's start).
fn ping_slot(now: tokio::time::Instant) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let slot = PING_EVERY / PING_SLOTS;
    let since = now.saturating_duration_since(epoch);
    let slots = since.as_nanos() / slot.as_nanos() + 1;
    epoch + slot * u32::try_from(slots).unwrap_or(u32::MAX)
}

/// Pings the agent, and tries again to record the removals not recorded yet.
async fn heartbeat(connector: &Connector, node_id: Uuid, link: &mut AgentLink, unrecorded: &mut HashSet<Uuid>) -> Result<(), LinkEnded> {
    send_message(link, Message::Ping(Default::default())).await?;
    for deployment_id in unrecorded.clone() {
        if Box::pin(reports::record_removed(connector, node_id, deployment_id)).await {
            unrecorded.remove(&deployment_id);
        }
    }
    Ok(())
}

async fn write_usage(connector: &Connector, node_id: Uuid, mut usage: Usage, assigned: &impl Fn(&str) -> bool) {
    usage.containers.retain(|c| {
        let ours = assigned(&c.deployment);
        if !ours {
            tracing::warn!(node = %node_id, deployment = %c.deployment, "rejected usage of a deployment not assigned to this node");
        }
        ours
    });
    let row = UsageRow {
        cpu_cores: usage.cpu_cores,
        cpu_used_millicores: usage.cpu_used_millicores,
        memory_total_bytes: usage.memory_total_bytes,
        memory_used_bytes: usage.memory_used_bytes,
        containers: serde_json::to_string(&usage.containers).expect("usage serializes"),
        sampled_at: nullops_events::Timestamp::now().0,
    };
    if let Err(e) = record_usage(&connector.read_models, node_id, &row).await {
        tracing::warn!(node = %node_id, error = %e, "cannot store the node's usage");
    }
    // The charts' samples: the node's, and each service's.
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut series = vec![(Series::Node(node_id), big(usage.cpu_used_millicores), big(usage.memory_used_bytes))];
    match nullops_projections::nodes::allocation(&connector.read_models, node_id).await {
        Ok(a) => series.push((Series::NodeReserved(node_id), big(a.cpu_millis), big(a.memory_mib.saturating_mul(1 << 20)))),
        Err(e) => tracing::warn!(node = %node_id, error = %e, "cannot read what the node has reserved"),
    }
    for c in &usage.containers {
        if let Ok(deployment) = Uuid::try_parse(&c.deployment) {
            series.push((Series::Service { deployment, service: c.name.clone() }, big(c.cpu_millicores), big(c.memory_bytes)));
        }
    }
    for (s, cpu, memory) in series {
        if let Err(e) = samples::record(&connector.read_models.working_rows(), &s, row.sampled_at, cpu, memory).await {
            tracing::warn!(node = %node_id, error = %e, "cannot store a usage sample");
            break;
        }
    }
}

async fn write_images(connector: &Connector, node_id: Uuid, images: &[HeldImage]) {
    let json = serde_json::to_string(images).expect("images serialize");
    if let Err(e) = record_images(&connector.read_models, node_id, &json, nullops_events::Timestamp::now().0).await {
        tracing::warn!(node = %node_id, error = %e, "cannot store the images the node holds");
    }
}

/// Tells the agent which images to hold (the whole list, every time).
async fn send_prefetch(link: &mut AgentLink, desired: &NodeDesired) -> Result<(), LinkEnded> {
    send(link, &ToAgent::Prefetch { images: desired.prefetch.images.clone(), registry_auth: desired.prefetch.auth.clone() }).await
}

async fn send(link: &mut AgentLink, message: &ToAgent) -> Result<(), LinkEnded> {
    send_message(link, Message::text(encode(message))).await
}

/// Sends a node's desired state, in as many frames as it takes. A traced run not sent on this
/// link before (`announced`) has the send as a span of its trace.
async fn send_desired(link: &mut AgentLink, request_id: RequestId, desired: &NodeDesired, announced: &mut HashSet<(String, u32)>) -> Result<(), LinkEnded> {
    let spans: Vec<tracing::Span> = desired
        .run
        .iter()
        .filter(|d| d.trace.is_some() && announced.insert((d.id.clone(), d.attempt)))
        .map(|d| {
            let span = tracing::info_span!("connector.send", deployment = d.id.as_str(), attempt = d.attempt);
            nullops_telemetry::follows(&span, d.trace.as_deref());
            span
        })
        .collect();
    // Bounded: what the node no longer runs is forgotten.
    announced.retain(|(id, attempt)| desired.run.iter().any(|d| d.id == *id && d.attempt == *attempt));
    let sending = async {
        for part in desired_state_parts(request_id, desired.run.clone()) {
            send(link, &part).await?;
        }
        Ok(())
    };
    match spans.first() {
        Some(span) => sending.instrument(span.clone()).await,
        None => sending.await,
    }
}

/// Fails the deployments the node cannot be given, with the reason (the others are sent).
async fn refuse(connector: &Connector, node_id: Uuid, desired: &NodeDesired) {
    for (deployment_id, reason) in &desired.refused {
        reports::record_refused(connector, node_id, *deployment_id, reason.to_string()).await;
    }
}

async fn send_message(link: &mut AgentLink, message: Message) -> Result<(), LinkEnded> {
    // Most writes complete at once (the socket has room): those take no timer, which a link
    // would otherwise register and drop at every ping.
    let mut sending = link.send(message);
    let written = match (&mut sending).now_or_never() {
        Some(written) => Ok(written),
        None => tokio::time::timeout(WRITE_TIMEOUT, sending).await,
    };
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "a write to an agent failed");
            Err(connection_lost(&e))
        }
        Err(_) => Err(LinkEnded::NotReading { secs: WRITE_TIMEOUT.as_secs() }),
    }
}

/// Closes the link, bounded. A boxed future, not an `async fn`: its caller's state would hold a
/// second copy of the link's space otherwise.
fn close(mut link: Box<AgentLink>, reason: &str) -> futures::future::BoxFuture<'static, ()> {
    let frame = CloseFrame { code: CloseCode::Normal, reason: reason.to_owned().into() };
    Box::pin(async move {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, (*link).close(Some(frame))).await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_fall_in_a_few_slots_a_second_and_never_now() {
        let start = tokio::time::Instant::now();
        let slot = PING_EVERY / PING_SLOTS;
        let first = ping_slot(start);
        // Links that start at any moment of a second ping in one of PING_SLOTS slots, each
        // within one slot after its start.
        let mut slots = std::collections::BTreeSet::new();
        for ms in 0..1000 {
            let now = start + Duration::from_millis(ms);
            let at = ping_slot(now);
            assert!(at > now && at <= now + slot, "{ms} ms: {:?} after", at - now);
            assert_eq!((at - first).as_nanos() % slot.as_nanos(), 0, "{ms} ms: not on a slot");
            slots.insert(at);
        }
        assert_eq!(slots.len(), PING_SLOTS as usize);
    }
}
