//! The catalog in GraphQL: teams and grants, registries, services, plugins, environments,
//! projects, pipelines and secrets.
//!
//! Mutations are authorized where they are decided (the deciders of `nullops-domain`); the
//! gateway checks early only to spare work (sealing, registry calls) for calls that will be
//! refused. Queries are authorized here, with the same rule (`nullops_domain::access`) applied to
//! the grants in the read model.

mod definitions;
mod dry_run;
mod nodes;
pub(crate) use nodes::node_status;
mod projects;

mod teams;
pub(crate) mod types;

pub use definitions::{DefinitionMutation, DefinitionQuery};
pub use nodes::{NodeGql, NodeMutation, NodeQuery};
pub use projects::{ProjectMutation, ProjectQuery};
pub use teams::{TeamMutation, TeamQuery};
pub(crate) use types::{AccessGql, HealthCheckGql};

use async_graphql::Context;
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CatalogState, CATALOG_KEY};
use nullops_domain::{access, Issuer, Principal};
use nullops_egress::Refusal;
use nullops_events::catalog::{Access, AccessTarget, CatalogEvent, SecretEvent};
use nullops_events::node::NodeEvent;
use nullops_events::DomainEvent;
use nullops_projections::catalog::{self as read, GrantRow};
use nullops_store::commands::Executed;
use serde::de::DeserializeOwned;

use crate::context::{app, request};
use crate::error::{ApiError, ApiResult};
use crate::{dispatch_with, App};
use nullops_domain::Decider;
use nullops_events::EventMetadata;
use nullops_store::commands::StateCache;
use uuid::Uuid;

/// Runs a catalog command as the caller.
async fn change_catalog(ctx: &Context<'_>, action: CatalogAction) -> ApiResult<Executed> {
    change_catalog_sealing(ctx, action, None).await
}

/// Runs a catalog command as the caller that carries a value sealed under `fresh_key`.
pub(crate) async fn change_catalog_sealing(ctx: &Context<'_>, action: CatalogAction, fresh_key: Option<Uuid>) -> ApiResult<Executed> {
    let (app, req) = (app(ctx), request(ctx));
    let by = req.principal()?.clone();
    let command = CatalogCommand { by: Issuer::User(by), action };
    dispatch_keyed::<Catalog>(app, Some(&app.catalog), req.metadata()?, CATALOG_KEY, command, fresh_key).await
}

/// Dispatches a command that may carry a value sealed under `fresh_key` and may retire data
/// keys. Refused, the fresh key is destroyed again; done, the keys its events retire are
/// destroyed, so the ciphertext they sealed can never be read again. (The events are already
/// stored then; a key that fails to go is logged, and the hourly sweep takes it.)
async fn dispatch_keyed<D: Decider>(
    app: &App,
    cache: Option<&StateCache<D>>,
    metadata: EventMetadata,
    key: &str,
    command: D::Command,
    fresh_key: Option<Uuid>,
) -> ApiResult<Executed> {
    let executed = match dispatch_with::<D>(app, cache, metadata, key, command).await {
        Ok(executed) => executed,
        Err(e) => {
            if let Some(key_id) = fresh_key {
                destroy_key(app, key_id, "the data key of a refused command").await;
            }
            return Err(e);
        }
    };
    let retired = executed.events.iter().filter_map(|e| match e {
        DomainEvent::Catalog(CatalogEvent::RegistryChanged(c)) => c.retired_key,
        DomainEvent::Catalog(CatalogEvent::RegistryRemoved(r)) => r.retired_key,
        DomainEvent::Secret(SecretEvent::Updated(s)) => s.retired_key,
        DomainEvent::Secret(SecretEvent::Deleted(d)) => Some(d.retired_key),
        DomainEvent::Node(NodeEvent::TokenRotated(r)) => r.retired_key,
        DomainEvent::Node(NodeEvent::TokenRevoked(r)) => Some(r.retired_key),
        DomainEvent::Node(NodeEvent::Removed(r)) => r.retired_key,
        DomainEvent::Catalog(CatalogEvent::WebhookSecretRotated(r)) => Some(r.retired_key),
        DomainEvent::Catalog(CatalogEvent::WebhookDeleted(d)) => Some(d.retired_key),
        DomainEvent::Catalog(CatalogEvent::RepositoryLinked(l)) => l.retired_key,
        DomainEvent::Catalog(CatalogEvent::RepositoryUnlinked(u)) => Some(u.retired_key),
        _ => None,
    });
    for key_id in retired {
        destroy_key(app, key_id, "a retired data key").await;
    }
    Ok(executed)
}

async fn destroy_key(app: &App, key_id: Uuid, what: &str) {
    if let Err(e) = app.keyring.destroy(key_id).await {
        tracing::error!(%key_id, error = %e, "could not destroy {what}");
    }
}

/// The catalog as decided from the event log (not the read model): what commands check against.
pub(crate) async fn catalog_state(app: &App) -> ApiResult<CatalogState> {
    Ok(app.catalog.load(&*app.store, CATALOG_KEY).await?.0)
}

/// One catalog entry by name, or NOT_FOUND naming it.
async fn entry<T: DeserializeOwned>(app: &App, kind: &'static str, name: &str) -> ApiResult<read::Entry<T>> {
    read::entry_named(&app.read_models, kind, name).await?.ok_or_else(|| ApiError::NotFound(format!("no {kind} named {name}")))
}

/// The caller of a query and the grants their teams hold, read once per request.
#[derive(Clone)]
pub(crate) struct Viewer {
    principal: Principal,
    grants: Vec<GrantRow>,
}

impl Viewer {
    pub(crate) async fn of(ctx: &Context<'_>) -> ApiResult<Viewer> {
        Self::with_grants(app(ctx), request(ctx).principal()?.clone()).await
    }

    /// The holder of `credential` as the read models say now: it may have been revoked, or its
    /// user disabled or moved out of a team, since the request began (UNAUTHENTICATED then).
    pub(crate) async fn now(app: &App, credential: &crate::auth::CredentialRef) -> ApiResult<Viewer> {
        let caller = crate::auth::resolve_credential(&app.read_models, credential.clone()).await?;
        Self::with_grants(app, caller.principal).await
    }

    async fn with_grants(app: &App, principal: Principal) -> ApiResult<Viewer> {
        let grants = if principal.is_admin() { vec![] } else { read::grants_of_user(&app.read_models, principal.username.as_str()).await? };
        Ok(Viewer { principal, grants })
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.principal.is_admin()
    }

    pub(crate) fn username(&self) -> &str {
        self.principal.username.as_str()
    }

    /// Whether `other` sees exactly what this viewer sees (same role, same grants).
    pub(crate) fn sees_as(&self, other: &Viewer) -> bool {
        self.principal.role == other.principal.role && self.grants == other.grants
    }

    /// Effective access to any of `targets`.
    pub(crate) fn access(&self, targets: &[AccessTarget]) -> Option<Access> {
        let held = self.grants.iter().filter(|g| targets.iter().any(|t| t.kind() == g.target_kind && t.name() == g.target_name)).map(|g| g.access);
        access::effective(self.is_admin(), held)
    }
}

/// Refuses a URL the platform must not call (itself, or an address inside a network that no
/// admin allowed) as INVALID_INPUT on `field`, when it is saved rather than when it is first
/// called. A malformed URL is left to the catalog's own check, which says what shape it needs.
pub(crate) async fn callable(app: &App, field: &str, url: &str) -> ApiResult<()> {
    match app.egress.vet(url).await {
        Err(refusal @ (Refusal::Inside { .. } | Refusal::OwnListener { .. })) => Err(ApiError::InvalidInput(format!("{field}: {refusal}"))),
        Ok(_) | Err(Refusal::Scheme | Refusal::NoHost | Refusal::NoSuchName { .. }) => Ok(()),
    }
}

/// The projects whose latest pipeline starts service `name` (with `plugin`: runs plugin
/// `name`), read from the store: what every server has decided, not what a read model shows yet.
pub(crate) async fn pipelines_using(app: &App, name: &str, plugin: bool) -> ApiResult<Vec<String>> {
    use nullops_events::catalog::PipelineAction;
    let mut using = Vec::new();
    for project in catalog_state(app).await?.projects.values() {
        let (pipeline, _) = nullops_store::commands::load::<nullops_domain::pipeline::Pipeline>(&*app.store, &project.project_id.to_string()).await?;
        let Some(latest) = pipeline.latest else { continue };
        let uses = latest.graph.nodes.iter().any(|n| match &n.action {
            PipelineAction::StartService { service } => !plugin && service == name,
            PipelineAction::RunPlugin { plugin: p, .. } => plugin && p == name,
        });
        if uses {
            using.push(project.name.clone());
        }
    }
    Ok(using)
}

/// Every use of service (with `plugin`: plugin) `name` that keeps it from being deleted.
pub(crate) async fn uses_of(app: &App, name: &str, plugin: bool) -> ApiResult<Vec<nullops_domain::catalog::Use>> {
    let pipelines = pipelines_using(app, name, plugin).await?;
    Ok(catalog_state(app).await?.uses(name, plugin, &pipelines))
}
