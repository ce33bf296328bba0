//! Admission: which node of an environment takes a deployment. Candidates are the nodes that
//! are online (enabled, trusted, connected) and have reported their size; the one with the most
//! free memory is tried first. The reservation itself is decided on the node's capacity stream,
//! so two admissions racing for the last room cannot both get it: the loser tries the next node.

use nullops_domain::capacity::{exhausted, Capacity, CapacityCommand, Resources};
use nullops_domain::node::{self, Link, NodeStatus};
use nullops_domain::DomainError;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{self as read, link};
use nullops_store::commands::{execute, load, CommandError};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::App;

/// A node that could take the deployment, with its size and what its agent last measured.
struct Candidate {
    node_id: Uuid,
    total: Resources,
    used: Resources,
    free: Resources,
}

/// Reserves `request` for `deployment_id` on a node of `environment`; returns the node.
pub async fn reserve(app: &App, environment: &str, deployment_id: Uuid, request: Resources) -> ApiResult<Uuid> {
    let mut candidates = Vec::new();
    let mut unmeasured = 0;
    for row in read::nodes(&app.read_models, Some(environment)).await? {
        let link = if row.link == link::ONLINE { Link::Online } else { Link::Offline };
        if node::status(row.enabled, row.has_token, row.pending.is_some(), link) != NodeStatus::Online {
            continue;
        }
        let Some(usage) = read::usage(&app.read_models, row.node_id).await? else {
            unmeasured += 1;
            continue;
        };
        let total = Resources { cpu_millis: u64::from(usage.cpu_cores) * 1000, memory_mib: usage.memory_total_bytes >> 20 };
        let used = Resources { cpu_millis: usage.cpu_used_millicores, memory_mib: usage.memory_used_bytes >> 20 };
        let (capacity, _) = load::<Capacity>(&*app.store, &row.node_id.to_string()).await?;
        candidates.push(Candidate { node_id: row.node_id, total, used, free: capacity.free(total, used) });
    }
    if candidates.is_empty() && unmeasured > 0 {
        return Err(ApiError::ResourcesExhausted(format!(
            "the online nodes of environment {environment} have not reported their size yet; try again in a few seconds"
        )));
    }
    if candidates.is_empty() {
        return Err(ApiError::ResourcesExhausted(format!(
            "environment {environment} has no online node to run the deployment ({} millicores, {} MiB)",
            request.cpu_millis, request.memory_mib
        )));
    }
    candidates.sort_by(|a, b| b.free.memory_mib.cmp(&a.free.memory_mib).then(b.free.cpu_millis.cmp(&a.free.cpu_millis)));
    let mut best_free = Resources::default();
    for c in &candidates {
        let command = CapacityCommand::Reserve { deployment_id, request, total: c.total, used: c.used };
        match execute::<Capacity>(&*app.store, &c.node_id.to_string(), &command, &EventMetadata::system()).await {
            Ok(_) => return Ok(c.node_id),
            Err(CommandError::Domain(DomainError::ResourcesExhausted(_))) => {
                // Someone took the room since it was read: what is left now?
                let (capacity, _) = load::<Capacity>(&*app.store, &c.node_id.to_string()).await?;
                let free = capacity.free(c.total, c.used);
                if (free.memory_mib, free.cpu_millis) > (best_free.memory_mib, best_free.cpu_millis) {
                    best_free = free;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(exhausted(request, best_free).into())
}

/// Gives a reservation back (a request refused after admission).
pub async fn release(app: &App, node_id: Uuid, deployment_id: Uuid) {
    let command = CapacityCommand::Release { deployment_id };
    if let Err(e) = execute::<Capacity>(&*app.store, &node_id.to_string(), &command, &EventMetadata::system()).await {
        tracing::warn!(node = %node_id, deployment = %deployment_id, error = %e, "cannot release a reservation; the reaper will");
    }
}
