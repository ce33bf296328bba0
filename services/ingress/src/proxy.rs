//! One request through the ingress: check it, route it by host, forward it over a pooled
//! upstream connection, and stream the answer back (or splice the two connections together
//! after a protocol switch).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::forward::{strip_hop_by_hop, upstream_parts, wants_upgrade};
use crate::framing::Verdict;
use crate::live::RouteBook;
use crate::pages::{Body, Refusal};
use crate::{parse_host, Decision, HostError};

/// Bound on connecting to a service's container.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a service's response head (its body may stream for as long as it likes).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per node port, and for how long.
const IDLE_PER_UPSTREAM: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Proxy {
    routes: RouteBook,
    client: Client<HttpConnector, Watched>,
    /// Whether clients reach this listener over TLS (for X-Forwarded-Proto).
    https: bool,
}

impl Proxy {
    pub fn new(routes: RouteBook, https: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_UPSTREAM)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Proxy { routes, client, https }
    }

    /// Answers `request` from `client`; `verdict` is the framing guard's on its head.
    pub async fn serve(&self, request: Request<Incoming>, client: SocketAddr, verdict: Option<Verdict>) -> Response<Body> {
        let started = std::time::Instant::now();
        // The deployment the host names, once the route table knows it (never the host as sent).
        let mut routed = None;
        let response = match self.forward(request, client, verdict, &mut routed).await {
            Ok(response) => response,
            Err(refusal) => refusal.response(),
        };
        let (environment, deployment) = routed.unwrap_or_default();
        let class = nullops_metrics::StatusClass::of(response.status().as_u16());
        // Counted once, for the metrics and the traffic chart alike (always: the chart needs
        // it); timed only when metrics are recorded.
        let took = nullops_metrics::recording().map(|_| started.elapsed());
        nullops_metrics::metrics().ingress.count(&environment, &deployment, class, took);
        response
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
        verdict: Option<Verdict>,
        routed: &mut Option<(String, String)>,
    ) -> Result<Response<Body>, Refusal> {
        if let Some(Err(ambiguity)) = verdict {
            return Err(Refusal::Ambiguous(ambiguity));
        }
        if request.method() == Method::CONNECT {
            return Err(Refusal::NotAProxy);
        }
        let public_host = public_host(&request)?;
        let name = parse_host(public_host.to_str().map_err(|_| Refusal::BadHost(HostError::Invalid("it is not ASCII")))?).map_err(Refusal::BadHost)?;
        let mut decision = self.routes.current().route(&name);
        if !matches!(decision, Decision::Forward { .. }) {
            // About to refuse: not on the word of a table older than the read models.
            decision = self.routes.confirmed().await.route(&name);
        }
        if !matches!(decision, Decision::Unknown) {
            // `service.deployment.environment.domain`, as the table matched it.
            let mut labels = name.split('.').skip(1);
            if let (Some(deployment), Some(environment)) = (labels.next(), labels.next()) {
                *routed = Some((environment.to_owned(), deployment.to_owned()));
            }
        }
        let (host, port) = match decision {
            Decision::Forward { host, port } => (host, port),
            Decision::Unknown => return Err(Refusal::UnknownHost(name)),
            Decision::NotRunning(state) => return Err(Refusal::NotRunning { host: name, state }),
            Decision::NodeOffline => return Err(Refusal::NodeOffline { host: name }),
        };
        let upgrade = wants_upgrade(request.headers());
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let parts = upstream_parts(parts, (&host, port), &public_host, client.ip(), self.https, upgrade)
            .map_err(|_| Refusal::BadHost(HostError::Invalid("it cannot be forwarded")))?;
        let (body, client_body_broke) = Watched::new(body);
        let upstream = Request::from_parts(parts, body);
        let mut response = match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(upstream)).await {
            Ok(Ok(response)) => response,
            // The client's body was broken (a malformed chunk, say): the client's fault, not
            // the service's.
            Ok(Err(_)) if client_body_broke.load(Ordering::Relaxed) => return Err(Refusal::MalformedBody),
            Ok(Err(e)) => {
                tracing::debug!(host = %name, error = %e, "upstream failed");
                return Err(Refusal::UpstreamUnavailable { host: name });
            }
            Err(_) => return Err(Refusal::UpstreamTimeout { host: name }),
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_side {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(splice(client_side, upstream_side));
                return Ok(response.map(Either::Left));
            }
        }
        strip_hop_by_hop(response.headers_mut(), false);
        if upgrade {
            // The client's bytes after an upgrade request that was declined are not followed by
            // the framing guard: end the connection after this answer.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response.map(Either::Left))
    }
}

/// A client's request body on its way to the service, noting whether reading it failed.
pub struct Watched {
    inner: Incoming,
    broke: Arc<AtomicBool>,
}

impl Watched {
    fn new(inner: Incoming) -> (Self, Arc<AtomicBool>) {
        let broke = Arc::new(AtomicBool::new(false));
        (Watched { inner, broke: broke.clone() }, broke)
    }
}

impl http_body::Body for Watched {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(_))) = &polled {
            self.broke.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The host a request names: the authority of an absolute-form target, which takes precedence
/// over Host (RFC 9112 §3.2.2), or its single Host header.
fn public_host(request: &Request<Incoming>) -> Result<HeaderValue, Refusal> {
    if let Some(authority) = request.uri().authority() {
        return HeaderValue::from_str(authority.as_str()).map_err(|_| Refusal::BadHost(HostError::Invalid("the target's authority is not a name")));
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => Ok(host.clone()),
        (None, _) => Err(Refusal::BadHost(HostError::Missing)),
        (Some(_), Some(_)) => Err(Refusal::BadHost(HostError::Invalid("the request has more than one Host header"))),
    }
}

/// Copies bytes both ways between a client and a service once both switched protocols.
async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "protocol switch failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
