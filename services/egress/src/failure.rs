//! A failed call as a class of failure, in our words: what the admin can act on, and no more
//! (the library's text, which names addresses, errnos and TLS internals, goes to the log only).

use std::error::Error as _;

use crate::{Refusal, TooManyRedirects};

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("not called: {0}")]
    Refused(Refusal),
    #[error("its host name does not resolve")]
    NoSuchName,
    #[error("connection refused: nothing listens at its address")]
    ConnectionRefused,
    #[error("no answer in time")]
    TimedOut,
    #[error("it closed the connection before answering")]
    Closed,
    #[error("the TLS handshake failed (its certificate, or it does not speak TLS)")]
    Tls,
    #[error("it cannot be reached (no route to its address)")]
    Unreachable,
    #[error("it redirected too many times")]
    Redirects,
    #[error("the request failed before an answer")]
    Failed,
}

/// The class of `e`.
pub fn failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        return Failure::TimedOut;
    }
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(refusal) = inner.downcast_ref::<Refusal>() {
            return match refusal {
                Refusal::NoSuchName { .. } => Failure::NoSuchName,
                r => Failure::Refused(r.clone()),
            };
        }
        if inner.is::<TooManyRedirects>() {
            return Failure::Redirects;
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused => Failure::ConnectionRefused,
                TimedOut => Failure::TimedOut,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Failure::Closed,
                // rustls reports a failed handshake as invalid data.
                InvalidData => Failure::Tls,
                HostUnreachable | NetworkUnreachable | AddrNotAvailable => Failure::Unreachable,
                _ if e.is_connect() => Failure::Unreachable,
                _ => Failure::Failed,
            };
        }
        source = inner.source();
    }
    if e.is_redirect() {
        Failure::Redirects
    } else if e.is_connect() {
        Failure::Unreachable
    } else {
        Failure::Failed
    }
}
