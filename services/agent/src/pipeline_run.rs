//! How a pipeline version runs, decided without I/O (the agent does the I/O).
//!
//! [`RunPlan`] follows the graph: every node whose predecessors have all succeeded is ready, so
//! independent branches run at the same time; after a failure or a cancel nothing new starts, and
//! [`RunPlan::rollback_order`] lists what was started, newest first, to undo. [`substitute`] fills
//! `${{ secrets.NAME }}` and `${{ nodes.ID.outputs.KEY }}` in a node's strings, and [`redact`]
//! keeps secret values out of anything logged.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use nullops_events::catalog::PipelineGraph;
use serde_json::Value;

use nullops_events::expressions::{references, Reference};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRun {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// The progress of one run of a pipeline graph.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Each node's predecessors.
    needs: BTreeMap<String, BTreeSet<String>>,
    states: BTreeMap<String, NodeRun>,
    /// Started nodes, in the order they started.
    started: Vec<String>,
    /// Set by a failure or a cancel: nothing new starts.
    stopped: bool,
}

impl RunPlan {
    /// The plan of a validated graph (acyclic, edges between its nodes).
    #[cfg(test)]
    pub fn new(graph: &PipelineGraph) -> Self {
        let mut needs: BTreeMap<String, BTreeSet<String>> = graph.nodes.iter().map(|n| (n.id.clone(), BTreeSet::new())).collect();
        for e in &graph.edges {
            if let Some(set) = needs.get_mut(&e.to) {
                set.insert(e.from.clone());
            }
        }
        Self::from_needs(needs)
    }

    /// The plan of nodes given with their predecessors (acyclic, naming only given nodes).
    pub fn from_needs(needs: BTreeMap<String, BTreeSet<String>>) -> Self {
        let states = needs.keys().map(|id| (id.clone(), NodeRun::Pending)).collect();
        RunPlan { needs, states, started: Vec::new(), stopped: false }
    }

    /// Nodes that may start now: pending, with every predecessor succeeded, and the run not stopped.
    pub fn ready(&self) -> Vec<String> {
        if self.stopped {
            return vec![];
        }
        self.needs
            .iter()
            .filter(|(id, needs)| self.states[*id] == NodeRun::Pending && needs.iter().all(|n| self.states[n] == NodeRun::Succeeded))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn start(&mut self, id: &str) {
        if let Some(state) = self.states.get_mut(id) {
            if *state == NodeRun::Pending {
                *state = NodeRun::Running;
                self.started.push(id.to_owned());
            }
        }
    }

    pub fn succeeded(&mut self, id: &str) {
        self.finish(id, NodeRun::Succeeded);
    }

    /// A node failed: the run stops starting nodes.
    pub fn failed(&mut self, id: &str) {
        self.finish(id, NodeRun::Failed);
        self.stopped = true;
    }

    /// A cancel: the run stops starting nodes.
    pub fn cancel(&mut self) {
        self.stopped = true;
    }

    fn finish(&mut self, id: &str, to: NodeRun) {
        if let Some(state) = self.states.get_mut(id) {
            if *state == NodeRun::Running {
                *state = to;
            }
        }
    }

    #[cfg(test)]
    pub fn state(&self, id: &str) -> Option<NodeRun> {
        self.states.get(id).copied()
    }

    /// Whether nothing runs and nothing more will start.
    #[cfg(test)]
    pub fn finished(&self) -> bool {
        !self.states.values().any(|s| *s == NodeRun::Running) && self.ready().is_empty()
    }

    /// Whether every node succeeded.
    pub fn succeeded_all(&self) -> bool {
        self.states.values().all(|s| *s == NodeRun::Succeeded)
    }

    /// What to undo after a failure or cancel: every started node, the newest first.
    pub fn rollback_order(&self) -> Vec<String> {
        self.started.iter().rev().cloned().collect()
    }
}

/// Outputs of finished nodes: node id to output name to value.
pub type Outputs = BTreeMap<String, BTreeMap<String, String>>;

/// A string with its expressions filled in, and which secrets went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    pub secrets_used: BTreeSet<String>,
}

/// Why a text's expressions cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    #[error(transparent)]
    Expression(#[from] nullops_events::expressions::ExpressionError),
    #[error("the project has no secret named {0}")]
    NoSecret(String),
    #[error("node {node} has no output named {key}")]
    NoOutput { node: String, key: String },
}

/// Fills every `${{ … }}` in `text`. A reference to a missing secret or output is an error naming
/// it, never an empty string.
pub fn substitute(text: &str, outputs: &Outputs, secrets: &BTreeMap<String, String>) -> Result<Substituted, SubstituteError> {
    // Validates the expressions first: after this, every `${{` has its `}}`.
    references(text)?;
    let mut out = String::with_capacity(text.len());
    let mut secrets_used = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").expect("checked by references()");
        let reference = references(&rest[start..start + 3 + end + 2])?.pop().expect("one expression");
        match reference {
            Reference::Secret(name) => {
                let value = secrets.get(&name).ok_or_else(|| SubstituteError::NoSecret(name.clone()))?;
                out.push_str(value);
                secrets_used.insert(name);
            }
            Reference::NodeOutput { node, key } => {
                let value = outputs.get(&node).and_then(|o| o.get(&key)).ok_or_else(|| SubstituteError::NoOutput { node: node.clone(), key: key.clone() })?;
                out.push_str(value);
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(Substituted { text: out, secrets_used })
}

/// [`substitute`] in every string of a JSON value (keys stay as they are).
pub fn substitute_json(value: &Value, outputs: &Outputs, secrets: &BTreeMap<String, String>, used: &mut BTreeSet<String>) -> Result<Value, SubstituteError> {
    Ok(match value {
        Value::String(s) => {
            let filled = substitute(s, outputs, secrets)?;
            used.extend(filled.secrets_used);
            Value::String(filled.text)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute_json(v, outputs, secrets, used)).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| Ok((k.clone(), substitute_json(v, outputs, secrets, used)?))).collect::<Result<_, SubstituteError>>()?)
        }
        other => other.clone(),
    })
}

/// `line` with every secret value replaced by `***` (values shorter than 4 bytes are left: they
/// would blank out ordinary text and reveal little).
pub fn redact(line: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut values: Vec<&str> = secrets.values().map(String::as_str).filter(|v| v.len() >= 4).collect();
    // Longest first, so a secret that contains another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.into_iter().fold(line.to_owned(), |acc, v| acc.replace(v, "***"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullops_events::catalog::{PipelineAction, PipelineEdge, PipelineNode};

    /// db -> migrate -> api, and cache alongside.
    fn graph() -> PipelineGraph {
        let node = |id: &str| PipelineNode { id: id.into(), action: PipelineAction::StartService { service: id.into() } };
        let edge = |from: &str, to: &str| PipelineEdge { from: from.into(), to: to.into() };
        PipelineGraph { nodes: vec![node("db"), node("migrate"), node("api"), node("cache")], edges: vec![edge("db", "migrate"), edge("migrate", "api")] }
    }

    #[test]
    fn independent_branches_are_ready_together_and_order_is_kept() {
        let mut plan = RunPlan::new(&graph());
        assert_eq!(plan.ready(), ["cache", "db"]);
        plan.start("db");
        plan.start("cache");
        assert!(plan.ready().is_empty());
        plan.succeeded("db");
        assert_eq!(plan.ready(), ["migrate"]);
        plan.start("migrate");
        plan.succeeded("migrate");
        plan.succeeded("cache");
        assert_eq!(plan.ready(), ["api"]);
        plan.start("api");
        plan.succeeded("api");
        assert!(plan.finished() && plan.succeeded_all());
    }

    #[test]
    fn a_failure_stops_new_starts_and_rolls_back_newest_first() {
        let mut plan = RunPlan::new(&graph());
        plan.start("db");
        plan.start("cache");
        plan.succeeded("db");
        plan.start("migrate");
        plan.failed("migrate");
        assert!(plan.ready().is_empty(), "nothing starts after a failure");
        assert!(!plan.finished(), "cache still runs");
        plan.succeeded("cache");
        assert!(plan.finished() && !plan.succeeded_all());
        assert_eq!(plan.rollback_order(), ["migrate", "cache", "db"]);
        // Late or unknown reports change nothing.
        plan.succeeded("migrate");
        plan.start("ghost");
        assert_eq!(plan.state("migrate"), Some(NodeRun::Failed));
    }

    #[test]
    fn a_cancel_stops_new_starts() {
        let mut plan = RunPlan::new(&graph());
        plan.start("db");
        plan.cancel();
        plan.succeeded("db");
        assert!(plan.ready().is_empty() && plan.finished());
        assert_eq!(plan.rollback_order(), ["db"]);
    }

    #[test]
    fn expressions_are_filled_and_missing_values_named() {
        let outputs: Outputs = BTreeMap::from([("db".into(), BTreeMap::from([("url".into(), "postgres://db/qa".into())]))]);
        let secrets = BTreeMap::from([("PW".to_owned(), "hunter22".to_owned())]);
        let filled = substitute("${{ nodes.db.outputs.url }}?password=${{secrets.PW}}", &outputs, &secrets).unwrap();
        assert_eq!(filled.text, "postgres://db/qa?password=hunter22");
        assert_eq!(filled.secrets_used, BTreeSet::from(["PW".to_owned()]));
        assert!(substitute("${{ secrets.NOPE }}", &outputs, &secrets).unwrap_err().to_string().contains("NOPE"));
        assert!(substitute("${{ nodes.db.outputs.port }}", &outputs, &secrets).unwrap_err().to_string().contains("port"));
        assert!(substitute("${{ nodes.db", &outputs, &secrets).is_err());
        let json: Value = serde_json::json!({"sql": "GRANT ${{ secrets.PW }}", "n": 3, "list": ["${{ nodes.db.outputs.url }}"]});
        let mut used = BTreeSet::new();
        let filled = substitute_json(&json, &outputs, &secrets, &mut used).unwrap();
        assert_eq!(filled, serde_json::json!({"sql": "GRANT hunter22", "n": 3, "list": ["postgres://db/qa"]}));
        assert!(used.contains("PW"));
    }

    #[test]
    fn secrets_are_redacted_from_log_lines() {
        let secrets = BTreeMap::from([("A".to_owned(), "hunter22".to_owned()), ("B".to_owned(), "hunter22-long".to_owned()), ("C".to_owned(), "x".to_owned())]);
        assert_eq!(redact("pw=hunter22-long and hunter22, x stays", &secrets), "pw=*** and ***, x stays");
    }
}
