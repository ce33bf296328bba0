//! What a person reads when a node's link fails: our sentences, one per kind of failure, never
//! a library's text (that goes to the log, where an operator looks for it). The node's status
//! detail and its `node.disconnected` events carry these.

use std::io::ErrorKind;

use tokio_tungstenite::tungstenite;

/// A failed attempt to open a TCP connection to `address`.
pub fn connect_failed(address: &str, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => format!("nothing accepts connections at {address}: is the agent running, and listening on that address?"),
        ErrorKind::TimedOut => format!("{address} did not answer: a firewall may drop the connection"),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => format!("{address} cannot be reached from the control plane's network"),
        ErrorKind::AddrNotAvailable | ErrorKind::NotFound => format!("{address} does not resolve to an address the control plane can use"),
        ErrorKind::PermissionDenied => format!("the control plane may not connect to {address} (refused by this host's rules)"),
        _ => format!("cannot connect to {address}"),
    }
}

/// A TLS handshake with something at the node's address that failed.
pub fn tls_failed() -> String {
    "the TLS handshake failed: something other than a NullOps agent may be listening on that address".into()
}

/// A WebSocket upgrade over an established TLS connection that failed.
pub fn upgrade_failed() -> String {
    "the agent did not accept the connection's upgrade: it may be another version, or not a NullOps agent".into()
}

/// Why an established link to an agent ended, as a person reads it (the node's status detail
/// and its `node.disconnected` event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkEnded {
    /// The platform could not read what the node should run (its store or read models, or a
    /// sealed value it needs); the cause is in the log.
    #[error("the control plane could not read what this node should run; it tries again shortly (the server's log says why)")]
    DesiredUnavailable,
    #[error("closed by the control plane")]
    ClosedByControlPlane,
    #[error("the agent did not answer a heartbeat within {secs} s")]
    Silent { secs: u64 },
    #[error("the agent read nothing for {secs} s")]
    NotReading { secs: u64 },
    #[error("the agent closed the connection")]
    AgentClosed,
    /// The agent's own words for closing (a NullOps agent's, bounded by the frame).
    #[error("the agent closed the connection: {0}")]
    AgentClosedSaying(String),
    #[error("the connection to the agent was cut without a goodbye: the agent stopped, or the network dropped it")]
    CutWithoutGoodbye,
    #[error("the connection to the agent was cut: the agent stopped, or the network dropped it")]
    Cut,
    #[error("the connection's encryption failed")]
    EncryptionFailed,
    #[error("the agent sent a message larger than allowed")]
    TooLarge,
    #[error("the agent broke the WebSocket protocol")]
    WebSocketBroken,
    /// Ours: what it sent does not follow the link's protocol (`what` in our words).
    #[error("the agent broke the protocol ({0})")]
    ProtocolBroken(&'static str),
    #[error("the connection to the agent failed")]
    Failed,
}

/// An established link that broke, by kind; the library's error is logged by the caller.
pub fn connection_lost(e: &tungstenite::Error) -> LinkEnded {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => LinkEnded::AgentClosed,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => LinkEnded::CutWithoutGoodbye,
        tungstenite::Error::Io(io) if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof) => LinkEnded::Cut,
        // rustls reports a peer that vanished without TLS's close_notify as an I/O error too.
        tungstenite::Error::Io(io) if io.kind() == ErrorKind::Other || io.kind() == ErrorKind::InvalidData => LinkEnded::Cut,
        tungstenite::Error::Tls(_) => LinkEnded::EncryptionFailed,
        tungstenite::Error::Capacity(_) => LinkEnded::TooLarge,
        tungstenite::Error::Utf8(_) | tungstenite::Error::Protocol(_) => LinkEnded::WebSocketBroken,
        _ => LinkEnded::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_ours(text: &str) {
        for library in ["os error", "IO error", "docs.rs", "rustls", "close_notify", "tungstenite", "error sending request"] {
            assert!(!text.contains(library), "{text:?} holds a library's text ({library})");
        }
    }

    #[test]
    fn a_lost_link_reads_as_our_sentence_whatever_the_library_said() {
        let close_notify = std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        let said = connection_lost(&tungstenite::Error::Io(close_notify)).to_string();
        assert!(said.starts_with("the connection to the agent was cut"), "{said}");
        is_ours(&said);
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        let said = connect_failed("10.0.0.5:5000", &refused);
        assert!(said.contains("10.0.0.5:5000") && said.contains("is the agent running"), "{said}");
        is_ours(&said);
        for e in [tungstenite::Error::ConnectionClosed, tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)] {
            is_ours(&connection_lost(&e).to_string());
        }
        is_ours(&tls_failed());
        is_ours(&upgrade_failed());
    }
}
