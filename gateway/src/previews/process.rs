//! The `previews` process: a checkpointed saga (lease `saga:previews`) that makes each pull
//! request's deployment `pr-<number>` follow what its latest `preview.requested` asks, and tells
//! the forge how it went. Reacting to an event only records work (the request into its
//! `previews` row, or a deployment's change as a reason to look again); the tick does the work,
//! one step per preview at a time, each step looking at the deployments as they are now, so a
//! crash anywhere is followed by the same step again:
//!
//! - deploy: the name held by an earlier commit's deployment is freed first (deleted); the tag
//!   the rule asks for is waited for in the registry (bounded); then the deployment is asked for
//!   under an id fixed when the hook was recorded (asking twice cannot make two); its RUNNING or
//!   FAILED is reported.
//! - remove: the deployment is deleted and its removal reported.
//!
//! The commit status and the one comment are posted whenever what they say changes, retried with
//! growing pauses and given up after [`MAX_FEEDBACK_FAILURES`] (the preview itself is unaffected).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nullops_domain::catalog::CatalogState;
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand, Phase};
use nullops_domain::preview::{preview_key, preview_name, Preview};
use nullops_domain::Issuer;
use nullops_events::catalog::{Access, RepositoryLink};
use nullops_events::codec::types;
use nullops_events::deployment::DeletionReason;
use nullops_events::preview::{PreviewEvent, PreviewWish};
use nullops_events::{DomainEvent, EventMetadata, StoredEvent, Timestamp};
use nullops_projections::deployments as deployments_read;
use nullops_projections::previews::{self as rows, PreviewPhase, PreviewRow, Progress};
use nullops_saga::{Saga, SagaError};
use nullops_store::commands::load;

use super::forge::{self, ForgeApi, StatusState};
use crate::catalog::catalog_state;
use crate::deployments::{failure_reason, service_urls};
use nullops_saga::Ask;
use crate::error::ApiError;
use crate::{dispatch, App};

/// How long a tag the rule asks for is waited for in the registry.
pub const TAG_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often the registry is asked meanwhile.
const TAG_POLL: Duration = Duration::from_secs(5);
/// How often a deployment being placed, run or removed is looked at (its events also wake it).
const WATCH: Duration = Duration::from_secs(2);
/// Forge calls that may fail in a row before the status and comment are given up.
pub const MAX_FEEDBACK_FAILURES: u32 = 20;
/// The longest pause between forge calls that failed.
const MAX_FEEDBACK_PAUSE_SECS: i64 = 60;
/// Previews worked on at once.
const CONCURRENCY: usize = 4;
/// Previews looked at per tick.
const SCAN: u32 = 100;

pub struct PreviewProcess {
    app: Arc<App>,
    http: reqwest::Client,
    /// Previews being worked on now (project id, number): not picked again meanwhile.
    in_flight: Arc<Mutex<HashSet<(uuid::Uuid, u64)>>>,
}

impl PreviewProcess {
    pub fn new(app: Arc<App>) -> Self {
        let http = forge::client(&app.egress);
        PreviewProcess { app, http, in_flight: Arc::default() }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Deployment events that change what a preview reports.
const WAKING: [&str; 6] = [
    types::DEPLOYMENT_SCHEDULED.0,
    types::DEPLOYMENT_RUNNING.0,
    types::DEPLOYMENT_FAILED.0,
    types::DEPLOYMENT_DELETION_REQUESTED.0,
    types::DEPLOYMENT_REMOVED.0,
    types::DEPLOYMENT_REJECTED.0,
];

#[async_trait]
impl Saga for PreviewProcess {
    fn name(&self) -> &'static str {
        "previews"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PREVIEW_REQUESTED.0 || WAKING.contains(&event_type)
    }

    async fn react(&self, stored: &StoredEvent) -> Result<(), SagaError> {
        if stored.event_type != types::PREVIEW_REQUESTED.0 {
            if let Ok(deployment_id) = uuid::Uuid::try_parse(stored.stream_id.key()) {
                rows::wake(&self.app.read_models, deployment_id).await?;
            }
            return Ok(());
        }
        let DomainEvent::Preview(PreviewEvent::Requested(r)) = stored.decode()?.event else { return Ok(()) };
        let (deployment_id, merged) = match r.wish {
            PreviewWish::Deploy { deployment_id } => (Some(deployment_id), false),
            PreviewWish::Remove { merged } => (None, merged),
        };
        let at = stored.occurred_at.0;
        let row = PreviewRow {
            project_id: r.project_id,
            number: r.number,
            project: r.project,
            forge: r.forge.slug().to_owned(),
            title: r.title,
            url: r.url,
            sender: r.sender,
            action: r.action,
            deployment_id,
            merged,
            head_sha: r.head_sha,
            tag: r.tag,
            position: (i64::try_from(stored.position.commit).unwrap_or(i64::MAX), i64::try_from(stored.position.seq).unwrap_or(i64::MAX)),
            requested_at: at,
            tag_deadline: at.saturating_add(micros(TAG_WAIT)),
            progress: Progress::requested(),
        };
        rows::record(&self.app.read_models, &row).await?;
        Ok(())
    }

    async fn tick(&self) -> Result<(), SagaError> {
        let due = rows::due(&self.app.read_models, Timestamp::now().0, SCAN).await?;
        for row in due {
            {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                if in_flight.len() >= CONCURRENCY || !in_flight.insert((row.project_id, row.number)) {
                    continue;
                }
            }
            let (app, http, in_flight) = (self.app.clone(), self.http.clone(), self.in_flight.clone());
            tokio::spawn(async move {
                let key = (row.project_id, row.number);
                if let Err(e) = step(&app, &http, &row).await {
                    tracing::warn!(project = %row.project, number = row.number, error = %e, "a preview step failed; it is tried again");
                }
                in_flight.lock().expect("in-flight lock").remove(&key);
            });
        }
        Ok(())
    }
}

/// What a step found and what the forge should be told.
struct Outcome {
    phase: PreviewPhase,
    message: String,
    /// Look again after this long; `None`: nothing more to do until something changes.
    again_in: Option<Duration>,
    status: Option<(StatusState, String, Option<String>)>,
    /// The services' URLs, once running.
    urls: BTreeMap<String, String>,
}

impl Outcome {
    fn watch(phase: PreviewPhase, message: String, again_in: Duration, pending: &str) -> Self {
        Outcome { phase, status: Some((StatusState::Pending, pending.to_owned(), None)), message, again_in: Some(again_in), urls: BTreeMap::new() }
    }
    fn failed(message: String) -> Self {
        Outcome { phase: PreviewPhase::Failed, status: Some((StatusState::Failure, message.clone(), None)), message, again_in: None, urls: BTreeMap::new() }
    }
    fn settled(phase: PreviewPhase, message: String) -> Self {
        Outcome { phase, message, again_in: None, status: None, urls: BTreeMap::new() }
    }
}

/// One step of one preview, recorded.
async fn step(app: &App, http: &reqwest::Client, row: &PreviewRow) -> Result<(), String> {
    let catalog = catalog_state(app).await.map_err(|e| e.message())?;
    let now = Timestamp::now().0;
    let mut progress = row.progress.clone();
    let link = catalog.links.get(&row.project).filter(|_| catalog.projects.get(&row.project).is_some_and(|p| p.project_id == row.project_id));
    let Some(link) = link else {
        progress.message = format!("project {} is no longer linked to a repository: nothing more is done or posted", row.project);
        progress.settled = true;
        rows::progressed(&app.read_models, row, &progress).await.map_err(|e| e.to_string())?;
        return Ok(());
    };
    let outcome = match drive(app, &catalog, link, row, now).await {
        Ok(outcome) => outcome,
        // The platform itself is not answering: the same step again shortly.
        Err(e) => {
            progress.next_at = now + micros(TAG_POLL);
            progress.message = e.message();
            rows::progressed(&app.read_models, row, &progress).await.map_err(|e| e.to_string())?;
            return Err(e.message());
        }
    };
    progress.phase = outcome.phase;
    progress.message = outcome.message.clone();
    progress.settled = outcome.again_in.is_none();
    progress.next_at = now + outcome.again_in.map_or(0, micros);

    if let Err(e) = tell_forge(app, http, &catalog, link, row, &outcome, &mut progress).await {
        progress.failures += 1;
        if progress.failures >= MAX_FEEDBACK_FAILURES {
            tracing::warn!(project = %row.project, number = row.number, error = %e, "giving up posting a preview's status to the forge");
            progress.message = format!("{} (the forge could not be told: {e})", outcome.message);
            progress.failures = 0;
        } else {
            tracing::info!(project = %row.project, number = row.number, error = %e, "a preview's status could not be posted; it is tried again");
            progress.settled = false;
            let pause = (1i64 << progress.failures.min(10)).min(MAX_FEEDBACK_PAUSE_SECS) * 1_000_000;
            progress.next_at = progress.next_at.max(now + pause);
        }
    } else {
        progress.failures = 0;
    }
    rows::progressed(&app.read_models, row, &progress).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Moves the preview's deployment one step towards what `row` asks.
async fn drive(app: &App, catalog: &CatalogState, link: &RepositoryLink, row: &PreviewRow, now: i64) -> Result<Outcome, ApiError> {
    let name = preview_name(row.number);
    let environment = &link.environment;
    let holder = deployments_read::by_name(&app.read_models, environment, &name).await?;
    if let Some(h) = &holder {
        if h.project != link.project {
            return Ok(Outcome::failed(format!("environment {environment} already has a deployment named {name}, of project {}", h.project)));
        }
        // Previews touch only what they made: a deployment someone made by hand under the
        // preview's name is theirs, never replaced or deleted here.
        let (preview, _) = load::<Preview>(&*app.store, &preview_key(row.project_id, row.number)).await?;
        if !preview.made(h.deployment_id) {
            return Ok(match row.deployment_id {
                Some(_) => Outcome::failed(format!(
                    "environment {environment} already has a deployment named {name} that this preview did not make (by {}): delete or rename it to let the preview deploy",
                    h.created_by
                )),
                None => Outcome::settled(
                    PreviewPhase::Removed,
                    format!("the {} was closed; {name} in {environment} is not the preview's (by {}) and is left as it is", forge_noun(link), h.created_by),
                ),
            });
        }
    }
    let Some(deployment_id) = row.deployment_id else {
        // Closed or merged.
        return Ok(match holder {
            Some(h) => {
                delete(app, &h).await?;
                Outcome::settled(PreviewPhase::Removing, format!("deleting {name}")).again(WATCH)
            }
            None => {
                let why = if row.merged { "merged" } else { "closed" };
                Outcome::settled(PreviewPhase::Removed, format!("the {} was {why}: {name} is deleted", forge_noun(link)))
            }
        });
    };
    if let Some(h) = holder.as_ref().filter(|h| h.deployment_id != deployment_id) {
        delete(app, h).await?;
        return Ok(Outcome::watch(
            PreviewPhase::Replacing,
            format!("deleting the preview of the previous commit to deploy {}", short(&row.head_sha)),
            WATCH,
            "Replacing the previous preview",
        ));
    }
    let Some(d) = deployments_read::deployment(&app.read_models, deployment_id).await? else {
        return ask_for_deployment(app, catalog, link, row, now, deployment_id).await;
    };
    Ok(match d.phase {
        Phase::Running => {
            let urls = service_urls(app, catalog, &d);
            let url = urls.get(&link.service).or_else(|| urls.values().next()).cloned();
            Outcome {
                phase: PreviewPhase::Running,
                message: url.clone().unwrap_or_else(|| format!("{name} is running")),
                again_in: None,
                status: Some((StatusState::Success, format!("Preview {name} is running"), url)),
                urls,
            }
        }
        Phase::Failed | Phase::Rejected => Outcome::failed(failure_reason(&d)),
        Phase::Cancelling | Phase::Deleting | Phase::Cancelled | Phase::Deleted => Outcome::settled(
            PreviewPhase::Gone,
            format!("{name} was deleted (it expired, or someone deleted it): push a commit or reopen the {} to deploy it again", forge_noun(link)),
        ),
        Phase::Pending | Phase::Scheduled | Phase::Deploying => {
            Outcome::watch(PreviewPhase::Deploying, format!("deploying {name} with {}:{}", link.service, row.tag), WATCH, &format!("Deploying {name}"))
        }
    })
}

impl Outcome {
    fn again(mut self, after: Duration) -> Self {
        self.again_in = Some(after);
        self
    }
}

/// Asks for the deployment once the tag is in the registry (or fails when it never came).
async fn ask_for_deployment(
    app: &App,
    catalog: &CatalogState,
    link: &RepositoryLink,
    row: &PreviewRow,
    now: i64,
    deployment_id: uuid::Uuid,
) -> Result<Outcome, ApiError> {
    let name = preview_name(row.number);
    let Some(service) = catalog.services.get(&link.service) else {
        return Ok(Outcome::failed(format!("service {} no longer exists", link.service)));
    };
    let Some(registry) = catalog.registries.get(&service.registry) else {
        return Ok(Outcome::failed(format!("registry {} no longer exists", service.registry)));
    };
    let image = format!("{}:{}", service.image, row.tag);
    let found = match app.registries.tags(&app.keyring, registry, &service.image, true).await {
        Ok(tags) => tags.contains(&row.tag),
        Err(e) => {
            let message = format!("registry {} cannot be asked for {image}: {}", service.registry, ApiError::from(e).message());
            if now >= row.tag_deadline {
                return Ok(Outcome::failed(message));
            }
            return Ok(Outcome::watch(PreviewPhase::WaitingForTag, message, TAG_POLL, &format!("Waiting for {image}")));
        }
    };
    if !found {
        if now >= row.tag_deadline {
            return Ok(Outcome::failed(format!(
                "{image} did not appear in registry {} within {} minutes: push it, then push a commit to try again",
                service.registry,
                TAG_WAIT.as_secs() / 60
            )));
        }
        return Ok(Outcome::watch(
            PreviewPhase::WaitingForTag,
            format!("waiting for {image} in registry {}", service.registry),
            TAG_POLL,
            &format!("Waiting for {image}"),
        ));
    }
    let ask = Ask {
        project: &link.project,
        environment: &link.environment,
        name: Some(name.clone()),
        chosen: BTreeMap::from([(link.service.clone(), row.tag.clone())]),
        deployment_id: Some(deployment_id),
    };
    match app.request_deployment(Issuer::System, Some(Access::Full), EventMetadata::system(), ask).await.map_err(ApiError::from) {
        Ok(_) => Ok(Outcome::watch(PreviewPhase::Deploying, format!("deploying {name} with {image}"), WATCH, &format!("Deploying {name}"))),
        // Asked already (a step again after a crash): it is watched from now on.
        Err(ApiError::Conflict(_)) if deployments_read::deployment(&app.read_models, deployment_id).await?.is_some() => {
            Ok(Outcome::watch(PreviewPhase::Deploying, format!("deploying {name} with {image}"), WATCH, &format!("Deploying {name}")))
        }
        Err(e @ (ApiError::Unavailable | ApiError::Internal(_) | ApiError::NotYetVisible(_))) => Err(e),
        Err(e) => Ok(Outcome::failed(e.message())),
    }
}

/// Deletes `d` unless it is already going.
async fn delete(app: &App, d: &deployments_read::DeploymentRow) -> Result<(), ApiError> {
    if d.phase.removing() || d.phase.ended() {
        return Ok(());
    }
    let command = DeploymentCommand { by: Issuer::System, action: DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User } };
    dispatch::<Deployment>(app, EventMetadata::system(), &d.deployment_id.to_string(), command).await?;
    Ok(())
}

fn forge_noun(link: &RepositoryLink) -> &'static str {
    link.forge.request_noun()
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Posts the status and the comment where what they say changed since they were last posted.
async fn tell_forge(
    app: &App,
    http: &reqwest::Client,
    catalog: &CatalogState,
    link: &RepositoryLink,
    row: &PreviewRow,
    outcome: &Outcome,
    progress: &mut Progress,
) -> Result<(), String> {
    let body = comment(link, row, outcome);
    let status_key = outcome.status.as_ref().map(|(state, description, _)| format!("{} {state:?} {description}", row.head_sha));
    let status_due = status_key.as_ref().is_some_and(|k| *k != progress.reported);
    if !status_due && body == progress.comment {
        return Ok(());
    }
    let credentials = super::hooks::unseal(app, catalog, link).await?;
    let api = ForgeApi { http, egress: &app.egress, link, token: &credentials.token };
    if let (true, Some((state, description, url)), Some(key)) = (status_due, &outcome.status, status_key) {
        api.status(&row.head_sha, *state, description, url.as_deref()).await.map_err(|e| e.message)?;
        progress.reported = key;
    }
    if body != progress.comment {
        progress.comment_id = api.comment(row.number, &progress.comment_id, &body).await.map_err(|e| e.message)?;
        progress.comment = body;
    }
    Ok(())
}

/// The comment kept on the request: where its preview is and its URLs.
fn comment(link: &RepositoryLink, row: &PreviewRow, outcome: &Outcome) -> String {
    let name = preview_name(row.number);
    let headline = match outcome.phase {
        PreviewPhase::Requested | PreviewPhase::WaitingForTag => "waiting for its image",
        PreviewPhase::Replacing | PreviewPhase::Deploying => "deploying",
        PreviewPhase::Running => "running",
        PreviewPhase::Failed => "failed",
        PreviewPhase::Removing => "being deleted",
        PreviewPhase::Removed => "deleted",
        PreviewPhase::Gone => "deleted",
    };
    let mut text = format!("<!-- nullops-preview -->\n### NullOps preview `{name}`: {headline}\n\n");
    if outcome.urls.is_empty() {
        text.push_str(&format!("{}\n\n", outcome.message));
    } else {
        text.push_str("| Service | URL |\n|---|---|\n");
        for (service, url) in &outcome.urls {
            text.push_str(&format!("| {service} | {url} |\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Commit `{}` · {} `{}` · project `{}` · environment `{}`\n",
        short(&row.head_sha),
        link.service,
        row.tag,
        link.project,
        link.environment
    ));
    text
}
