//! Admission: which node of an environment takes a deployment. Candidates are the nodes that
//! are online (enabled, trusted, connected) and have reported their size; the one with the most
//! free memory is tried first. The reservations themselves are decided on the node's capacity
//! stream, so two admissions racing for the last room cannot both get it: the loser tries the
//! next node. Many deployments are admitted at once (see [`Admission::reserve_each`]): they are
//! spread over the nodes from one reading of them, and each node decides all those sent to it
//! in one append.
//!
//! A reservation already held by the deployment (made before a crash) is found and kept, so
//! placing a deployment twice reserves once.

use futures::{StreamExt, TryStreamExt};
use nullops_domain::capacity::{exhausted, Capacity, CapacityCommand, Resources};
use nullops_domain::node::{self, Link, NodeStatus};
use nullops_events::capacity::CapacityEvent;
use nullops_events::node::Refusal;
use nullops_events::DomainEvent;
use nullops_events::EventMetadata;
use nullops_projections::nodes::{self as read, LinkState, NodeRow};
use nullops_projections::ReadModelDb;
use nullops_store::commands::{execute_cached, execute_with, CommandError, StateCache};
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

/// Nodes whose reservations are read at once when admission looks at an environment.
const CAPACITY_READS_AT_ONCE: usize = 16;

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
    /// (deployment, node) for each node, of any status, on which a deployment asked about
    /// holds room.
    held: Vec<(Uuid, Uuid)>,
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

/// Where admission looks: the store for reservations (cached per node) and the read models
/// for nodes and their measured use.
pub struct Admission<'a> {
    pub store: &'a dyn EventStore,
    pub read_models: &'a ReadModelDb,
    pub capacities: &'a StateCache<Capacity>,
}

/// A deployment asking for room: how much, and the metadata its reservation is appended with
/// (its own correlation id, whatever else is decided in the same append).
#[derive(Debug, Clone)]
pub struct Ask {
    pub deployment_id: Uuid,
    pub request: Resources,
    pub metadata: EventMetadata,
}

/// The deployment a capacity event reserves room for, if it is a reservation.
fn reserved_for(event: &DomainEvent) -> Option<Uuid> {
    match event {
        DomainEvent::Capacity(CapacityEvent::Reserved(r)) => Some(r.deployment_id),
        _ => None,
    }
}

/// For each of `open` (an index into `requests`), the node of `candidates` it is sent to this
/// round, if any: the one with the most free memory (then CPU) once what this round has sent
/// there already is counted as taken, among those it has not been refused by (`tried`) and
/// where it fits. `None`: it fits on no node left, as they were read.
fn assign(candidates: &[Candidate], requests: &[Resources], tried: &[Vec<Uuid>], open: &[usize]) -> Vec<(usize, Option<usize>)> {
    let mut left: Vec<Resources> = candidates.iter().map(|c| c.free).collect();
    open.iter()
        .map(|&i| {
            let request = requests[i];
            let chosen = candidates
                .iter()
                .enumerate()
                .filter(|(n, c)| !tried[i].contains(&c.node_id) && request.cpu_millis <= left[*n].cpu_millis && request.memory_mib <= left[*n].memory_mib)
                .max_by(|(a, _), (b, _)| {
                    (left[*a].memory_mib, left[*a].cpu_millis, std::cmp::Reverse(*a)).cmp(&(left[*b].memory_mib, left[*b].cpu_millis, std::cmp::Reverse(*b)))
                })
                .map(|(n, _)| n);
            if let Some(n) = chosen {
                left[n].cpu_millis -= request.cpu_millis;
                left[n].memory_mib -= request.memory_mib;
            }
            (i, chosen)
        })
        .collect()
}

impl Admission<'_> {
    /// The nodes of `environment` on whose capacity streams `deployment_id` holds room.
    pub async fn holders(&self, environment: &str, deployment_id: Uuid) -> Result<Vec<Uuid>, SagaError> {
        Ok(self.candidates(environment, &[deployment_id]).await?.held.into_iter().map(|(_, node)| node).collect())
    }

    /// The online, measured nodes of `environment` with what each has free, most free memory
    /// first; how many more could come online or have not reported their size yet; and the
    /// nodes on which each of `holders` holds room. Each node's reservations and usage are read
    /// once.
    async fn candidates(&self, environment: &str, holders: &[Uuid]) -> Result<Candidates, SagaError> {
        let mut found = Candidates::default();
        let mut usages = read::usages(self.read_models, environment).await?;
        let rows = read::nodes(self.read_models, Some(environment)).await?;
        // Each node's reservations as this process last saw them (its own appends included):
        // the streams decide, so a node whose room went meanwhile refuses and the next is
        // tried. Those not seen yet are read, side by side (a bounded number at once).
        // Boxed: named, the futures borrowing `keys` are what keeps the saga's reaction `Send`.
        let keys: Vec<String> = rows.iter().map(|row| row.node_id.to_string()).collect();
        let reads: Vec<futures::future::BoxFuture<'_, Result<_, CommandError>>> = keys
            .iter()
            .map(|key| match self.capacities.peek(key) {
                Some(seen) => Box::pin(std::future::ready(Ok(seen))) as futures::future::BoxFuture<'_, Result<_, CommandError>>,
                None => Box::pin(self.capacities.load(self.store, key)),
            })
            .collect();
        let capacities: Vec<(nullops_domain::capacity::CapacityState, u64)> =
            futures::stream::iter(reads).buffered(CAPACITY_READS_AT_ONCE).try_collect().await?;
        for (row, (capacity, _)) in rows.into_iter().zip(capacities) {
            found.held.extend(holders.iter().filter(|h| capacity.reservations.contains_key(h)).map(|h| (*h, row.node_id)));
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
        Ok(self.candidates(environment, &[]).await?.preview(environment, request))
    }

    /// Reserves room for each of `asks` on a node of `environment`; the placements in the
    /// order of `asks`. The nodes are read once; each round sends every ask still open to the
    /// node with the most room left for it ([`assign`]), and each node decides all those sent
    /// to it in one append (the nodes side by side). An ask a node's stream refuses (its room
    /// went since it was read) tries the next node in the next round.
    pub async fn reserve_each(&self, environment: &str, asks: &[Ask]) -> Result<Vec<Placement>, SagaError> {
        let ids: Vec<Uuid> = asks.iter().map(|a| a.deployment_id).collect();
        let mut found = self.candidates(environment, &ids).await?;
        let mut placed: Vec<Option<Placement>> =
            asks.iter().map(|a| found.held.iter().find(|(d, _)| *d == a.deployment_id).map(|(_, node)| Placement::Reserved(*node))).collect();
        let requests: Vec<Resources> = asks.iter().map(|a| a.request).collect();
        let mut tried: Vec<Vec<Uuid>> = vec![Vec::new(); asks.len()];
        loop {
            let open: Vec<usize> = (0..asks.len()).filter(|i| placed[*i].is_none()).collect();
            if open.is_empty() {
                break;
            }
            if found.list.is_empty() {
                for i in open {
                    placed[i] = found.nothing_to_try(environment, requests[i]);
                }
                break;
            }
            let mut sent: Vec<Vec<usize>> = vec![Vec::new(); found.list.len()];
            for (i, node) in assign(&found.list, &requests, &tried, &open) {
                match node {
                    Some(n) => sent[n].push(i),
                    None => {
                        let best = found.list.iter().filter(|c| !tried[i].contains(&c.node_id)).map(|c| c.free).max_by_key(|f| (f.memory_mib, f.cpu_millis));
                        placed[i] = Some(Placement::NoRoom(exhausted(requests[i], best.unwrap_or_default()).to_string()));
                    }
                }
            }
            let decided = futures::future::try_join_all(
                sent.iter().enumerate().filter(|(_, to)| !to.is_empty()).map(|(n, to)| self.reserve_on(n, &found.list[n], asks, to)),
            )
            .await?;
            for (n, reserved) in decided {
                let node = &mut found.list[n];
                for &i in &sent[n] {
                    if reserved.contains(&asks[i].deployment_id) {
                        node.free.cpu_millis = node.free.cpu_millis.saturating_sub(requests[i].cpu_millis);
                        node.free.memory_mib = node.free.memory_mib.saturating_sub(requests[i].memory_mib);
                        placed[i] = Some(Placement::Reserved(node.node_id));
                    } else {
                        tried[i].push(node.node_id);
                    }
                }
            }
        }
        Ok(placed.into_iter().map(|p| p.expect("every ask is decided")).collect())
    }

    /// Decides the asks `to` (indices into `asks`) on `node`'s capacity stream in one append;
    /// the node's index among the candidates and the deployments it reserved room for.
    async fn reserve_on(&self, index: usize, node: &Candidate, asks: &[Ask], to: &[usize]) -> Result<(usize, Vec<Uuid>), SagaError> {
        let command =
            CapacityCommand::ReserveEach { asks: to.iter().map(|&i| (asks[i].deployment_id, asks[i].request)).collect(), total: node.total, used: node.used };
        let metadata_of = |event: &DomainEvent| {
            let deployment = reserved_for(event);
            to.iter().map(|&i| &asks[i]).find(|a| Some(a.deployment_id) == deployment).map_or_else(EventMetadata::system, |a| a.metadata.clone())
        };
        let executed = execute_cached::<Capacity>(self.store, self.capacities, &node.node_id.to_string(), &command, &metadata_of).await?;
        Ok((index, executed.events.iter().filter_map(reserved_for).collect()))
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
    fn asks_decided_together_spread_over_the_nodes_as_each_fills() {
        // given three nodes, a the roomiest, c small …
        let found = ranked(vec![node("a:1", 4000, 8192), node("b:1", 4000, 6144), node("c:1", 4000, 1024)]);
        let big = Resources { cpu_millis: 500, memory_mib: 4096 };
        let requests = [big, ASK, big, big, big];
        let none = vec![Vec::new(); requests.len()];
        // … when five asks are assigned in one round, each counts what the ones before took:
        // a big one on a (8192 free), a small one on b (6144 > a's 4096), a big one on b
        // (5632 > 4096), the next on a (4096 > b's 1536), and the last fits nowhere as the
        // nodes were read: no room, without a wasted append.
        let sent = assign(&found.list, &requests, &none, &[0, 1, 2, 3, 4]);
        let to: Vec<Option<&str>> = sent.iter().map(|(_, n)| n.map(|n| found.list[n].name.as_str())).collect();
        assert_eq!(to, [Some("a:1"), Some("b:1"), Some("b:1"), Some("a:1"), None]);
        // Given a's stream refused the first, it goes to the roomiest of the others.
        let mut tried = none.clone();
        tried[0].push(found.list[0].node_id);
        assert_eq!(assign(&found.list, &requests, &tried, &[0]), [(0, Some(1))]);
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
