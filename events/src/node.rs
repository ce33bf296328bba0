//! Node events (stream `node-<node id>`): a Docker node's registration, its token, the trust
//! pinned on its agent's certificate, and every change of its connection.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Sealed;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Added(NodeAdded),
    Moved(NodeMoved),
    TokenRotated(NodeTokenRotated),
    TokenRevoked(NodeTokenRevoked),
    Disabled(NodeToggled),
    Enabled(NodeToggled),
    Removed(NodeRemoved),
    ThumbprintPinned(Thumbprint),
    ThumbprintRejected(Thumbprint),
    ThumbprintApproved(Thumbprint),
    Connected(NodeConnected),
    Disconnected(NodeDisconnected),
    Refused(NodeRefused),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAdded {
    pub node_id: Uuid,
    pub environment: String,
    pub host: String,
    pub port: u16,
    /// SHA-256 of the node token, sealed: the token itself is never stored.
    pub token_hash: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMoved {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTokenRotated {
    pub token_hash: Sealed,
    /// The data key of the previous token hash (none after a revocation): destroy it.
    pub retired_key: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTokenRevoked {
    pub retired_key: Uuid,
}

/// Disabling or enabling a node; the node is the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeToggled {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoved {
    pub retired_key: Option<Uuid>,
}

/// A certificate thumbprint: SHA-256 of the DER certificate, 64 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbprint {
    pub thumbprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConnected {
    pub agent_version: String,
    pub protocol: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDisconnected {
    /// Why the link went down, for people: "no heartbeat for 3 s", "connection refused".
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRefused {
    pub refusal: Refusal,
}

/// Why an agent that answered refused the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The agent does not accept the node's current token.
    Token,
    /// The agent speaks protocol `agent_protocol`, not ours.
    Incompatible { agent_protocol: u32 },
}
