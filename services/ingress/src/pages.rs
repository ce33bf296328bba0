//! What the ingress answers itself: why a request was not forwarded, as a small HTML page with a
//! stable code in the `x-nullops-error` header. The pages name only what the client sent (its
//! host) and public facts (a deployment's state), never a node address or port.

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::framing::{Ambiguity, HeadError, MAX_HEAD, MAX_HEADERS, MAX_URI};
use crate::HostError;

/// A response body: the upstream's, streamed, or one of ours.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Why the ingress answers a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The Host header (or absolute-form target) is missing or not a DNS name.
    BadHost(HostError),
    /// The body's framing is ambiguous (request smuggling).
    Ambiguous(Ambiguity),
    /// CONNECT: this is not a forward proxy.
    NotAProxy,
    /// No environment, deployment or service of that name.
    UnknownHost(String),
    NotRunning {
        host: String,
        state: String,
    },
    NodeOffline {
        host: String,
    },
    /// The service's container does not take the connection.
    UpstreamUnavailable {
        host: String,
    },
    /// The service did not answer in time.
    UpstreamTimeout {
        host: String,
    },
    /// The request's head is not valid HTTP/1.1, or is too large (refused before it is read).
    BadHead(HeadError),
    /// The request's body broke off or is malformed (a chunk that is not a chunk).
    MalformedBody,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadHost(_) | Refusal::Ambiguous(_) | Refusal::MalformedBody => StatusCode::BAD_REQUEST,
            Refusal::BadHead(HeadError::Malformed(_)) => StatusCode::BAD_REQUEST,
            Refusal::BadHead(HeadError::UriTooLong) => StatusCode::URI_TOO_LONG,
            Refusal::BadHead(HeadError::HeadersTooLarge) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::NotAProxy => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::UnknownHost(_) => StatusCode::NOT_FOUND,
            Refusal::NotRunning { .. } | Refusal::NodeOffline { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable code in `x-nullops-error`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadHost(_) => "BAD_HOST",
            Refusal::Ambiguous(_) => "AMBIGUOUS_FRAMING",
            Refusal::NotAProxy => "NOT_A_PROXY",
            Refusal::UnknownHost(_) => "UNKNOWN_HOST",
            Refusal::NotRunning { .. } => "NOT_RUNNING",
            Refusal::NodeOffline { .. } => "NODE_OFFLINE",
            Refusal::UpstreamUnavailable { .. } => "SERVICE_UNAVAILABLE",
            Refusal::UpstreamTimeout { .. } => "SERVICE_TIMEOUT",
            Refusal::BadHead(HeadError::Malformed(_)) => "MALFORMED_REQUEST",
            Refusal::BadHead(HeadError::UriTooLong) => "URI_TOO_LONG",
            Refusal::BadHead(HeadError::HeadersTooLarge) => "HEADERS_TOO_LARGE",
            Refusal::MalformedBody => "MALFORMED_BODY",
        }
    }

    /// A sentence a person can act on.
    pub fn message(&self) -> String {
        match self {
            Refusal::BadHost(e) => format!("This address cannot be served: {e}. Use http://SERVICE.DEPLOYMENT.ENVIRONMENT.DOMAIN/."),
            Refusal::Ambiguous(a) => format!("Refused: {}, so where its body ends is ambiguous. Send one or the other.", a.describe()),
            Refusal::NotAProxy => "This is the NullOps ingress, not a forward proxy: CONNECT is not served.".to_owned(),
            Refusal::UnknownHost(host) => {
                format!("No service is deployed at {host}. Check the service, deployment and environment names, or whether the deployment was deleted.")
            }
            Refusal::NotRunning { host, state } => format!("The deployment serving {host} is {state}, not RUNNING. Its page in NullOps shows why."),
            Refusal::NodeOffline { host } => format!("The node running the deployment serving {host} is offline. It is served again when the node reconnects."),
            Refusal::UpstreamUnavailable { host } => format!("The service at {host} does not take connections. Its health and logs in NullOps show why."),
            Refusal::UpstreamTimeout { host } => format!("The service at {host} did not answer in time."),
            Refusal::BadHead(HeadError::Malformed(why)) => format!("The request is not valid HTTP/1.1 ({why}), so it was not forwarded."),
            Refusal::BadHead(HeadError::UriTooLong) => format!("The request's target is longer than {MAX_URI} bytes, so it was not forwarded."),
            Refusal::BadHead(HeadError::HeadersTooLarge) => {
                format!("The request's headers are over {MAX_HEAD} bytes or {MAX_HEADERS} fields, so it was not forwarded.")
            }
            Refusal::MalformedBody => {
                "The request's body is malformed (a chunked body whose chunks are not chunks, or one cut short), so the service could not take it.".to_owned()
            }
        }
    }

    /// Refusals of a malformed request close the connection: what follows cannot be trusted.
    fn closes(&self) -> bool {
        matches!(self, Refusal::BadHost(_) | Refusal::Ambiguous(_) | Refusal::NotAProxy | Refusal::BadHead(_) | Refusal::MalformedBody)
    }

    fn page(&self) -> String {
        let status = self.status();
        let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        format!(
            "<!doctype html>\n<html lang=\"en\"><meta charset=\"utf-8\"><title>{title}</title>\
             <body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto\">\
             <h1>{title}</h1><p>{}</p><p><small>NullOps ingress · {}</small></p></body></html>\n",
            escape(&self.message()),
            self.code()
        )
    }

    /// The whole answer as bytes, for a connection hyper no longer serves (a head it was never
    /// given); it closes the connection.
    pub fn raw(&self) -> Vec<u8> {
        let status = self.status();
        let page = self.page();
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\nx-nullops-error: {}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.code(),
            page.len()
        );
        [head.into_bytes(), page.into_bytes()].concat()
    }

    pub fn response(&self) -> Response<Body> {
        let status = self.status();
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(self.page()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-nullops-error", HeaderValue::from_static(self.code()));
        if self.closes() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_status_code_and_escaped_text() {
        let unknown = Refusal::UnknownHost("web.<b>.x".into()).response();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(unknown.headers()["x-nullops-error"], "UNKNOWN_HOST");
        assert!(!unknown.headers().contains_key(CONNECTION));
        let refused = Refusal::Ambiguous(Ambiguity::DuplicateContentLength).response();
        assert_eq!((refused.status(), &refused.headers()[CONNECTION]), (StatusCode::BAD_REQUEST, &HeaderValue::from_static("close")));
        assert_eq!(escape("web.<b>.x & 'y'"), "web.&lt;b&gt;.x &amp; &#39;y&#39;");
    }
}
