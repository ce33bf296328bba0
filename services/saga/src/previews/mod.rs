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
//! What a step does is decided by [`step::choose`] from what it found (pure, unit-tested);
//! this module only gathers the facts and carries the decision out. Every command a step sends
//! carries the correlation id and trace of the hook that asked, so a pull request's events and
//! its deployment's share them.
//!
//! The commit status and the one comment are posted whenever what they say changes, retried with
//! growing pauses and given up after [`MAX_FEEDBACK_FAILURES`] (the preview itself is unaffected).

pub mod forge;
pub mod step;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nullops_domain::catalog::{repository_credentials_purpose, CatalogState};
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand, Phase};
use nullops_domain::preview::{preview_key, preview_name, Preview};
use nullops_domain::{DomainError, Issuer};
use nullops_events::catalog::{Access, ForgeCredentials, RepositoryLink};
use nullops_events::codec::types;
use nullops_events::deployment::DeletionReason;
use nullops_events::preview::{PreviewEvent, PreviewWish};
use nullops_events::{Actor, DomainEvent, EventMetadata, LogPosition, StoredEvent, StreamId, Timestamp};
use nullops_projections::deployments as deployments_read;
use nullops_projections::previews::{self as rows, PreviewRow, Progress};
use nullops_projections::{WorkingRows, WorkingWrite};
use nullops_store::commands::load;

use self::forge::ForgeApi;
use self::step::{choose, Facts, Holder, Outcome, Step, TagLookup};
use crate::core::Core;
use crate::request::{failure_reason, Ask, RequestError};
use crate::slots::Slots;
use crate::{Saga, SagaError};

/// Forge calls that may fail in a row before the status and comment are given up.
pub const MAX_FEEDBACK_FAILURES: u32 = 20;
/// The longest pause between forge calls that failed.
const MAX_FEEDBACK_PAUSE_SECS: i64 = 60;
/// Previews worked on at once.
const CONCURRENCY: usize = 4;
/// Previews looked at per tick.
const SCAN: u32 = 100;

pub struct PreviewProcess {
    core: Arc<Core>,
    http: reqwest::Client,
    /// Previews being worked on now (project id, number): not picked again meanwhile.
    working: Slots<(uuid::Uuid, u64)>,
}

impl PreviewProcess {
    pub fn new(core: Arc<Core>) -> Self {
        let http = forge::client(&core.egress);
        PreviewProcess { core, http, working: Slots::new(CONCURRENCY) }
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

    fn working_rows(&self) -> Option<WorkingRows> {
        Some(self.core.read_models.working_rows())
    }

    /// A request becomes its pull request's row; a change of a deployment wakes the rows that
    /// follow it.
    async fn record(&self, stored: &StoredEvent) -> Result<Vec<WorkingWrite>, SagaError> {
        if stored.event_type != types::PREVIEW_REQUESTED.0 {
            return Ok(uuid::Uuid::try_parse(stored.stream_id.key()).map(WorkingWrite::WakePreviews).into_iter().collect());
        }
        let DomainEvent::Preview(PreviewEvent::Requested(r)) = stored.decode()?.event else { return Ok(vec![]) };
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
            tag_deadline: at.saturating_add(micros(self.core.pacing.preview_tag_wait)),
            progress: Progress::requested(),
        };
        Ok(vec![WorkingWrite::Preview(Box::new(row))])
    }

    async fn tick(&self) -> Result<(), SagaError> {
        let due = rows::due(&self.core.read_models, Timestamp::now().0, SCAN).await?;
        for row in due {
            let Some(slot) = self.working.take((row.project_id, row.number)) else { continue };
            let (core, http) = (self.core.clone(), self.http.clone());
            tokio::spawn(async move {
                if let Err(e) = work(&core, &http, &row).await {
                    tracing::warn!(project = %row.project, number = row.number, error = %e, "a preview step failed; it is tried again");
                }
                drop(slot);
            });
        }
        Ok(())
    }
}

/// One step of one preview, recorded.
async fn work(core: &Core, http: &reqwest::Client, row: &PreviewRow) -> Result<(), SagaError> {
    let catalog = core.catalog().await?;
    let now = Timestamp::now().0;
    let mut progress = row.progress.clone();
    let link = catalog.links.get(&row.project).filter(|_| catalog.projects.get(&row.project).is_some_and(|p| p.project_id == row.project_id));
    let Some(link) = link else {
        progress.message = format!("project {} is no longer linked to a repository: nothing more is done or posted", row.project);
        progress.settled = true;
        rows::progressed(&core.read_models.working_rows(), row, &progress).await?;
        return Ok(());
    };
    let metadata = asked_by(core, row).await?;
    let outcome = match drive(core, &catalog, link, row, now, &metadata).await {
        Ok(outcome) => outcome,
        // The platform itself is not answering: the same step again shortly.
        Err(e) => {
            progress.next_at = now + micros(core.pacing.preview_tag_poll);
            progress.message = format!("the platform did not answer ({e}); trying again");
            rows::progressed(&core.read_models.working_rows(), row, &progress).await?;
            return Err(e);
        }
    };
    progress.phase = outcome.phase;
    progress.message = outcome.message.clone();
    progress.settled = outcome.again_in.is_none();
    progress.next_at = now + outcome.again_in.map_or(0, micros);

    if let Err(e) = tell_forge(core, http, &catalog, link, row, &outcome, &mut progress).await {
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
    rows::progressed(&core.read_models.working_rows(), row, &progress).await?;
    Ok(())
}

/// The metadata of the commands a step sends: the platform acts, within the correlation and
/// the trace of the hook whose `preview.requested` the row follows.
async fn asked_by(core: &Core, row: &PreviewRow) -> Result<EventMetadata, SagaError> {
    let position = LogPosition { commit: u64::try_from(row.position.0).unwrap_or(0), seq: u64::try_from(row.position.1).unwrap_or(0) };
    let stream = StreamId::new(<Preview as nullops_domain::Decider>::KIND, &preview_key(row.project_id, row.number));
    let events = core.store.read_stream(&stream, 0).await?;
    Ok(match events.iter().find(|e| e.position == position) {
        Some(asked) => EventMetadata {
            actor: Actor::System,
            correlation_id: asked.metadata.correlation_id,
            causation_id: Some(asked.event_id.0),
            trace_context: asked.metadata.trace_context.clone(),
        },
        None => EventMetadata::system(),
    })
}

/// Moves the preview's deployment one step towards what `row` asks: gathers what
/// [`step::choose`] needs, and does what it chose.
async fn drive(core: &Core, catalog: &CatalogState, link: &RepositoryLink, row: &PreviewRow, now: i64, metadata: &EventMetadata) -> Result<Outcome, SagaError> {
    let name = preview_name(row.number);
    let holder = match deployments_read::by_name(&core.read_models, &link.environment, &name).await? {
        Some(h) => {
            let (preview, _) = load::<Preview>(&*core.store, &preview_key(row.project_id, row.number)).await?;
            Some(Holder {
                deployment_id: h.deployment_id,
                project: h.project.clone(),
                created_by: h.created_by.clone(),
                made_by_preview: preview.made(h.deployment_id),
                removing: h.phase().removing() || h.phase().ended(),
            })
        }
        None => None,
    };
    let wanted = match row.deployment_id {
        Some(id) => deployments_read::deployment(&core.read_models, id).await?,
        None => None,
    };
    let (phase, urls, failure) = match &wanted {
        Some(d) => (Some(d.phase()), if d.phase() == Phase::Running { core.service_urls(catalog, d) } else { BTreeMap::new() }, Some(failure_reason(d))),
        None => (None, BTreeMap::new(), None),
    };
    let tag = if row.deployment_id.is_some() && wanted.is_none() && holder.as_ref().is_none_or(|h| Some(h.deployment_id) == row.deployment_id) {
        Some(look_for_tag(core, catalog, link, row).await)
    } else {
        None
    };
    let facts = Facts { link, row, now, holder: holder.as_ref(), phase, urls, failure, tag, tag_poll: core.pacing.preview_tag_poll };
    match choose(&facts) {
        Step::Report(outcome) => Ok(outcome),
        Step::Delete { deployment_id, then } => {
            if !holder.as_ref().is_some_and(|h| h.removing) {
                let command =
                    DeploymentCommand { by: Issuer::System, action: DeploymentAction::Delete { access: Some(Access::Full), reason: DeletionReason::User } };
                core.dispatch::<Deployment>(None, metadata.clone(), &deployment_id.to_string(), command).await?;
            }
            Ok(then)
        }
        Step::Ask { deployment_id, then } => {
            let ask = Ask {
                project: &link.project,
                environment: &link.environment,
                name: Some(name),
                chosen: BTreeMap::from([(link.service.clone(), row.tag.clone())]),
                deployment_id: Some(deployment_id),
            };
            match core.request_deployment(Issuer::System, Some(Access::Full), metadata.clone(), ask).await {
                Ok(_) => Ok(then),
                // Asked already (a step again after a crash): it is watched from now on.
                Err(RequestError::Domain(DomainError::Conflict(_))) if deployments_read::deployment(&core.read_models, deployment_id).await?.is_some() => {
                    Ok(then)
                }
                Err(RequestError::Domain(refused)) => Ok(Outcome::failed(refused.to_string())),
                Err(RequestError::Tags(e)) => Ok(Outcome::failed(e.to_string())),
                Err(RequestError::Command(e)) => Err(e.into()),
                Err(RequestError::ReadModel(e)) => Err(e.into()),
            }
        }
    }
}

/// Whether the tag the preview asks for is in its service's registry now.
async fn look_for_tag(core: &Core, catalog: &CatalogState, link: &RepositoryLink, row: &PreviewRow) -> TagLookup {
    let Some(service) = catalog.services.get(&link.service) else { return TagLookup::NoService };
    let Some(registry) = catalog.registries.get(&service.registry) else { return TagLookup::NoRegistry(service.registry.clone()) };
    let image = service.image.clone();
    match core.registries.tags(&core.keyring, registry, &service.image, true).await {
        Ok(tags) => TagLookup::Asked { image, registry: service.registry.clone(), found: tags.contains(&row.tag) },
        Err(e) => TagLookup::Unanswered { image, registry: service.registry.clone(), why: e.to_string() },
    }
}

/// Why a repository link's credentials cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("project {0} no longer exists")]
    ProjectGone(String),
    #[error("the link's credentials cannot be read: {0}")]
    Keyring(#[from] nullops_keyring::KeyringError),
    #[error("the link's credentials are not what a link stores")]
    NotCredentials,
}

/// The link's forge credentials, unsealed.
pub async fn unseal(core: &Core, catalog: &CatalogState, link: &RepositoryLink) -> Result<ForgeCredentials, UnsealError> {
    let project_id = catalog.projects.get(&link.project).map(|p| p.project_id).ok_or_else(|| UnsealError::ProjectGone(link.project.clone()))?;
    let clear = core.keyring.unseal(&link.credentials, &repository_credentials_purpose(project_id)).await?;
    serde_json::from_slice(&clear).map_err(|_| UnsealError::NotCredentials)
}

/// Why the forge was not told a preview's progress.
#[derive(Debug, thiserror::Error)]
enum Untold {
    #[error(transparent)]
    Credentials(#[from] UnsealError),
    #[error("{}", .0.message)]
    Forge(forge::CallError),
}

/// Posts the status and the comment where what they say changed since they were last posted.
async fn tell_forge(
    core: &Core,
    http: &reqwest::Client,
    catalog: &CatalogState,
    link: &RepositoryLink,
    row: &PreviewRow,
    outcome: &Outcome,
    progress: &mut Progress,
) -> Result<(), Untold> {
    let body = step::comment(link, row, outcome);
    let status_key = outcome.status.as_ref().map(|(state, description, _)| format!("{} {state:?} {description}", row.head_sha));
    let status_due = status_key.as_ref().is_some_and(|k| *k != progress.reported);
    if !status_due && body == progress.comment {
        return Ok(());
    }
    let credentials = unseal(core, catalog, link).await?;
    let api = ForgeApi { http, egress: &core.egress, link, token: &credentials.token };
    if let (true, Some((state, description, url)), Some(key)) = (status_due, &outcome.status, status_key) {
        api.status(&row.head_sha, *state, description, url.as_deref()).await.map_err(Untold::Forge)?;
        progress.reported = key;
    }
    if body != progress.comment {
        progress.comment_id = api.comment(row.number, &progress.comment_id, &body).await.map_err(Untold::Forge)?;
        progress.comment = body;
    }
    Ok(())
}
