//! One attempt to reach an agent: TCP, TLS with the pin, the WebSocket upgrade with our protocol
//! version and token proof, then the agent's hello. Every step is bounded, and every failure says
//! which step failed, because the node's status depends on it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nullops_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use nullops_wire::message::{decode_from_agent, NodeFacts};
use nullops_wire::{FromAgent, Thumbprint, TokenHash, AGENT_PATH, PROOF_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION, STATUS_INCOMPATIBLE};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::pin::PinVerifier;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub type AgentLink = WebSocketStream<TlsStream<TcpStream>>;

/// Where and how to reach one agent.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub pinned: Option<Thumbprint>,
    pub token_hash: TokenHash,
}

pub struct Connected {
    /// Boxed: a link outlives the dial's result by far, and its space (over a kilobyte of TLS and
    /// WebSocket state) is then held once, wherever the link goes.
    pub link: Box<AgentLink>,
    pub thumbprint: Thumbprint,
    pub agent_version: String,
    pub node: NodeFacts,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0}")]
    Unreachable(String),
    #[error("the agent presents certificate {presented}, not the pinned one")]
    Mismatch { presented: Thumbprint },
    #[error("the agent refused the token")]
    TokenRefused,
    #[error("the agent speaks protocol {agent_protocol}")]
    Incompatible { agent_protocol: u32 },
    #[error("{0}")]
    Protocol(String),
}

/// Handshakes in flight at once, across every link of the process. A connector that starts, or
/// takes over, with thousands of nodes would otherwise begin every TLS handshake together, and on
/// a small machine each would then outlast its own timeout and start again, for ever: dials wait
/// for a permit, and each step's timeout counts from when the permit is held.
const DIALS_AT_ONCE: usize = 64;
static DIALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DIALS_AT_ONCE);

pub async fn dial(target: &Target) -> Result<Connected, DialError> {
    let _permit = DIALS.acquire().await.expect("the dial semaphore is never closed");
    let addr = (target.host.as_str(), target.port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            tracing::debug!(host = %target.host, port = target.port, error = %e, "cannot connect to the agent");
            return Err(DialError::Unreachable(crate::words::connect_failed(&authority(&target.host, target.port), &e)));
        }
        Err(_) => return Err(DialError::Unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
    };
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, target)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Unreachable(format!("handshake took over {} s", HANDSHAKE_TIMEOUT.as_secs()))),
    }
}

async fn handshake(tcp: TcpStream, target: &Target) -> Result<Connected, DialError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (verifier, presented) = PinVerifier::new(target.pinned, provider.clone());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let server_name = ServerName::try_from(target.host.clone()).map_err(|e| DialError::Protocol(format!("host {}: {e}", target.host)))?;
    let tls = match tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            let seen = *presented.lock().expect("presented lock");
            return Err(match (seen, target.pinned) {
                (Some(presented), Some(pinned)) if presented != pinned => DialError::Mismatch { presented },
                _ => {
                    tracing::debug!(host = %target.host, error = %e, "TLS handshake with the agent failed");
                    DialError::Unreachable(crate::words::tls_failed())
                }
            });
        }
    };
    let thumbprint = presented.lock().expect("presented lock").expect("a verified handshake saw a certificate");
    let mut exporter = [0u8; EXPORTER_LEN];
    tls.get_ref().1.export_keying_material(&mut exporter, EXPORTER_LABEL, None).map_err(|e| DialError::Protocol(format!("TLS exporter: {e}")))?;

    let url = format!("wss://{}{AGENT_PATH}", authority(&target.host, target.port));
    let mut request = url.into_client_request().map_err(|e| DialError::Protocol(e.to_string()))?;
    request.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    let proof = HeaderValue::from_str(&target.token_hash.prove(&exporter).to_hex()).expect("hex is a header value");
    request.headers_mut().insert(PROOF_HEADER, proof);
    let mut link = match tokio_tungstenite::client_async_with_config(request, tls, Some(nullops_wire::websocket_config())).await {
        Ok((link, _)) => link,
        Err(tungstenite::Error::Http(response)) => {
            return Err(match response.status().as_u16() {
                401 => DialError::TokenRefused,
                STATUS_INCOMPATIBLE => {
                    let theirs = response.headers().get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                    DialError::Incompatible { agent_protocol: theirs.unwrap_or(0) }
                }
                status => DialError::Protocol(format!("the agent answered HTTP {status}")),
            })
        }
        Err(e) => {
            tracing::debug!(host = %target.host, error = %e, "WebSocket upgrade with the agent failed");
            return Err(DialError::Unreachable(crate::words::upgrade_failed()));
        }
    };
    match link.next().await {
        Some(Ok(Message::Text(text))) => match decode_from_agent(text.as_bytes()) {
            Ok(FromAgent::Hello { protocol, .. }) if protocol != PROTOCOL_VERSION => Err(DialError::Incompatible { agent_protocol: protocol }),
            Ok(FromAgent::Hello { agent_version, node, .. }) => Ok(Connected { link: Box::new(link), thumbprint, agent_version, node }),
            Ok(_) => Err(DialError::Protocol("the agent's first frame is not a hello".into())),
            Err(e) => Err(DialError::Protocol(e.to_string())),
        },
        Some(Ok(_)) => Err(DialError::Protocol("the agent's first frame is not a hello".into())),
        Some(Err(e)) => Err(DialError::Unreachable(e.to_string())),
        None => Err(DialError::Unreachable("closed before the hello".into())),
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
