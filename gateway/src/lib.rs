//! The GraphQL gateway: the one door into NullOps for the web UI, API clients and CI scripts.
//!
//! Mutations become commands ([`dispatch`]), which are decided and appended by the command layer;
//! the gateway then waits until the read models it will read have caught up (read-your-writes).
//! Queries read read models only; subscriptions are fed from the bus ([`live`]). The gateway never
//! writes to a read model.

pub mod agent_image;
pub mod auth;
mod bootstrap;
mod catalog;
pub mod charts;
mod context;
pub mod demo;
pub(crate) mod deployments;
pub mod error;
mod feeds;
mod frontend;
mod http;
pub mod live;
mod loaders;
pub mod metrics;
mod origin;
pub mod previews;
mod schema;
pub mod tarball;
pub mod webhooks;

pub use bootstrap::{bootstrap_admin, bootstrap_catalog};
pub use catalog::tags::TagLister;
pub use catalog::{sweep_orphaned_keys, SweepError};
pub use http::router;
pub use schema::sdl;

use std::sync::Arc;
use std::time::Duration;

use nullops_domain::Decider;
use nullops_events::EventMetadata;
use nullops_projections::{Projection, ReadModelDb};
use nullops_store::commands::{self, Executed, StateCache};
use nullops_store::EventStore;
use tracing::Instrument;

use crate::error::ApiResult;

/// Everything the gateway needs, shared by all requests.
pub struct App {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
    pub projections: Vec<Arc<dyn Projection>>,
    pub passwords: auth::PasswordHasherPool,
    pub throttle: auth::LoginThrottle,
    pub live: live::Live,
    pub keyring: Arc<nullops_keyring::Keyring>,
    pub registries: TagLister,
    /// Where the platform's own calls (webhooks, forges, registries) may go: URLs are vetted
    /// with it on save, and every client that calls them resolves through it.
    pub egress: Arc<nullops_egress::Egress>,
    /// The catalog as this process last decided it: commands and checks read only newer events.
    pub catalog: StateCache<nullops_domain::catalog::Catalog>,
    pub config: GatewayConfig,
    /// Cancelled when the process stops: open subscriptions are closed (1001, going away).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The subscription sockets still open, so that a stop can wait for their close frames
    /// (the HTTP server's graceful shutdown does not follow upgraded connections).
    pub sockets: tokio_util::task::TaskTracker,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// How long a mutation waits for the read models to show its effect.
    pub consistency_wait: Duration,
    /// Mark the session cookie `Secure` (when served over HTTPS).
    pub secure_cookies: bool,
    /// How users reach the ingress, for the service URLs.
    pub ingress: nullops_ingress::PublicOrigin,
    /// Origins besides the server's own whose pages may use the session cookie
    /// (`NULLOPS_ALLOWED_ORIGINS`), e.g. the UI's public origin when a proxy rewrites Host.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            consistency_wait: Duration::from_secs(5),
            secure_cookies: false,
            ingress: Default::default(),
            allowed_origins: vec![],
        }
    }
}

/// Executes a command against aggregate `key` of `D` and waits until every projection that
/// handles the appended events has applied them.
pub async fn dispatch<D: Decider>(app: &App, metadata: EventMetadata, key: &str, command: D::Command) -> ApiResult<Executed> {
    dispatch_with::<D>(app, None, metadata, key, command).await
}

/// [`dispatch`], loading the aggregate through `cache` when given.
pub async fn dispatch_with<D: Decider>(
    app: &App,
    cache: Option<&StateCache<D>>,
    metadata: EventMetadata,
    key: &str,
    command: D::Command,
) -> ApiResult<Executed> {
    let executed = commands::execute_with::<D>(&*app.store, cache, key, &command, &metadata).await?;
    if let Some(last) = executed.last {
        let touched: Vec<&str> = app.projections.iter().filter(|p| executed.event_types.iter().any(|t| p.handles(t))).map(|p| p.name()).collect();
        let waiting = tracing::info_span!("read_models.wait", projections = touched.join(",").as_str());
        app.read_models.wait_for(&touched, last, app.config.consistency_wait).instrument(waiting).await?;
    }
    Ok(executed)
}
