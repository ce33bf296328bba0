//! `/metrics`: this process's Prometheus metrics (`nullops_metrics`), with the platform's state
//! (agents, nodes, deployments, projection lag) read from the read models and the log just
//! before each scrape. On the API listener it needs an admin's bearer token; `--metrics-listen`
//! serves it without one on an address of the admin's choosing (loopback by default).
//! [`LiveSubscriptions`] counts the GraphQL subscriptions open.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextSubscribe};
use async_graphql::Response as GqlResponse;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::StreamExt;
use nullops_metrics::{metrics, NodeFigures, CONTENT_TYPE};
use nullops_projections::{deployments, nodes};

use crate::error::ApiError;
use crate::App;

/// Each node's agent status and how many nodes have it.
pub(crate) async fn agent_counts(app: &App) -> Result<Vec<(&'static str, i64)>, ApiError> {
    let mut agents: std::collections::BTreeMap<&'static str, i64> = Default::default();
    for n in nodes::nodes(&app.read_models, None).await? {
        *agents.entry(crate::catalog::node_status(&n).name()).or_default() += 1;
    }
    Ok(agents.into_iter().collect())
}

/// Reads the platform's state into the metrics.
pub async fn refresh(app: &App) -> Result<(), ApiError> {
    let mut state = nullops_metrics::State::default();
    for n in nodes::nodes(&app.read_models, None).await? {
        let usage = nodes::usage(&app.read_models, n.node_id).await?;
        let allocation = nodes::allocation(&app.read_models, n.node_id).await?;
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        state.nodes.push(NodeFigures {
            node: format!("{}:{}", n.host, n.port),
            environment: n.environment.clone(),
            cpu_used: usage.as_ref().map(|u| big(u.cpu_used_millicores)),
            cpu_reserved: Some(big(allocation.cpu_millis)),
            cpu_total: usage.as_ref().map(|u| i64::from(u.cpu_cores) * 1000),
            memory_used_bytes: usage.as_ref().map(|u| big(u.memory_used_bytes)),
            memory_reserved_bytes: Some(big(allocation.memory_mib.saturating_mul(1 << 20))),
            memory_total_bytes: usage.as_ref().map(|u| big(u.memory_total_bytes)),
        });
    }
    state.agents = agent_counts(app).await?;
    state.deployments = deployments::count_by_phase(&app.read_models).await?.into_iter().map(|(p, n)| (p.name(), n)).collect();
    state.projections = app.projection_lags().await?;
    metrics().set_state(&state);
    Ok(())
}

fn text(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// The metrics, with the state read first (when the read models answer; what the process
/// itself counted is served either way).
pub async fn scrape(app: Option<&App>) -> Response {
    if let Some(app) = app {
        if let Err(e) = refresh(app).await {
            tracing::warn!(error = %e.message(), "metrics: the platform's state could not be read for this scrape");
        }
    }
    text(metrics().encode())
}

/// `GET /metrics` on the API listener: an admin's bearer token (an API token or a session).
pub async fn api_handler(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return ApiError::Unauthenticated("send an admin's token as 'Authorization: Bearer <token>', or scrape --metrics-listen".into()).into_response();
    };
    match crate::auth::resolve(&app.read_models, token.trim()).await {
        Ok(caller) if caller.principal.is_admin() => scrape(Some(&app)).await,
        Ok(_) => ApiError::Forbidden("the metrics are for admins".into()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The routes of `--metrics-listen`: `/metrics` without authentication.
pub fn open_router(app: Option<Arc<App>>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let app = app.clone();
            async move { scrape(app.as_deref()).await }
        }),
    )
}

/// Counts the GraphQL subscriptions open (`nullops_live_subscriptions`).
pub struct LiveSubscriptions;

impl ExtensionFactory for LiveSubscriptions {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LiveSubscriptions)
    }
}

/// One open subscription, counted until it is dropped.
struct Open;

impl Open {
    fn new() -> Self {
        metrics().subscriptions.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics().subscriptions.dec();
    }
}

impl Extension for LiveSubscriptions {
    fn subscribe<'s>(&self, ctx: &ExtensionContext<'_>, stream: BoxStream<'s, GqlResponse>, next: NextSubscribe<'_>) -> BoxStream<'s, GqlResponse> {
        let open = Open::new();
        next.run(ctx, stream)
            .map(move |item| {
                let _counted = &open;
                item
            })
            .boxed()
    }
}
