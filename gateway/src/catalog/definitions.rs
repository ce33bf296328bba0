//! Registries, services, plugins and environments; live tag listing.

use async_graphql::{Context, Object};
use nullops_domain::catalog::{CatalogAction, CredentialsChange};
use nullops_domain::tags::{self, TagPattern};
use nullops_domain::DnsLabel;
use nullops_events::catalog::{
    AccessTarget, EnvironmentDefinition, PluginDefinition, ProjectDefinition, RegistryDefinition, Sealed, ServiceDefinition, TagMode,
};
use nullops_projections::catalog::{self as read, kind, Entry};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::types::*;
use super::{change_catalog, change_catalog_sealing, entry, Viewer};
use crate::context::{app, request};
use crate::error::{ApiError, ApiResult};
use crate::App;
use nullops_domain::catalog::credentials_purpose;
use nullops_saga::TagLister;

#[derive(Default)]
pub struct DefinitionQuery;

#[Object]
impl DefinitionQuery {
    /// Container registries (any signed-in user; credentials are never returned).
    async fn registries(&self, ctx: &Context<'_>) -> ApiResult<Vec<RegistryGql>> {
        request(ctx).principal()?;
        Ok(read::entries::<RegistryDefinition>(&app(ctx).read_models, kind::REGISTRY).await?.into_iter().map(Into::into).collect())
    }

    /// Services that deployments are made of (any signed-in user).
    async fn services(&self, ctx: &Context<'_>) -> ApiResult<Vec<ServiceGql>> {
        request(ctx).principal()?;
        Ok(read::entries::<ServiceDefinition>(&app(ctx).read_models, kind::SERVICE).await?.into_iter().map(Into::into).collect())
    }

    async fn service(&self, ctx: &Context<'_>, name: String) -> ApiResult<ServiceGql> {
        request(ctx).principal()?;
        Ok(entry::<ServiceDefinition>(app(ctx), kind::SERVICE, &name).await?.into())
    }

    /// Plugins that pipelines can run (any signed-in user).
    async fn plugins(&self, ctx: &Context<'_>) -> ApiResult<Vec<PluginGql>> {
        request(ctx).principal()?;
        Ok(read::entries(&app(ctx).read_models, kind::PLUGIN).await?.into_iter().map(Into::into).collect())
    }

    async fn plugin(&self, ctx: &Context<'_>, name: String) -> ApiResult<PluginGql> {
        request(ctx).principal()?;
        Ok(entry::<PluginDefinition>(app(ctx), kind::PLUGIN, &name).await?.into())
    }

    /// Environments: admins see all; others those their teams hold a grant on, directly or
    /// through a project that deploys there.
    async fn environments(&self, ctx: &Context<'_>) -> ApiResult<Vec<EnvironmentGql>> {
        let viewer = Viewer::of(ctx).await?;
        let app = app(ctx);
        let projects = read::entries::<ProjectDefinition>(&app.read_models, kind::PROJECT).await?;
        let envs = read::entries::<EnvironmentDefinition>(&app.read_models, kind::ENVIRONMENT).await?;
        Ok(envs
            .into_iter()
            .filter(|e| {
                let name = &e.definition.name;
                viewer.access(&[AccessTarget::Environment(name.clone())]).is_some()
                    || projects
                        .iter()
                        .any(|p| p.definition.environments.contains(name) && viewer.access(&[AccessTarget::Project(p.definition.name.clone())]).is_some())
            })
            .map(Into::into)
            .collect())
    }

    /// The tags a service's version can be picked from, newest version first: asked of its
    /// registry live (cached for 30 s; `refresh` accepts only an answer under 2 s old), filtered
    /// by the service's pattern.
    async fn available_tags(&self, ctx: &Context<'_>, service: String, #[graphql(default = false)] refresh: bool) -> ApiResult<Vec<String>> {
        request(ctx).principal()?;
        let app = app(ctx);
        let service = entry::<ServiceDefinition>(app, kind::SERVICE, &service).await?.definition;
        let pattern = match &service.tag {
            TagMode::Pinned(tag) => return Ok(vec![tag.clone()]),
            TagMode::Selectable(pattern) => pattern.as_deref().map(TagPattern::parse).transpose()?,
        };
        let registry = entry::<RegistryDefinition>(app, kind::REGISTRY, &service.registry).await?.definition;
        let all = app.registries.tags(&app.keyring, &registry, &service.image, refresh).await?;
        Ok(tags::selectable(all.to_vec(), pattern.as_ref()))
    }

    /// The tags of `repository` in a saved registry, asked of it live, newest version first;
    /// only those matching `pattern` when given (admins). Tries a registry's URL and
    /// credentials, or a service's image and pattern, before a deployment needs them: a failure
    /// is the registry's error (REGISTRY_UNAVAILABLE, REGISTRY_AUTH_FAILED, NOT_FOUND).
    async fn registry_tags(
        &self,
        ctx: &Context<'_>,
        registry: String,
        repository: String,
        pattern: Option<String>,
        #[graphql(default = false)] refresh: bool,
    ) -> ApiResult<Vec<String>> {
        request(ctx).admin()?;
        let app = app(ctx);
        let pattern = pattern.filter(|p| !p.is_empty()).map(|p| TagPattern::parse(&p)).transpose()?;
        let repository = repository.trim();
        if repository.is_empty() {
            return Err(ApiError::InvalidInput("repository: name an image, such as shop/api".into()));
        }
        let registry = entry::<RegistryDefinition>(app, kind::REGISTRY, &registry).await?.definition;
        let all = app.registries.tags(&app.keyring, &registry, repository, refresh).await?;
        Ok(tags::selectable(all.to_vec(), pattern.as_ref()))
    }
}

/// Seals `username:password` for registry `name`, if both are given.
/// Refuses credentials the registry itself rejects, saying so beside the password: found now,
/// not when a deployment cannot pull. A registry that cannot be asked now (down, or not
/// reachable from here) is not held against the credentials.
async fn credentials_accepted(app: &App, name: &str, url: &str, username: Option<&str>, password: Option<&str>) -> ApiResult<()> {
    let (Some(username), Some(password)) = (username, password) else { return Ok(()) };
    let registry = nullops_registry::Registry {
        name: name.to_owned(),
        url: url.trim_end_matches('/').to_owned(),
        credentials: Some(nullops_registry::Credentials { username: username.to_owned(), password: zeroize::Zeroizing::new(password.to_owned()) }),
    };
    match app.registries.client().check_credentials(&registry).await {
        Err(nullops_registry::RegistryError::Unauthorized { reason, .. }) => Err(ApiError::InvalidInput(format!(
            "password: the registry at {} refused these credentials ({reason}): check the user name and password",
            registry.url
        ))),
        Err(e) => {
            tracing::info!(registry = %name, error = %e, "registry credentials could not be checked on save");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

async fn seal_credentials(app: &App, name: &str, username: Option<String>, password: Option<String>) -> ApiResult<Option<Sealed>> {
    match (username, password) {
        (None, None) => Ok(None),
        (Some(user), Some(password)) => {
            if user.is_empty() || user.contains(':') || user.len() > 256 || password.is_empty() || password.len() > 4096 {
                return Err(ApiError::InvalidInput("credentials: give a username without ':' and a password (at most 4096 bytes)".into()));
            }
            let plain = Zeroizing::new(format!("{user}:{password}"));
            Ok(Some(app.keyring.seal(plain.as_bytes(), &credentials_purpose(name)).await?))
        }
        _ => Err(ApiError::InvalidInput("credentials: give both username and password, or neither".into())),
    }
}

/// Runs `action`, which defines catalog entry `name` of `kind`, and answers with the entry as stored.
async fn define<T: DeserializeOwned, G: From<Entry<T>>>(ctx: &Context<'_>, kind: &'static str, name: String, action: CatalogAction) -> ApiResult<G> {
    change_catalog(ctx, action).await?;
    Ok(entry::<T>(app(ctx), kind, &name).await?.into())
}

#[derive(Default)]
pub struct DefinitionMutation;

#[Object]
impl DefinitionMutation {
    /// Adds a registry that speaks the Registry HTTP API v2 (admins). Credentials are stored
    /// encrypted and never returned.
    async fn create_registry(&self, ctx: &Context<'_>, input: RegistryInput) -> ApiResult<RegistryGql> {
        request(ctx).admin()?;
        let app = app(ctx);
        DnsLabel::parse("name", &input.name)?;
        super::callable(app, "url", &input.url).await?;
        credentials_accepted(app, &input.name, &input.url, input.username.as_deref(), input.password.as_deref()).await?;
        let credentials = seal_credentials(app, &input.name, input.username, input.password).await?;
        let definition = RegistryDefinition { name: input.name.clone(), url: input.url.trim_end_matches('/').to_owned(), credentials: credentials.clone() };
        change_catalog_sealing(ctx, CatalogAction::AddRegistry(definition), credentials.map(|c| c.key_id)).await?;
        Ok(entry::<RegistryDefinition>(app, kind::REGISTRY, &input.name).await?.into())
    }

    /// Changes a registry's URL or credentials (admins). Replaced or cleared credentials are
    /// destroyed for good.
    async fn update_registry(&self, ctx: &Context<'_>, input: RegistryUpdateInput) -> ApiResult<RegistryGql> {
        request(ctx).admin()?;
        let app = app(ctx);
        if input.clear_credentials && (input.username.is_some() || input.password.is_some()) {
            return Err(ApiError::InvalidInput("clearCredentials: do not also give new credentials".into()));
        }
        super::callable(app, "url", &input.url).await?;
        credentials_accepted(app, &input.name, &input.url, input.username.as_deref(), input.password.as_deref()).await?;
        let sealed = seal_credentials(app, &input.name, input.username, input.password).await?;
        let credentials = match &sealed {
            Some(s) => CredentialsChange::Set(s.clone()),
            None if input.clear_credentials => CredentialsChange::Clear,
            None => CredentialsChange::Keep,
        };
        let action = CatalogAction::ChangeRegistry { name: input.name.clone(), url: input.url.trim_end_matches('/').to_owned(), credentials };
        change_catalog_sealing(ctx, action, sealed.map(|s| s.key_id)).await?;
        Ok(entry::<RegistryDefinition>(app, kind::REGISTRY, &input.name).await?.into())
    }

    /// Removes a registry no service or plugin uses (admins); its credentials are destroyed.
    async fn delete_registry(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        change_catalog(ctx, CatalogAction::RemoveRegistry { name }).await?;
        Ok(true)
    }

    /// Defines a service (admins).
    async fn create_service(&self, ctx: &Context<'_>, input: ServiceInput) -> ApiResult<ServiceGql> {
        let definition = input.definition()?;
        define::<ServiceDefinition, _>(ctx, kind::SERVICE, definition.name.clone(), CatalogAction::CreateService(definition)).await
    }

    /// Replaces a service's definition (admins).
    async fn update_service(&self, ctx: &Context<'_>, input: ServiceInput) -> ApiResult<ServiceGql> {
        let definition = input.definition()?;
        define::<ServiceDefinition, _>(ctx, kind::SERVICE, definition.name.clone(), CatalogAction::UpdateService(definition)).await
    }

    /// Deletes a service (admins) that no project's latest pipeline starts and no repository
    /// link deploys; otherwise CONFLICT naming every one.
    async fn delete_service(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        request(ctx).admin()?;
        let pipelines = super::pipelines_using(app(ctx), &name, false).await?;
        change_catalog(ctx, CatalogAction::RemoveService { name, pipelines }).await?;
        Ok(true)
    }

    /// Defines a plugin (admins); its parameter schema must be a valid JSON Schema.
    async fn create_plugin(&self, ctx: &Context<'_>, input: PluginInput) -> ApiResult<PluginGql> {
        let definition = input.definition()?;
        define::<PluginDefinition, _>(ctx, kind::PLUGIN, definition.name.clone(), CatalogAction::CreatePlugin(definition)).await
    }

    /// Replaces a plugin's definition (admins). Saved pipeline versions keep the image they pinned.
    async fn update_plugin(&self, ctx: &Context<'_>, input: PluginInput) -> ApiResult<PluginGql> {
        let definition = input.definition()?;
        define::<PluginDefinition, _>(ctx, kind::PLUGIN, definition.name.clone(), CatalogAction::UpdatePlugin(definition)).await
    }

    /// Deletes a plugin (admins) that no project's latest pipeline runs; otherwise CONFLICT
    /// naming every one.
    async fn delete_plugin(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        request(ctx).admin()?;
        let pipelines = super::pipelines_using(app(ctx), &name, true).await?;
        change_catalog(ctx, CatalogAction::RemovePlugin { name, pipelines }).await?;
        Ok(true)
    }

    /// Defines an environment (admins).
    async fn create_environment(&self, ctx: &Context<'_>, input: EnvironmentInput) -> ApiResult<EnvironmentGql> {
        let definition = input.definition()?;
        define::<EnvironmentDefinition, _>(ctx, kind::ENVIRONMENT, definition.name.clone(), CatalogAction::CreateEnvironment(definition)).await
    }

    async fn update_environment(&self, ctx: &Context<'_>, input: EnvironmentInput) -> ApiResult<EnvironmentGql> {
        let definition = input.definition()?;
        define::<EnvironmentDefinition, _>(ctx, kind::ENVIRONMENT, definition.name.clone(), CatalogAction::UpdateEnvironment(definition)).await
    }

    /// Removes an environment no project deploys to and no node belongs to (admins).
    async fn delete_environment(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        // Nodes live in streams of their own, so the catalog cannot see them: checked here, from
        // the read model (a node added in the same instant can slip through; removeNode remains).
        let nodes = nullops_projections::nodes::nodes(&app(ctx).read_models, Some(&name)).await?;
        if !nodes.is_empty() {
            let endpoints: Vec<String> = nodes.iter().map(|n| format!("{}:{}", n.host, n.port)).collect();
            return Err(ApiError::Conflict(format!("environment {name} has nodes ({}); remove them first", endpoints.join(", "))));
        }
        change_catalog(ctx, CatalogAction::RemoveEnvironment { name }).await?;
        Ok(true)
    }
}

/// Registry `name` with its credentials opened, for the pipeline's digest lookups.
pub(super) async fn open_registry(app: &App, name: &str) -> ApiResult<nullops_registry::Registry> {
    let definition = entry::<RegistryDefinition>(app, kind::REGISTRY, name).await?.definition;
    Ok(TagLister::open(&app.keyring, &definition).await?)
}
