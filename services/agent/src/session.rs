//! One control plane connection: receives desired states, forwards what the reconciler and the
//! usage sampler publish, and ends when the peer goes quiet, misbehaves or is replaced.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nullops_wire::message::{check_deployment, decode_to_agent, encode, DesiredDeployment, FromAgent, NodeFacts, Unfit, MAX_DEPLOYMENTS};
use nullops_wire::{RequestId, ToAgent};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use crate::handshake::AgentSocket;
use crate::{prefetch, Desired, Refused, Shared};

/// The control plane pings every second; this long without any frame means it is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on writing one frame to a peer that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(mut ws: AgentSocket, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mine = shutdown.child_token();
    if let Some(previous) = shared.current.lock().expect("session lock").replace(mine.clone()) {
        previous.cancel();
        tracing::info!(%peer, "a new control plane connection replaces the previous one");
    }
    tracing::info!(%peer, "control plane connected");
    let mut reason = serve(&mut ws, &shared, &mine).await;
    if matches!(reason, End::Replaced) && shutdown.is_cancelled() {
        reason = End::ShuttingDown;
    }
    tracing::info!(%peer, %reason, "control plane connection closed");
    let (code, text) = match &reason {
        End::Replaced => (CloseCode::Policy, "replaced by a newer connection".to_owned()),
        End::ShuttingDown => (CloseCode::Away, "the agent is shutting down".to_owned()),
        // Why, so that the node's status says it (a close reason holds at most 123 bytes).
        End::BadFrame(e) => (CloseCode::Invalid, cut(&format!("refused a frame: {e}"), 123)),
        _ => (CloseCode::Normal, "closing".to_owned()),
    };
    let close = ws.close(Some(CloseFrame { code, reason: text.into() }));
    let _ = tokio::time::timeout(WRITE_TIMEOUT, close).await;
}

#[derive(Debug)]
enum End {
    Replaced,
    ShuttingDown,
    Quiet,
    Gone(Lost),
    BadFrame(String),
}

/// How the connection to the control plane was lost (for the agent's log).
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("closed by the control plane")]
    ClosedByPeer,
    #[error("the control plane read nothing for {} s", WRITE_TIMEOUT.as_secs())]
    Stalled,
    #[error("the socket failed: {0}")]
    Socket(#[from] WsError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Replaced => f.write_str("replaced by a newer connection"),
            End::ShuttingDown => f.write_str("shutting down"),
            End::Quiet => write!(f, "no frame for {} s", IDLE_TIMEOUT.as_secs()),
            End::Gone(e) => write!(f, "connection lost: {e}"),
            End::BadFrame(e) => write!(f, "refused a frame: {e}"),
        }
    }
}

async fn serve(ws: &mut AgentSocket, shared: &Shared, cancelled: &CancellationToken) -> End {
    let hello = FromAgent::Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: shared.protocol,
        node: NodeFacts { hostname: shared.hostname.clone(), docker_version: shared.docker_version.clone() },
    };
    if let Err(e) = send(ws, &hello).await {
        return End::Gone(e);
    }
    let mut actual = shared.actual.clone();
    let mut usage = shared.usage.clone();
    let mut held = shared.held.clone();
    held.mark_unchanged();
    actual.mark_unchanged();
    // The latest sample at once: the control plane needs the node's size to place deployments.
    let latest = usage.borrow_and_update().clone();
    if let Some(now) = latest {
        if let Err(e) = send(ws, &FromAgent::Usage(now)).await {
            return End::Gone(e);
        }
    }
    // The parts of a desired state received so far.
    let mut parts = Parts::default();
    loop {
        tokio::select! {
            _ = cancelled.cancelled() => return End::Replaced,
            frame = tokio::time::timeout(IDLE_TIMEOUT, ws.next()) => match frame {
                Err(_) => return End::Quiet,
                Ok(None) => return End::Gone(Lost::ClosedByPeer),
                // Over the frame limit, or not WebSocket: the peer's frame, not the connection.
                Ok(Some(Err(e @ (WsError::Capacity(_) | WsError::Protocol(_))))) => return End::BadFrame(e.to_string()),
                Ok(Some(Err(e))) => return End::Gone(e.into()),
                Ok(Some(Ok(Message::Text(text)))) => match decode_to_agent(text.as_bytes()) {
                    Ok(message) => {
                        if let Err(end) = handle(ws, shared, &mut parts, message).await {
                            return end;
                        }
                    }
                    Err(e) => return End::BadFrame(e.to_string()),
                },
                // Pongs are queued by the WebSocket layer and flushed on the next read or write.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(Message::Close(_)))) => return End::Gone(Lost::ClosedByPeer),
                Ok(Some(Ok(Message::Binary(_) | Message::Frame(_)))) => return End::BadFrame("binary frames are not part of the protocol".into()),
            },
            changed = actual.changed() => {
                if changed.is_err() { return End::Replaced }
                let Some(now) = actual.borrow_and_update().clone() else { continue };
                let Some(request_id) = now.request_id else { continue };
                if let Err(e) = send(ws, &FromAgent::ActualState { request_id, deployments: now.deployments }).await {
                    return End::Gone(e);
                }
            }
            _ = shared.logs.arrived.notified() => {
                // All that is queued, a message at a time.
                loop {
                    let lines = shared.logs.take();
                    if lines.is_empty() {
                        break;
                    }
                    if let Err(e) = send(ws, &FromAgent::Logs { lines }).await {
                        return End::Gone(e);
                    }
                }
            }
            changed = usage.changed() => {
                if changed.is_err() { return End::Replaced }
                let Some(now) = usage.borrow_and_update().clone() else { continue };
                if let Err(e) = send(ws, &FromAgent::Usage(now)).await {
                    return End::Gone(e);
                }
            }
            changed = held.changed() => {
                if changed.is_err() { return End::Replaced }
                let images = held.borrow_and_update().clone();
                if let Err(e) = send(ws, &FromAgent::Images { images }).await {
                    return End::Gone(e);
                }
            }
        }
    }
}

/// The parts of one desired state received so far (they come in order on one connection).
#[derive(Default)]
struct Parts {
    request_id: Option<RequestId>,
    deployments: Vec<DesiredDeployment>,
}

async fn handle(ws: &mut AgentSocket, shared: &Shared, parts: &mut Parts, message: ToAgent) -> Result<(), End> {
    let (request_id, deployments, more) = match message {
        ToAgent::DesiredState { request_id, deployments, more } => (request_id, deployments, more),
        ToAgent::Prefetch { images, registry_auth } => {
            let wanted = prefetch::Wanted { images, auth: registry_auth };
            shared.prefetch.send_if_modified(|old| {
                let changed = *old != wanted;
                *old = wanted;
                changed
            });
            // The connection may be new while the list is not: say what is held now.
            let images = shared.held.borrow().clone();
            return send(ws, &FromAgent::Images { images }).await.map_err(End::Gone);
        }
    };
    if parts.request_id != Some(request_id) {
        *parts = Parts { request_id: Some(request_id), deployments: vec![] };
    }
    if parts.deployments.len() + deployments.len() > MAX_DEPLOYMENTS {
        return Err(End::BadFrame(format!("a desired state of over {MAX_DEPLOYMENTS} deployments")));
    }
    parts.deployments.extend(deployments);
    if more {
        return Ok(());
    }
    let deployments = std::mem::take(parts).deployments;
    let duplicate = shared.saved.read(|state| state.has_applied(request_id));
    if duplicate {
        // Delivered twice: answer again with what runs, apply nothing.
        let current = shared.actual.borrow().clone();
        if let Some(current) = current {
            return send(ws, &FromAgent::ActualState { request_id, deployments: current.deployments }).await.map_err(End::Gone);
        }
        return Ok(());
    }
    let (deployments, refused) = judge(deployments);
    for r in &refused {
        tracing::warn!(deployment = %r.id, reason = %r.reason, "refused a deployment");
    }
    // Not saved is not lost: the control plane resends the full state on the next connection.
    shared.persist(|state| state.record(request_id, deployments.clone())).await;
    shared.desired.send_replace(Desired { request_id: Some(request_id), deployments, refused });
    Ok(())
}

/// The deployments this agent can take, and those it refuses, each on its own: one given
/// twice, or that fails the protocol's checks.
fn judge(deployments: Vec<DesiredDeployment>) -> (Vec<DesiredDeployment>, Vec<Refused>) {
    let mut seen = HashSet::new();
    let mut taken = Vec::with_capacity(deployments.len());
    let mut refused = Vec::new();
    for d in deployments {
        let judged = if seen.insert(d.id.clone()) { check_deployment(&d) } else { Err(Unfit::GivenTwice { id: d.id.clone() }) };
        match judged {
            Ok(()) => taken.push(d),
            Err(unfit) => refused.push(Refused { id: d.id, attempt: d.attempt, reason: unfit.to_string() }),
        }
    }
    (taken, refused)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

async fn send(ws: &mut AgentSocket, message: &FromAgent) -> Result<(), Lost> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::text(encode(message)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Lost::Stalled),
    }
}
