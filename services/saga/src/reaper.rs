//! The reaper: deletes deployments whose lifetime ran out, as the platform itself (actor
//! `system` in their history). A [`Periodic`] process, leased: one server reaps at a time.

use std::sync::Arc;

use async_trait::async_trait;
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand};
use nullops_domain::Issuer;
use nullops_events::deployment::DeletionReason;
use nullops_events::{EventMetadata, Timestamp};
use nullops_projections::ReadModelDb;
use nullops_store::commands::execute;
use nullops_store::EventStore;

use crate::periodic::{Periodic, Scope};
use crate::SagaError;

/// Looks for expired deployments every `Pacing::reap_every` (the countdown's resolution).
pub struct Reaper {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
}

#[async_trait]
impl Periodic for Reaper {
    type Error = SagaError;
    const NAME: &'static str = "reaper";
    const SCOPE: Scope = Scope::Leased;

    async fn run_once(&self) -> Result<(), SagaError> {
        for row in nullops_projections::deployments::expired(&self.read_models, Timestamp::now().0).await? {
            let command = DeploymentCommand { by: Issuer::System, action: DeploymentAction::Delete { access: None, reason: DeletionReason::Expired } };
            // One deployment that cannot be deleted now does not hold up the others.
            match execute::<Deployment>(&*self.store, &row.deployment_id.to_string(), &command, &EventMetadata::system()).await {
                Ok(_) => tracing::info!(deployment = %row.deployment_id, name = %row.name, "deleted an expired deployment"),
                Err(e) => tracing::warn!(deployment = %row.deployment_id, error = %e, "cannot delete an expired deployment"),
            }
        }
        Ok(())
    }
}
