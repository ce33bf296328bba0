//! Pull-request previews: a project linked to a repository on GitHub or GitLab deploys each
//! open pull request as `pr-<number>` and tells the forge where it runs. `hooks.rs` receives
//! the forge's hooks, `payload.rs` is what a hook says, and here is the GraphQL API; the
//! `previews` process that deploys and reports is `nullops_saga::previews`.

mod hooks;
mod payload;

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};
use nullops_domain::catalog::{repository_credentials_purpose, CatalogAction};
use nullops_events::catalog::{Forge, ForgeCredentials, PreviewTagRule, RepositoryLink};
use nullops_projections::previews::{self as rows, PreviewRow};

use crate::catalog::{catalog_state, change_catalog_sealing};
use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};
use crate::App;

/// The forge hooks' routes, with their own body limit.
pub fn hook_routes<S: Clone + Send + Sync + 'static>(app: Arc<App>) -> axum::Router<S> {
    hooks::routes().with_state(app)
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "Forge", remote = "nullops_events::catalog::Forge")]
pub enum ForgeGql {
    #[graphql(name = "GITHUB")]
    GitHub,
    #[graphql(name = "GITLAB")]
    GitLab,
}

/// Which tag of the linked service a pull request's preview runs.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "PreviewTagRule", remote = "nullops_events::catalog::PreviewTagRule")]
pub enum TagRuleGql {
    /// `pr-<number>`.
    PrNumber,
    /// The head commit's first seven hex digits.
    ShortSha,
}

/// Where a preview is.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "PreviewState", remote = "nullops_projections::previews::PreviewPhase")]
pub enum PreviewStateGql {
    /// Received; not looked at yet.
    Requested,
    /// The tag is not in the registry yet (CI may still be pushing it).
    WaitingForTag,
    /// The previous commit's preview is being deleted first.
    Replacing,
    Deploying,
    Running,
    Failed,
    /// Closed or merged: being deleted.
    Removing,
    /// Closed or merged, and deleted.
    Removed,
    /// Deleted while the request is open (expired, or by hand).
    Gone,
}

/// A project's repository (its secret and token are never shown).
pub struct RepositoryLinkGql(RepositoryLink);

#[Object(name = "RepositoryLink")]
impl RepositoryLinkGql {
    async fn project(&self) -> &str {
        &self.0.project
    }
    async fn provider(&self) -> ForgeGql {
        self.0.forge.into()
    }
    async fn repository(&self) -> &str {
        &self.0.repository
    }
    async fn api_url(&self) -> &str {
        &self.0.api_url
    }
    /// Where previews are deployed.
    async fn environment(&self) -> &str {
        &self.0.environment
    }
    /// The service whose tag follows the pull request.
    async fn service(&self) -> &str {
        &self.0.service
    }
    async fn tag_rule(&self) -> TagRuleGql {
        self.0.tag_rule.into()
    }
    /// The path the forge's hook posts to, on this server: `/hooks/github/<project>`.
    async fn hook_path(&self) -> String {
        format!("/hooks/{}/{}", self.0.forge.slug(), self.0.project)
    }
}

/// One pull request's preview.
pub struct PreviewGql(PreviewRow);

#[Object(name = "Preview")]
impl PreviewGql {
    /// The pull (merge) request's number.
    async fn number(&self) -> i32 {
        i32::try_from(self.0.number).unwrap_or(i32::MAX)
    }
    /// The deployment's name: `pr-<number>`.
    async fn name(&self) -> String {
        nullops_domain::preview::preview_name(self.0.number)
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    /// The request's page on the forge.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// Who on the forge last changed it.
    async fn sender(&self) -> &str {
        &self.0.sender
    }
    /// The forge's name for what last happened (`opened`, `synchronize`, `closed`…).
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn head_sha(&self) -> &str {
        &self.0.head_sha
    }
    async fn tag(&self) -> &str {
        &self.0.tag
    }
    async fn state(&self) -> PreviewStateGql {
        self.0.progress.phase.into()
    }
    /// Why it waits or failed, or where it runs.
    async fn message(&self) -> &str {
        &self.0.progress.message
    }
    /// The deployment running the requested commit, while the request is open.
    async fn deployment_id(&self) -> Option<ID> {
        self.0.deployment_id.map(|d| ID(d.to_string()))
    }
    async fn requested_at(&self) -> DateTime<Utc> {
        time(self.0.requested_at)
    }
}

fn default_environment(state: &nullops_domain::catalog::CatalogState, project: &str, environment: Option<String>) -> ApiResult<String> {
    if let Some(e) = environment.filter(|e| !e.is_empty()) {
        return Ok(e);
    }
    let definition = state.project(project)?;
    match definition.environments.as_slice() {
        [only] => Ok(only.clone()),
        many => Err(ApiError::InvalidInput(format!("environment: project {project} deploys to {}: say which one previews go to", many.join(", ")))),
    }
}

#[derive(Default)]
pub struct PreviewQuery;

#[Object]
impl PreviewQuery {
    /// The repository a project is linked to, if any (anyone who sees the project).
    async fn repository_link(&self, ctx: &Context<'_>, project: String) -> ApiResult<Option<RepositoryLinkGql>> {
        let state = catalog_state(app(ctx)).await?;
        if state.project_access(request(ctx).principal()?, &project).is_none() {
            return Err(ApiError::NotFound(format!("no project named {project}")));
        }
        Ok(state.links.get(&project).cloned().map(RepositoryLinkGql))
    }

    /// A project's pull-request previews, newest request first (anyone who sees the project).
    async fn previews(&self, ctx: &Context<'_>, project: String) -> ApiResult<Vec<PreviewGql>> {
        let app = app(ctx);
        let state = catalog_state(app).await?;
        if state.project_access(request(ctx).principal()?, &project).is_none() {
            return Err(ApiError::NotFound(format!("no project named {project}")));
        }
        let project_id = state.project(&project)?.project_id;
        Ok(rows::of_project(&app.read_models, project_id).await?.into_iter().map(PreviewGql).collect())
    }
}

#[derive(Default)]
pub struct PreviewMutation;

#[Object]
impl PreviewMutation {
    /// Links a project to a repository (admins): each open pull request then deploys as
    /// `pr-<number>` in `environment` (the project's only one when not given), with `service`
    /// tagged by `tagRule`, and the outcome is posted to the forge with `token`. The forge's
    /// hook posts to `/hooks/github/<project>` (or gitlab) signed with `webhookSecret`. Linking
    /// again replaces the link. Neither secret is ever shown again.
    #[allow(clippy::too_many_arguments)]
    async fn link_repository(
        &self,
        ctx: &Context<'_>,
        project: String,
        provider: ForgeGql,
        repository: String,
        api_url: Option<String>,
        webhook_secret: String,
        token: String,
        service: String,
        #[graphql(default_with = "TagRuleGql::PrNumber")] tag_rule: TagRuleGql,
        environment: Option<String>,
    ) -> ApiResult<RepositoryLinkGql> {
        request(ctx).admin()?;
        let app = app(ctx);
        let state = catalog_state(app).await?;
        let project_id = state.project(&project)?.project_id;
        let environment = default_environment(&state, &project, environment)?;
        if !(8..=256).contains(&webhook_secret.chars().count()) {
            return Err(ApiError::InvalidInput("webhookSecret: use 8 to 256 characters, the same as in the forge's hook settings".into()));
        }
        if token.trim().is_empty() || token.len() > 2048 || token.chars().any(char::is_control) {
            return Err(ApiError::InvalidInput("token: give the forge's API token that may post commit statuses and comments".into()));
        }
        let forge = Forge::from(provider);
        if let Some(url) = api_url.as_deref().filter(|u| !u.trim().is_empty()) {
            crate::catalog::callable(app, "apiUrl", url).await?;
        }
        let credentials = ForgeCredentials { webhook_secret, token: token.trim().to_owned() };
        let clear = zeroize::Zeroizing::new(serde_json::to_vec(&credentials).map_err(ApiError::internal)?);
        let sealed = app.keyring.seal(&clear, &repository_credentials_purpose(project_id)).await?;
        let link = RepositoryLink {
            project: project.clone(),
            forge,
            repository: repository.trim().to_owned(),
            api_url: api_url.map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty()).unwrap_or_else(|| forge.public_api().to_owned()),
            environment,
            service,
            tag_rule: PreviewTagRule::from(tag_rule),
            credentials: sealed.clone(),
        };
        change_catalog_sealing(ctx, CatalogAction::LinkRepository(link), Some(sealed.key_id)).await?;
        let state = catalog_state(app).await?;
        state.links.get(&project).cloned().map(RepositoryLinkGql).ok_or_else(|| ApiError::internal("a link just made is missing"))
    }

    /// Unlinks a project's repository (admins): hooks are refused from now on; previews
    /// already deployed stay until they are deleted or expire.
    async fn unlink_repository(&self, ctx: &Context<'_>, project: String) -> ApiResult<bool> {
        request(ctx).admin()?;
        change_catalog_sealing(ctx, CatalogAction::UnlinkRepository { project }, None).await?;
        Ok(true)
    }
}
