//! The deployment saga: everything a deployment holds outside its own stream.
//!
//! - A request (or a retry) waiting for a node gets its name (stream `deploymentname-…`), room
//!   on a node (stream `capacity-…`, see [`crate::admission`]) and then its schedule; or, when
//!   the name is taken or no node has room, it is rejected (a retry fails) with the reason.
//! - A deployment that no longer runs anywhere (failed, rejected, deleted, cancelled) gives its
//!   room back; one that ended gives its name back too.
//!
//! Each reaction reads the deployment as it is now and does only what is still missing (a name
//! already held, room already reserved), so it can run again after a crash at any point. Every
//! command it issues carries the correlation id of the event it reacts to, so a request's
//! events on all three streams share one correlation id.
//!
//! When no node can take a deployment *yet* (the environment's nodes are reconnecting, or have
//! not reported their size, as after a restart), it waits up to its node grace (`Pacing::node_grace`) for one, asked
//! again every tick, before it is refused. The waiting ones are in memory only: a new runner
//! finds them again as the deployments still PENDING once the read model has caught up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nullops_domain::capacity::{Capacity, Resources};
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand, DeploymentState, Life};
use nullops_domain::deployment_names::{name_key, DeploymentName, NameCommand};
use nullops_domain::{DnsLabel, DomainError, Issuer};
use nullops_events::codec::types;
use nullops_events::deployment::{DeploymentRequested, RejectionCode};
use nullops_events::{Actor, EventMetadata, LogPosition, StoredEvent};
use nullops_projections::ReadModelDb;
use nullops_store::commands::{execute, execute_known, load, CommandError, StateCache};
use nullops_store::EventStore;
use uuid::Uuid;

use crate::admission::{Admission, Ask, Placement};
use crate::fault;
use crate::placements::Placements;
use crate::{Saga, SagaError};

/// The events after which a deployment may need placing or may hold what it no longer needs.
const HANDLES: [&str; 5] =
    [types::DEPLOYMENT_REQUESTED.0, types::DEPLOYMENT_RETRIED.0, types::DEPLOYMENT_FAILED.0, types::DEPLOYMENT_REJECTED.0, types::DEPLOYMENT_REMOVED.0];

/// Nodes whose capacity streams are kept in memory between reactions.
const CACHED_NODES: usize = 16_384;
/// Deployments placed at once: their room is decided in batches (see [`Placements`]) on the
/// nodes' capacity streams, so placing side by side never over-commits a node. The more wait
/// together, the more each batch's reading of the nodes is shared (`bench placement`, 200 on
/// 10 nodes, release: 32 at once placed 5.0-5.2x as fast as one at a time, 64 5.8-6.7x, 128
/// 6.0-6.8x); what they wait on beyond the store's connections queues for one.
pub const PLACEMENTS_AT_ONCE: usize = 128;
/// How long a new runner waits for the read models to show what its checkpoint covers.
const READ_MODEL_WAIT: Duration = Duration::from_secs(30);

/// A deployment waiting for a node: until when, and the metadata of the event that asked.
struct Waiting {
    until: Instant,
    metadata: EventMetadata,
}

pub struct DeploymentSaga {
    store: Arc<dyn EventStore>,
    read_models: ReadModelDb,
    capacities: StateCache<Capacity>,
    /// How long a deployment waits for a node of its environment to come online (or report
    /// its size) before it is refused.
    node_grace: Duration,
    waiting: Mutex<HashMap<Uuid, Waiting>>,
    /// Deployments reacted to at once ([`PLACEMENTS_AT_ONCE`]; 1 in the benchmark's baseline).
    at_once: usize,
    /// The placements waiting for room, decided in batches.
    placements: Placements,
}

impl DeploymentSaga {
    pub fn new(store: Arc<dyn EventStore>, read_models: ReadModelDb, node_grace: Duration) -> Self {
        DeploymentSaga {
            store,
            read_models,
            capacities: StateCache::new(CACHED_NODES),
            node_grace,
            waiting: Mutex::new(HashMap::new()),
            at_once: PLACEMENTS_AT_ONCE,
            placements: Placements::default(),
        }
    }

    /// Reacts to `at_once` deployments at once instead (1: one at a time).
    pub fn placing_at_once(mut self, at_once: usize) -> Self {
        self.at_once = at_once.max(1);
        self
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places the deployment if it still waits for a node.
    async fn drive(&self, deployment_id: Uuid, metadata: &EventMetadata) -> Result<(), SagaError> {
        let (state, version) = load::<Deployment>(&*self.store, &deployment_id.to_string()).await?;
        match (state.request.clone(), state.life) {
            (Some(request), Some(life)) if life.awaiting_placement() => self.place(deployment_id, &request, (state, version), metadata).await,
            _ => {
                self.waiting().remove(&deployment_id);
                Ok(())
            }
        }
    }

    fn admission(&self) -> Admission<'_> {
        Admission { store: &*self.store, read_models: &self.read_models, capacities: &self.capacities }
    }

    /// A name, room on a node, then the schedule; or the reason it cannot be placed. `known`:
    /// the deployment as just read, and its version.
    async fn place(
        &self,
        deployment_id: Uuid,
        request: &DeploymentRequested,
        known: (DeploymentState, u64),
        metadata: &EventMetadata,
    ) -> Result<(), SagaError> {
        fault::point("deployment-saga:placing");
        let claim = match DnsLabel::parse("name", &request.name) {
            Ok(name) => NameCommand::Claim { name, deployment_id },
            Err(e) => return self.unplaceable(deployment_id, RejectionCode::NameTaken, e.to_string(), metadata).await,
        };
        // Decided first as a name never used (most are: one read fewer); a name used before
        // loses that append and is decided on its stream.
        let never_used = (Default::default(), 0);
        match execute_known::<DeploymentName>(&*self.store, &name_key(&request.environment, &request.name), never_used, &claim, metadata).await {
            Ok(_) => {}
            Err(CommandError::Domain(DomainError::Conflict(_))) => {
                let reason = format!("environment {} already has a deployment named {}", request.environment, request.name);
                return self.unplaceable(deployment_id, RejectionCode::NameTaken, reason, metadata).await;
            }
            Err(e) => return Err(e.into()),
        }
        fault::point("deployment-saga:name-claimed");
        let resources = Resources { cpu_millis: request.cpu_millis.into(), memory_mib: request.memory_mib.into() };
        let ask = Ask { deployment_id, request: resources, metadata: metadata.clone() };
        let node_id = match self.placements.place(&self.admission(), &request.environment, ask).await? {
            Placement::Reserved(node_id) => node_id,
            Placement::NoRoom(reason) => return self.unplaceable(deployment_id, RejectionCode::NoRoom, reason, metadata).await,
            Placement::NotYet(reason) => {
                let now = Instant::now();
                let until = self.waiting().entry(deployment_id).or_insert_with(|| Waiting { until: now + self.node_grace, metadata: metadata.clone() }).until;
                if now < until {
                    tracing::debug!(deployment = %deployment_id, %reason, "waiting for a node");
                    return Ok(());
                }
                return self.unplaceable(deployment_id, RejectionCode::NoRoom, reason, metadata).await;
            }
        };
        fault::point("deployment-saga:capacity-reserved");
        let schedule = DeploymentCommand { by: Issuer::System, action: DeploymentAction::Schedule { node_id } };
        let scheduled = execute_known::<Deployment>(&*self.store, &deployment_id.to_string(), known, &schedule, metadata).await;
        match scheduled {
            // No longer waiting (deleted meanwhile): the events that ended it give back what it holds.
            Ok(_) | Err(CommandError::Domain(DomainError::Conflict(_))) => {}
            Err(e) => return Err(e.into()),
        }
        self.waiting().remove(&deployment_id);
        fault::point("deployment-saga:scheduled");
        Ok(())
    }

    async fn unplaceable(&self, deployment_id: Uuid, code: RejectionCode, reason: String, metadata: &EventMetadata) -> Result<(), SagaError> {
        self.waiting().remove(&deployment_id);
        tracing::info!(deployment = %deployment_id, ?code, %reason, "a deployment cannot be placed");
        Ok(self.command(deployment_id, DeploymentAction::Unplaceable { code, reason }, metadata).await?)
    }

    async fn command(&self, deployment_id: Uuid, action: DeploymentAction, metadata: &EventMetadata) -> Result<(), CommandError> {
        let command = DeploymentCommand { by: Issuer::System, action };
        execute::<Deployment>(&*self.store, &deployment_id.to_string(), &command, metadata).await.map(|_| ())
    }

    /// Gives back what a deployment in `state` no longer needs.
    async fn settle(&self, deployment_id: Uuid, state: &DeploymentState, request: &DeploymentRequested, metadata: &EventMetadata) -> Result<(), SagaError> {
        let Some(phase) = state.phase() else { return Ok(()) };
        if !phase.holds_capacity() {
            self.admission().release(&request.environment, deployment_id, metadata).await?;
        }
        if phase.ended() {
            let release = NameCommand::Release { name: request.name.clone(), deployment_id };
            execute::<DeploymentName>(&*self.store, &name_key(&request.environment, &request.name), &release, metadata).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Saga for DeploymentSaga {
    fn name(&self) -> &'static str {
        "deployments"
    }

    fn handles(&self, event_type: &str) -> bool {
        HANDLES.contains(&event_type)
    }

    fn concurrency(&self) -> usize {
        self.at_once
    }

    async fn react(&self, event: &StoredEvent) -> Result<(), SagaError> {
        let Ok(deployment_id) = event.stream_id.key().parse::<Uuid>() else {
            tracing::warn!(stream = %event.stream_id, "a deployment stream not named by a deployment id; ignored");
            return Ok(());
        };
        let (state, version) = load::<Deployment>(&*self.store, event.stream_id.key()).await?;
        let Some(request) = state.request.clone() else { return Ok(()) };
        // Nodes as they were at least when the event happened (bounded: a lagging read model
        // only makes admission see an older picture).
        let _ = self.read_models.wait_for(&["nodes"], event.position, Duration::from_secs(2)).await;
        let metadata = EventMetadata {
            actor: Actor::System,
            correlation_id: event.metadata.correlation_id,
            causation_id: Some(event.event_id.0),
            // This reaction's span (a child of the event's), when traced.
            trace_context: nullops_telemetry::traceparent().or_else(|| event.metadata.trace_context.clone()),
        };
        if state.life.is_some_and(Life::awaiting_placement) {
            return self.place(deployment_id, &request, (state, version), &metadata).await;
        }
        self.waiting().remove(&deployment_id);
        self.settle(deployment_id, &state, &request, &metadata).await
    }

    /// Finds the deployments a previous runner left waiting for a node: those still PENDING
    /// once the read model shows everything up to the checkpoint (later ones are reacted to as
    /// their events come).
    async fn resume(&self, checkpoint: LogPosition) -> Result<(), SagaError> {
        // Capacity streams are written only by the holder of this saga's lease, so while it
        // holds it, what its cache saw is what they hold; another holder may have written
        // since this process last held it.
        self.capacities.clear();
        if let Err(e) = self.read_models.wait_for(&["deployments"], checkpoint, READ_MODEL_WAIT).await {
            tracing::warn!(error = %e, "the deployments read model lags; deployments left waiting for a node are taken up from what it shows");
        }
        let pending = nullops_projections::deployments::pending(&self.read_models).await?;
        let now = Instant::now();
        let mut waiting = self.waiting();
        for row in pending {
            waiting.entry(row.deployment_id).or_insert_with(|| Waiting { until: now + self.node_grace, metadata: EventMetadata::system() });
        }
        Ok(())
    }

    async fn tick(&self) -> Result<(), SagaError> {
        let due: Vec<(Uuid, EventMetadata)> = self.waiting().iter().map(|(id, w)| (*id, w.metadata.clone())).collect();
        for (deployment_id, metadata) in due {
            self.drive(deployment_id, &metadata).await?;
        }
        Ok(())
    }
}
