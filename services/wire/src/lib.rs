//! The protocol between the control plane (the connector) and the agents.
//!
//! The connector dials the agent: TCP, then TLS (the agent's self-signed certificate, pinned by
//! its thumbprint), then a WebSocket upgrade. The upgrade request carries the protocol version
//! ([`PROTOCOL_HEADER`]) and a proof that the caller knows the node's token ([`auth`]); the agent
//! answers a version mismatch with [`STATUS_INCOMPATIBLE`] and a bad proof with 401, before any
//! WebSocket state exists. After the upgrade every frame is one JSON [`message`], at most
//! [`MAX_FRAME_BYTES`] long; the first the agent sends is [`message::FromAgent::Hello`]. A
//! node's desired state goes in as many frames as it needs ([`message::desired_state_parts`]),
//! and each deployment in it is judged on its own ([`message::check_deployment`]), so nothing
//! one deployment carries can keep a node from getting the rest.

pub mod auth;
pub mod message;

pub use auth::{AuthProof, NodeToken, TokenHash};
pub use message::{FromAgent, RequestId, ToAgent};
pub use nullops_events::thumbprint::Thumbprint;

/// The protocol this build speaks. Mixed versions are refused, never half-understood.
/// 2: desired states in parts (`more`), deployments refused one by one.
/// 3: images prefetched ahead of deployments (`Prefetch`, `Images`).
pub const PROTOCOL_VERSION: u32 = 3;

/// Upgrade request header: the protocol version the control plane speaks. The agent answers a
/// mismatch with [`STATUS_INCOMPATIBLE`] and the same header naming its own version.
pub const PROTOCOL_HEADER: &str = "nullops-protocol";

/// Upgrade request header: the hex [`AuthProof`] of the node token.
pub const PROOF_HEADER: &str = "nullops-proof";

/// The HTTP status an agent answers a protocol mismatch with (426 Upgrade Required).
pub const STATUS_INCOMPATIBLE: u16 = 426;

/// The path of the agent's WebSocket endpoint.
pub const AGENT_PATH: &str = "/agent/v1";

/// Largest encoded deployment a desired state may carry: its plan and the project's secrets at
/// their limits ([`message::MAX_SECRETS_BYTES`], escaped as JSON) fit with room to spare.
pub const MAX_DEPLOYMENT_BYTES: usize = 8 << 20;

/// Largest frame either side accepts: one part of a desired state holds at least one deployment
/// and its envelope.
pub const MAX_FRAME_BYTES: usize = MAX_DEPLOYMENT_BYTES + (64 << 10);

/// Both sides size their WebSocket buffers explicitly: small read buffers keep thousands of idle
/// connections cheap, and the write buffer bounds what a slow peer can make us hold.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
pub const MAX_WRITE_BUFFER_BYTES: usize = 2 * MAX_FRAME_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("frame is not a message of protocol {PROTOCOL_VERSION}: {0}")]
    Malformed(String),
    #[error("message is invalid: {0}")]
    Invalid(String),
}

/// The WebSocket limits both sides use: explicit buffers and the frame size limit. (Feature
/// `socket`, which only the agent and the connector turn on.)
#[cfg(feature = "socket")]
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}
