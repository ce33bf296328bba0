//! The reaper: deletes deployments whose lifetime ran out, as the platform itself (actor
//! `system` in their history), once per tick while this process holds the `reaper` lease.

use std::sync::Arc;
use std::time::Duration;

use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand};
use nullops_domain::Issuer;
use nullops_events::deployment::DeletionReason;
use nullops_events::{EventMetadata, Timestamp};
use nullops_projections::ReadModelDb;
use nullops_store::commands::execute;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

/// How often expiries are looked for: the countdown's resolution.
const REAP_EVERY: Duration = Duration::from_secs(1);

pub async fn run(store: Arc<dyn EventStore>, read_models: ReadModelDb, shutdown: CancellationToken) {
    loop {
        match store.try_lease("reaper").await {
            Ok(Some(_lease)) => reap(&*store, &read_models).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the reaper could not take its lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REAP_EVERY) => {}
        }
    }
}

async fn reap(store: &dyn EventStore, read_models: &ReadModelDb) {
    let expired = match nullops_projections::deployments::expired(read_models, Timestamp::now().0).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for expired deployments");
            return;
        }
    };
    for row in expired {
        let command = DeploymentCommand { by: Issuer::System, action: DeploymentAction::Delete { access: None, reason: DeletionReason::Expired } };
        match execute::<Deployment>(store, &row.deployment_id.to_string(), &command, &EventMetadata::system()).await {
            Ok(_) => tracing::info!(deployment = %row.deployment_id, name = %row.name, "deleted an expired deployment"),
            Err(e) => tracing::warn!(deployment = %row.deployment_id, error = %e, "cannot delete an expired deployment"),
        }
    }
}
