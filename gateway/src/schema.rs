//! The GraphQL schema: identity, audit history and projection status here; the catalog in
//! [`crate::catalog`]. The roots merge them.

use std::sync::Arc;

use async_graphql::{Context, Enum, InputObject, MergedObject, Object, Schema, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use nullops_domain::identity::{ApiToken, ApiTokenCommand, Session, SessionCommand, User, UserCommand};
use nullops_domain::{Issuer, Password, TokenName, Username};
use nullops_events::identity::Role;
use nullops_events::{Actor, LogPosition, StoredEvent, Timestamp};
use nullops_projections::audit::{self, AuditFilter};
use nullops_projections::identity::{self, ApiTokenRow, UserRow};

use crate::audit::AuditEntryGql;
use crate::auth::{self, Caller};
use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};
use crate::live::tokio_stream_from;
use crate::{catalog, deployments};
use crate::{dispatch, App};

pub type NullOpsSchema = Schema<Query, Mutation, SubscriptionRoot>;

#[derive(MergedObject, Default)]
pub struct Query(
    IdentityQuery,
    catalog::TeamQuery,
    catalog::DefinitionQuery,
    catalog::ProjectQuery,
    catalog::NodeQuery,
    deployments::DeploymentQuery,
    crate::webhooks::WebhookQuery,
    crate::previews::PreviewQuery,
    crate::charts::ChartsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    IdentityMutation,
    catalog::TeamMutation,
    catalog::DefinitionMutation,
    catalog::ProjectMutation,
    catalog::NodeMutation,
    deployments::DeploymentMutation,
    crate::webhooks::WebhookMutation,
    crate::previews::PreviewMutation,
);

pub fn build(app: Arc<App>) -> NullOpsSchema {
    let loaders = crate::loaders::Loaders::new(&app.read_models);
    Schema::build(Query::default(), Mutation::default(), SubscriptionRoot)
        .data(app)
        .data(loaders)
        .limit_depth(16)
        .limit_complexity(2000)
        .extension(crate::http::ErrorCodes)
        .extension(crate::metrics::LiveSubscriptions)
        .extension(crate::rebuilding::ReadModelGate)
        .finish()
}

/// The schema in SDL, as `gateway/schema.graphql` keeps it for clients that check their queries
/// against it when they are built (the `nullops` CLI).
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), SubscriptionRoot).finish().sdl()
}

// ---------------------------------------------------------------------------------------------
// Types

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "Role")]
pub enum RoleGql {
    Admin,
    User,
}

impl From<RoleGql> for Role {
    fn from(r: RoleGql) -> Self {
        match r {
            RoleGql::Admin => Role::Admin,
            RoleGql::User => Role::User,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserGql {
    id: ID,
    username: String,
    role: RoleGql,
    disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserGql {
    fn from(u: UserRow) -> Self {
        UserGql {
            id: ID(u.user_id),
            role: if u.role == Role::Admin.as_str() { RoleGql::Admin } else { RoleGql::User },
            username: u.username,
            disabled: u.disabled,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
        }
    }
}

#[derive(SimpleObject)]
pub struct LoginPayload {
    /// Bearer token for `Authorization: Bearer …`; the same value is set as an HttpOnly cookie.
    token: String,
    expires_at: DateTime<Utc>,
    user: UserGql,
}

#[derive(SimpleObject)]
#[graphql(name = "ApiToken")]
pub struct ApiTokenGql {
    id: ID,
    name: String,
    owner: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiTokenRow> for ApiTokenGql {
    fn from(t: ApiTokenRow) -> Self {
        ApiTokenGql {
            id: ID(t.token_id),
            name: t.name,
            owner: t.username,
            created_at: time(t.created_at),
            expires_at: t.expires_at.map(time),
            revoked_at: t.revoked_at.map(time),
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedApiToken {
    /// Shown once: only its hash is kept.
    token: String,
    api_token: ApiTokenGql,
}

#[derive(InputObject, Default)]
pub struct AuditFilterInput {
    /// `admin`, `user:admin` or `system`.
    actor: Option<String>,
    /// A stream id such as `user-alice`.
    stream: Option<String>,
    /// An event type such as `user.disabled`.
    event_type: Option<String>,
    correlation_id: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Words the entry's summary contains, in any case: the name of what it concerns (a
    /// project, a deployment, a node, a team, a user).
    mentions: Option<String>,
}

impl AuditFilterInput {
    fn to_filter(&self) -> AuditFilter {
        AuditFilter {
            event_id: None,
            actor: self.actor.as_ref().map(|a| if a == "system" || a.contains(':') { a.clone() } else { Actor::User(a.clone()).to_stored() }),
            stream_id: self.stream.clone(),
            event_type: self.event_type.clone(),
            correlation_id: self.correlation_id.clone(),
            from: self.from.map(|t| t.timestamp_micros()),
            to: self.to.map(|t| t.timestamp_micros()),
            mentions: self.mentions.as_ref().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()),
        }
    }
}

/// Whether a live event passes an audit filter (time bounds do not apply to live events).
fn matches(f: &AuditFilter, e: &StoredEvent) -> bool {
    f.actor.as_ref().is_none_or(|a| *a == e.metadata.actor.to_stored())
        && f.stream_id.as_deref().is_none_or(|s| s == e.stream_id.as_str())
        && f.event_type.as_deref().is_none_or(|t| t == e.event_type)
        && f.correlation_id.as_ref().is_none_or(|c| *c == e.metadata.correlation_id.0.to_string())
}

#[derive(InputObject, Default)]
pub struct PageInput {
    /// At most 500; 50 when absent.
    first: Option<i32>,
    /// `nextCursor` of the previous page.
    after: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "AuditPage")]
pub struct AuditPage {
    entries: Vec<AuditEntryGql>,
    /// Pass as `page.after` for older entries; null on the last page.
    next_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct ProjectionStatus {
    name: String,
    /// Global position of the last event applied.
    position: String,
    events_applied: i64,
    updated_at: Option<DateTime<Utc>>,
}

fn parse_cursor(raw: &str) -> ApiResult<LogPosition> {
    let bad = || ApiError::InvalidInput("page.after: not a cursor returned by auditLog".into());
    let (c, s) = raw.split_once(':').ok_or_else(bad)?;
    Ok(LogPosition { commit: c.parse().map_err(|_| bad())?, seq: s.parse().map_err(|_| bad())? })
}

// ---------------------------------------------------------------------------------------------
// Queries

#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<UserGql> {
        let p = request(ctx).principal()?;
        user_by_name(app(ctx), p.username.as_str()).await
    }

    /// Every user (admins).
    async fn users(&self, ctx: &Context<'_>) -> ApiResult<Vec<UserGql>> {
        request(ctx).admin()?;
        Ok(identity::users(&app(ctx).read_models).await?.into_iter().map(Into::into).collect())
    }

    /// One user (admins, or the user themself).
    async fn user(&self, ctx: &Context<'_>, username: String) -> ApiResult<Option<UserGql>> {
        let p = request(ctx).principal()?;
        if !p.is_admin() && p.username.as_str() != username {
            return Err(ApiError::Forbidden("only admins may look up other users".into()));
        }
        Ok(identity::user(&app(ctx).read_models, &username).await?.map(Into::into))
    }

    /// The caller's personal API tokens (never their values).
    async fn api_tokens(&self, ctx: &Context<'_>) -> ApiResult<Vec<ApiTokenGql>> {
        let p = request(ctx).principal()?;
        Ok(identity::api_tokens_of(&app(ctx).read_models, p.username.as_str()).await?.into_iter().map(Into::into).collect())
    }

    /// Who did what, when, to what: the event log, newest first (admins).
    async fn audit_log(&self, ctx: &Context<'_>, filter: Option<AuditFilterInput>, page: Option<PageInput>) -> ApiResult<AuditPage> {
        request(ctx).admin()?;
        let page = page.unwrap_or_default();
        let first = page.first.unwrap_or(50);
        if !(1..=500).contains(&first) {
            return Err(ApiError::InvalidInput("page.first: use 1 to 500".into()));
        }
        let after = page.after.as_deref().map(parse_cursor).transpose()?;
        let filter = filter.unwrap_or_default().to_filter();
        let mut rows = audit::query(&app(ctx).read_models, &filter, after, first as u32 + 1).await?;
        let more = rows.len() > first as usize;
        rows.truncate(first as usize);
        let next_cursor = if more { rows.last().map(|r| r.position.to_string()) } else { None };
        Ok(AuditPage { entries: rows.into_iter().map(Into::into).collect(), next_cursor })
    }

    /// Every type of event the log records, such as `deployment.requested`: what `auditLog`
    /// and `auditEvents` can be filtered by (admins).
    async fn audit_event_types(&self, ctx: &Context<'_>) -> ApiResult<Vec<String>> {
        request(ctx).admin()?;
        let mut names: Vec<String> = nullops_events::codec::current_types().into_iter().map(|(name, _)| name.to_owned()).collect();
        names.sort();
        Ok(names)
    }

    /// Where each projection is in the event log (admins).
    async fn projections(&self, ctx: &Context<'_>) -> ApiResult<Vec<ProjectionStatus>> {
        request(ctx).admin()?;
        let app = app(ctx);
        let mut out = Vec::new();
        for p in &app.projections {
            let s = app.read_models.checkpoint(p.name()).await?;
            out.push(ProjectionStatus {
                name: s.name,
                position: s.position.seq.to_string(),
                events_applied: s.events_applied as i64,
                updated_at: (s.updated_at > 0).then(|| time(s.updated_at)),
            });
        }
        Ok(out)
    }
}

async fn user_by_name(app: &App, username: &str) -> ApiResult<UserGql> {
    identity::user(&app.read_models, username).await?.map(Into::into).ok_or_else(|| ApiError::NotFound(format!("no user named {username}")))
}

fn username(raw: &str) -> ApiResult<Username> {
    Ok(Username::parse(raw)?)
}

// ---------------------------------------------------------------------------------------------
// Mutations

#[derive(Default)]
pub struct IdentityMutation;

const INVALID_LOGIN: &str = "invalid username or password";

#[Object]
impl IdentityMutation {
    /// Signs in: returns a bearer token and sets it as an HttpOnly, SameSite=Strict cookie.
    async fn login(&self, ctx: &Context<'_>, username: String, password: String) -> ApiResult<LoginPayload> {
        let (app, req) = (app(ctx), request(ctx));
        app.throttle.check(&username, req.client_addr).await?;
        let user = match Username::parse(&username) {
            Ok(name) => identity::user(&app.read_models, name.as_str()).await?,
            Err(_) => None,
        };
        let verified = app.passwords.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let Some(user) = user.filter(|u| verified && !u.disabled) else {
            app.throttle.failed(&username, req.client_addr).await;
            return Err(ApiError::Unauthenticated(INVALID_LOGIN.into()));
        };
        app.throttle.succeeded(&username, req.client_addr).await;
        let token = auth::new_token(auth::SESSION_PREFIX);
        let session_id = uuid::Uuid::now_v7();
        let expires_at = Timestamp::now().plus_secs(app.config.session_ttl.as_secs() as i64);
        let command = SessionCommand::Start { session_id, username: username_of(&user)?, token_hash: auth::token_hash(&token), expires_at };
        dispatch::<Session>(app, req.metadata_as(Actor::User(user.username.clone())), &session_id.to_string(), command).await?;
        let secure = if app.config.secure_cookies { "; Secure" } else { "" };
        ctx.append_http_header(
            "Set-Cookie",
            format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", auth::SESSION_COOKIE, app.config.session_ttl.as_secs()),
        );
        Ok(LoginPayload { token, expires_at: time(expires_at.0), user: user.into() })
    }

    /// Ends the caller's login session and clears the cookie.
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let (app, req) = (app(ctx), request(ctx));
        let caller: &Caller = req.caller()?;
        let Some(session_id) = &caller.session_id else {
            return Err(ApiError::InvalidInput("logout ends a login session; revoke API tokens with revokeApiToken".into()));
        };
        dispatch::<Session>(app, req.metadata()?, session_id, SessionCommand::End { by: caller.principal.clone() }).await?;
        ctx.append_http_header("Set-Cookie", format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::SESSION_COOKIE));
        Ok(true)
    }

    /// Creates a user (admins). `role` defaults to USER.
    async fn create_user(&self, ctx: &Context<'_>, username: String, password: String, role: Option<RoleGql>) -> ApiResult<UserGql> {
        let (app, req) = (app(ctx), request(ctx));
        let by = req.admin()?.clone();
        let name = self::username(&username)?;
        let password = Password::parse(&password)?;
        let password_hash = app.passwords.hash(password.expose().to_owned()).await?;
        let command = UserCommand::Register {
            by: Issuer::User(by),
            user_id: uuid::Uuid::now_v7(),
            username: name,
            password_hash,
            role: role.unwrap_or(RoleGql::User).into(),
        };
        dispatch::<User>(app, req.metadata()?, &username, command).await?;
        user_by_name(app, &username).await
    }

    /// Disables a user (admins): their sessions and tokens stop working at once.
    async fn disable_user(&self, ctx: &Context<'_>, username: String) -> ApiResult<UserGql> {
        as_admin_on_user(ctx, &username, |by| UserCommand::Disable { by }).await
    }

    /// Enables a disabled user again (admins).
    async fn enable_user(&self, ctx: &Context<'_>, username: String) -> ApiResult<UserGql> {
        as_admin_on_user(ctx, &username, |by| UserCommand::Enable { by }).await
    }

    /// Sets a new password for a user (admins).
    async fn reset_password(&self, ctx: &Context<'_>, username: String, new_password: String) -> ApiResult<UserGql> {
        // Check the role before spending a password hash on the request.
        request(ctx).admin()?;
        let password = Password::parse(&new_password)?;
        let password_hash = app(ctx).passwords.hash(password.expose().to_owned()).await?;
        as_admin_on_user(ctx, &username, |by| UserCommand::ResetPassword { by, password_hash }).await
    }

    /// Changes the caller's own password; needs the current one.
    async fn change_password(&self, ctx: &Context<'_>, current_password: String, new_password: String) -> ApiResult<bool> {
        let (app, req) = (app(ctx), request(ctx));
        let by = req.principal()?.clone();
        let name = by.username.to_string();
        app.throttle.check(&name, req.client_addr).await?;
        let user = identity::user(&app.read_models, &name).await?;
        if !app.passwords.verify(current_password, user.map(|u| u.password_hash)).await? {
            app.throttle.failed(&name, req.client_addr).await;
            return Err(ApiError::Unauthenticated("the current password is wrong".into()));
        }
        let password = Password::parse(&new_password)?;
        let password_hash = app.passwords.hash(password.expose().to_owned()).await?;
        dispatch::<User>(app, req.metadata()?, &name, UserCommand::ChangePassword { by, password_hash }).await?;
        Ok(true)
    }

    /// Creates a personal API token for scripts. The token is in the answer and nowhere else.
    async fn create_api_token(&self, ctx: &Context<'_>, name: String, expires_in_days: Option<i32>) -> ApiResult<CreatedApiToken> {
        let (app, req) = (app(ctx), request(ctx));
        let by = req.principal()?.clone();
        let name = TokenName::parse(&name)?;
        let expires_at = match expires_in_days {
            None => None,
            Some(days @ 1..=3650) => Some(Timestamp::now().plus_secs(i64::from(days) * 86_400)),
            Some(_) => return Err(ApiError::InvalidInput("expiresInDays: use 1 to 3650, or leave it out".into())),
        };
        let token = auth::new_token(auth::API_TOKEN_PREFIX);
        let token_id = uuid::Uuid::now_v7();
        let command = ApiTokenCommand::Create { by, token_id, name, token_hash: auth::token_hash(&token), expires_at };
        dispatch::<ApiToken>(app, req.metadata()?, &token_id.to_string(), command).await?;
        let row =
            identity::api_token(&app.read_models, &token_id.to_string()).await?.ok_or_else(|| ApiError::internal("created token missing from read model"))?;
        Ok(CreatedApiToken { token, api_token: row.into() })
    }

    /// Revokes one of the caller's API tokens (admins: anyone's). It stops working at once.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> ApiResult<ApiTokenGql> {
        let (app, req) = (app(ctx), request(ctx));
        let by = req.principal()?.clone();
        let not_found = || ApiError::NotFound(format!("no API token {}", id.as_str()));
        let token_id = uuid::Uuid::parse_str(id.as_str()).map_err(|_| not_found())?.to_string();
        dispatch::<ApiToken>(app, req.metadata()?, &token_id, ApiTokenCommand::Revoke { by }).await?;
        Ok(identity::api_token(&app.read_models, &token_id).await?.ok_or_else(not_found)?.into())
    }
}

/// Runs an admin's command on user `username` and returns the user as it now is.
async fn as_admin_on_user(ctx: &Context<'_>, username: &str, command: impl FnOnce(nullops_domain::Principal) -> UserCommand) -> ApiResult<UserGql> {
    let (app, req) = (app(ctx), request(ctx));
    let by = req.admin()?.clone();
    self::username(username)?;
    dispatch::<User>(app, req.metadata()?, username, command(by)).await?;
    user_by_name(app, username).await
}

fn username_of(user: &UserRow) -> ApiResult<Username> {
    Username::parse(&user.username).map_err(ApiError::internal)
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The deployment now, then again after every change to it (state, steps, health), for
    /// callers who may see it.
    async fn deployment_updated(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = ApiResult<deployments::DeploymentGql>>, ApiError> {
        deployments::updates(ctx, id).await
    }

    /// Each deployment the caller may see (of `project` and/or `environment` when given) again
    /// whenever it changes: its state, steps, health, lifetime, or its node's link. Ended ones
    /// come too, once, so that a list drops them. Ask `deployments` first, then follow this.
    async fn deployments_updated(
        &self,
        ctx: &Context<'_>,
        project: Option<String>,
        environment: Option<String>,
    ) -> Result<impl Stream<Item = ApiResult<deployments::DeploymentGql>>, ApiError> {
        let (app, credential, viewer) = follower(ctx).await?;
        Ok(crate::feeds::deployments(app, credential, viewer, project, environment))
    }

    /// Each node the caller may see (of `environment` when given) again whenever it changes: its
    /// status, trust, allocation, and its usage as its agent reports it (every few seconds). A
    /// removed node comes with `node: null`.
    async fn nodes_updated(&self, ctx: &Context<'_>, environment: Option<String>) -> Result<impl Stream<Item = ApiResult<crate::feeds::NodeChange>>, ApiError> {
        let (app, credential, viewer) = follower(ctx).await?;
        crate::feeds::nodes(app, credential, viewer, environment).await
    }

    /// Which part of the catalog changed, as it changes: registries, services and plugins for
    /// everyone; environments, projects (their pipeline and secrets), teams and users for those
    /// who may see them; ACCESS when what the caller may see changed. Ask again for what shows.
    async fn catalog_updated(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = ApiResult<crate::feeds::CatalogChange>>, ApiError> {
        let (app, credential, viewer) = follower(ctx).await?;
        Ok(crate::feeds::catalog(app, credential, viewer))
    }

    /// A deployment's log: the last lines, then each new one as it arrives; of one `service`
    /// (or `pipeline`: the steps' progress and the plugins' output) when given.
    async fn deployment_logs(
        &self,
        ctx: &Context<'_>,
        id: ID,
        service: Option<String>,
    ) -> Result<impl Stream<Item = ApiResult<deployments::LogLineGql>>, ApiError> {
        deployments::log_lines(ctx, id, service).await
    }

    /// Every event appended from now on that matches `filter`, as it happens (admins). The
    /// credential is re-checked with each event: a disabled user's feed ends at once.
    async fn audit_events(&self, ctx: &Context<'_>, filter: Option<AuditFilterInput>) -> Result<impl Stream<Item = ApiResult<AuditEntryGql>>, ApiError> {
        let req = request(ctx);
        req.admin()?;
        let app = app(ctx).clone();
        let credential = req.caller()?.credential.clone();
        let filter = filter.unwrap_or_default().to_filter();
        let mentions = filter.clone();
        let events = tokio_stream_from(app.live.subscribe());
        let entries = events.filter(move |e| std::future::ready(e.as_ref().is_none_or(|e| matches(&filter, e)))).then(move |e| {
            let (app, credential, mentions) = (app.clone(), credential.clone(), mentions.clone());
            async move {
                let caller = auth::resolve_credential(&app.read_models, credential).await?;
                if !caller.principal.is_admin() {
                    return Err(ApiError::Forbidden("this needs the admin role".into()));
                }
                let e = e.ok_or_else(|| ApiError::Conflict("this subscriber fell behind and missed events; subscribe again".into()))?;
                // As the history has it: with its summary.
                app.read_models.wait_for(&["audit"], e.position, app.consistency_wait).await?;
                let one = AuditFilter { event_id: Some(e.event_id.to_string()), ..Default::default() };
                let entry = audit::query(&app.read_models, &one, None, 1).await?.pop();
                let entry = entry.ok_or_else(|| ApiError::internal("a live event missing from the audit history"))?;
                Ok(mentions.mentioned_in(&entry.summary).then(|| AuditEntryGql::from(entry)))
            }
        });
        Ok(crate::live::until_error(entries.filter_map(|e| std::future::ready(e.transpose()))))
    }
}

/// What a live feed keeps of its caller: the app, the credential to check again, who they are now.
async fn follower(ctx: &Context<'_>) -> ApiResult<(Arc<App>, crate::feeds::FeedCredential, catalog::Viewer)> {
    let caller = request(ctx).caller()?;
    let credential = crate::feeds::FeedCredential { reference: caller.credential.clone(), expires_at: caller.expires_at };
    let viewer = catalog::Viewer::of(ctx).await?;
    Ok((app(ctx).clone(), credential, viewer))
}

#[cfg(test)]
mod sdl_tests {
    /// Clients check their queries against `gateway/schema.graphql` when they are built: it must
    /// be this schema. `NULLOPS_WRITE_SCHEMA=1 cargo test -p nullops-gateway sdl` writes it.
    #[test]
    fn the_committed_schema_is_the_schema() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
        let now = super::sdl();
        if std::env::var("NULLOPS_WRITE_SCHEMA").is_ok() {
            std::fs::write(&path, &now).expect("write the schema");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == now, "gateway/schema.graphql is not the schema: write it again with NULLOPS_WRITE_SCHEMA=1 cargo test -p nullops-gateway sdl");
    }
}
