//! HTTP: `/graphql` (POST for queries and mutations, WebSocket for subscriptions), `/graphiql`,
//! `/healthz`, `/readyz` and the web UI.

use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Data, ServerError, ServerResult, ValidationResult, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{close_code, CloseFrame, Message};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use tracing::Instrument;

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::schema::{self, NullOpsSchema};
use crate::App;
use crate::{auth, origin};

/// Largest request body accepted; GraphQL documents of NullOps are far smaller.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
struct Gateway {
    app: Arc<App>,
    schema: NullOpsSchema,
}

pub fn router(app: Arc<App>) -> Router {
    let schema = schema::build(app.clone());
    Router::new()
        .route("/graphql", get(graphql_ws).post(graphql_post))
        .route("/graphiql", get(graphiql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::frontend::routes())
        .merge(crate::agent_image::routes().with_state(app.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(crate::previews::hook_routes(app.clone()))
        .merge(axum::Router::new().route("/metrics", get(crate::metrics::api_handler)).with_state(app.clone()))
        .with_state(Gateway { app, schema })
}

pub(crate) fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|v| v.len() <= 128).map(str::to_owned)
}

/// A response in GraphQL's error shape, for requests that never reached the executor.
async fn graphql_post(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge(format!("the request body is larger than {MAX_BODY_BYTES} bytes")).into_response()
        }
        Err(rejection) => {
            tracing::debug!(error = %rejection.body_text(), "a request body could not be read");
            return ApiError::BadRequest("the request body could not be read to its end; send it again".into()).into_response();
        }
    };
    if !origin::has_bearer(&headers) {
        // The browser's path (the session cookie, or a sign-in): only JSON, only from our origin.
        if let Err(refused) = origin::check_json(&headers).and_then(|()| origin::check_origin(&headers, &gw.app.config.allowed_origins)) {
            return refused.into_response();
        }
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let at = if e.line() > 0 { format!(" (the problem is at line {}, column {})", e.line(), e.column()) } else { String::new() };
            return ApiError::BadRequest(format!("the body must be a JSON object with a \"query\" string{at}")).into_response();
        }
    };
    // One span per request, a child of the caller's when it sent a traceparent. Only the
    // operation's name is recorded, never its variables.
    let span = tracing::info_span!("graphql", operation = request.operation_name.as_deref().unwrap_or(""));
    nullops_telemetry::follows(&span, traceparent(&headers).as_deref());
    let ctx = RequestContext::resolve(&gw.app, auth::token_from_headers(&headers), addr.ip(), traceparent(&headers)).instrument(span.clone()).await;
    let mut response = gw.schema.execute(request.data(ctx)).instrument(span).await;
    let mut retry_after: Option<u64> = None;
    for error in &mut response.errors {
        if error.extensions.as_ref().is_none_or(|e| e.get("code").is_none()) {
            // Every resolver error carries a code; the executor's own (argument and variable
            // coercion) are about the input.
            error.extensions.get_or_insert_with(Default::default).set("code", "INVALID_INPUT");
            if let Some(words) = coercion_in_our_words(&error.message) {
                error.message = words;
            }
        }
        // A rate-limited answer says when to try again in the header HTTP clients know too.
        if let Some(async_graphql::Value::Number(secs)) = error.extensions.as_ref().and_then(|e| e.get("retryAfterSeconds")) {
            retry_after = retry_after.max(secs.as_u64());
        }
    }
    if let Some(secs) = retry_after {
        if let Ok(value) = axum::http::HeaderValue::from_str(&secs.to_string()) {
            response.http_headers.insert(header::RETRY_AFTER, value);
        }
    }
    let mut http = match serde_json::to_vec(&response) {
        Ok(json) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    for (name, value) in response.http_headers.iter() {
        http.headers_mut().append(name, value.clone());
    }
    http
}

async fn graphql_ws(
    State(gw): State<Gateway>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Another site's page may open a WebSocket here too, and the browser sends the cookie with
    // it: the cookie counts only from our own origin (a token in connection_init always does).
    let cookie_token = if origin::check_origin(&headers, &gw.app.config.allowed_origins).is_ok() { auth::token_from_headers(&headers) } else { None };
    let trace = traceparent(&headers);
    let upgrade = upgrade
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_write_buffer_size(MAX_SOCKET_WRITE_BUFFER)
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES);
    upgrade.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        let app = gw.app.clone();
        let shutdown = app.shutdown.clone();
        let _open = app.sockets.token();
        // async-graphql writes to a channel and this task to the socket, so that on shutdown
        // the socket can still be closed properly (a close frame, 1001 going away).
        let (mut socket_out, socket_in) = socket.split();
        let (to_client, mut outgoing) = futures::channel::mpsc::channel::<Message>(OUTGOING);
        let graphql = GraphQLWebSocket::new_with_pair(to_client, socket_in, gw.schema.clone(), protocol)
            .on_connection_init(move |payload| async move {
                // The token in connection_init wins over the cookie of the upgrade request.
                let from_payload = ["Authorization", "authorization"]
                    .iter()
                    .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
                    .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
                let ctx = RequestContext::resolve(&app, from_payload.or(cookie_token), addr.ip(), trace).await;
                if let crate::context::Authentication::Rejected(reason) = &ctx.auth {
                    return Err(async_graphql::Error::new(reason.clone()));
                }
                let mut data = Data::default();
                data.insert(ctx);
                Ok(data)
            })
            .serve();
        tokio::pin!(graphql);
        let mut served = false;
        loop {
            tokio::select! {
                () = &mut graphql, if !served => served = true,
                message = outgoing.next() => match message {
                    Some(message) => {
                        if socket_out.send(message).await.is_err() {
                            return;
                        }
                    }
                    // async-graphql is done and all it wrote is sent.
                    None => return,
                },
                () = shutdown.cancelled() => {
                    let close = CloseFrame { code: close_code::AWAY, reason: "the server is shutting down; reconnect shortly".into() };
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket_out.send(Message::Close(Some(close)))).await;
                    return;
                }
            }
        }
    })
}

/// Messages async-graphql may queue for one subscription socket before it waits for the client.
const OUTGOING: usize = 32;
/// A subscription socket's read chunk and the writes it gathers before sending. A client sends
/// small messages (a subscription's query) and most sockets sit idle for hours: tungstenite's
/// default of 128 KiB each way made an idle subscription cost over 140 KB.
const SOCKET_BUFFER: usize = 4 * 1024;
/// What a socket whose client stopped reading may hold before it is closed.
const MAX_SOCKET_WRITE_BUFFER: usize = 1024 * 1024;
/// Bound on sending the close frame to a client that stopped reading.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn graphiql() -> Html<String> {
    Html(async_graphql::http::GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").finish())
}

/// Ready when both the event store and the read models answer.
async fn readyz(State(gw): State<Gateway>) -> Response {
    let store = gw.app.store.read_all(nullops_events::LogPosition::START, 1).await;
    let read_models = gw.app.read_models.rebuilding().await;
    match (store, read_models) {
        (Ok(_), Ok(rebuilding)) => match rebuilding_now(&rebuilding) {
            None => (StatusCode::OK, "ready").into_response(),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        },
        (Err(e), _) => {
            tracing::warn!(error = %e, "not ready: the event store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the event store does not answer (the server's log says why)").into_response()
        }
        (_, Err(e)) => {
            tracing::warn!(error = %e, "not ready: the read models do not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the read models do not answer (the server's log says why)").into_response()
        }
    }
}

/// Why the server is not ready while read models replay the log: until each has caught up,
/// what it holds is partial (a new install, an upgrade that reshaped it, or a rebuild).
fn rebuilding_now(rebuilding: &[nullops_projections::Rebuilding]) -> Option<String> {
    if rebuilding.is_empty() {
        return None;
    }
    let each: Vec<String> = rebuilding.iter().map(|r| format!("{} ({} events applied so far)", r.name, r.events_applied)).collect();
    Some(format!("not ready: read models are being rebuilt from the event log: {}", each.join(", ")))
}

/// An argument the executor could not read, in our words: async-graphql says `Failed to parse
/// "Int": Only integers from -2147483648 to 2147483647 are accepted. (occurred while parsing
/// "ProjectInput")`.
fn coercion_in_our_words(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Failed to parse \"")?;
    let (kind, rest) = rest.split_once('"')?;
    let within = rest.rsplit_once("(occurred while parsing \"").and_then(|(_, w)| w.split_once('"')).map(|(w, _)| w);
    let place = within.map(|w| format!(" in {w}")).unwrap_or_default();
    Some(match kind {
        "Int" => format!("a number{place} is out of range: GraphQL Int values are whole numbers from {} to {}", i32::MIN, i32::MAX),
        "Float" => format!("a number{place} is not a finite number"),
        other => format!("a value{place} is not a valid {other}"),
    })
}

/// Gives parse and validation errors stable codes.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn with_code(mut e: ServerError, code: &str) -> ServerError {
    e.extensions.get_or_insert_with(Default::default).set("code", code);
    e
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn parse_query(&self, ctx: &ExtensionContext<'_>, query: &str, variables: &Variables, next: NextParseQuery<'_>) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|e| with_code(e, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(&self, ctx: &ExtensionContext<'_>, next: NextValidation<'_>) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| errors.into_iter().map(|e| with_code(e, "INVALID_INPUT")).collect())
    }
}

/// Security headers for the UI's pages.
pub(crate) fn page_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    ]
}

#[cfg(test)]
mod tests {
    use super::{coercion_in_our_words, rebuilding_now};

    #[test]
    fn a_server_whose_read_models_replay_the_log_is_not_ready_and_says_which() {
        assert_eq!(rebuilding_now(&[]), None);
        let audit = nullops_projections::Rebuilding { name: "audit".into(), since: 0, events_applied: 1200, at_seq: 1300 };
        let nodes = nullops_projections::Rebuilding { name: "nodes".into(), since: 0, events_applied: 0, at_seq: 0 };
        assert_eq!(
            rebuilding_now(&[audit, nodes]).as_deref(),
            Some("not ready: read models are being rebuilt from the event log: audit (1200 events applied so far), nodes (0 events applied so far)")
        );
    }

    #[test]
    fn the_executors_coercion_errors_are_told_in_our_words() {
        let said = "Failed to parse \"Int\": Only integers from -2147483648 to 2147483647 are accepted. (occurred while parsing \"ProjectInput\")";
        assert_eq!(
            coercion_in_our_words(said).as_deref(),
            Some("a number in ProjectInput is out of range: GraphQL Int values are whole numbers from -2147483648 to 2147483647")
        );
        assert_eq!(
            coercion_in_our_words("Failed to parse \"Int\": Only integers from -2147483648 to 2147483647 are accepted.").as_deref(),
            Some("a number is out of range: GraphQL Int values are whole numbers from -2147483648 to 2147483647")
        );
        assert_eq!(coercion_in_our_words("Failed to parse \"Access\": nope").as_deref(), Some("a value is not a valid Access"));
        assert_eq!(coercion_in_our_words("cpuMillis: must not be negative"), None);
    }
}
