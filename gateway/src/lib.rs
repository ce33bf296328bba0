//! The GraphQL gateway: the one door into NullOps for the web UI, API clients and CI scripts.
//!
//! Mutations become commands ([`dispatch`]), which are decided and appended by the command layer;
//! the gateway then waits until the read models it will read have caught up (read-your-writes).
//! Queries read read models only; subscriptions are fed from the bus ([`live`]). The gateway never
//! writes to a read model.

pub mod agent_image;
mod audit;
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
mod rebuilding;
mod schema;
pub mod tarball;
pub mod webhooks;

pub use bootstrap::{bootstrap_admin, bootstrap_catalog};
pub use http::router;
pub use schema::sdl;

use std::sync::Arc;
use std::time::Duration;

use nullops_domain::Decider;
use nullops_events::EventMetadata;
use nullops_saga::Core;
use nullops_store::commands::{Executed, StateCache};

use crate::error::ApiResult;

/// Everything the gateway needs, shared by all requests: the platform's [`Core`] (which it
/// dereferences to: `app.store`, `app.read_models`) and what only the API uses.
pub struct App {
    pub core: Arc<Core>,
    pub passwords: auth::PasswordHasherPool,
    pub throttle: auth::LoginThrottle,
    pub live: live::Live,
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
    /// Mark the session cookie `Secure` (when served over HTTPS).
    pub secure_cookies: bool,
    /// Origins besides the server's own whose pages may use the session cookie
    /// (`NULLOPS_ALLOWED_ORIGINS`), e.g. the UI's public origin when a proxy rewrites Host.
    pub allowed_origins: Vec<String>,
}

impl std::ops::Deref for App {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { session_ttl: Duration::from_secs(12 * 3600), secure_cookies: false, allowed_origins: vec![] }
    }
}

/// Executes a command against aggregate `key` of `D` and waits until every projection that
/// handles the appended events has applied them.
pub async fn dispatch<D: Decider>(app: &App, metadata: EventMetadata, key: &str, command: D::Command) -> ApiResult<Executed> {
    Ok(app.core.dispatch::<D>(None, metadata, key, command).await?)
}

/// [`dispatch`], loading the aggregate through `cache` when given.
pub async fn dispatch_with<D: Decider>(
    app: &App,
    cache: Option<&StateCache<D>>,
    metadata: EventMetadata,
    key: &str,
    command: D::Command,
) -> ApiResult<Executed> {
    Ok(app.core.dispatch::<D>(cache, metadata, key, command).await?)
}
