//! What a person reads when the Docker engine refused or failed a call: our sentences, by kind
//! of failure, never the engine's or bollard's text (that goes to the agent's log, where an
//! operator looks for it). A step's failure reason, a deployment's and a prefetch's carry these.

use bollard::errors::Error;

/// A Docker engine call that failed, as a person reads it (a step's, a deployment's or a
/// prefetch's failure reason): what was attempted and why, in our words. The engine's own
/// answer goes to the agent's log when the error is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{what}: {why} (the agent's log has the engine's answer)")]
    Refused { what: String, why: Why },
    #[error("{what}: the connection to the Docker engine broke")]
    ConnectionBroke { what: String },
    #[error("cannot create the deployment's network: every /24 of {pool} is taken: the node has as many deployment networks as its pool allows")]
    PoolExhausted { pool: String },
    #[error("cannot create the deployment's network: {subnet} overlaps a network the engine has")]
    SubnetOverlaps { subnet: String },
    #[error("pulling {image} took over {secs} s")]
    PullTimedOut { image: String, secs: u64 },
}

/// Why the engine refused or failed a call, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("the engine or the registry has no such thing")]
    NoSuchThing,
    #[error("the registry refused the credentials (or has none for it)")]
    Credentials,
    #[error("it conflicts with something the engine already has")]
    Conflict,
    #[error("the engine refused the request as invalid")]
    Invalid,
    #[error("the engine failed to do it (it may be out of disk, or unable to reach the registry)")]
    EngineFailed,
    #[error("the engine did not answer in time")]
    TimedOut,
    #[error("the Docker engine cannot be reached")]
    Unreachable,
    #[error("the engine refused it")]
    Refused,
}

/// `what` (e.g. "cannot pull nullops/demo:v1") and why, in our words; the engine's answer is
/// logged.
pub fn engine_refused(what: &str, e: &Error) -> EngineError {
    tracing::warn!(error = %e, "{what}");
    let why = match e {
        Error::DockerResponseServerError { status_code: 404, .. } => Why::NoSuchThing,
        Error::DockerResponseServerError { status_code: 401 | 403, .. } => Why::Credentials,
        Error::DockerResponseServerError { status_code: 409, .. } => Why::Conflict,
        Error::DockerResponseServerError { status_code: 400, .. } => Why::Invalid,
        Error::DockerResponseServerError { status_code: 500.., .. } => Why::EngineFailed,
        Error::RequestTimeoutError => Why::TimedOut,
        Error::IOError { .. } | Error::HyperResponseError { .. } | Error::SocketNotFoundError(_) => Why::Unreachable,
        _ => Why::Refused,
    };
    EngineError::Refused { what: what.to_owned(), why }
}

/// `what` failed on the connection to the engine; the error is logged.
pub fn io_lost(what: &str, e: &std::io::Error) -> EngineError {
    tracing::warn!(error = %e, "{what}");
    EngineError::ConnectionBroke { what: what.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_reads_our_sentence_never_the_engines_text() {
        let e = Error::DockerResponseServerError { status_code: 404, message: "pull access denied for x, repository does not exist".into() };
        let said = engine_refused("cannot pull x:1", &e).to_string();
        assert_eq!(said, "cannot pull x:1: the engine or the registry has no such thing (the agent's log has the engine's answer)");
        assert!(!said.contains("pull access denied"));
        let auth = Error::DockerResponseServerError { status_code: 401, message: "unauthorized: authentication required".into() };
        assert_eq!(engine_refused("cannot pull x:1", &auth), EngineError::Refused { what: "cannot pull x:1".into(), why: Why::Credentials });
        assert!(engine_refused("cannot start", &Error::RequestTimeoutError).to_string().contains("did not answer in time"));
    }
}
