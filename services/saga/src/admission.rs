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
use nullops_events::node::Refusal;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{self as read, LinkState, NodeRow};
use nullops_projections::ReadModelDb;
use nullops_store::commands::{execute_with, CommandError, StateCache};
use nullops_store::EventStore;
use uuid::Uuid;

use crate::SagaError;

/// A node's status as its read-model row tells it: the one place the `link` column becomes the
/// domain's [`Link`] (the API's node status, the metrics and admission all read it so).
pub fn node_status(row: &NodeRow) -> NodeStatus {
    let link = match row.link {
        LinkState::Pending => Link::Pending,
        LinkState::Online => Link::Online,
        LinkState::Offline => Link::Offline,
        LinkState::TokenRefused => Link::Refused(Refusal::Token),
        // The protocol the agent spoke is in the row's detail, for people.
        LinkState::Incompatible => Link::Refused(Refusal::Incompatible { agent_protocol: 0 }),
    };
    node::status(row.enabled, row.has_token, row.pending.is_some(), link)
}

/// A node that could take the deployment, with its size and what its agent last measured.
struct Candidate {
    node_id: Uuid,
    /// `host:port`, for people.
    name: String,
    total: Resources,
    used: Resources,
    free: Resources,
}

#[derive(Default)]
struct Candidates {
    list: Vec<Candidate>,
    /// Online but not measured yet.
    unmeasured: usize,
    /// Enabled, trusted nodes holding a token, but not connected (yet).
    connecting: usize,
    /// The nodes, of any status, on which the deployment asked about holds room.
    held: Vec<Uuid>,
}

impl Candidates {
    /// The order nodes are tried in: the most free memory first, then the most free CPU.
    fn rank(&mut self) {
        self.list.sort_by(|a, b| b.free.memory_mib.cmp(&a.free.memory_mib).then(b.free.cpu_millis.cmp(&a.free.cpu_millis)));
    }

    /// Why no node is even tried for `request`, when none is: no node measured yet (worth
    /// asking again shortly), or none online (worth asking again only while some connect).
    fn nothing_to_try(&self, environment: &str, request: Resources) -> Option<Placement> {
        if !self.list.is_empty() {
            return None;
        }
        if self.unmeasured > 0 {
            return Some(Placement::NotYet(format!(
                "the online nodes of environment {environment} have not reported their size yet; try again in a few seconds"
            )));
        }
        let reason =
            format!("environment {environment} has no online node to run the deployment ({} millicores, {} MiB)", request.cpu_millis, request.memory_mib);
        Some(if self.connecting > 0 { Placement::NotYet(reason) } else { Placement::NoRoom(reason) })
    }

    /// Where `request` would go now (the first ranked node with room for it), or how much it
    /// lacks; reserving nothing.
    fn preview(&self, environment: &str, request: Resources) -> Preview {
        if let Some(c) = self.list.iter().find(|c| request.cpu_millis <= c.free.cpu_millis && request.memory_mib <= c.free.memory_mib) {
            let message = format!(
                "fits on node {} now: it needs {} millicores and {} MiB of the {} millicores and {} MiB free there",
                c.name, request.cpu_millis, request.memory_mib, c.free.cpu_millis, c.free.memory_mib
            );
            return Preview { node: Some((c.node_id, c.name.clone())), message };
        }
        let message = match self.list.first() {
            Some(best) => {
                let mut short = Vec::new();
                if request.memory_mib > best.free.memory_mib {
                    short.push(format!("{} MiB", request.memory_mib - best.free.memory_mib));
                }
                if request.cpu_millis > best.free.cpu_millis {
                    short.push(format!("{} millicores", request.cpu_millis - best.free.cpu_millis));
                }
                format!(
                    "needs {} more than any node has free (node {} has the most: {} millicores and {} MiB)",
                    short.join(" and "),
                    best.name,
                    best.free.cpu_millis,
                    best.free.memory_mib
                )
            }
            None if self.unmeasured > 0 => format!("the online nodes of environment {environment} have not reported their size yet"),
            None => format!("environment {environment} has no online node"),
        };
        Preview { node: None, message }
    }
}

/// What admission would decide now, reserving nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The node it would go to (id, `host:port`), if any has room.
    pub node: Option<(Uuid, String)>,
    /// The answer for people: where it fits, or how much is missing.
    pub message: String,
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
/// nodes and their measured use, and the reservations this process is making right now.
pub struct Admission<'a> {
    pub store: &'a dyn EventStore,
    pub read_models: &'a ReadModelDb,
    pub capacities: &'a StateCache<Capacity>,
    pub underway: &'a Underway,
}

/// The room each node is being asked for by reservations under way in this process, not
/// appended yet. Placements side by side count them as taken when they choose a node, so they
/// spread over the nodes with the most room instead of queueing for the same one; the capacity
/// stream still decides whether a reservation fits.
#[derive(Default)]
pub struct Underway(std::sync::Mutex<std::collections::HashMap<Uuid, Resources>>);

impl Underway {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, Resources>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chooses the next node to try of `candidates` (ranked), leaving out `tried`, and counts
    /// `request` as under way there until the claim returned is dropped.
    fn choose(&self, candidates: &[Candidate], tried: &[Uuid], request: Resources) -> Option<(usize, Claim<'_>)> {
        let mut underway = self.lock();
        let at = next_node(candidates, &underway, tried, request)?;
        let node_id = candidates[at].node_id;
        let on = underway.entry(node_id).or_default();
        on.cpu_millis += request.cpu_millis;
        on.memory_mib += request.memory_mib;
        Some((at, Claim { underway: self, node_id, request }))
    }

    fn done(&self, node_id: Uuid, request: Resources) {
        let mut underway = self.lock();
        if let Some(on) = underway.get_mut(&node_id) {
            on.cpu_millis = on.cpu_millis.saturating_sub(request.cpu_millis);
            on.memory_mib = on.memory_mib.saturating_sub(request.memory_mib);
            if *on == Resources::default() {
                underway.remove(&node_id);
            }
        }
    }
}

/// A reservation under way on a node: counted until dropped (after its command, whatever
/// became of it, or when the placement is abandoned midway).
struct Claim<'a> {
    underway: &'a Underway,
    node_id: Uuid,
    request: Resources,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.underway.done(self.node_id, self.request);
    }
}

/// Of `candidates` not `tried`, the one with the most free memory (then CPU) once the room
/// `underway` on each is counted as taken, among those where `request` then fits; when it
/// fits on none that way, the first in their own ranking (its stream may have room yet).
fn next_node(candidates: &[Candidate], underway: &std::collections::HashMap<Uuid, Resources>, tried: &[Uuid], request: Resources) -> Option<usize> {
    let left = |c: &Candidate| {
        let taken = underway.get(&c.node_id).copied().unwrap_or_default();
        Resources { cpu_millis: c.free.cpu_millis.saturating_sub(taken.cpu_millis), memory_mib: c.free.memory_mib.saturating_sub(taken.memory_mib) }
    };
    let open = || candidates.iter().enumerate().filter(|(_, c)| !tried.contains(&c.node_id));
    open()
        .map(|(i, c)| (i, left(c)))
        .filter(|(_, free)| request.cpu_millis <= free.cpu_millis && request.memory_mib <= free.memory_mib)
        .max_by(|(i, a), (j, b)| (a.memory_mib, a.cpu_millis, std::cmp::Reverse(*i)).cmp(&(b.memory_mib, b.cpu_millis, std::cmp::Reverse(*j))))
        .map(|(i, _)| i)
        .or_else(|| open().map(|(i, _)| i).next())
}

impl Admission<'_> {
    /// The nodes of `environment` on whose capacity streams `deployment_id` holds room.
    pub async fn holders(&self, environment: &str, deployment_id: Uuid) -> Result<Vec<Uuid>, SagaError> {
        Ok(self.candidates(environment, Some(deployment_id)).await?.held)
    }

    /// The online, measured nodes of `environment` with what each has free, most free memory
    /// first; how many more could come online or have not reported their size yet; and the
    /// nodes on which `holder` holds room. Each node's reservations and usage are read once.
    async fn candidates(&self, environment: &str, holder: Option<Uuid>) -> Result<Candidates, SagaError> {
        let mut found = Candidates::default();
        let mut usages = read::usages(self.read_models, environment).await?;
        for row in read::nodes(self.read_models, Some(environment)).await? {
            let (capacity, _) = self.capacities.load(self.store, &row.node_id.to_string()).await?;
            if holder.is_some_and(|h| capacity.reservations.contains_key(&h)) {
                found.held.push(row.node_id);
            }
            match node_status(&row) {
                NodeStatus::Online => {}
                NodeStatus::Offline | NodeStatus::Pending => {
                    found.connecting += 1;
                    continue;
                }
                _ => continue,
            }
            let Some(usage) = usages.remove(&row.node_id) else {
                found.unmeasured += 1;
                continue;
            };
            let total = Resources { cpu_millis: u64::from(usage.cpu_cores) * 1000, memory_mib: usage.memory_total_bytes >> 20 };
            let used = Resources { cpu_millis: usage.cpu_used_millicores, memory_mib: usage.memory_used_bytes >> 20 };
            found.list.push(Candidate { node_id: row.node_id, name: format!("{}:{}", row.host, row.port), total, used, free: capacity.free(total, used) });
        }
        found.rank();
        Ok(found)
    }

    /// Whether `request` would be admitted in `environment` now, reserving nothing: the node
    /// it would go to, or why none would take it.
    pub async fn preview(&self, environment: &str, request: Resources) -> Result<Preview, SagaError> {
        Ok(self.candidates(environment, None).await?.preview(environment, request))
    }

    /// Reserves `request` for `deployment_id` on a node of `environment`.
    pub async fn reserve(&self, environment: &str, deployment_id: Uuid, request: Resources, metadata: &EventMetadata) -> Result<Placement, SagaError> {
        let found = self.candidates(environment, Some(deployment_id)).await?;
        if let Some(held) = found.held.first() {
            return Ok(Placement::Reserved(*held));
        }
        if let Some(placement) = found.nothing_to_try(environment, request) {
            return Ok(placement);
        }
        let candidates = found.list;
        let mut best_free = Resources::default();
        let mut tried = Vec::with_capacity(candidates.len());
        while let Some((at, claim)) = self.underway.choose(&candidates, &tried, request) {
            let c = &candidates[at];
            tried.push(c.node_id);
            let command = CapacityCommand::Reserve { deployment_id, request, total: c.total, used: c.used };
            let reserved = execute_with::<Capacity>(self.store, Some(self.capacities), &c.node_id.to_string(), &command, metadata).await;
            drop(claim);
            match reserved {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu_millis: u64, memory_mib: u64) -> Candidate {
        let free = Resources { cpu_millis, memory_mib };
        Candidate { node_id: Uuid::now_v7(), name: name.into(), total: free, used: Resources::default(), free }
    }

    fn ranked(list: Vec<Candidate>) -> Candidates {
        let mut found = Candidates { list, ..Candidates::default() };
        found.rank();
        found
    }

    const ASK: Resources = Resources { cpu_millis: 500, memory_mib: 512 };

    #[test]
    fn the_node_with_the_most_free_memory_is_tried_first_then_the_most_free_cpu() {
        let found = ranked(vec![node("a:1", 4000, 1024), node("b:1", 1000, 8192), node("c:1", 2000, 8192)]);
        let order: Vec<&str> = found.list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(order, ["c:1", "b:1", "a:1"]);
    }

    #[test]
    fn a_request_goes_to_the_first_ranked_node_with_room_for_both_cpu_and_memory() {
        // given the roomiest node by memory lacks CPU, when previewed, then the next one is named
        let found = ranked(vec![node("big:1", 100, 16384), node("small:1", 1000, 1024)]);
        let preview = found.preview("staging", ASK);
        assert_eq!(preview.node.map(|(_, name)| name).as_deref(), Some("small:1"));
        assert!(preview.message.starts_with("fits on node small:1 now"), "{}", preview.message);
    }

    #[test]
    fn placements_under_way_count_as_taken_so_side_by_side_ones_spread_over_the_nodes() {
        let found = ranked(vec![node("a:1", 4000, 8192), node("b:1", 4000, 6144), node("c:1", 4000, 1024)]);
        let (a, b) = (found.list[0].node_id, found.list[1].node_id);
        let mut underway = std::collections::HashMap::new();
        // Given nothing under way, the roomiest node is chosen (as ranked) …
        assert_eq!(next_node(&found.list, &underway, &[], ASK), Some(0));
        // … given a reservation under way there that leaves it less free than b, b is chosen;
        underway.insert(a, Resources { cpu_millis: 500, memory_mib: 4096 });
        assert_eq!(next_node(&found.list, &underway, &[], ASK), Some(1));
        // given a and b tried, c; given room under way everywhere, the first not yet tried by
        // its own ranking (its stream decides);
        assert_eq!(next_node(&found.list, &underway, &[a, b], ASK), Some(2));
        underway.insert(b, Resources { cpu_millis: 4000, memory_mib: 6144 });
        underway.insert(found.list[2].node_id, Resources { cpu_millis: 4000, memory_mib: 1024 });
        underway.insert(a, Resources { cpu_millis: 4000, memory_mib: 8192 });
        assert_eq!(next_node(&found.list, &underway, &[a], ASK), Some(1));
        // and every node tried, none.
        let all: Vec<Uuid> = found.list.iter().map(|c| c.node_id).collect();
        assert_eq!(next_node(&found.list, &underway, &all, ASK), None);
    }

    #[test]
    fn a_claim_counts_until_it_is_dropped() {
        let found = ranked(vec![node("a:1", 4000, 8192), node("b:1", 4000, 6144)]);
        let underway = Underway::default();
        // A claim of 4096 MiB on a leaves it 4096: the next placement goes to b.
        let (first, big) = underway.choose(&found.list, &[], Resources { cpu_millis: 500, memory_mib: 4096 }).expect("a node");
        assert_eq!(first, 0);
        let (second, small) = underway.choose(&found.list, &[], ASK).expect("a node");
        assert_eq!(second, 1);
        // Once both are done, nothing is under way and a is first again.
        drop((big, small));
        assert!(underway.lock().is_empty());
        assert_eq!(underway.choose(&found.list, &[], ASK).map(|(at, _)| at), Some(0));
    }

    #[test]
    fn a_refusal_says_how_much_is_missing_on_the_roomiest_node() {
        let found = ranked(vec![node("a:1", 200, 256), node("b:1", 400, 128)]);
        let preview = found.preview("staging", ASK);
        assert_eq!(preview.node, None);
        assert_eq!(preview.message, "needs 256 MiB and 300 millicores more than any node has free (node a:1 has the most: 200 millicores and 256 MiB)");
    }

    #[test]
    fn with_no_node_to_try_a_request_waits_while_nodes_may_come_and_is_refused_otherwise() {
        // given nodes online but not measured: asked again shortly
        let unmeasured = Candidates { unmeasured: 1, ..Candidates::default() };
        assert!(matches!(unmeasured.nothing_to_try("staging", ASK), Some(Placement::NotYet(m)) if m.contains("not reported their size")));
        // given nodes still connecting: asked again shortly
        let connecting = Candidates { connecting: 2, ..Candidates::default() };
        assert!(matches!(connecting.nothing_to_try("staging", ASK), Some(Placement::NotYet(_))));
        // given no node at all: refused, saying what was asked
        assert_eq!(
            Candidates::default().nothing_to_try("staging", ASK),
            Some(Placement::NoRoom("environment staging has no online node to run the deployment (500 millicores, 512 MiB)".into()))
        );
        // given a candidate: it is tried
        assert_eq!(ranked(vec![node("a:1", 1, 1)]).nothing_to_try("staging", ASK), None);
    }
}
