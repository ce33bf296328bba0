//! Asking for a deployment: what the API's `createDeployment`, a clone and the previews process
//! share. The request is checked against the catalog (the project deploys to the environment,
//! the caller may deploy there, the chosen tags exist), its plan resolved, and one `Create`
//! command sent; the deployment saga then gives it a name, room and a node. The caller waits
//! for that decision on the read model, woken by each of its advances (no polling).

use std::collections::BTreeMap;
use std::time::Duration;

use nullops_domain::catalog::CatalogState;
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand, Phase, UserAction};
use nullops_domain::plan::{resolve, selectable_services};
use nullops_domain::{DnsLabel, DomainError, Issuer};
use nullops_events::catalog::{Access, PipelineGraph};
use nullops_events::deployment::{DeploymentRequested, RejectionCode};
use nullops_events::{EventMetadata, Timestamp};
use nullops_projections::catalog as catalog_read;
use nullops_projections::deployments::{self as read, DeploymentRow};
use nullops_projections::{ProjectionError, SAFETY_RECHECK};
use nullops_store::commands::CommandError;
use uuid::Uuid;

use crate::core::{Core, DispatchError};
use crate::tags::TagsError;

/// How much longer than the saga's own wait for a node (`Pacing::node_grace`) a request waits
/// for the saga to place the deployment, so that the caller normally hears the outcome; past
/// it, the deployment is returned PENDING (it is placed as soon as the saga gets to it).
pub const PLACEMENT_MARGIN: Duration = Duration::from_secs(15);
/// Names drawn when the caller asks for none and the drawn one is taken.
const NAME_DRAWS: usize = 3;

/// What a new deployment is asked to be.
pub struct Ask<'a> {
    pub project: &'a str,
    pub environment: &'a str,
    /// Generated when absent.
    pub name: Option<String>,
    /// The tag chosen for each selectable service, by service name.
    pub chosen: BTreeMap<String, String>,
    /// Its id, when the caller must know it before asking (a process that may ask again after
    /// a crash); fresh when absent.
    pub deployment_id: Option<Uuid>,
}

/// Why a deployment was not asked for, or not placed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Refused: the ask does not fit the catalog, the caller's access or the nodes' room.
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    ReadModel(#[from] ProjectionError),
    /// A chosen tag could not be checked in its registry.
    #[error(transparent)]
    Tags(#[from] TagsError),
}

impl From<DispatchError> for RequestError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Command(e) => RequestError::Command(e),
            DispatchError::ReadModel(e) => RequestError::ReadModel(e),
        }
    }
}

/// Why `row` failed or was refused, for people.
pub fn failure_reason(row: &DeploymentRow) -> String {
    row.failure.as_ref().map_or_else(|| format!("deployment {} could not be placed", row.name), |f| f.reason.clone())
}

impl Core {
    /// Asks for a deployment of `ask.project`'s latest pipeline as `by` (whose access is
    /// `access`) and waits for the saga to place it: the deployment placed, or why it cannot be.
    pub async fn request_deployment(&self, by: Issuer, access: Option<Access>, metadata: EventMetadata, ask: Ask<'_>) -> Result<DeploymentRow, RequestError> {
        let Ask { project, environment, name, chosen, deployment_id } = ask;
        let state = self.catalog().await?;
        let definition = state.project(project)?.clone();
        let env = state.environments.get(environment).ok_or_else(|| DomainError::NotFound(format!("no environment named {environment}")))?.clone();
        if !definition.environments.iter().any(|e| e == environment) {
            return Err(DomainError::invalid("environment", format!("project {project} does not deploy to {environment}")).into());
        }
        nullops_domain::access::require(access, Access::Full, &format!("project {project} in environment {environment}"))?;
        let latest = catalog_read::latest_pipeline_version(&self.read_models, definition.project_id).await?;
        let latest = latest.ok_or_else(|| DomainError::invalid("pipeline", format!("project {project} has no pipeline yet: save one first")))?;
        let (plan, versions) = resolve(&latest.graph, &chosen, &state)?;
        self.check_tags_exist(&state, &latest.graph, &chosen).await?;
        let asked = name.map(|n| DnsLabel::parse("name", &n)).transpose()?;

        // A generated name is drawn again should it be taken; a name asked for is tried once.
        let tries = if asked.is_some() { 1 } else { NAME_DRAWS };
        let mut refused = None;
        for _ in 0..tries {
            let name = match &asked {
                Some(name) => name.clone(),
                None => generated_name(project)?,
            };
            // The saga decides; this only spares the log a request bound to be refused.
            if read::by_name(&self.read_models, environment, name.as_str()).await?.is_some() {
                refused = Some(DomainError::Conflict(format!("environment {environment} already has a deployment named {}", name.as_str())));
                continue;
            }
            let deployment_id = deployment_id.unwrap_or_else(Uuid::now_v7);
            let lifetime_secs = definition.cleanup_after_secs.unwrap_or(env.cleanup_after_secs);
            let expires_at = Timestamp::now().0.saturating_add(i64::try_from(lifetime_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
            let request = DeploymentRequested {
                deployment_id,
                project_id: definition.project_id,
                project: project.to_owned(),
                environment: environment.to_owned(),
                name: String::new(),
                versions: versions.clone(),
                pipeline_version: latest.version,
                plan: plan.clone(),
                cpu_millis: definition.cpu_millis,
                memory_mib: definition.memory_mib,
                lifetime_secs,
                expires_at,
            };
            let command = DeploymentCommand { by: by.clone(), action: DeploymentAction::Create { access, request, name } };
            self.dispatch::<Deployment>(None, metadata.clone(), &deployment_id.to_string(), command).await?;
            let row = self.placement(deployment_id, 1).await?;
            match row.rejection {
                None => return Ok(row),
                Some(RejectionCode::NameTaken) => refused = Some(DomainError::Conflict(failure_reason(&row))),
                Some(RejectionCode::NoRoom) => return Err(DomainError::ResourcesExhausted(failure_reason(&row)).into()),
            }
        }
        Err(refused.expect("at least one try").into())
    }

    /// Runs the FAILED deployment `row` again as `by` (whose access is `access`), under its
    /// name, with the project's latest pipeline version and the same versions of its services;
    /// waits for the saga to place the new attempt.
    pub async fn retry_deployment(
        &self,
        by: Issuer,
        access: Option<Access>,
        metadata: EventMetadata,
        row: &DeploymentRow,
    ) -> Result<DeploymentRow, RequestError> {
        nullops_domain::access::require(access, Access::Full, &format!("deployment {}", row.name))?;
        if !row.phase().allows(UserAction::Retry) {
            return Err(DomainError::Conflict(format!("deployment {} is {}: only a failed deployment is retried", row.name, row.phase().name())).into());
        }
        let state = self.catalog().await?;
        let definition = state.project(&row.project)?;
        let latest = catalog_read::latest_pipeline_version(&self.read_models, definition.project_id).await?;
        let latest = latest.ok_or_else(|| DomainError::invalid("pipeline", format!("project {} has no pipeline yet: save one first", row.project)))?;
        let versions = row.versions.iter().map(|v| (v.service.clone(), v.tag.clone())).collect();
        let (plan, _) = resolve(&latest.graph, &versions, &state)?;
        let command = DeploymentCommand { by, action: DeploymentAction::Retry { access, pipeline_version: latest.version, plan } };
        self.dispatch::<Deployment>(None, metadata, &row.deployment_id.to_string(), command).await?;
        let placed = self.placement(row.deployment_id, row.attempt + 1).await?;
        if placed.phase() == Phase::Failed && placed.attempt == row.attempt + 1 {
            // The saga found no node with room for the new attempt.
            return Err(DomainError::ResourcesExhausted(failure_reason(&placed)).into());
        }
        Ok(placed)
    }

    /// The deployment once the saga has placed (or refused) `attempt`, or as it is when
    /// the wait for it ([`PLACEMENT_MARGIN`] past the node grace) runs out. Woken by every
    /// advance of the read models.
    pub async fn placement(&self, deployment_id: Uuid, attempt: u32) -> Result<DeploymentRow, ProjectionError> {
        let deadline = tokio::time::Instant::now() + self.pacing.node_grace + PLACEMENT_MARGIN;
        let mut advanced = self.read_models.advances();
        loop {
            let row = read::deployment(&self.read_models, deployment_id)
                .await?
                .ok_or_else(|| ProjectionError::Corrupt(format!("requested deployment {deployment_id} is missing")))?;
            if (row.attempt >= attempt && row.phase() != Phase::Pending) || tokio::time::Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::select! {
                _ = advanced.changed() => {}
                _ = tokio::time::sleep(SAFETY_RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Every chosen tag of a selectable service must exist in its registry now.
    async fn check_tags_exist(&self, state: &CatalogState, graph: &PipelineGraph, chosen: &BTreeMap<String, String>) -> Result<(), RequestError> {
        for service in selectable_services(graph, state) {
            let Some(tag) = chosen.get(&service.name) else { continue };
            let registry =
                state.registries.get(&service.registry).ok_or_else(|| DomainError::NotFound(format!("registry {} no longer exists", service.registry)))?;
            let mut tags = self.registries.tags(&self.keyring, registry, &service.image, false).await?;
            if !tags.contains(tag) {
                // Maybe pushed in the last seconds.
                tags = self.registries.tags(&self.keyring, registry, &service.image, true).await?;
            }
            if !tags.contains(tag) {
                return Err(DomainError::invalid("tags", format!("{}:{tag} does not exist in registry {}", service.image, service.registry)).into());
            }
        }
        Ok(())
    }
}

/// A generated name: the project's name and a random suffix.
fn generated_name(project: &str) -> Result<DnsLabel, DomainError> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..6).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect();
    let stem: String = project.chars().take(63 - 7).collect();
    DnsLabel::parse("name", format!("{}-{suffix}", stem.trim_end_matches('-')).as_str())
}
