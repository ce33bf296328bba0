//! The CLI's connection to a NullOps server: queries and mutations over HTTP POST, and one
//! subscription at a time over graphql-transport-ws, both with the bearer token. Every error
//! becomes a [`CliError`] with the API's code, so a script can tell them apart.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use graphql_client::GraphQLQuery;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bound on one request, and on the WebSocket's handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a silent subscription socket: the server pings well within it.
const SOCKET_SILENCE: Duration = Duration::from_secs(90);

/// What went wrong, as the API names it (`UNAUTHENTICATED`, `NOT_FOUND`, …), or `NETWORK` when
/// the server was not reached, or `USAGE` for the command line itself.
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: String,
    pub message: String,
}

impl CliError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CliError { code: code.to_owned(), message: message.into() }
    }
    fn network(e: impl std::fmt::Display) -> Self {
        CliError::new("NETWORK", format!("the server cannot be reached: {e}"))
    }
    /// A failed request, with what caused it (a refused connection, an untrusted certificate).
    fn request(e: reqwest::Error) -> Self {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        CliError::network(message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The first error of a GraphQL answer.
fn api_error(errors: &Value) -> CliError {
    let first = &errors[0];
    let code = first["extensions"]["code"].as_str().unwrap_or("INTERNAL");
    CliError::new(code, first["message"].as_str().unwrap_or("the server refused this"))
}

/// A socket of either kind, for the WebSocket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Socket = WebSocketStream<Box<dyn Io>>;

pub struct Client {
    http: reqwest::Client,
    /// `http(s)://host[:port]`, without a trailing slash.
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, CliError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::new("USAGE", format!("{base} is not an http:// or https:// address of a NullOps server")));
        }
        // A token is never sent anywhere else: no redirects are followed.
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build().map_err(CliError::network)?;
        Ok(Client { http, base, token })
    }

    /// A connection to the server for the WebSocket: TLS with the system's trusted roots
    /// (`SSL_CERT_FILE` too) for https, plain TCP for http.
    async fn socket(&self) -> Result<(Box<dyn Io>, String), CliError> {
        let url = reqwest::Url::parse(&self.base).map_err(|e| CliError::new("USAGE", format!("{}: {e}", self.base)))?;
        let tls = url.scheme() == "https";
        let name = url.host_str().ok_or_else(|| CliError::new("USAGE", format!("{} names no host", self.base)))?.trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let tcp = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect((name.as_str(), port)))
            .await
            .map_err(|_| CliError::network("connecting took too long"))?
            .map_err(CliError::network)?;
        if !tls {
            return Ok((Box::new(tcp), format!("ws://{host}/graphql")));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(CliError::network)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| CliError::new("USAGE", format!("{name} is not a host name")))?;
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp))
            .await
            .map_err(|_| CliError::network("the TLS handshake took too long"))?
            .map_err(CliError::network)?;
        Ok((Box::new(stream), format!("wss://{host}/graphql")))
    }

    /// Runs operation `Q`: its answer's `data`.
    pub async fn run<Q: GraphQLQuery>(&self, variables: Q::Variables) -> Result<Value, CliError> {
        let body = Q::build_query(variables);
        let mut request = self.http.post(format!("{}/graphql", self.base)).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(CliError::request)?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|_| CliError::new("NETWORK", format!("the server answered {status}, not GraphQL")))?;
        match answer.get("errors") {
            Some(errors) if errors.as_array().is_some_and(|e| !e.is_empty()) => Err(api_error(errors)),
            _ => Ok(answer["data"].clone()),
        }
    }

    /// Subscribes to operation `Q`; each [`Subscription::next`] is one answer's `data`.
    pub async fn subscribe<Q: GraphQLQuery>(&self, variables: Q::Variables) -> Result<Subscription, CliError> {
        let (stream, address) = self.socket().await?;
        let mut request = address.into_client_request().map_err(CliError::network)?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("a header value"));
        let (mut ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::client_async(request, stream))
            .await
            .map_err(|_| CliError::network("the WebSocket handshake took too long"))?
            .map_err(CliError::network)?;
        let payload = self.token.as_ref().map_or_else(|| json!({}), |t| json!({"Authorization": format!("Bearer {t}")}));
        send(&mut ws, json!({"type": "connection_init", "payload": payload})).await?;
        let mut subscription = Subscription { ws };
        match subscription.frame().await? {
            Some(ack) if ack["type"] == "connection_ack" => {}
            other => return Err(CliError::new("UNAUTHENTICATED", format!("the server did not accept the connection: {}", other.unwrap_or_default()))),
        }
        let body = serde_json::to_value(Q::build_query(variables)).map_err(|e| CliError::new("USAGE", e.to_string()))?;
        send(&mut subscription.ws, json!({"id": "1", "type": "subscribe", "payload": body})).await?;
        Ok(subscription)
    }
}

async fn send(ws: &mut Socket, message: Value) -> Result<(), CliError> {
    ws.send(Message::text(message.to_string())).await.map_err(CliError::network)
}

pub struct Subscription {
    ws: Socket,
}

impl Subscription {
    /// The next protocol message, or `None` when the socket closed.
    async fn frame(&mut self) -> Result<Option<Value>, CliError> {
        loop {
            let next = tokio::time::timeout(SOCKET_SILENCE, self.ws.next()).await.map_err(|_| CliError::network("the subscription went silent"))?;
            match next {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(CliError::network(e)),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).map(Some).map_err(|e| CliError::network(format!("a frame that is not JSON: {e}")))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next answer's `data`; `None` once the server completed the subscription.
    pub async fn next(&mut self) -> Result<Option<Value>, CliError> {
        loop {
            let Some(frame) = self.frame().await? else { return Ok(None) };
            match frame["type"].as_str() {
                Some("next") if frame["payload"]["errors"].as_array().is_some_and(|e| !e.is_empty()) => return Err(api_error(&frame["payload"]["errors"])),
                Some("next") => return Ok(Some(frame["payload"]["data"].clone())),
                Some("error") => return Err(api_error(&frame["payload"])),
                Some("complete") => return Ok(None),
                Some("ping") => send(&mut self.ws, json!({"type": "pong"})).await?,
                _ => {}
            }
        }
    }
}
