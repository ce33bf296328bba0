//! The platform's core as the API and the background processes share it: the event store, the
//! read models and the caches every command path needs. Commands go through
//! [`Core::dispatch`], which returns once the read models that show the command's events have
//! applied them, so whoever sent it reads its own writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nullops_domain::catalog::{Catalog, CatalogState, CATALOG_KEY};
use nullops_domain::Decider;
use nullops_egress::Egress;
use nullops_events::deployment::PlannedAction;
use nullops_events::urls::PublicOrigin;
use nullops_events::{EventMetadata, LogPosition, Timestamp};
use nullops_keyring::Keyring;
use nullops_metrics::ProjectionLag;
use nullops_projections::deployments::DeploymentRow;
use nullops_projections::{Projection, ProjectionError, ReadModelDb};
use nullops_store::commands::{self, CommandError, Executed, StateCache};
use nullops_store::EventStore;
use tracing::Instrument;

use crate::tags::TagLister;
use crate::SagaError;

/// Events counted behind a projection, at most (the count is a read of the log).
pub const LAG_COUNT_LIMIT: u32 = 10_000;

pub struct Core {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
    /// Every projection, to know which read models a command's events touch.
    pub projections: Vec<Arc<dyn Projection>>,
    pub keyring: Arc<Keyring>,
    pub registries: TagLister,
    /// The catalog as this process last decided it: commands and checks read only newer events.
    pub catalog: StateCache<Catalog>,
    /// How long a command waits for the read models to show its effect.
    pub consistency_wait: Duration,
    /// Where the platform's own calls (webhooks, forges, registries) may go: URLs are vetted
    /// with it on save, and every client that calls them resolves through it.
    pub egress: Arc<Egress>,
    /// How users reach the ingress, for the service URLs.
    pub ingress: PublicOrigin,
    /// The processes' pauses.
    pub pacing: crate::Pacing,
}

/// Why a command was not carried out, or its effect is not visible yet.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Appended, but a read model did not show it within the consistency wait.
    #[error(transparent)]
    ReadModel(#[from] ProjectionError),
}

impl Core {
    /// Decides `command` against aggregate `key` of `D` (loaded through `cache` when given),
    /// appends its events and waits until every projection that handles them has applied them.
    pub async fn dispatch<D: Decider>(
        &self,
        cache: Option<&StateCache<D>>,
        metadata: EventMetadata,
        key: &str,
        command: D::Command,
    ) -> Result<Executed, DispatchError> {
        let executed = commands::execute_with::<D>(&*self.store, cache, key, &command, &metadata).await?;
        if let Some(last) = executed.last {
            // A read model being rebuilt is not waited for: it answers no query until it is
            // whole (the API's `UNAVAILABLE`), so what it will show cannot be read before then
            // anyway, and a replay may take far longer than any wait here (a sign-in during a
            // rebuild of the audit would otherwise wait for the whole log).
            let rebuilding = self.read_models.rebuilding_now().await?;
            let touched: Vec<&str> = self
                .projections
                .iter()
                .filter(|p| executed.event_types.iter().any(|t| p.handles(t)) && !rebuilding.iter().any(|r| r.name == p.name()))
                .map(|p| p.name())
                .collect();
            let waiting = tracing::info_span!("read_models.wait", projections = touched.join(",").as_str());
            self.read_models.wait_for(&touched, last, self.consistency_wait).instrument(waiting).await?;
        }
        Ok(executed)
    }

    /// How far behind the log each projection is: the events it has still to apply (counted
    /// up to [`LAG_COUNT_LIMIT`]) and how old the oldest of them is.
    pub async fn projection_lags(&self) -> Result<Vec<ProjectionLag>, SagaError> {
        let now = Timestamp::now().0;
        let mut lags = Vec::new();
        for p in &self.projections {
            let at: LogPosition = self.read_models.checkpoint(p.name()).await?.position;
            let behind = self.store.read_all(at, LAG_COUNT_LIMIT).await?;
            let behind: Vec<_> = behind.into_iter().filter(|e| p.handles(&e.event_type)).collect();
            lags.push(ProjectionLag {
                name: p.name().to_owned(),
                events: i64::try_from(behind.len()).unwrap_or(i64::MAX),
                seconds: behind.first().map_or(0.0, |e| now.saturating_sub(e.occurred_at.0).max(0) as f64 / 1e6),
            });
        }
        Ok(lags)
    }

    /// Each service `row` runs and its URL through the ingress.
    pub fn service_urls(&self, catalog: &CatalogState, row: &DeploymentRow) -> BTreeMap<String, String> {
        let domain = catalog.environments.get(&row.environment).map(|e| e.base_domain.as_str()).unwrap_or_default();
        row.plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                PlannedAction::Service(svc) => Some((svc.service.clone(), self.ingress.service_url(&svc.service, &row.name, &row.environment, domain))),
                PlannedAction::Plugin(_) => None,
            })
            .collect()
    }

    /// The catalog as it is now.
    pub async fn catalog(&self) -> Result<CatalogState, CommandError> {
        Ok(self.catalog.load(&*self.store, CATALOG_KEY).await?.0)
    }
}
