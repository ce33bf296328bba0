//! The catalog in GraphQL: teams and grants, registries, services, plugins, environments,
//! projects, pipelines and secrets.
//!
//! Mutations are authorized where they are decided (the deciders of `nullops-domain`); the
//! gateway checks early only to spare work (sealing, registry calls) for calls that will be
//! refused. Queries are authorized here, with the same rule (`nullops_domain::access`) applied to
//! the grants in the read model.

mod definitions;
mod key_sweep;
mod projects;
pub mod tags;
mod teams;
mod types;

pub use definitions::{DefinitionMutation, DefinitionQuery};
pub use key_sweep::{sweep_orphaned_keys, SweepError};
pub use projects::{ProjectMutation, ProjectQuery};
pub use teams::{TeamMutation, TeamQuery};

use async_graphql::Context;
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CatalogState, CATALOG_KEY};
use nullops_domain::{access, Issuer, Principal};
use nullops_events::catalog::{Access, AccessTarget, CatalogEvent, SecretEvent};
use nullops_events::DomainEvent;
use nullops_projections::catalog::{self as read, GrantRow};
use nullops_store::commands::Executed;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::schema::{app, request};
use crate::{dispatch_with, App};

/// Runs a catalog command as the caller.
async fn change_catalog(ctx: &Context<'_>, action: CatalogAction) -> ApiResult<Executed> {
    let (app, req) = (app(ctx), request(ctx));
    let by = req.principal()?.clone();
    let command = CatalogCommand { by: Issuer::User(by), action };
    let executed = dispatch_with::<Catalog>(app, Some(&app.catalog), req.metadata()?, CATALOG_KEY, command).await?;
    destroy_retired_keys(app, &executed).await;
    Ok(executed)
}

/// The catalog as decided from the event log (not the read model): what commands check against.
async fn catalog_state(app: &App) -> ApiResult<CatalogState> {
    Ok(app.catalog.load(&*app.store, CATALOG_KEY).await?.0)
}

/// Destroys the data keys that appended events retired, so the ciphertext they sealed can never
/// be read again. The events are already stored; a key that fails to go is logged (its value is
/// superseded, so it is a leak to clean up, not a loss).
async fn destroy_retired_keys(app: &App, executed: &Executed) {
    let retired = executed.events.iter().filter_map(|e| match e {
        DomainEvent::Catalog(CatalogEvent::RegistryChanged(c)) => c.retired_key,
        DomainEvent::Catalog(CatalogEvent::RegistryRemoved(r)) => r.retired_key,
        DomainEvent::Secret(SecretEvent::Updated(s)) => s.retired_key,
        DomainEvent::Secret(SecretEvent::Deleted(d)) => Some(d.retired_key),
        _ => None,
    });
    for key_id in retired {
        if let Err(e) = app.keyring.destroy(key_id).await {
            tracing::error!(%key_id, error = %e, "could not destroy a retired data key");
        }
    }
}

/// Destroys a data key created for a command that was then refused.
async fn discard_key(app: &App, key_id: uuid::Uuid) {
    if let Err(e) = app.keyring.destroy(key_id).await {
        tracing::error!(%key_id, error = %e, "could not destroy the data key of a refused command");
    }
}

/// One catalog entry by name, or NOT_FOUND naming it.
async fn entry<T: DeserializeOwned>(app: &App, kind: &'static str, name: &str) -> ApiResult<read::Entry<T>> {
    read::entry_named(&app.read_models, kind, name).await?.ok_or_else(|| ApiError::NotFound(format!("no {kind} named {name}")))
}

/// The caller of a query and the grants their teams hold, read once per request.
struct Viewer {
    principal: Principal,
    grants: Vec<GrantRow>,
}

impl Viewer {
    async fn of(ctx: &Context<'_>) -> ApiResult<Viewer> {
        let principal = request(ctx).principal()?.clone();
        let grants = if principal.is_admin() {
            vec![]
        } else {
            read::grants_of_user(&app(ctx).read_models, principal.username.as_str()).await?
        };
        Ok(Viewer { principal, grants })
    }

    fn is_admin(&self) -> bool {
        self.principal.is_admin()
    }

    /// Effective access to any of `targets`.
    fn access(&self, targets: &[AccessTarget]) -> Option<Access> {
        let held = self
            .grants
            .iter()
            .filter(|g| targets.iter().any(|t| t.kind() == g.target_kind && t.name() == g.target_name))
            .map(|g| g.access);
        access::effective(self.is_admin(), held)
    }
}
