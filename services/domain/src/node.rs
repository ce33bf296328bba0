//! Nodes (stream `node-<node id>`): a Docker host in an environment, the token its agent
//! accepts, the certificate pinned on that agent, and its connection.
//!
//! Admins register and manage nodes; the connector (the platform itself) reports what it finds
//! when it dials. Trust is decided here: the first certificate seen is pinned, a different one
//! makes the node untrusted until an admin approves exactly that thumbprint, and a node that is
//! not trusted, enabled and holding a token can never be recorded as connected.

use std::net::IpAddr;

use nullops_events::catalog::Sealed;
use nullops_events::node::*;
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{Decider, DnsLabel, DomainError, DomainName, Issuer};

pub use nullops_events::thumbprint::Thumbprint as CertThumbprint;

/// Where an agent listens: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHost(String);

impl NodeHost {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let raw = raw.trim();
        if let Ok(ip) = raw.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(NodeHost(ip.to_string()));
        }
        DomainName::parse("host", raw)
            .map(|d| NodeHost(d.as_str().to_owned()))
            .map_err(|_| DomainError::invalid("host", format!("{raw:?} is neither an IP address nor a host name")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The purpose a node's token hash is sealed under: a ciphertext cannot be passed off as
/// another node's.
pub fn token_purpose(node_id: Uuid) -> String {
    format!("node-token:{node_id}")
}

pub struct NodeCommand {
    pub by: Issuer,
    pub action: NodeAction,
}

pub enum NodeAction {
    /// `environment_exists`: whether the catalog holds `environment`, as the caller read it.
    Add {
        node_id: Uuid,
        environment: DnsLabel,
        environment_exists: bool,
        host: NodeHost,
        port: u16,
        token_hash: Sealed,
    },
    /// The agent moved: a new address for the same node (and the same pinned certificate).
    Move {
        host: NodeHost,
        port: u16,
    },
    RotateToken {
        token_hash: Sealed,
    },
    RevokeToken,
    Disable,
    Enable,
    /// `deployments`: how many deployments hold capacity on the node, as the caller read it.
    Remove {
        deployments: usize,
    },
    ApproveThumbprint {
        thumbprint: CertThumbprint,
    },
    /// The connector's reports.
    Presented {
        thumbprint: CertThumbprint,
    },
    Connected {
        agent_version: String,
        protocol: u32,
    },
    Disconnected {
        reason: String,
    },
    Refused(Refusal),
}

/// The state of the connection as last recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Link {
    /// Never reached yet: a dial that fails keeps it so (the reason is recorded all the same).
    #[default]
    Pending,
    Online,
    Offline,
    Refused(Refusal),
}

/// What a node shows: one status, the most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Disabled,
    Revoked,
    Untrusted,
    TokenRefused,
    Incompatible,
    Pending,
    Online,
    Offline,
}

impl NodeStatus {
    /// Its name in metrics' labels.
    pub const fn name(self) -> &'static str {
        match self {
            NodeStatus::Disabled => "disabled",
            NodeStatus::Revoked => "revoked",
            NodeStatus::Untrusted => "untrusted",
            NodeStatus::TokenRefused => "token_refused",
            NodeStatus::Incompatible => "incompatible",
            NodeStatus::Pending => "pending",
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub registration: Option<NodeAdded>,
    pub removed: bool,
    pub enabled: bool,
    /// The data key of the sealed token hash; `None` once revoked.
    pub token: Option<Sealed>,
    pub pinned: Option<String>,
    /// A thumbprint presented instead of the pinned one, awaiting an admin.
    pub pending: Option<String>,
    pub link: Link,
}

impl NodeState {
    pub fn exists(&self) -> bool {
        self.registration.is_some() && !self.removed
    }

    /// Whether the connector may command this node once connected.
    pub fn trusted(&self) -> bool {
        self.pending.is_none()
    }

    /// Whether the connector should dial this node at all.
    pub fn dialable(&self) -> bool {
        self.exists() && self.enabled && self.token.is_some() && self.trusted()
    }

    pub fn status(&self) -> NodeStatus {
        status(self.enabled, self.token.is_some(), self.pending.is_some(), self.link)
    }
}

/// The status rule, shared with the read model.
pub fn status(enabled: bool, has_token: bool, untrusted: bool, link: Link) -> NodeStatus {
    match (enabled, has_token, untrusted, link) {
        (false, ..) => NodeStatus::Disabled,
        (_, false, ..) => NodeStatus::Revoked,
        (_, _, true, _) => NodeStatus::Untrusted,
        (.., Link::Refused(Refusal::Token)) => NodeStatus::TokenRefused,
        (.., Link::Refused(Refusal::Incompatible { .. })) => NodeStatus::Incompatible,
        (.., Link::Pending) => NodeStatus::Pending,
        (.., Link::Online) => NodeStatus::Online,
        (.., Link::Offline) => NodeStatus::Offline,
    }
}

pub struct Node;

impl Decider for Node {
    type Command = NodeCommand;
    type Event = NodeEvent;
    type State = NodeState;
    const KIND: &'static str = "node";

    fn decide(command: &NodeCommand, state: &NodeState) -> Result<Vec<NodeEvent>, DomainError> {
        use NodeAction::*;
        let connector_report = matches!(command.action, Presented { .. } | Connected { .. } | Disconnected { .. } | Refused(_));
        if connector_report {
            if command.by != Issuer::System {
                return Err(DomainError::Forbidden("only the connector reports on node connections".into()));
            }
        } else if !command.by.is_admin_or_system() {
            return Err(DomainError::Forbidden("only admins manage nodes".into()));
        }
        if let Add { node_id, environment, environment_exists, host, port, token_hash } = &command.action {
            if state.registration.is_some() {
                return Err(DomainError::AlreadyExists(format!("node {node_id} exists")));
            }
            if !environment_exists {
                return Err(DomainError::NotFound(format!("no environment named {environment}")));
            }
            if *port == 0 {
                return Err(DomainError::invalid("port", "use a TCP port from 1 to 65535"));
            }
            return Ok(vec![NodeEvent::Added(NodeAdded {
                node_id: *node_id,
                environment: environment.as_str().to_owned(),
                host: host.as_str().to_owned(),
                port: *port,
                token_hash: token_hash.clone(),
            })]);
        }
        if !state.exists() {
            return Err(DomainError::NotFound("no such node".into()));
        }
        let none = Ok(vec![]);
        match &command.action {
            Add { .. } => unreachable!("handled above"),
            Move { host, port } => {
                let r = state.registration.as_ref().expect("exists");
                if *port == 0 {
                    return Err(DomainError::invalid("port", "use a TCP port from 1 to 65535"));
                }
                if r.host == host.as_str() && r.port == *port {
                    return none;
                }
                Ok(vec![NodeEvent::Moved(NodeMoved { host: host.as_str().to_owned(), port: *port })])
            }
            RotateToken { token_hash } => {
                Ok(vec![NodeEvent::TokenRotated(NodeTokenRotated { token_hash: token_hash.clone(), retired_key: state.token.as_ref().map(|t| t.key_id) })])
            }
            RevokeToken => match &state.token {
                Some(t) => Ok(vec![NodeEvent::TokenRevoked(NodeTokenRevoked { retired_key: t.key_id })]),
                None => Err(DomainError::Conflict("the node's token is already revoked; rotate it to issue a new one".into())),
            },
            Disable if state.enabled => Ok(vec![NodeEvent::Disabled(NodeToggled {})]),
            Enable if !state.enabled => Ok(vec![NodeEvent::Enabled(NodeToggled {})]),
            Disable | Enable => none,
            Remove { deployments } if *deployments > 0 => Err(DomainError::Conflict(format!(
                "the node runs {deployments} deployment(s); delete them (or let them expire) first, or disable the node to keep new ones off it"
            ))),
            Remove { .. } => Ok(vec![NodeEvent::Removed(NodeRemoved { retired_key: state.token.as_ref().map(|t| t.key_id) })]),
            ApproveThumbprint { thumbprint } => {
                let thumbprint = thumbprint.to_string();
                match &state.pending {
                    Some(p) if *p == thumbprint => Ok(vec![NodeEvent::ThumbprintApproved(Thumbprint { thumbprint })]),
                    Some(p) => Err(DomainError::Conflict(format!("the node presents thumbprint {p}, not {thumbprint}; approve what it presents"))),
                    None => Err(DomainError::Conflict("the node has no thumbprint awaiting approval".into())),
                }
            }
            Presented { thumbprint } => {
                let presented = thumbprint.to_string();
                match (&state.pinned, &state.pending) {
                    (None, _) => Ok(vec![NodeEvent::ThumbprintPinned(Thumbprint { thumbprint: presented })]),
                    // The pinned certificate is back: trusted again, nothing to approve.
                    (Some(pinned), Some(_)) if *pinned == presented => Ok(vec![NodeEvent::ThumbprintPinned(Thumbprint { thumbprint: presented })]),
                    (Some(pinned), _) if *pinned == presented => none,
                    (Some(_), Some(pending)) if *pending == presented => none,
                    (Some(_), _) => Ok(vec![NodeEvent::ThumbprintRejected(Thumbprint { thumbprint: presented })]),
                }
            }
            Connected { agent_version, protocol } => {
                if !state.dialable() {
                    return Err(DomainError::Conflict("the node may not be connected now (disabled, revoked or untrusted)".into()));
                }
                if state.link == Link::Online {
                    return none;
                }
                Ok(vec![NodeEvent::Connected(NodeConnected { agent_version: agent_version.clone(), protocol: *protocol })])
            }
            Disconnected { reason } if state.link != Link::Offline => Ok(vec![NodeEvent::Disconnected(NodeDisconnected { reason: reason.clone() })]),
            Disconnected { .. } => none,
            Refused(refusal) if state.link != Link::Refused(*refusal) => Ok(vec![NodeEvent::Refused(NodeRefused { refusal: *refusal })]),
            Refused(_) => none,
        }
    }

    fn evolve(mut state: NodeState, event: &NodeEvent) -> NodeState {
        match event {
            NodeEvent::Added(a) => {
                state = NodeState { registration: Some(a.clone()), enabled: true, token: Some(a.token_hash.clone()), ..NodeState::default() };
            }
            NodeEvent::Moved(m) => {
                if let Some(r) = state.registration.as_mut() {
                    r.host = m.host.clone();
                    r.port = m.port;
                }
            }
            NodeEvent::TokenRotated(r) => state.token = Some(r.token_hash.clone()),
            NodeEvent::TokenRevoked(_) => state.token = None,
            NodeEvent::Disabled(_) => state.enabled = false,
            NodeEvent::Enabled(_) => state.enabled = true,
            NodeEvent::Removed(_) => state.removed = true,
            NodeEvent::ThumbprintPinned(t) | NodeEvent::ThumbprintApproved(t) => {
                state.pinned = Some(t.thumbprint.clone());
                state.pending = None;
            }
            NodeEvent::ThumbprintRejected(t) => state.pending = Some(t.thumbprint.clone()),
            NodeEvent::Connected(_) => state.link = Link::Online,
            // A node never reached is still pending, not offline.
            NodeEvent::Disconnected(_) if state.link == Link::Pending => {}
            NodeEvent::Disconnected(_) => state.link = Link::Offline,
            NodeEvent::Refused(r) => state.link = Link::Refused(r.refusal),
        }
        state
    }

    fn select(event: DomainEvent) -> Option<NodeEvent> {
        match event {
            DomainEvent::Node(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fold, Principal, Username};
    use nullops_events::identity::Role;

    fn admin() -> Issuer {
        Issuer::User(Principal { username: Username::parse("root").unwrap(), role: Role::Admin })
    }
    fn user() -> Issuer {
        Issuer::User(Principal { username: Username::parse("bob").unwrap(), role: Role::User })
    }
    fn sealed(key: u128) -> Sealed {
        Sealed { key_id: Uuid::from_u128(key), nonce: vec![0; 12], ciphertext: vec![1; 48] }
    }
    fn tp(n: u8) -> CertThumbprint {
        CertThumbprint::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }
    fn added() -> NodeEvent {
        NodeEvent::Added(NodeAdded { node_id: Uuid::nil(), environment: "staging".into(), host: "10.0.0.7".into(), port: 5000, token_hash: sealed(1) })
    }
    fn when(given: &[NodeEvent], by: Issuer, action: NodeAction) -> Result<Vec<NodeEvent>, DomainError> {
        Node::decide(&NodeCommand { by, action }, &fold::<Node>(given))
    }
    fn thumb(n: u8) -> Thumbprint {
        Thumbprint { thumbprint: tp(n).to_string() }
    }

    #[test]
    fn only_admins_add_nodes_and_only_to_known_environments() {
        let add = |exists| NodeAction::Add {
            node_id: Uuid::nil(),
            environment: DnsLabel::parse("environment", "staging").unwrap(),
            environment_exists: exists,
            host: NodeHost::parse("10.0.0.7").unwrap(),
            port: 5000,
            token_hash: sealed(1),
        };
        assert_eq!(when(&[], admin(), add(true)), Ok(vec![added()]));
        assert!(matches!(when(&[], user(), add(true)), Err(DomainError::Forbidden(_))));
        assert!(matches!(when(&[], admin(), add(false)), Err(DomainError::NotFound(_))));
        assert!(matches!(when(&[added()], admin(), add(true)), Err(DomainError::AlreadyExists(_))));
    }

    #[test]
    fn hosts_are_addresses_or_names() {
        assert_eq!(NodeHost::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(NodeHost::parse("Node-1.example.com").unwrap().as_str(), "node-1.example.com");
        for bad in ["", "a b", "http://x", "-x"] {
            assert!(NodeHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_certificate_is_pinned_and_a_different_one_untrusts_until_approved() {
        let pinned = NodeEvent::ThumbprintPinned(thumb(1));
        assert_eq!(when(&[added()], Issuer::System, NodeAction::Presented { thumbprint: tp(1) }), Ok(vec![pinned.clone()]));
        assert_eq!(when(&[added(), pinned.clone()], Issuer::System, NodeAction::Presented { thumbprint: tp(1) }), Ok(vec![]));
        let rejected = NodeEvent::ThumbprintRejected(thumb(2));
        let given = [added(), pinned.clone(), rejected.clone()];
        assert_eq!(when(&given[..2], Issuer::System, NodeAction::Presented { thumbprint: tp(2) }), Ok(vec![rejected.clone()]));
        // Presented again, not rejected again; never accepted on its own.
        assert_eq!(when(&given, Issuer::System, NodeAction::Presented { thumbprint: tp(2) }), Ok(vec![]));
        assert_eq!(fold::<Node>(&given).status(), NodeStatus::Untrusted);
        assert!(!fold::<Node>(&given).dialable());
        assert!(matches!(when(&given, Issuer::System, NodeAction::Connected { agent_version: "1".into(), protocol: 1 }), Err(DomainError::Conflict(_))));
        // An admin approves exactly what is presented.
        assert!(matches!(when(&given, admin(), NodeAction::ApproveThumbprint { thumbprint: tp(3) }), Err(DomainError::Conflict(_))));
        assert!(matches!(when(&given, user(), NodeAction::ApproveThumbprint { thumbprint: tp(2) }), Err(DomainError::Forbidden(_))));
        let approved = when(&given, admin(), NodeAction::ApproveThumbprint { thumbprint: tp(2) }).unwrap();
        assert_eq!(approved, vec![NodeEvent::ThumbprintApproved(thumb(2))]);
        let after: Vec<NodeEvent> = given.iter().cloned().chain(approved).collect();
        assert_eq!(fold::<Node>(&after).pinned, Some(tp(2).to_string()));
        assert!(fold::<Node>(&after).dialable());
    }

    #[test]
    fn the_pinned_certificate_coming_back_restores_trust() {
        let given = [added(), NodeEvent::ThumbprintPinned(thumb(1)), NodeEvent::ThumbprintRejected(thumb(2))];
        assert_eq!(when(&given, Issuer::System, NodeAction::Presented { thumbprint: tp(1) }), Ok(vec![NodeEvent::ThumbprintPinned(thumb(1))]));
    }

    #[test]
    fn only_the_connector_reports_and_only_transitions_are_recorded() {
        let up = NodeAction::Connected { agent_version: "0.1.0".into(), protocol: 1 };
        assert!(matches!(when(&[added()], admin(), NodeAction::Disconnected { reason: "x".into() }), Err(DomainError::Forbidden(_))));
        let connected = when(&[added()], Issuer::System, up).unwrap();
        assert_eq!(connected.len(), 1);
        let online: Vec<NodeEvent> = [added()].into_iter().chain(connected).collect();
        assert_eq!(fold::<Node>(&online).status(), NodeStatus::Online);
        let again = NodeAction::Connected { agent_version: "0.1.0".into(), protocol: 1 };
        assert_eq!(when(&online, Issuer::System, again), Ok(vec![]));
        let down = when(&online, Issuer::System, NodeAction::Disconnected { reason: "no heartbeat".into() }).unwrap();
        let offline: Vec<NodeEvent> = online.iter().cloned().chain(down).collect();
        assert_eq!(fold::<Node>(&offline).status(), NodeStatus::Offline);
        assert_eq!(when(&offline, Issuer::System, NodeAction::Disconnected { reason: "still".into() }), Ok(vec![]));
        let refused = when(&offline, Issuer::System, NodeAction::Refused(Refusal::Incompatible { agent_protocol: 2 })).unwrap();
        let incompatible: Vec<NodeEvent> = offline.iter().cloned().chain(refused).collect();
        assert_eq!(fold::<Node>(&incompatible).status(), NodeStatus::Incompatible);
    }

    #[test]
    fn a_node_can_move_and_keeps_its_trust() {
        let given = [added(), NodeEvent::ThumbprintPinned(thumb(1))];
        let moved = when(&given, Issuer::System, NodeAction::Move { host: NodeHost::parse("127.0.0.1").unwrap(), port: 5001 }).unwrap();
        assert_eq!(moved, vec![NodeEvent::Moved(NodeMoved { host: "127.0.0.1".into(), port: 5001 })]);
        let after: Vec<NodeEvent> = given.iter().cloned().chain(moved).collect();
        let state = fold::<Node>(&after);
        assert_eq!((state.registration.as_ref().unwrap().port, state.pinned.is_some()), (5001, true));
        assert_eq!(when(&after, Issuer::System, NodeAction::Move { host: NodeHost::parse("127.0.0.1").unwrap(), port: 5001 }), Ok(vec![]));
    }

    #[test]
    fn rotation_retires_the_old_key_and_revocation_leaves_no_token() {
        let rotated = when(&[added()], admin(), NodeAction::RotateToken { token_hash: sealed(2) }).unwrap();
        assert_eq!(rotated, vec![NodeEvent::TokenRotated(NodeTokenRotated { token_hash: sealed(2), retired_key: Some(Uuid::from_u128(1)) })]);
        let revoked = when(&[added()], admin(), NodeAction::RevokeToken).unwrap();
        let given: Vec<NodeEvent> = [added()].into_iter().chain(revoked).collect();
        assert_eq!(fold::<Node>(&given).status(), NodeStatus::Revoked);
        assert!(!fold::<Node>(&given).dialable());
        assert!(matches!(when(&given, admin(), NodeAction::RevokeToken), Err(DomainError::Conflict(_))));
        let reissued = when(&given, admin(), NodeAction::RotateToken { token_hash: sealed(3) }).unwrap();
        assert!(matches!(&reissued[..], [NodeEvent::TokenRotated(NodeTokenRotated { retired_key: None, .. })]));
    }

    #[test]
    fn disabled_nodes_are_not_dialled_and_toggling_is_idempotent() {
        let disabled = [added(), NodeEvent::Disabled(NodeToggled {})];
        assert!(!fold::<Node>(&disabled).dialable());
        assert_eq!(fold::<Node>(&disabled).status(), NodeStatus::Disabled);
        assert_eq!(when(&disabled, admin(), NodeAction::Disable), Ok(vec![]));
        assert_eq!(when(&disabled, admin(), NodeAction::Enable), Ok(vec![NodeEvent::Enabled(NodeToggled {})]));
    }

    #[test]
    fn removed_nodes_are_gone_and_their_token_key_retired() {
        assert!(matches!(when(&[added()], admin(), NodeAction::Remove { deployments: 2 }), Err(DomainError::Conflict(_))));
        let removed = when(&[added()], admin(), NodeAction::Remove { deployments: 0 }).unwrap();
        assert_eq!(removed, vec![NodeEvent::Removed(NodeRemoved { retired_key: Some(Uuid::from_u128(1)) })]);
        let given: Vec<NodeEvent> = [added()].into_iter().chain(removed).collect();
        assert!(matches!(when(&given, admin(), NodeAction::Enable), Err(DomainError::NotFound(_))));
        assert!(matches!(when(&given, Issuer::System, NodeAction::Disconnected { reason: "x".into() }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn a_node_never_reached_stays_pending_when_a_dial_fails() {
        let failed = when(&[added()], Issuer::System, NodeAction::Disconnected { reason: "connection refused".into() }).unwrap();
        assert_eq!(failed.len(), 1, "the reason is recorded");
        let given: Vec<NodeEvent> = [added()].into_iter().chain(failed).collect();
        assert_eq!(fold::<Node>(&given).status(), NodeStatus::Pending);
        // Once reached, a lost connection is OFFLINE.
        let online: Vec<NodeEvent> = given.into_iter().chain([NodeEvent::Connected(NodeConnected { agent_version: "1".into(), protocol: 2 })]).collect();
        let lost = when(&online, Issuer::System, NodeAction::Disconnected { reason: "gone".into() }).unwrap();
        assert_eq!(fold::<Node>(&[online, lost].concat()).status(), NodeStatus::Offline);
    }
}
