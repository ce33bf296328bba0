//! Admission: which node of an environment takes a deployment. Candidates are the nodes that
//! are online (enabled, trusted, connected) and have reported their size; the one with the most
//! free memory is tried first. The reservation itself is decided on the node's capacity stream,
//! so two admissions racing for the last room cannot both get it: the loser tries the next node.
//!
//! A reservation already held by the deployment (made before a crash) is found and kept, so
//! placing a deployment twice reserves once.

use nullops_domain::capacity::{exhausted, Capacity, CapacityCommand, Resources};
use nullops_domain::node::{self, Link, NodeStatus};
use nullops_domain::DomainError;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{self as read, link};
use nullops_projections::ReadModelDb;
use nullops_store::commands::{execute_with, CommandError, StateCache};
use nullops_store::EventStore;
use uuid::Uuid;

use crate::SagaError;

/// A node that could take the deployment, with its size and what its agent last measured.
struct Candidate {
    node_id: Uuid,
    total: Resources,
    used: Resources,
    free: Resources,
}

/// What admission found for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Room is reserved on this node.
    Reserved(Uuid),
    /// No node can take it: the online nodes are full, or the environment has no node that
    /// could come online. Why, for people.
    NoRoom(String),
    /// No node can take it now, but nodes that may come online soon are not online yet (or
    /// have not reported their size): worth asking again shortly.
    NotYet(String),
}

/// Where admission looks: the store for reservations (cached per node), the read models for
/// nodes and their measured use.
pub struct Admission<'a> {
    pub store: &'a dyn EventStore,
    pub read_models: &'a ReadModelDb,
    pub capacities: &'a StateCache<Capacity>,
}

impl Admission<'_> {
    /// The nodes of `environment` on whose capacity streams `deployment_id` holds room.
    pub async fn holders(&self, environment: &str, deployment_id: Uuid) -> Result<Vec<Uuid>, SagaError> {
        let mut out = Vec::new();
        for row in read::nodes(self.read_models, Some(environment)).await? {
            let (capacity, _) = self.capacities.load(self.store, &row.node_id.to_string()).await?;
            if capacity.reservations.contains_key(&deployment_id) {
                out.push(row.node_id);
            }
        }
        Ok(out)
    }

    /// Reserves `request` for `deployment_id` on a node of `environment`.
    pub async fn reserve(&self, environment: &str, deployment_id: Uuid, request: Resources, metadata: &EventMetadata) -> Result<Placement, SagaError> {
        if let Some(held) = self.holders(environment, deployment_id).await?.first() {
            return Ok(Placement::Reserved(*held));
        }
        let mut candidates = Vec::new();
        let mut unmeasured = 0;
        // Enabled, trusted nodes holding a token, but not connected (yet).
        let mut connecting = 0;
        for row in read::nodes(self.read_models, Some(environment)).await? {
            let link = if row.link == link::ONLINE { Link::Online } else { Link::Offline };
            match node::status(row.enabled, row.has_token, row.pending.is_some(), link) {
                NodeStatus::Online => {}
                NodeStatus::Offline | NodeStatus::Pending => {
                    connecting += 1;
                    continue;
                }
                _ => continue,
            }
            let Some(usage) = read::usage(self.read_models, row.node_id).await? else {
                unmeasured += 1;
                continue;
            };
            let total = Resources { cpu_millis: u64::from(usage.cpu_cores) * 1000, memory_mib: usage.memory_total_bytes >> 20 };
            let used = Resources { cpu_millis: usage.cpu_used_millicores, memory_mib: usage.memory_used_bytes >> 20 };
            let (capacity, _) = self.capacities.load(self.store, &row.node_id.to_string()).await?;
            candidates.push(Candidate { node_id: row.node_id, total, used, free: capacity.free(total, used) });
        }
        if candidates.is_empty() && unmeasured > 0 {
            return Ok(Placement::NotYet(format!(
                "the online nodes of environment {environment} have not reported their size yet; try again in a few seconds"
            )));
        }
        if candidates.is_empty() {
            let reason =
                format!("environment {environment} has no online node to run the deployment ({} millicores, {} MiB)", request.cpu_millis, request.memory_mib);
            return Ok(if connecting > 0 { Placement::NotYet(reason) } else { Placement::NoRoom(reason) });
        }
        candidates.sort_by(|a, b| b.free.memory_mib.cmp(&a.free.memory_mib).then(b.free.cpu_millis.cmp(&a.free.cpu_millis)));
        let mut best_free = Resources::default();
        for c in &candidates {
            let command = CapacityCommand::Reserve { deployment_id, request, total: c.total, used: c.used };
            match execute_with::<Capacity>(self.store, Some(self.capacities), &c.node_id.to_string(), &command, metadata).await {
                Ok(_) => return Ok(Placement::Reserved(c.node_id)),
                Err(CommandError::Domain(DomainError::ResourcesExhausted(_))) => {
                    // Someone took the room since it was read: what is left now?
                    let (capacity, _) = self.capacities.load(self.store, &c.node_id.to_string()).await?;
                    let free = capacity.free(c.total, c.used);
                    if (free.memory_mib, free.cpu_millis) > (best_free.memory_mib, best_free.cpu_millis) {
                        best_free = free;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Placement::NoRoom(exhausted(request, best_free).to_string()))
    }

    /// Gives back every reservation `deployment_id` holds in `environment`.
    pub async fn release(&self, environment: &str, deployment_id: Uuid, metadata: &EventMetadata) -> Result<(), SagaError> {
        for node_id in self.holders(environment, deployment_id).await? {
            let command = CapacityCommand::Release { deployment_id };
            execute_with::<Capacity>(self.store, Some(self.capacities), &node_id.to_string(), &command, metadata).await?;
        }
        Ok(())
    }
}
