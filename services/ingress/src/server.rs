//! The ingress listener: accepts connections (optionally terminating TLS), serves HTTP/1.1 on
//! each with protocol switches allowed, and on shutdown stops accepting and lets requests in
//! flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::framing::{Guarded, Verdicts};
use crate::live::RouteBook;
use crate::proxy::Proxy;

/// Most client connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: u32 = 16_384;
/// Bound on a client's TLS handshake and on the head of each request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head buffered.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long requests in flight may take to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub struct Ingress {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
}

impl Ingress {
    /// Listens on `listen`, terminating TLS with `tls` when given, routing by `routes`.
    pub async fn bind(listen: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>, routes: RouteBook) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let proxy = Arc::new(Proxy::new(routes, tls.is_some()));
        Ok(Ingress { listener, tls: tls.map(TlsAcceptor::from), proxy })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown`, then waits (bounded) for open connections to finish their
    /// requests.
    pub async fn serve(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS as usize));
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { break };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "the ingress cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (tls, proxy, shutdown) = (self.tls.clone(), self.proxy.clone(), shutdown.clone());
            tokio::spawn(async move {
                connection(stream, peer, tls, proxy, shutdown).await;
                drop(slot);
            });
        }
        drop(self.listener);
        // Every open connection holds a slot: all slots back means all finished.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(MAX_CONNECTIONS)).await;
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, proxy: Arc<Proxy>, shutdown: CancellationToken) {
    match tls {
        None => http(stream, peer, proxy, shutdown).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => http(stream, peer, proxy, shutdown).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

async fn http<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: IO, peer: SocketAddr, proxy: Arc<Proxy>, shutdown: CancellationToken) {
    let verdicts = Arc::new(Verdicts::default());
    let io = TokioIo::new(Guarded::new(io, verdicts.clone()));
    let service = service_fn(move |request| {
        let (proxy, verdict) = (proxy.clone(), verdicts.next());
        async move { Ok::<_, std::convert::Infallible>(proxy.serve(request, peer, verdict).await) }
    });
    let mut builder = http1::Builder::new();
    // Half-closed clients are answered: and after a refused head the guard ends hyper's input
    // while earlier requests may still be in flight.
    builder.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD_BYTES).half_close(true);
    let mut conn = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}
