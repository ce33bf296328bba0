//! Deployments in GraphQL: create, delete (a cancel while creating), extend, retry, clone; the
//! deployments a caller may see, each with its run, services, history and countdown; and
//! `deploymentUpdated`, the live feed of one deployment.
//!
//! A create or a retry only records the request: the deployment saga (`nullops-saga`) gives it
//! a name and a node, or rejects it, and the mutation answers with what the saga decided.
//!
//! Access to a deployment is the caller's access to its project or environment, whichever is
//! higher (`nullops_domain::access`); changing one needs FULL.

mod types;

use std::collections::BTreeMap;

use std::time::Duration;

use async_graphql::{Context, InputObject, Object, ID};
use futures::{Stream, StreamExt};
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand};
use nullops_domain::Issuer;
use nullops_events::catalog::{Access, AccessTarget, TagMode};
use nullops_events::deployment::DeletionReason;
use nullops_events::Timestamp;
use nullops_projections::deployments::{self as read, DeploymentRow};
use nullops_projections::nodes as nodes_read;
use uuid::Uuid;

use crate::catalog::{catalog_state, Viewer};
use crate::context::{app, request};
use crate::error::{ApiError, ApiResult};
use crate::live::tokio_stream_from;
use crate::live::{may_revoke_access, node_link_changed, until_error, ACCESS_READ_MODELS};
use crate::{dispatch, App};
use nullops_saga::Ask;
pub use types::{DeploymentGql, LogLineGql};

#[derive(InputObject, Clone)]
pub struct TagChoice {
    pub service: String,
    pub tag: String,
}

#[derive(Default)]
pub struct DeploymentQuery;

#[Object]
impl DeploymentQuery {
    /// The deployments the caller may see, newest first; of a project and/or environment when
    /// given; ended (deleted, cancelled) ones only with `includeEnded`.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        project: Option<String>,
        environment: Option<String>,
        #[graphql(default = false)] include_ended: bool,
    ) -> ApiResult<Vec<DeploymentGql>> {
        let viewer = Viewer::of(ctx).await?;
        let rows = read::deployments(&app(ctx).read_models, project.as_deref(), environment.as_deref(), include_ended).await?;
        Ok(rows.into_iter().filter_map(|r| viewer.access(&targets(&r)).map(|access| DeploymentGql(r, access))).collect())
    }

    async fn deployment(&self, ctx: &Context<'_>, id: ID) -> ApiResult<DeploymentGql> {
        let viewer = Viewer::of(ctx).await?;
        let row = find(app(ctx), &id).await?;
        let access = viewer.access(&targets(&row)).ok_or_else(|| not_found(&id))?;
        Ok(DeploymentGql(row, access))
    }
}

#[derive(Default)]
pub struct DeploymentMutation;

#[Object]
impl DeploymentMutation {
    /// Deploys the project's latest pipeline version into `environment` (FULL access): pinned
    /// services run their tag, selectable ones the tag chosen in `tags`, which must exist in the
    /// registry and match the service's pattern. A node with room is reserved before it
    /// answers, or the call fails with RESOURCES_EXHAUSTED (CONFLICT when the name is taken).
    /// `name` (a DNS label, unique in the environment) is generated when absent.
    async fn create_deployment(
        &self,
        ctx: &Context<'_>,
        project: String,
        environment: String,
        name: Option<String>,
        tags: Option<Vec<TagChoice>>,
    ) -> ApiResult<DeploymentGql> {
        let chosen = choices(tags.unwrap_or_default())?;
        create(ctx, &project, &environment, name, chosen).await
    }

    /// Deletes a deployment (FULL access); while it is still being created this cancels it.
    /// Everything it ran on its node is removed.
    async fn delete_deployment(&self, ctx: &Context<'_>, id: ID) -> ApiResult<DeploymentGql> {
        let app = app(ctx);
        let row = find(app, &id).await?;
        let access = caller_access(ctx, &row).await?;
        let action = DeploymentAction::Delete { access, reason: DeletionReason::User };
        change(ctx, row.deployment_id, action).await?;
        Ok(DeploymentGql(find(app, &id).await?, seen(access)))
    }

    /// Resets the deployment's lifetime in full, from now (FULL access).
    async fn extend_deployment(&self, ctx: &Context<'_>, id: ID) -> ApiResult<DeploymentGql> {
        let app = app(ctx);
        let row = find(app, &id).await?;
        let access = caller_access(ctx, &row).await?;
        change(ctx, row.deployment_id, DeploymentAction::Extend { access, now: Timestamp::now().0 }).await?;
        Ok(DeploymentGql(find(app, &id).await?, seen(access)))
    }

    /// Runs a FAILED deployment again, under its name, with the project's latest pipeline
    /// version and the same versions of its services (FULL access).
    async fn retry_deployment(&self, ctx: &Context<'_>, id: ID) -> ApiResult<DeploymentGql> {
        let app = app(ctx);
        let row = find(app, &id).await?;
        let access = caller_access(ctx, &row).await?;
        let by = Issuer::User(request(ctx).principal()?.clone());
        let placed = app.retry_deployment(by, access, request(ctx).metadata()?, &row).await?;
        Ok(DeploymentGql(placed, seen(access)))
    }

    /// A new deployment of the same project and environment, with the latest pipeline version,
    /// a new name (so new URLs) and the source's service versions, changed by `tags`.
    async fn clone_deployment(&self, ctx: &Context<'_>, id: ID, name: Option<String>, tags: Option<Vec<TagChoice>>) -> ApiResult<DeploymentGql> {
        let app = app(ctx);
        let source = find(app, &id).await?;
        caller_access(ctx, &source).await?.ok_or_else(|| not_found(&id))?;
        let mut chosen = versions_of(&source);
        chosen.extend(choices(tags.unwrap_or_default())?);
        // Pinned services keep their pin: only selectable services carry a choice over.
        let state = catalog_state(app).await?;
        chosen.retain(|service, _| state.services.get(service).is_some_and(|s| matches!(s.tag, TagMode::Selectable(_))));
        create(ctx, &source.project, &source.environment, name, chosen).await
    }
}

/// What a deployment is seen and changed through.
pub(crate) fn targets(row: &DeploymentRow) -> [AccessTarget; 2] {
    [AccessTarget::Project(row.project.clone()), AccessTarget::Environment(row.environment.clone())]
}

/// The access of a caller already found to have some (`caller_access`, `create`).
fn seen(access: Option<Access>) -> Access {
    access.unwrap_or(Access::ReadOnly)
}

fn not_found(id: &ID) -> ApiError {
    ApiError::NotFound(format!("no deployment with id {}", id.as_str()))
}

fn parse_id(id: &ID) -> ApiResult<Uuid> {
    Uuid::try_parse(id.as_str()).map_err(|_| ApiError::InvalidInput(format!("id: {:?} is not a deployment id", id.as_str())))
}

async fn find(app: &App, id: &ID) -> ApiResult<DeploymentRow> {
    read::deployment(&app.read_models, parse_id(id)?).await?.ok_or_else(|| not_found(id))
}

/// The caller's access to a deployment, from the catalog as decided. Without any, the
/// deployment is not there: NOT_FOUND, as for a missing one (its name is not told).
async fn caller_access(ctx: &Context<'_>, row: &DeploymentRow) -> ApiResult<Option<Access>> {
    let state = catalog_state(app(ctx)).await?;
    let access = state.access(request(ctx).principal()?, &targets(row));
    if access.is_none() {
        return Err(not_found(&ID(row.deployment_id.to_string())));
    }
    Ok(access)
}

async fn change(ctx: &Context<'_>, deployment_id: Uuid, action: DeploymentAction) -> ApiResult<()> {
    let req = request(ctx);
    let command = DeploymentCommand { by: Issuer::User(req.principal()?.clone()), action };
    dispatch::<Deployment>(app(ctx), req.metadata()?, &deployment_id.to_string(), command).await?;
    Ok(())
}

pub(crate) fn choices(tags: Vec<TagChoice>) -> ApiResult<BTreeMap<String, String>> {
    let mut chosen = BTreeMap::new();
    for t in tags {
        if chosen.insert(t.service.clone(), t.tag).is_some() {
            return Err(ApiError::InvalidInput(format!("tags: service {} is given twice", t.service)));
        }
    }
    Ok(chosen)
}

fn versions_of(row: &DeploymentRow) -> BTreeMap<String, String> {
    row.versions.iter().map(|v| (v.service.clone(), v.tag.clone())).collect()
}

async fn create(ctx: &Context<'_>, project: &str, environment: &str, name: Option<String>, chosen: BTreeMap<String, String>) -> ApiResult<DeploymentGql> {
    let app = app(ctx);
    let principal = request(ctx).principal()?.clone();
    let state = catalog_state(app).await?;
    // Access first: to a caller without any grant, nothing about the project or environment
    // is told (the answer for a missing project).
    let access = state.access(&principal, &[AccessTarget::Project(project.to_owned()), AccessTarget::Environment(environment.to_owned())]);
    if access.is_none() {
        return Err(ApiError::NotFound(format!("no project named {project}")));
    }
    let ask = Ask { project, environment, name, chosen, deployment_id: None };
    let row = app.request_deployment(Issuer::User(principal), access, request(ctx).metadata()?, ask).await?;
    Ok(DeploymentGql(row, seen(access)))
}

/// `deploymentUpdated(id)`: the deployment now, then again after every change to it, for as
/// long as the caller may see it.
pub async fn updates(ctx: &Context<'_>, id: ID) -> ApiResult<impl Stream<Item = ApiResult<DeploymentGql>>> {
    let app = app(ctx).clone();
    let viewer = Viewer::of(ctx).await?;
    let row = find(&app, &id).await?;
    let guard = LiveGuard { credential: request(ctx).caller()?.credential.clone(), targets: targets(&row) };
    let stream_id = format!("deployment-{}", row.deployment_id);
    let events = tokio_stream_from(app.live.subscribe());
    let access = viewer.access(&targets(&row)).ok_or_else(|| not_found(&id))?;
    // Its services' CPU and memory change with each usage report of its node, which no event
    // says: the feed looks for a newer report now and then, and sends the deployment again.
    let sampled_first = match row.node_id {
        Some(node) => nodes_read::usage(&app.read_models, node).await?.map(|u| u.sampled_at),
        None => None,
    };
    let usage = futures::stream::unfold((app.clone(), id.clone(), guard.clone(), sampled_first), |(app, id, guard, sampled)| async move {
        tokio::time::sleep(USAGE_EVERY).await;
        let found = async {
            let row = find(&app, &id).await?;
            let now = match row.node_id {
                Some(node) => nodes_read::usage(&app.read_models, node).await?.map(|u| u.sampled_at),
                None => None,
            };
            if now == sampled || !row.phase().on_node() {
                return Ok((None, now));
            }
            let access = guard.check(&app, None).await?;
            Ok((Some(DeploymentGql(row, access)), now))
        };
        let (item, sampled) = match found.await {
            Ok((item, now)) => (Ok(item), now),
            Err(e) => (Err(e), sampled),
        };
        Some((item, (app, id, guard, sampled)))
    });
    let first = futures::stream::once(async move { Ok(Some(DeploymentGql(row, access))) });
    // Its own events, its node's link (the deployment reads OFFLINE while the node is: what the
    // list shows, the page shows), and what may end the caller's access.
    let concerns =
        move |e: &nullops_events::StoredEvent| e.stream_id.as_str() == stream_id || may_revoke_access(&e.event_type) || node_link_changed(e).is_some();
    let rest = events.filter(move |e| std::future::ready(e.as_deref().is_none_or(&concerns))).then(move |e| {
        let (app, id, guard) = (app.clone(), id.clone(), guard.clone());
        async move {
            let e = e.ok_or_else(|| ApiError::Conflict("this subscriber fell behind and missed events; subscribe again".into()))?;
            if may_revoke_access(&e.event_type) {
                guard.check(&app, Some(e.position)).await?;
                return Ok(None);
            }
            if let Some(node) = node_link_changed(&e) {
                app.read_models.wait_for(&["nodes"], e.position, app.consistency_wait).await?;
                let row = find(&app, &id).await?;
                if row.node_id != Some(node) {
                    return Ok(None);
                }
                let access = guard.check(&app, None).await?;
                return Ok(Some(DeploymentGql(row, access)));
            }
            let access = guard.check(&app, None).await?;
            // The read model shows the event before it is served.
            app.read_models.wait_for(&["deployments"], e.position, app.consistency_wait).await?;
            Ok(Some(DeploymentGql(find(&app, &id).await?, access)))
        }
    });
    let rest = futures::stream::select(rest, usage);
    Ok(until_error(first.chain(rest).filter_map(|item| std::future::ready(item.transpose()))))
}

/// How often a deployment's feed looks for a newer usage report of its node.
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// What a live feed of one deployment checks before it delivers: that its caller may still
/// see the deployment (the session or token still good, the user enabled, a grant still held).
#[derive(Clone)]
struct LiveGuard {
    credential: crate::auth::CredentialRef,
    targets: [AccessTarget; 2],
}

impl LiveGuard {
    /// UNAUTHENTICATED or FORBIDDEN once the caller may no longer see it; `after` an event that
    /// may have revoked access, once the read models that say so show it.
    async fn check(&self, app: &App, after: Option<nullops_events::LogPosition>) -> ApiResult<Access> {
        if let Some(position) = after {
            app.read_models.wait_for(&ACCESS_READ_MODELS, position, app.consistency_wait).await?;
        }
        let viewer = Viewer::now(app, &self.credential).await?;
        viewer.access(&self.targets).ok_or_else(|| ApiError::Forbidden("you may no longer see this deployment".into()))
    }
}

/// How often a log subscription looks for new lines, and checks that its caller may still see
/// the deployment while none come.
const LOG_POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
const LOG_ACCESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `deploymentLogs(id, service)`: the last lines, then every new line as it is stored, for as
/// long as the caller may see the deployment. Lines are telemetry, not events: they are read
/// from the table the connector writes, which every gateway process can reach.
pub async fn log_lines(ctx: &Context<'_>, id: ID, service: Option<String>) -> ApiResult<impl Stream<Item = ApiResult<LogLineGql>>> {
    let app = app(ctx).clone();
    let viewer = Viewer::of(ctx).await?;
    let row = find(&app, &id).await?;
    viewer.access(&targets(&row)).ok_or_else(|| not_found(&id))?;
    let guard = LiveGuard { credential: request(ctx).caller()?.credential.clone(), targets: targets(&row) };
    let deployment_id = row.deployment_id;
    let batches = futures::stream::unfold((app, 0i64, true, tokio::time::Instant::now()), move |(app, after, first, checked)| {
        let (service, guard) = (service.clone(), guard.clone());
        async move {
            if !first {
                tokio::time::sleep(LOG_POLL_EVERY).await;
            }
            let limit = if first { 200 } else { i64::from(types::MAX_TAIL) };
            let batch = read::logs(&app.read_models, deployment_id, service.as_deref(), after, 0, limit).await.map_err(ApiError::from);
            // Access is checked before lines are delivered, and now and then while none come.
            let mut checked = checked;
            let batch = match batch {
                Ok(rows) if !rows.is_empty() || checked.elapsed() >= LOG_ACCESS_EVERY => {
                    checked = tokio::time::Instant::now();
                    guard.check(&app, None).await.map(|_| rows)
                }
                other => other,
            };
            let next = batch.as_ref().ok().and_then(|b| b.last()).map_or(after, |l| l.seq);
            Some((batch, (app, next, false, checked)))
        }
    });
    Ok(until_error(batches.flat_map(|batch| {
        let items: Vec<ApiResult<LogLineGql>> = match batch {
            Ok(rows) => rows.into_iter().map(|r| Ok(LogLineGql::from(r))).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    })))
}
