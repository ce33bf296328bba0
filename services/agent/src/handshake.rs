//! Admission of one incoming connection: TLS, then a WebSocket upgrade that must carry our
//! protocol version and a valid proof of the node token. Refusals are plain HTTP answers (401,
//! 426) sent before any WebSocket state exists, and are logged with the peer, never the proof.

use std::net::SocketAddr;
use std::time::Duration;

use nullops_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use nullops_wire::{AuthProof, AGENT_PATH, PROOF_HEADER, PROTOCOL_HEADER, STATUS_INCOMPATIBLE};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::WebSocketStream;

use nullops_metrics::Refusal;
use nullops_telemetry::Quieted;

use crate::Shared;

/// A peer must start its TLS handshake this soon after connecting: a silent socket is dropped
/// before it costs anything else.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the whole handshake: a peer that stalls is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub type AgentSocket = WebSocketStream<TlsStream<TcpStream>>;

pub async fn accept(tcp: TcpStream, peer: SocketAddr, tls: &tokio_rustls::TlsAcceptor, shared: &Shared) -> Option<AgentSocket> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return None,
        Err(_) => {
            tracing::debug!(%peer, "dropped a connection that sent nothing for {} s", FIRST_BYTE_TIMEOUT.as_secs());
            return None;
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_inner(tcp, tls, shared)).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err((why, reason))) => {
            refused(why, &peer, &reason);
            None
        }
        Err(_) => {
            refused(Refusal::slow, &peer, &format!("handshake took over {} s", HANDSHAKE_TIMEOUT.as_secs()));
            None
        }
    }
}

/// How often each kind of refusal is logged: anyone who can reach the port can cause them.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts a refused connection, and logs it unless one of its kind was logged within a minute.
pub(crate) fn refused(why: Refusal, peer: &SocketAddr, reason: &str) {
    static QUIET: [Quieted; 5] = [const { Quieted::new(REFUSAL_LOG_EVERY) }; 5];
    if let Some(metrics) = nullops_metrics::recording() {
        metrics.agent_refused_connections.get_or_create(&nullops_metrics::RefusalLabels { reason: why }).inc();
    }
    match QUIET[why as usize].allow() {
        Some(0) => tracing::warn!(%peer, %reason, "refused a connection"),
        Some(quiet) => {
            tracing::warn!(%peer, %reason, "refused a connection ({quiet} more of this kind in the last minute; see nullops_agent_refused_connections_total)")
        }
        // Each one is still there for whoever turns this module's debug level on.
        None => tracing::debug!(%peer, %reason, "refused a connection"),
    }
}

// The refusal's size is tungstenite's: its handshake callback returns `Result<Response, ErrorResponse>`.
#[allow(clippy::result_large_err)]
async fn accept_inner(tcp: TcpStream, tls: &tokio_rustls::TlsAcceptor, shared: &Shared) -> Result<AgentSocket, (Refusal, String)> {
    let _ = tcp.set_nodelay(true);
    let stream = tls.accept(tcp).await.map_err(|e| (Refusal::tls, format!("TLS handshake failed: {e}")))?;
    let mut exporter = [0u8; EXPORTER_LEN];
    stream.get_ref().1.export_keying_material(&mut exporter, EXPORTER_LABEL, None).map_err(|e| (Refusal::tls, format!("TLS exporter: {e}")))?;
    let mut refusal = None;
    let check = |request: &Request, response: Response| match admit(request, &exporter, shared) {
        Ok(()) => Ok(response),
        Err((why, status, reason)) => {
            let mut error = ErrorResponse::new(Some(reason.clone()));
            *error.status_mut() = status;
            if status.as_u16() == STATUS_INCOMPATIBLE {
                error.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(shared.protocol));
            }
            refusal = Some((why, reason));
            Err(error)
        }
    };
    let upgraded = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(nullops_wire::websocket_config())).await;
    match (upgraded, refusal) {
        (Ok(ws), _) => Ok(ws),
        (Err(_), Some(reason)) => Err(reason),
        (Err(e), None) => Err((Refusal::request, format!("WebSocket upgrade failed: {e}"))),
    }
}

fn admit(request: &Request, exporter: &[u8; EXPORTER_LEN], shared: &Shared) -> Result<(), (Refusal, StatusCode, String)> {
    if request.uri().path() != AGENT_PATH {
        return Err((Refusal::request, StatusCode::NOT_FOUND, format!("no endpoint at {}", request.uri().path())));
    }
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let protocol = header(PROTOCOL_HEADER).and_then(|v| v.parse::<u32>().ok());
    if protocol != Some(shared.protocol) {
        let theirs = protocol.map_or("none".to_owned(), |p| p.to_string());
        return Err((
            Refusal::protocol,
            StatusCode::from_u16(STATUS_INCOMPATIBLE).expect("426 is a status"),
            format!("protocol {theirs} requested; this agent speaks {}", shared.protocol),
        ));
    }
    let proof = header(PROOF_HEADER).and_then(AuthProof::parse);
    match proof {
        Some(proof) if shared.token_hash.verify(exporter, &proof) => Ok(()),
        _ => Err((Refusal::token, StatusCode::UNAUTHORIZED, "the node token proof is missing or wrong".to_owned())),
    }
}
