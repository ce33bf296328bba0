//! Projects, their versioned pipelines and their secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use nullops_domain::access;
use nullops_domain::catalog::{CatalogAction, CatalogState};
use nullops_domain::pipeline::{self, DraftAction, DraftNode, Pipeline, PipelineCommand, PipelineContext, PipelineDraft};
use nullops_domain::secrets::{SecretCommand, Secrets};
use nullops_domain::SecretName;
use nullops_events::catalog::{Access, AccessTarget, NodePlacement, PipelineAction, PipelineDryRun, PipelineEdge, PipelineGraph, ProjectDefinition};
use nullops_projections::catalog::{self as read, kind, Entry};
use nullops_store::commands;
use uuid::Uuid;

use super::types::*;
use super::{catalog_state, change_catalog, dispatch_keyed, entry, Viewer};
use nullops_domain::secrets::MAX_SECRET_VALUE_BYTES;

use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};
use crate::{dispatch, App};

/// How long a pipeline save waits for each plugin image's digest before pinning by tag alone.
const DIGEST_DEADLINE: Duration = Duration::from_secs(3);

/// A project as one caller sees it.
pub struct ProjectGql {
    entry: Entry<ProjectDefinition>,
    my_access: Option<Access>,
    /// Its environments where the caller holds FULL access (on the project or the environment).
    deployable: Vec<String>,
}

impl ProjectGql {
    fn project_id(&self) -> Uuid {
        self.entry.definition.project_id
    }
}

#[Object(name = "Project")]
impl ProjectGql {
    async fn id(&self) -> ID {
        ID(self.project_id().to_string())
    }
    async fn name(&self) -> &str {
        &self.entry.definition.name
    }
    /// Environments the project may deploy to.
    async fn environments(&self) -> &[String] {
        &self.entry.definition.environments
    }
    /// CPU limit of each deployment, in millicores.
    async fn cpu_millis(&self) -> i32 {
        self.entry.definition.cpu_millis as i32
    }
    /// Memory limit of each deployment, in MiB.
    async fn memory_mib(&self) -> i32 {
        self.entry.definition.memory_mib as i32
    }
    async fn cleanup_after_seconds(&self) -> Option<i64> {
        self.entry.definition.cleanup_after_secs.map(|s| s as i64)
    }
    /// The caller's access to the project itself (FULL may change its pipeline and secrets);
    /// null when they see it only through a grant on one of its environments.
    async fn my_access(&self) -> Option<AccessGql> {
        self.my_access.map(Into::into)
    }
    /// The environments the caller may deploy the project to: those where they hold FULL
    /// access, on the project or on the environment.
    async fn deployable_environments(&self) -> &[String] {
        &self.deployable
    }
    /// Which teams hold which access to the project.
    async fn grants(&self, ctx: &Context<'_>) -> ApiResult<Vec<GrantGql>> {
        let target = AccessTarget::Project(self.entry.definition.name.clone());
        Ok(read::grants_on(&app(ctx).read_models, &target).await?.into_iter().map(Into::into).collect())
    }
    /// The latest pipeline version, if one was saved.
    async fn pipeline(&self, ctx: &Context<'_>) -> ApiResult<Option<PipelineVersionGql>> {
        Ok(read::latest_pipeline_version(&app(ctx).read_models, self.project_id()).await?.map(Into::into))
    }
    /// Every pipeline version, newest first.
    async fn pipeline_versions(&self, ctx: &Context<'_>) -> ApiResult<Vec<PipelineVersionGql>> {
        Ok(read::pipeline_versions(&app(ctx).read_models, self.project_id()).await?.into_iter().map(Into::into).collect())
    }
    async fn pipeline_version(&self, ctx: &Context<'_>, version: i32) -> ApiResult<PipelineVersionGql> {
        Ok(self.version(app(ctx), version).await?.into())
    }
    /// What changed from version `from` to version `to`.
    async fn pipeline_diff(&self, ctx: &Context<'_>, from: i32, to: i32) -> ApiResult<Vec<PipelineChangeGql>> {
        let app = app(ctx);
        let (old, new) = (self.version(app, from).await?, self.version(app, to).await?);
        Ok(pipeline::diff(&old.graph, &new.graph)
            .into_iter()
            .map(|c| PipelineChangeGql {
                kind: match c.kind {
                    pipeline::ChangeKind::Added => ChangeKindGql::Added,
                    pipeline::ChangeKind::Removed => ChangeKindGql::Removed,
                    pipeline::ChangeKind::Changed => ChangeKindGql::Changed,
                },
                subject: c.subject,
                detail: c.detail,
            })
            .collect())
    }
    /// The project's secrets: names and history only, never values.
    async fn secrets(&self, ctx: &Context<'_>) -> ApiResult<Vec<SecretGql>> {
        Ok(read::secrets(&app(ctx).read_models, self.project_id()).await?.into_iter().map(Into::into).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        time(self.entry.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        time(self.entry.updated_at)
    }
}

impl ProjectGql {
    async fn version(&self, app: &App, version: i32) -> ApiResult<read::PipelineVersionRow> {
        let not_found = || ApiError::NotFound(format!("project {} has no pipeline version {version}", self.entry.definition.name));
        let number = u32::try_from(version).map_err(|_| not_found())?;
        read::pipeline_version(&app.read_models, self.project_id(), number).await?.ok_or_else(not_found)
    }
}

/// What `viewer` sees of a project: nothing without a grant on it or on one of its environments.
fn visible(viewer: &Viewer, entry: Entry<ProjectDefinition>) -> Option<ProjectGql> {
    let own = AccessTarget::Project(entry.definition.name.clone());
    let mut targets = vec![own.clone()];
    targets.extend(entry.definition.environments.iter().map(|e| AccessTarget::Environment(e.clone())));
    viewer.access(&targets)?;
    let deployable = entry
        .definition
        .environments
        .iter()
        .filter(|e| viewer.access(&[own.clone(), AccessTarget::Environment((*e).clone())]) == Some(Access::Full))
        .cloned()
        .collect();
    Some(ProjectGql { my_access: viewer.access(&[own]), deployable, entry })
}

async fn project_for(ctx: &Context<'_>, name: &str) -> ApiResult<ProjectGql> {
    let viewer = Viewer::of(ctx).await?;
    let entry = entry::<ProjectDefinition>(app(ctx), kind::PROJECT, name).await?;
    // Without a grant, a project is not there at all: the same answer as for a missing one.
    visible(&viewer, entry).ok_or_else(|| ApiError::NotFound(format!("no project named {name}")))
}

#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// Projects the caller can see: admins all; others those their teams hold a grant on, or on
    /// one of whose environments they hold one.
    async fn projects(&self, ctx: &Context<'_>) -> ApiResult<Vec<ProjectGql>> {
        let viewer = Viewer::of(ctx).await?;
        let all = read::entries::<ProjectDefinition>(&app(ctx).read_models, kind::PROJECT).await?;
        Ok(all.into_iter().filter_map(|e| visible(&viewer, e)).collect())
    }

    async fn project(&self, ctx: &Context<'_>, name: String) -> ApiResult<ProjectGql> {
        project_for(ctx, &name).await
    }
}

/// The project named `name` in the catalog, with the caller's access to it, refusing early
/// unless that access is FULL (the decider checks again).
fn full_access(ctx: &Context<'_>, state: &CatalogState, name: &str) -> ApiResult<(ProjectDefinition, Option<Access>)> {
    let project = state.project(name)?.clone();
    let held = state.project_access(request(ctx).principal()?, name);
    if held.is_none() {
        // Not seen is not there: the answer for a missing project.
        return Err(ApiError::NotFound(format!("no project named {name}")));
    }
    access::require(held, Access::Full, &format!("project {name}"))?;
    Ok((project, held))
}

/// A draft and the layout it was drawn with.
fn draft(input: PipelineInput) -> ApiResult<(PipelineDraft, Vec<NodePlacement>)> {
    let layout = input.layout.into_iter().map(|p| NodePlacement { node: p.node, x: p.x, y: p.y }).collect();
    let nodes = input
        .nodes
        .into_iter()
        .map(|n| {
            let action = match (n.service, n.plugin) {
                (Some(service), None) if n.parameters.is_none() => DraftAction::StartService { service },
                (None, Some(plugin)) => DraftAction::RunPlugin { plugin, parameters: n.parameters.map_or_else(|| serde_json::json!({}), |p| p.0) },
                (Some(_), None) => return Err(ApiError::InvalidInput(format!("pipeline: node {:?}: parameters are for plugin nodes", n.id))),
                _ => return Err(ApiError::InvalidInput(format!("pipeline: node {:?}: give either service or plugin", n.id))),
            };
            Ok(DraftNode { id: n.id, action })
        })
        .collect::<ApiResult<_>>()?;
    Ok((PipelineDraft { nodes, edges: input.edges.into_iter().map(|e| PipelineEdge { from: e.from, to: e.to }).collect() }, layout))
}

/// A saved graph as a draft, to check it again against the catalog as it is now.
fn as_draft(graph: &PipelineGraph) -> PipelineDraft {
    let nodes = graph
        .nodes
        .iter()
        .map(|n| DraftNode {
            id: n.id.clone(),
            action: match &n.action {
                PipelineAction::StartService { service } => DraftAction::StartService { service: service.clone() },
                PipelineAction::RunPlugin { plugin, parameters, .. } => {
                    DraftAction::RunPlugin { plugin: plugin.clone(), parameters: serde_json::from_str(parameters).unwrap_or_default() }
                }
            },
        })
        .collect();
    PipelineDraft { nodes, edges: graph.edges.clone() }
}

/// What a pipeline's context is for `definition` now: the catalog and the project's secrets,
/// with `digests` to pin plugin images by.
async fn pipeline_context(app: &App, state: &CatalogState, definition: &ProjectDefinition, digests: BTreeMap<String, String>) -> ApiResult<PipelineContext> {
    let secrets = commands::load::<Secrets>(&*app.store, &definition.project_id.to_string()).await?.0.keys.into_keys().collect();
    let limits = (definition.cpu_millis, definition.memory_mib);
    Ok(PipelineContext { services: state.services.clone(), plugins: state.plugins.clone(), secrets, digests, limits })
}

/// Digests of the images of the plugins a draft uses, as far as their registries tell within
/// the deadline; a plugin whose registry does not answer is pinned by tag alone.
async fn plugin_digests(app: &App, state: &CatalogState, draft: &PipelineDraft) -> BTreeMap<String, String> {
    let mut plugins: Vec<&str> = draft
        .nodes
        .iter()
        .filter_map(|n| match &n.action {
            DraftAction::RunPlugin { plugin, .. } => Some(plugin.as_str()),
            DraftAction::StartService { .. } => None,
        })
        .collect();
    plugins.sort();
    plugins.dedup();
    let lookups = plugins.into_iter().filter_map(|name| state.plugins.get(name)).map(|p| async move {
        let registry = super::definitions::open_registry(app, &p.registry).await.ok()?;
        let lookup = app.registries.client().manifest_digest(&registry, &p.repository, &p.tag);
        match tokio::time::timeout(DIGEST_DEADLINE, lookup).await {
            Ok(Ok(digest)) => digest.map(|d| (p.name.clone(), d)),
            Ok(Err(e)) => {
                tracing::info!(plugin = %p.name, error = %e, "pinning the plugin image by tag only");
                None
            }
            Err(_) => {
                tracing::info!(plugin = %p.name, "registry too slow; pinning the plugin image by tag only");
                None
            }
        }
    });
    futures::future::join_all(lookups).await.into_iter().flatten().collect()
}

#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    /// Defines a project (admins).
    async fn create_project(&self, ctx: &Context<'_>, input: ProjectInput) -> ApiResult<ProjectGql> {
        let definition = input.definition(Uuid::now_v7())?;
        let name = definition.name.clone();
        change_catalog(ctx, CatalogAction::CreateProject(definition)).await?;
        project_for(ctx, &name).await
    }

    /// Replaces a project's definition (admins); its id, pipeline and secrets stay.
    async fn update_project(&self, ctx: &Context<'_>, input: ProjectInput) -> ApiResult<ProjectGql> {
        let definition = input.definition(Uuid::nil())?;
        let name = definition.name.clone();
        // Its services share the new limits: as many as its latest pipeline runs.
        let services = match catalog_state(app(ctx)).await?.projects.get(&name) {
            Some(current) => {
                let latest = read::latest_pipeline_version(&app(ctx).read_models, current.project_id).await?;
                latest.map_or(0, |v| v.graph.services())
            }
            None => 0,
        };
        change_catalog(ctx, CatalogAction::UpdateProject { project: definition, services }).await?;
        project_for(ctx, &name).await
    }

    /// Deletes a project (admins): its secrets are destroyed first, then the project and its grants.
    async fn delete_project(&self, ctx: &Context<'_>, name: String) -> ApiResult<bool> {
        let (app, req) = (app(ctx), request(ctx));
        req.admin()?;
        let project = catalog_state(app).await?.project(&name)?.clone();
        let key = project.project_id.to_string();
        let (secrets, _) = commands::load::<Secrets>(&*app.store, &key).await?;
        for secret in secrets.keys.keys() {
            let command = SecretCommand::Delete { access: Some(Access::Full), project: name.clone(), name: SecretName::parse(secret)? };
            dispatch_keyed::<Secrets>(app, None, req.metadata()?, &key, command, None).await?;
        }
        change_catalog(ctx, CatalogAction::RemoveProject { name }).await?;
        Ok(true)
    }

    /// Saves a new version of a project's pipeline (FULL access). The graph is checked whole
    /// and every error names its node; plugin images are pinned by tag and, when the registry
    /// reports one, by digest. Saving the latest version's graph again changes nothing.
    ///
    /// `message` says what changed; `basedOn` names the older version an author started from.
    /// A refusal is INVALID_INPUT with every problem in `extensions.problems`.
    async fn save_pipeline(
        &self,
        ctx: &Context<'_>,
        project: String,
        pipeline: PipelineInput,
        message: Option<String>,
        based_on: Option<i32>,
    ) -> ApiResult<PipelineVersionGql> {
        let app = app(ctx);
        let state = catalog_state(app).await?;
        let (definition, access) = full_access(ctx, &state, &project)?;
        let (draft, layout) = draft(pipeline)?;
        let key = definition.project_id.to_string();
        let context = pipeline_context(app, &state, &definition, plugin_digests(app, &state, &draft).await).await?;
        let based_on = based_on
            .map(|b| u32::try_from(b).map_err(|_| ApiError::InvalidInput(format!("basedOn: project {project} has no pipeline version {b}"))))
            .transpose()?;
        let command = PipelineCommand::Save {
            access,
            project: project.clone(),
            project_id: definition.project_id,
            draft,
            context,
            message: message.unwrap_or_default(),
            layout,
            based_on,
        };
        dispatch::<Pipeline>(app, request(ctx).metadata()?, &key, command).await?;
        let latest = read::latest_pipeline_version(&app.read_models, definition.project_id).await?;
        Ok(latest.ok_or_else(|| ApiError::internal("saved pipeline missing from read model"))?.into())
    }

    /// Checks a pipeline for `environment` without deploying or saving anything (FULL access):
    /// the draft if given, else saved `version`, else the latest. It validates the graph and
    /// every plugin's parameters, resolves every image against its registry with the chosen
    /// `tags`, checks every secret it uses is set, gives the stages that would start together,
    /// and answers whether a node has room now. Only an audit entry is appended.
    async fn dry_run_pipeline(
        &self,
        ctx: &Context<'_>,
        project: String,
        environment: String,
        version: Option<i32>,
        draft: Option<PipelineInput>,
        #[graphql(default)] tags: Vec<crate::deployments::TagChoice>,
    ) -> ApiResult<DryRunGql> {
        let app = app(ctx);
        let state = catalog_state(app).await?;
        let (definition, access) = full_access(ctx, &state, &project)?;
        if !definition.environments.contains(&environment) {
            return Err(ApiError::InvalidInput(format!("environment: project {project} does not deploy to {environment}")));
        }
        let chosen = crate::deployments::choices(tags)?;
        let (draft, version) = match (draft, version) {
            (Some(_), Some(_)) => return Err(ApiError::InvalidInput("version: give a draft or a version, not both".into())),
            (Some(input), None) => (self::draft(input)?.0, None),
            (None, asked) => {
                let saved = match asked {
                    Some(v) => {
                        let number = u32::try_from(v).map_err(|_| ApiError::NotFound(format!("project {project} has no pipeline version {v}")))?;
                        read::pipeline_version(&app.read_models, definition.project_id, number).await?
                    }
                    None => read::latest_pipeline_version(&app.read_models, definition.project_id).await?,
                };
                let saved = saved.ok_or_else(|| ApiError::NotFound(format!("project {project} has no such pipeline version: save one first")))?;
                (as_draft(&saved.graph), Some(saved.version))
            }
        };
        // Nothing is pinned by a dry run: its image lookups below find each digest once.
        let context = pipeline_context(app, &state, &definition, BTreeMap::new()).await?;
        let checked = pipeline::check(&draft, &context);
        let mut problems = checked.problems;
        let images = super::dry_run::images(app, &state, &draft, &chosen, &mut problems).await;
        let room = nullops_domain::capacity::Resources { cpu_millis: u64::from(definition.cpu_millis), memory_mib: u64::from(definition.memory_mib) };
        let preview = super::dry_run::admission(app, &environment, room).await?;
        let outcome = PipelineDryRun {
            environment,
            version,
            problems: u32::try_from(problems.len()).unwrap_or(u32::MAX),
            fits_on: preview.node.as_ref().map(|(id, _)| *id),
        };
        let command = PipelineCommand::RecordDryRun { access, project, outcome };
        dispatch::<Pipeline>(app, request(ctx).metadata()?, &definition.project_id.to_string(), command).await?;
        Ok(DryRunGql {
            ok: problems.is_empty() && preview.node.is_some(),
            problems: problems.iter().map(Into::into).collect(),
            order: checked.stages,
            images,
            admission: DryRunAdmissionGql { fits: preview.node.is_some(), node: preview.node.map(|(_, name)| name), message: preview.message },
            version: version.map(|v| v as i32),
        })
    }

    /// Creates or replaces a project secret (FULL access). The value is encrypted at once and
    /// can never be read back through the API; it is given only to plugins at run time.
    async fn set_secret(&self, ctx: &Context<'_>, project: String, name: String, value: String) -> ApiResult<SecretGql> {
        let app = app(ctx);
        let state = catalog_state(app).await?;
        let (definition, access) = full_access(ctx, &state, &project)?;
        let secret = SecretName::parse(&name)?;
        if value.is_empty() || value.len() > MAX_SECRET_VALUE_BYTES {
            return Err(ApiError::InvalidInput(format!("value: use 1 to {MAX_SECRET_VALUE_BYTES} bytes")));
        }
        let sealed = app.keyring.seal(value.as_bytes(), &nullops_domain::secrets::secret_purpose(definition.project_id, secret.as_str())).await?;
        let fresh_key = Some(sealed.key_id);
        let command = SecretCommand::Set { access, project: project.clone(), name: secret, value: sealed };
        dispatch_keyed::<Secrets>(app, None, request(ctx).metadata()?, &definition.project_id.to_string(), command, fresh_key).await?;
        let row = read::secrets(&app.read_models, definition.project_id).await?.into_iter().find(|s| s.name == name);
        Ok(row.ok_or_else(|| ApiError::internal("saved secret missing from read model"))?.into())
    }

    /// Deletes a project secret (FULL access). Its data key is destroyed: the encrypted value
    /// left in the event log can never be read again.
    async fn delete_secret(&self, ctx: &Context<'_>, project: String, name: String) -> ApiResult<bool> {
        let app = app(ctx);
        let state = catalog_state(app).await?;
        let (definition, access) = full_access(ctx, &state, &project)?;
        let command = SecretCommand::Delete { access, project, name: SecretName::parse(&name)? };
        dispatch_keyed::<Secrets>(app, None, request(ctx).metadata()?, &definition.project_id.to_string(), command, None).await?;
        Ok(true)
    }
}
