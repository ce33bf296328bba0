//! One node's connection, for as long as the supervisor wants it: dial, record, serve, redial.
//!
//! Every change of the node is recorded as a command on its aggregate, which emits an event only
//! for a real transition (a node that stays unreachable is recorded OFFLINE once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nullops_domain::node::{CertThumbprint, Link, Node, NodeAction, NodeCommand};
use nullops_domain::Issuer;
use nullops_events::node::Refusal;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{record_images, record_usage, UsageRow};
use nullops_projections::samples::{self, Series};
use nullops_store::commands::{execute, CommandError};
use nullops_wire::message::{decode_from_agent, desired_state_parts, encode, HeldImage, Usage};
use nullops_wire::{FromAgent, RequestId, ToAgent, PROTOCOL_VERSION};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::dial::{dial, AgentLink, DialError, Target};
use crate::words::{connection_lost, LinkEnded};
use crate::{reports, Backoff, Connector, NodeDesired};

/// A ping every second; three seconds without any frame means the peer or the path is gone, so
/// a dead link is declared 3 s after its last frame: "OFFLINE within 5 s" with room for a loaded
/// machine.
const PING_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
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

/// The supervisor's handle on a running link.
pub struct LinkHandle {
    pub cancel: CancellationToken,
    /// Why the supervisor stopped the link, for the disconnection event.
    pub reason: Arc<Mutex<Option<String>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl LinkHandle {
    pub fn stop(&self, reason: &str) {
        *self.reason.lock().expect("reason lock") = Some(reason.to_owned());
        self.cancel.cancel();
    }
}

/// Starts the link of `node_id`. `target` is kept current by the supervisor (a move or an
/// approval changes it); `link` is the connection state the log records now.
/// `desired_changed` is bumped when the node's deployments change.
pub fn spawn(connector: Connector, node_id: Uuid, target: watch::Receiver<Target>, link: Link, desired_changed: watch::Receiver<u64>) -> LinkHandle {
    let cancel = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    let recorder = Recorder { connector: connector.clone(), node_id, last: link };
    let task = tokio::spawn(run(connector, node_id, target, recorder, desired_changed, cancel.clone(), reason.clone()));
    LinkHandle { cancel, reason, task }
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

async fn run(
    connector: Connector,
    node_id: Uuid,
    target: watch::Receiver<Target>,
    mut recorder: Recorder,
    mut desired_changed: watch::Receiver<u64>,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
) {
    let mut backoff = Backoff::new(REDIAL_FIRST, REDIAL_CAP);
    // The certificate this link pinned on first contact, until the supervisor passes it back.
    let mut pinned_here = None;
    while !cancel.is_cancelled() {
        let mut target = target.borrow().clone();
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
                    if pause(&cancel, backoff.delay()).await {
                        return;
                    }
                    continue;
                }
                tracing::info!(node = %node_id, host = %target.host, agent = %connected.agent_version, "node online");
                let connected_at = tokio::time::Instant::now();
                let why = serve(&connector, node_id, connected.link, &mut desired_changed, &cancel).await;
                let why = reason.lock().expect("reason lock").clone().unwrap_or_else(|| why.to_string());
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
        if pause(&cancel, backoff.delay()).await {
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
    execute::<Node>(&*connector.store, &node_id.to_string(), &command, &EventMetadata::system()).await.map(|_| ())
}

/// A node's desired state being built.
type Building<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<NodeDesired, crate::desired::DesiredError>> + Send + 'a>>;

/// Serves a connected agent until it goes quiet, misbehaves or the link is cancelled; returns why
/// it ended.
async fn serve(connector: &Connector, node_id: Uuid, mut link: AgentLink, desired_changed: &mut watch::Receiver<u64>, cancel: &CancellationToken) -> LinkEnded {
    desired_changed.mark_unchanged();
    let mut desired = match connector.desired.for_node(node_id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(node = %node_id, error = %e, "cannot read a node's desired state");
            close(link, "desired state unavailable").await;
            return LinkEnded::DesiredUnavailable;
        }
    };
    refuse(connector, node_id, &desired).await;
    let mut request_id = RequestId::new();
    // The runs sent on this link (id, attempt): each is traced once, when first sent.
    let mut announced = HashSet::new();
    if let Err(e) = send_desired(&mut link, request_id, &desired, &mut announced).await {
        return e;
    }
    if let Err(e) = send_prefetch(&mut link, &desired).await {
        return e;
    }
    // The views of deployments last recorded, so that only changes are.
    let mut recorded = HashMap::new();
    // Deployments the agent no longer has whose removal could not be recorded yet: tried again
    // every second (the agent reports nothing more about them).
    let mut unrecorded: HashSet<Uuid> = HashSet::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One deadline, pushed back by every frame: no periodic wakeups to look for silence.
    let silence = tokio::time::sleep(HEARTBEAT_TIMEOUT);
    tokio::pin!(silence);
    // What the node should run now, being built while the link goes on: reading a project's
    // secrets and the catalog can take seconds on a busy server, and the agent's answers to the
    // pings must be heard meanwhile (else a busy control plane would call a live node silent).
    // One build at a time; a change during a build asks for another once it is done.
    let mut building: Option<Building<'_>> = None;
    let mut changed_while_building = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                close(link, "closed by the control plane").await;
                return LinkEnded::ClosedByControlPlane;
            }
            () = &mut silence => return LinkEnded::Silent { secs: HEARTBEAT_TIMEOUT.as_secs() },
            _ = ping.tick() => {
                if let Err(e) = send_message(&mut link, Message::Ping(Default::default())).await {
                    return e;
                }
                for deployment_id in unrecorded.clone() {
                    if reports::record_removed(connector, node_id, deployment_id).await {
                        unrecorded.remove(&deployment_id);
                    }
                }
            }
            // Any change, to what runs or to what is being removed, is sent: the agent's answer
            // to it is what tells that a removed deployment is gone.
            Ok(()) = desired_changed.changed() => {
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
                            refuse(connector, node_id, &now).await;
                            request_id = RequestId::new();
                            if let Err(e) = send_desired(&mut link, request_id, &now, &mut announced).await {
                                return e;
                            }
                        }
                        if now.prefetch != desired.prefetch {
                            if let Err(e) = send_prefetch(&mut link, &now).await {
                                return e;
                            }
                        }
                        desired = now;
                    }
                    Err(e) => tracing::warn!(node = %node_id, error = %e, "cannot read the node's desired state; keeping the last one"),
                }
            }
            frame = link.next() => {
                silence.as_mut().reset(tokio::time::Instant::now() + HEARTBEAT_TIMEOUT);
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
                        reports::record_views(connector, node_id, known, &mut recorded, &trace_of).await;
                        // Having applied our latest request, the agent no longer has what it
                        // does not report.
                        if answered == request_id {
                            let gone: Vec<String> = desired.removing.iter().filter(|id| !present.contains(*id)).cloned().collect();
                            for id in gone {
                                if let Ok(deployment_id) = Uuid::try_parse(&id) {
                                    if !reports::record_removed(connector, node_id, deployment_id).await {
                                        unrecorded.insert(deployment_id);
                                    }
                                }
                                desired.removing.remove(&id);
                                recorded.remove(&id);
                            }
                        }
                    }
                    Ok(FromAgent::Usage(usage)) => write_usage(connector, node_id, usage, &assigned).await,
                    Ok(FromAgent::Logs { lines }) => reports::record_logs(connector, node_id, lines, &assigned).await,
                    Ok(FromAgent::Images { images }) => write_images(connector, node_id, &images).await,
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
                // Silence counts while the link listens: recording what the frame said may take
                // a while on a busy server, and the agent's next frames wait unread meanwhile.
                silence.as_mut().reset(tokio::time::Instant::now() + HEARTBEAT_TIMEOUT);
            }
        }
    }
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
    match tokio::time::timeout(WRITE_TIMEOUT, link.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "a write to an agent failed");
            Err(connection_lost(&e))
        }
        Err(_) => Err(LinkEnded::NotReading { secs: WRITE_TIMEOUT.as_secs() }),
    }
}

async fn close(mut link: AgentLink, reason: &str) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: reason.to_owned().into() };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, link.close(Some(frame))).await;
}
