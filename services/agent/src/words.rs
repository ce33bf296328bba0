//! What a person reads when the Docker engine refused or failed a call: our sentences, by kind
//! of failure, never the engine's or bollard's text (that goes to the agent's log, where an
//! operator looks for it). A step's failure reason, a deployment's and a prefetch's carry these.

use bollard::errors::Error;

/// `what` (e.g. "cannot pull nullops/demo:v1") and why, in our words; the engine's answer is
/// logged.
pub fn engine_refused(what: &str, e: &Error) -> String {
    tracing::warn!(error = %e, "{what}");
    let why = match e {
        Error::DockerResponseServerError { status_code: 404, .. } => "the engine or the registry has no such thing",
        Error::DockerResponseServerError { status_code: 401 | 403, .. } => "the registry refused the credentials (or has none for it)",
        Error::DockerResponseServerError { status_code: 409, .. } => "it conflicts with something the engine already has",
        Error::DockerResponseServerError { status_code: 400, .. } => "the engine refused the request as invalid",
        Error::DockerResponseServerError { status_code: 500.., .. } => "the engine failed to do it (it may be out of disk, or unable to reach the registry)",
        Error::RequestTimeoutError => "the engine did not answer in time",
        Error::IOError { .. } | Error::HyperResponseError { .. } | Error::SocketNotFoundError(_) => "the Docker engine cannot be reached",
        _ => "the engine refused it",
    };
    format!("{what}: {why} (the agent's log has the engine's answer)")
}

/// `what` failed on the connection to the engine; the error is logged.
pub fn io_lost(what: &str, e: &std::io::Error) -> String {
    tracing::warn!(error = %e, "{what}");
    format!("{what}: the connection to the Docker engine broke")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_reads_our_sentence_never_the_engines_text() {
        let e = Error::DockerResponseServerError { status_code: 404, message: "pull access denied for x, repository does not exist".into() };
        let said = engine_refused("cannot pull x:1", &e);
        assert_eq!(said, "cannot pull x:1: the engine or the registry has no such thing (the agent's log has the engine's answer)");
        assert!(!said.contains("pull access denied"));
        let auth = Error::DockerResponseServerError { status_code: 401, message: "unauthorized: authentication required".into() };
        assert!(engine_refused("cannot pull x:1", &auth).contains("refused the credentials"));
        assert!(engine_refused("cannot start", &Error::RequestTimeoutError).contains("did not answer in time"));
    }
}
