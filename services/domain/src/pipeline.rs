//! Pipelines (stream `pipeline-<project id>`): a graph of nodes (start a service, run a plugin)
//! whose edges give the order. Saving validates the whole graph and appends a new immutable
//! version with every plugin image pinned.

use std::collections::{BTreeMap, BTreeSet};

use nullops_events::catalog::*;
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{access, Decider, DomainError};

pub use nullops_events::expressions::{references, Reference};

// ---------------------------------------------------------------------------------------------
// Plugin parameter schemas.

/// Why a plugin's parameters schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSchema {
    #[error("not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    /// `detail` is what the JSON Schema validator found wrong, naming the keyword.
    #[error("not a valid JSON Schema: {detail}")]
    NotASchema { detail: String },
}

/// Compiles a JSON Schema given as text, or says why it is not one.
pub fn compile_schema(text: &str) -> Result<jsonschema::Validator, BadSchema> {
    let schema: serde_json::Value = serde_json::from_str(text).map_err(|e| BadSchema::NotJson { line: e.line(), column: e.column() })?;
    jsonschema::validator_for(&schema).map_err(|e| BadSchema::NotASchema { detail: e.to_string() })
}

// ---------------------------------------------------------------------------------------------
// Drafts and their validation.

/// A pipeline as submitted, before validation and pinning.
#[derive(Debug, Clone)]
pub struct PipelineDraft {
    pub nodes: Vec<DraftNode>,
    pub edges: Vec<PipelineEdge>,
}

#[derive(Debug, Clone)]
pub struct DraftNode {
    pub id: String,
    pub action: DraftAction,
}

#[derive(Debug, Clone)]
pub enum DraftAction {
    StartService { service: String },
    RunPlugin { plugin: String, parameters: serde_json::Value },
}

/// What a save is checked against, read by the command layer from the catalog and the
/// project's secrets, plus the image digests it could resolve.
#[derive(Debug, Clone, Default)]
pub struct PipelineContext {
    pub services: BTreeMap<String, ServiceDefinition>,
    pub plugins: BTreeMap<String, PluginDefinition>,
    pub secrets: BTreeSet<String>,
    /// Plugin name to the digest of its image, where the registry reported one.
    pub digests: BTreeMap<String, String>,
    /// The project's CPU (millicores) and memory (MiB), which its services share.
    pub limits: (u32, u32),
}

/// The most nodes a pipeline may have.
pub const MAX_NODES: usize = 200;

/// What is wrong with a pipeline, as the API and the editor name it: one code per kind of
/// problem, so a client can react to a kind without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemCode {
    /// The pipeline has no node.
    EmptyPipeline,
    /// More than [`MAX_NODES`] nodes.
    TooManyNodes,
    /// A node id that is not 1 to 63 lower-case letters, digits, '_' or '-'.
    BadNodeId,
    /// Two nodes share an id.
    DuplicateNode,
    /// An edge names a node that is not in the pipeline.
    UnknownNode,
    /// An edge from a node to itself.
    SelfEdge,
    /// The edges form a cycle.
    Cycle,
    /// A node starts a service the catalog does not have.
    UnknownService,
    /// A node runs a plugin the catalog does not have.
    UnknownPlugin,
    /// The plugin's parameter schema is not a valid JSON Schema.
    BadSchema,
    /// A parameter does not match the plugin's schema.
    BadParameter,
    /// A parameter the plugin's schema requires is missing.
    MissingParameter,
    /// A `${{ }}` expression that is malformed or of an unknown kind.
    BadExpression,
    /// An expression uses the outputs of a node that does not run before.
    NotUpstream,
    /// An expression names a secret the project does not have.
    UnknownSecret,
    /// The project's CPU or memory cannot be split among the pipeline's services.
    OverLimits,
    /// A chosen or pinned image tag is not in its registry.
    MissingTag,
    /// An image's registry could not be asked.
    ImageUnresolved,
}

/// One problem of a pipeline: the node it is on (none for the whole graph), the field of that
/// node (`id`, `service`, `plugin`, `parameters.name`, `edges`, `tags.api`), and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub node: Option<String>,
    pub field: Option<String>,
    pub code: ProblemCode,
    pub message: String,
}

impl Problem {
    pub fn at(node: &str, field: &str, code: ProblemCode, message: impl Into<String>) -> Self {
        Problem { node: Some(node.to_owned()), field: Some(field.to_owned()), code, message: message.into() }
    }
    fn whole(code: ProblemCode, message: impl Into<String>) -> Self {
        Problem { node: None, field: None, code, message: message.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node {node:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a node id is not one, if it is not.
fn node_id_problem(id: &str) -> Option<Problem> {
    let ok = (1..=63).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    (!ok).then(|| Problem::at(id, "id", ProblemCode::BadNodeId, "an id is 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit"))
}

/// Node ids in an order where every node comes after all nodes with an edge into it, or the
/// nodes of one cycle. Every edge must join two of `ids`.
fn topological_order(ids: &[&str], edges: &[PipelineEdge]) -> Result<Vec<String>, Vec<String>> {
    let mut incoming: BTreeMap<&str, usize> = ids.iter().map(|id| (*id, 0)).collect();
    for e in edges {
        if let Some(n) = incoming.get_mut(e.to.as_str()) {
            *n += 1;
        }
    }
    let mut ready: Vec<&str> = ids.iter().copied().filter(|id| incoming[id] == 0).collect();
    let mut order = Vec::new();
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for e in edges.iter().filter(|e| e.from == id) {
            if let Some(n) = incoming.get_mut(e.to.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.push(&e.to);
                }
            }
        }
    }
    if order.len() == ids.len() {
        return Ok(order);
    }
    // Walk back along edges among the nodes left over: every one has a predecessor there, so
    // the walk must revisit a node, and what lies between is a cycle.
    let left: BTreeSet<&str> = incoming.iter().filter(|(_, n)| **n > 0).map(|(id, _)| *id).collect();
    let mut path: Vec<&str> = left.iter().next().copied().into_iter().collect();
    while let Some(&last) = path.last() {
        let Some(prev) = edges.iter().find(|e| e.to == last && left.contains(e.from.as_str())) else { break };
        if let Some(i) = path.iter().position(|p| *p == prev.from) {
            let mut cycle: Vec<String> = path[i..].iter().rev().map(|s| s.to_string()).collect();
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        path.push(&prev.from);
    }
    Err(left.into_iter().map(str::to_owned).collect())
}

/// The nodes that start together, in order: a node's stage is one more than the latest stage
/// of the nodes it follows. `order` is a topological order of the graph.
pub fn stages(order: &[String], edges: &[PipelineEdge]) -> Vec<Vec<String>> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for id in order {
        let d = edges.iter().filter(|e| e.to == *id).filter_map(|e| depth.get(e.from.as_str())).map(|d| d + 1).max().unwrap_or(0);
        depth.insert(id, d);
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for id in order {
        let d = depth[id.as_str()];
        if out.len() <= d {
            out.resize_with(d + 1, Vec::new);
        }
        out[d].push(id.clone());
    }
    out.iter_mut().for_each(|stage| stage.sort());
    out
}

/// Collects every string inside a JSON value, with the dotted path where it is.
fn strings<'a>(value: &'a serde_json::Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        serde_json::Value::String(s) => out.push((path, s)),
        serde_json::Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| strings(v, format!("{path}.{i}"), out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| strings(v, format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// The problems of `parameters` against a plugin's schema, on node `id`.
fn parameter_problems(id: &str, plugin: &str, schema: &jsonschema::Validator, parameters: &serde_json::Value) -> Vec<Problem> {
    schema
        .iter_errors(parameters)
        .map(|e| {
            let mut field = String::from("parameters");
            for part in e.instance_path.to_string().split('/').filter(|p| !p.is_empty()) {
                field.push('.');
                field.push_str(part);
            }
            if let jsonschema::error::ValidationErrorKind::Required { property } = &e.kind {
                let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
                return Problem::at(id, &format!("{field}.{name}"), ProblemCode::MissingParameter, format!("plugin {plugin} needs the parameter {name}"));
            }
            let place = if field == "parameters" { String::new() } else { format!(" at {}", &field["parameters.".len()..]) };
            Problem::at(id, &field, ProblemCode::BadParameter, format!("parameters do not match plugin {plugin}'s schema{place}: {e}"))
        })
        .collect()
}

/// A draft checked: the graph it pins (when nothing is wrong with it), its stages, and every
/// problem found, each naming its node and field.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub graph: Option<PipelineGraph>,
    /// Empty when the edges do not make an order (a cycle, an unknown node).
    pub stages: Vec<Vec<String>>,
    pub problems: Vec<Problem>,
}

/// Checks a draft against its context and pins its plugin images, finding every problem.
pub fn check(draft: &PipelineDraft, context: &PipelineContext) -> Checked {
    use ProblemCode as P;
    let mut problems = Vec::new();
    if draft.nodes.is_empty() {
        problems.push(Problem::whole(P::EmptyPipeline, "add at least one node"));
    }
    if draft.nodes.len() > MAX_NODES {
        problems.push(Problem::whole(P::TooManyNodes, format!("use at most {MAX_NODES} nodes")));
    }
    let mut ids: Vec<&str> = Vec::new();
    for node in &draft.nodes {
        problems.extend(node_id_problem(&node.id));
        if ids.contains(&node.id.as_str()) {
            problems.push(Problem::at(&node.id, "id", P::DuplicateNode, "two nodes have this id"));
        } else {
            ids.push(&node.id);
        }
    }
    let mut edges: Vec<PipelineEdge> = draft.edges.clone();
    edges.sort();
    edges.dedup();
    let mut joined = Vec::new();
    for e in &edges {
        let missing: Vec<&String> = [&e.from, &e.to].into_iter().filter(|end| !ids.contains(&end.as_str())).collect();
        if let Some(end) = missing.first() {
            let on = if ids.contains(&e.from.as_str()) { &e.from } else { &e.to };
            problems.push(Problem::at(
                on,
                "edges",
                P::UnknownNode,
                format!("the edge {} -> {} names node {end:?}, which is not in the pipeline", e.from, e.to),
            ));
        } else if e.from == e.to {
            problems.push(Problem::at(&e.from, "edges", P::SelfEdge, "an edge cannot lead from a node to itself"));
        } else {
            joined.push(e.clone());
        }
    }
    let order = match topological_order(&ids, &joined) {
        Ok(order) => Some(order),
        Err(cycle) => {
            problems.push(Problem::at(&cycle[0], "edges", P::Cycle, format!("the edges form a cycle: {}", cycle.join(" -> "))));
            None
        }
    };

    // Every node's ancestors: the nodes that finish before it starts.
    let mut before: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for id in order.iter().flatten() {
        let mut ancestors = BTreeSet::new();
        for e in joined.iter().filter(|e| e.to == *id) {
            ancestors.insert(e.from.clone());
            ancestors.extend(before.get(e.from.as_str()).into_iter().flatten().cloned());
        }
        before.insert(id, ancestors);
    }

    let mut nodes = Vec::new();
    for node in &draft.nodes {
        let (action, texts): (Option<PipelineAction>, Vec<(String, &str)>) = match &node.action {
            DraftAction::StartService { service } => match context.services.get(service) {
                Some(def) => (
                    Some(PipelineAction::StartService { service: service.clone() }),
                    def.env.iter().map(|v| (format!("env.{}", v.name), v.value.as_str())).collect(),
                ),
                None => {
                    problems.push(Problem::at(&node.id, "service", P::UnknownService, format!("there is no service named {service}")));
                    (None, Vec::new())
                }
            },
            DraftAction::RunPlugin { plugin, parameters } => {
                let mut texts = Vec::new();
                strings(parameters, "parameters".into(), &mut texts);
                match context.plugins.get(plugin) {
                    None => {
                        problems.push(Problem::at(&node.id, "plugin", P::UnknownPlugin, format!("there is no plugin named {plugin}")));
                        (None, texts)
                    }
                    Some(def) => {
                        match compile_schema(&def.parameters_schema) {
                            Ok(schema) => problems.extend(parameter_problems(&node.id, plugin, &schema, parameters)),
                            Err(m) => problems.push(Problem::at(
                                &node.id,
                                "plugin",
                                P::BadSchema,
                                format!("plugin {plugin}'s schema: {m}; an admin must fix the plugin"),
                            )),
                        }
                        let image = PinnedImage {
                            registry: def.registry.clone(),
                            repository: def.repository.clone(),
                            tag: def.tag.clone(),
                            digest: context.digests.get(plugin).cloned(),
                        };
                        (Some(PipelineAction::RunPlugin { plugin: plugin.clone(), image, parameters: parameters.to_string() }), texts)
                    }
                }
            }
        };
        for (field, text) in texts {
            match references(text) {
                Err(m) => problems.push(Problem::at(&node.id, &field, P::BadExpression, m.to_string())),
                Ok(references) => {
                    for reference in references {
                        match reference {
                            Reference::Secret(name) if !context.secrets.contains(&name) => problems.push(Problem::at(
                                &node.id,
                                &field,
                                P::UnknownSecret,
                                format!("there is no secret named {name} in this project: set it on the project's page"),
                            )),
                            Reference::NodeOutput { node: other, .. }
                                if order.is_some() && !before.get(node.id.as_str()).is_some_and(|b| b.contains(&other)) =>
                            {
                                let why = if ids.contains(&other.as_str()) { "which does not run before it" } else { "which is not in the pipeline" };
                                problems.push(Problem::at(&node.id, &field, P::NotUpstream, format!("it uses outputs of node {other:?}, {why}")));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(action) = action {
            nodes.push(PipelineNode { id: node.id.clone(), action });
        }
    }
    let services = nodes.iter().filter(|n| matches!(n.action, PipelineAction::StartService { .. })).count();
    if let Some((_, why)) = crate::plan::split_problem(context.limits.0, context.limits.1, services) {
        problems.push(Problem::whole(
            P::OverLimits,
            format!("the project's limits do not stretch to this pipeline: {why}; raise the project's limits or run fewer services"),
        ));
    }
    let stages = order.as_deref().map(|o| stages(o, &joined)).unwrap_or_default();
    let graph = problems.is_empty().then_some(PipelineGraph { nodes, edges });
    Checked { graph, stages, problems }
}

/// Checks a draft against its context and pins its plugin images, or refuses it with every
/// problem found.
pub fn validate(draft: &PipelineDraft, context: &PipelineContext) -> Result<PipelineGraph, DomainError> {
    let checked = check(draft, context);
    checked.graph.ok_or(DomainError::InvalidPipeline(checked.problems))
}

// ---------------------------------------------------------------------------------------------
// Diff of two versions.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// `node ID` or `edge FROM -> TO`.
    pub subject: String,
    pub detail: String,
}

fn describe(action: &PipelineAction) -> String {
    match action {
        PipelineAction::StartService { service } => format!("start service {service}"),
        PipelineAction::RunPlugin { plugin, image, parameters } => {
            format!("run plugin {plugin} ({}:{} from registry {}) with {parameters}", image.repository, image.tag, image.registry)
        }
    }
}

/// A digest as people compare them: its first 12 hex digits.
fn short_digest(digest: Option<&str>) -> String {
    digest.map_or_else(|| "none".to_owned(), |d| d.strip_prefix("sha256:").unwrap_or(d).chars().take(12).collect())
}

/// A parameter's value as it reads in a diff: strings bare, anything else as JSON.
fn parameter_text(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(unset)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Only what changed between two actions of one node: `mode: short → long`, `service api →
/// web`, the image's tag or digest; the whole action only when its kind changed.
fn changed_fields(old: &PipelineAction, new: &PipelineAction) -> String {
    match (old, new) {
        (PipelineAction::StartService { service: a }, PipelineAction::StartService { service: b }) => format!("service {a} → {b}"),
        (PipelineAction::RunPlugin { plugin: pa, image: ia, parameters: xa }, PipelineAction::RunPlugin { plugin: pb, image: ib, parameters: xb }) => {
            let mut parts = Vec::new();
            if pa != pb {
                parts.push(format!("plugin {pa} → {pb}"));
            }
            if (&ia.registry, &ia.repository, &ia.tag) != (&ib.registry, &ib.repository, &ib.tag) {
                parts.push(format!("image {}:{} → {}:{}", ia.repository, ia.tag, ib.repository, ib.tag));
            } else if ia.digest != ib.digest {
                parts.push(format!("image digest {} → {}", short_digest(ia.digest.as_deref()), short_digest(ib.digest.as_deref())));
            }
            let parse = |x: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(x).unwrap_or_default();
            let (before, after) = (parse(xa), parse(xb));
            let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for key in keys {
                let (was, now) = (before.get(key), after.get(key));
                if was != now {
                    parts.push(format!("{key}: {} → {}", parameter_text(was), parameter_text(now)));
                }
            }
            parts.join("; ")
        }
        _ => format!("{} → {}", describe(old), describe(new)),
    }
}

/// What changed from `old` to `new`: nodes by id, then edges.
pub fn diff(old: &PipelineGraph, new: &PipelineGraph) -> Vec<Change> {
    let old_nodes: BTreeMap<&str, &PipelineAction> = old.nodes.iter().map(|n| (n.id.as_str(), &n.action)).collect();
    let new_nodes: BTreeMap<&str, &PipelineAction> = new.nodes.iter().map(|n| (n.id.as_str(), &n.action)).collect();
    let mut changes = Vec::new();
    for (id, action) in &old_nodes {
        match new_nodes.get(id) {
            None => changes.push(Change { kind: ChangeKind::Removed, subject: format!("node {id}"), detail: describe(action) }),
            Some(now) if now != action => {
                changes.push(Change { kind: ChangeKind::Changed, subject: format!("node {id}"), detail: changed_fields(action, now) })
            }
            Some(_) => {}
        }
    }
    for (id, action) in new_nodes.iter().filter(|(id, _)| !old_nodes.contains_key(*id)) {
        changes.push(Change { kind: ChangeKind::Added, subject: format!("node {id}"), detail: describe(action) });
    }
    let edge = |e: &PipelineEdge| format!("edge {} -> {}", e.from, e.to);
    for e in old.edges.iter().filter(|e| !new.edges.contains(e)) {
        changes.push(Change { kind: ChangeKind::Removed, subject: edge(e), detail: String::new() });
    }
    for e in new.edges.iter().filter(|e| !old.edges.contains(e)) {
        changes.push(Change { kind: ChangeKind::Added, subject: edge(e), detail: String::new() });
    }
    changes
}

// ---------------------------------------------------------------------------------------------
// The aggregate.

pub enum PipelineCommand {
    /// `access` is the caller's access to the project, resolved from the catalog by the command
    /// layer together with `context`.
    Save {
        access: Option<Access>,
        project: String,
        project_id: Uuid,
        draft: PipelineDraft,
        context: PipelineContext,
        message: String,
        layout: Vec<NodePlacement>,
        based_on: Option<u32>,
    },
    /// Records that a dry run was made (FULL access): its outcome, worked out by the caller.
    RecordDryRun { access: Option<Access>, project: String, outcome: PipelineDryRun },
}

/// The longest message a version may carry.
pub const MAX_MESSAGE_CHARS: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineState {
    pub latest: Option<PipelineVersionSaved>,
}

pub struct Pipeline;

impl Decider for Pipeline {
    type Command = PipelineCommand;
    type Event = PipelineEvent;
    type State = PipelineState;
    const KIND: &'static str = "pipeline";

    fn decide(command: &PipelineCommand, state: &PipelineState) -> Result<Vec<PipelineEvent>, DomainError> {
        match command {
            PipelineCommand::Save { access, project, project_id, draft, context, message, layout, based_on } => {
                access::require(*access, Access::Full, &format!("project {project}"))?;
                if message.chars().count() > MAX_MESSAGE_CHARS {
                    return Err(DomainError::invalid("message", format!("say it in at most {MAX_MESSAGE_CHARS} characters")));
                }
                let graph = validate(draft, context)?;
                let latest = state.latest.as_ref().map_or(0, |v| v.version);
                if let Some(base) = based_on.filter(|b| *b == 0 || *b > latest) {
                    return Err(DomainError::invalid("basedOn", format!("project {project} has no pipeline version {base}")));
                }
                // Only placements of nodes the graph has are kept, one per node.
                let mut layout: Vec<NodePlacement> = layout.iter().filter(|p| graph.nodes.iter().any(|n| n.id == p.node)).cloned().collect();
                layout.sort_by(|a, b| a.node.cmp(&b.node));
                layout.dedup_by(|a, b| a.node == b.node);
                if state.latest.as_ref().is_some_and(|v| v.graph == graph && v.layout == layout) {
                    // Saving what is already the latest version changes nothing: scripts can re-apply.
                    return Ok(vec![]);
                }
                Ok(vec![PipelineEvent::VersionSaved(PipelineVersionSaved {
                    project_id: *project_id,
                    version: latest + 1,
                    graph,
                    message: message.trim().to_owned(),
                    layout,
                    based_on: *based_on,
                })])
            }
            PipelineCommand::RecordDryRun { access, project, outcome } => {
                access::require(*access, Access::Full, &format!("project {project}"))?;
                Ok(vec![PipelineEvent::DryRun(outcome.clone())])
            }
        }
    }

    fn evolve(mut state: PipelineState, event: &PipelineEvent) -> PipelineState {
        match event {
            PipelineEvent::VersionSaved(v) => state.latest = Some(v.clone()),
            PipelineEvent::DryRun(_) => {}
        }
        state
    }

    fn select(event: DomainEvent) -> Option<PipelineEvent> {
        match event {
            DomainEvent::Pipeline(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;
    use serde_json::json;

    fn context() -> PipelineContext {
        let service = ServiceDefinition {
            name: "api".into(),
            registry: "local".into(),
            image: "shop/api".into(),
            tag: TagMode::Selectable(None),
            port: 8080,
            health_check: None,
            env: vec![EnvVar { name: "DB_PASSWORD".into(), value: "${{ secrets.DB_PASSWORD }}".into() }],
        };
        let plugin = PluginDefinition {
            name: "create-db".into(),
            registry: "local".into(),
            repository: "plugins/create-db".into(),
            tag: "1.0".into(),
            description: "Creates a database".into(),
            parameters_schema: r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"size":{"type":"integer"}}}"#.into(),
            cpu_millis: 500,
            memory_mib: 128,
            timeout_secs: 300,
            joins_deployment_network: true,
        };
        PipelineContext {
            services: [("api".to_owned(), service)].into(),
            plugins: [("create-db".to_owned(), plugin)].into(),
            secrets: ["DB_PASSWORD".to_owned()].into(),
            digests: [("create-db".to_owned(), "sha256:abc".to_owned())].into(),
            limits: (1000, 512),
        }
    }
    #[test]
    fn a_pipeline_must_fit_its_projects_limits_once_split() {
        let draft = PipelineDraft { nodes: vec![service("a", "api"), service("b", "api")], edges: vec![] };
        let save = |limits| save_with(draft.clone(), Some(Access::Full), PipelineContext { limits, ..context() }, "", vec![], None);
        let refused = Pipeline::decide(&save((10, 512)), &PipelineState::default());
        assert!(
            matches!(&refused, Err(DomainError::InvalidPipeline(p)) if p[0].code == ProblemCode::OverLimits && p[0].message.contains("at least 20 millicores")),
            "{refused:?}"
        );
        assert!(Pipeline::decide(&save((20, 512)), &PipelineState::default()).is_ok());
    }

    fn plugin(id: &str, parameters: serde_json::Value) -> DraftNode {
        DraftNode { id: id.into(), action: DraftAction::RunPlugin { plugin: "create-db".into(), parameters } }
    }
    fn service(id: &str, service: &str) -> DraftNode {
        DraftNode { id: id.into(), action: DraftAction::StartService { service: service.into() } }
    }
    fn edge(from: &str, to: &str) -> PipelineEdge {
        PipelineEdge { from: from.into(), to: to.into() }
    }
    fn draft(nodes: Vec<DraftNode>, edges: &[(&str, &str)]) -> PipelineDraft {
        PipelineDraft { nodes, edges: edges.iter().map(|(a, b)| edge(a, b)).collect() }
    }
    /// The first problem of a draft, as the API words it.
    fn rejection(d: PipelineDraft) -> String {
        problems(d)[0].to_string()
    }
    fn problems(d: PipelineDraft) -> Vec<Problem> {
        match validate(&d, &context()) {
            Err(DomainError::InvalidPipeline(problems)) => problems,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    fn save(d: PipelineDraft, access: Option<Access>) -> PipelineCommand {
        save_with(d, access, context(), "", vec![], None)
    }
    fn save_with(
        d: PipelineDraft,
        access: Option<Access>,
        context: PipelineContext,
        message: &str,
        layout: Vec<NodePlacement>,
        based_on: Option<u32>,
    ) -> PipelineCommand {
        PipelineCommand::Save { access, project: "shop".into(), project_id: Uuid::nil(), draft: d, context, message: message.into(), layout, based_on }
    }
    fn good() -> PipelineDraft {
        draft(
            vec![plugin("db", json!({"name": "shop"})), plugin("seed", json!({"name": "${{ nodes.db.outputs.url }}"})), service("api", "api")],
            &[("db", "seed"), ("seed", "api")],
        )
    }

    #[test]
    fn a_cycle_is_rejected_naming_its_nodes() {
        let m = rejection(draft(vec![service("a", "api"), service("b", "api"), service("c", "api")], &[("a", "b"), ("b", "c"), ("c", "b")]));
        assert!(m.starts_with("node \"b\": the edges form a cycle: b -> c -> b") || m.starts_with("node \"c\": the edges form a cycle: c -> b -> c"), "{m}");
    }

    #[test]
    fn an_unknown_service_is_rejected_naming_the_node() {
        assert_eq!(rejection(draft(vec![service("web", "nope")], &[])), "node \"web\": there is no service named nope");
    }

    #[test]
    fn an_unknown_plugin_is_rejected_naming_the_node() {
        let d = draft(vec![DraftNode { id: "db".into(), action: DraftAction::RunPlugin { plugin: "nope".into(), parameters: json!({}) } }], &[]);
        assert_eq!(rejection(d), "node \"db\": there is no plugin named nope");
    }

    #[test]
    fn parameters_failing_the_schema_are_rejected_naming_the_node_and_place() {
        let m = rejection(draft(vec![plugin("db", json!({"name": "x", "size": "big"}))], &[]));
        assert!(m.starts_with("node \"db\": parameters do not match plugin create-db's schema at size"), "{m}");
        let m = rejection(draft(vec![plugin("db", json!({}))], &[]));
        assert_eq!(m, "node \"db\": plugin create-db needs the parameter name");
    }

    #[test]
    fn an_output_of_a_node_that_does_not_come_before_is_rejected() {
        // `seed` uses db's output, but nothing orders db before seed.
        let m = rejection(draft(vec![plugin("db", json!({"name": "a"})), plugin("seed", json!({"name": "${{ nodes.db.outputs.url }}"}))], &[]));
        assert_eq!(m, "node \"seed\": it uses outputs of node \"db\", which does not run before it");
        let m = rejection(draft(vec![plugin("seed", json!({"name": "${{ nodes.ghost.outputs.url }}"}))], &[]));
        assert_eq!(m, "node \"seed\": it uses outputs of node \"ghost\", which is not in the pipeline");
    }

    #[test]
    fn an_unknown_secret_is_rejected_naming_the_node() {
        let m = rejection(draft(vec![plugin("db", json!({"name": "${{ secrets.NOPE }}"}))], &[]));
        assert_eq!(m, "node \"db\": there is no secret named NOPE in this project: set it on the project's page");
        // A service's variables are checked where the pipeline starts it.
        let mut ctx = context();
        ctx.secrets.clear();
        let Err(DomainError::InvalidPipeline(p)) = validate(&draft(vec![service("web", "api")], &[]), &ctx) else { panic!() };
        assert_eq!((p[0].node.as_deref(), p[0].field.as_deref(), p[0].code), (Some("web"), Some("env.DB_PASSWORD"), ProblemCode::UnknownSecret));
    }

    #[test]
    fn malformed_graphs_are_rejected() {
        assert!(rejection(draft(vec![service("a", "api"), service("a", "api")], &[])).contains("two nodes have this id"));
        assert!(rejection(draft(vec![service("a", "api")], &[("a", "zz")])).starts_with("node \"a\": the edge a -> zz names node \"zz\""));
        assert!(rejection(draft(vec![service("a", "api")], &[("a", "a")])).contains("itself"));
        assert!(rejection(draft(vec![plugin("x", json!({"name": "${{ env.HOME }}"}))], &[])).contains("unknown expression"));
        assert!(rejection(draft(vec![service("Bad Id", "api")], &[])).starts_with("node \"Bad Id\""));
    }

    #[test]
    fn saving_creates_numbered_versions_with_pinned_images() {
        let first = Pipeline::decide(&save(good(), Some(Access::Full)), &PipelineState::default()).unwrap();
        let [PipelineEvent::VersionSaved(v1)] = &first[..] else { panic!() };
        assert_eq!(v1.version, 1);
        let PipelineAction::RunPlugin { image, .. } = &v1.graph.nodes[0].action else { panic!() };
        assert_eq!((image.tag.as_str(), image.digest.as_deref()), ("1.0", Some("sha256:abc")));
        let state = fold::<Pipeline>(&first);
        assert_eq!(Pipeline::decide(&save(good(), Some(Access::Full)), &state).unwrap(), [], "the same graph again is no new version");
        let mut changed = good();
        changed.nodes.push(service("api2", "api"));
        let [PipelineEvent::VersionSaved(v2)] = &Pipeline::decide(&save(changed, Some(Access::Full)), &state).unwrap()[..] else { panic!() };
        assert_eq!(v2.version, 2);
        let changes = diff(&v1.graph, &v2.graph);
        assert_eq!(changes, [Change { kind: ChangeKind::Added, subject: "node api2".into(), detail: "start service api".into() }]);
    }

    #[test]
    fn a_changed_node_shows_only_what_changed() {
        let image =
            |tag: &str, digest: &str| PinnedImage { registry: "reg".into(), repository: "reg/plugin-ok".into(), tag: tag.into(), digest: Some(digest.into()) };
        let run = |tag: &str, digest: &str, parameters: &str| PipelineAction::RunPlugin {
            plugin: "check".into(),
            image: image(tag, digest),
            parameters: parameters.into(),
        };
        let graph = |action: PipelineAction| PipelineGraph { nodes: vec![PipelineNode { id: "db".into(), action }], edges: vec![] };
        // One parameter changed: that parameter, not the node twice with its digest.
        let changes = diff(&graph(run("1", "sha256:aaaa", r#"{"mode":"short","n":1}"#)), &graph(run("1", "sha256:aaaa", r#"{"mode":"long","n":1}"#)));
        assert_eq!(changes, [Change { kind: ChangeKind::Changed, subject: "node db".into(), detail: "mode: short → long".into() }]);
        // A new tag, a parameter set and one unset.
        let changes = diff(&graph(run("1", "sha256:aaaa", r#"{"mode":"short"}"#)), &graph(run("2", "sha256:bbbb", r#"{"n":2}"#)));
        assert_eq!(changes[0].detail, "image reg/plugin-ok:1 → reg/plugin-ok:2; mode: short → (unset); n: (unset) → 2");
        // Only the digest (the tag was pushed again).
        let changes = diff(&graph(run("1", "sha256:aaaaaaaaaaaaaaaa", "{}")), &graph(run("1", "sha256:bbbbbbbbbbbbbbbb", "{}")));
        assert_eq!(changes[0].detail, "image digest aaaaaaaaaaaa → bbbbbbbbbbbb");
        // A whole new kind of step is shown whole, the registry apart from the repository.
        let changes = diff(&graph(PipelineAction::StartService { service: "api".into() }), &graph(run("1", "sha256:aaaa", "{}")));
        assert_eq!(changes[0].detail, "start service api → run plugin check (reg/plugin-ok:1 from registry reg) with {}");
    }

    #[test]
    fn every_problem_is_found_at_once_each_with_its_node_field_and_code() {
        // Given a draft with a missing required parameter, a parameter of the wrong type, an
        // unset secret and an output of a node that does not run before,
        let d = draft(
            vec![
                plugin("db", json!({"size": "big"})),
                plugin("seed", json!({"name": "${{ secrets.NOPE }}"})),
                plugin("late", json!({"name": "${{ nodes.api.outputs.url }}"})),
                service("api", "api"),
            ],
            &[("db", "api")],
        );
        // when it is checked, then each is reported on its node and field.
        let found: Vec<(Option<String>, Option<String>, ProblemCode)> = problems(d).into_iter().map(|p| (p.node, p.field, p.code)).collect();
        let at = |n: &str, f: &str, c| (Some(n.to_owned()), Some(f.to_owned()), c);
        for want in [
            at("db", "parameters.name", ProblemCode::MissingParameter),
            at("db", "parameters.size", ProblemCode::BadParameter),
            at("seed", "parameters.name", ProblemCode::UnknownSecret),
            at("late", "parameters.name", ProblemCode::NotUpstream),
        ] {
            assert!(found.contains(&want), "{want:?} not in {found:?}");
        }
    }

    #[test]
    fn the_stages_are_the_steps_that_start_together() {
        let d = draft(
            vec![plugin("db", json!({"name": "a"})), plugin("cache", json!({"name": "b"})), service("api", "api"), service("web", "api")],
            &[("db", "api"), ("cache", "api"), ("api", "web")],
        );
        let checked = check(&d, &context());
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert_eq!(checked.stages, [vec!["cache".to_owned(), "db".into()], vec!["api".into()], vec!["web".into()]]);
    }

    #[test]
    fn a_version_keeps_its_message_and_layout_and_a_new_layout_alone_is_a_new_version() {
        let with = |layout: Vec<NodePlacement>| save_with(good(), Some(Access::Full), context(), "  first cut ", layout, None);
        let placed = |x| vec![NodePlacement { node: "db".into(), x, y: 0 }, NodePlacement { node: "ghost".into(), x: 1, y: 1 }];
        let first = Pipeline::decide(&with(placed(10)), &PipelineState::default()).unwrap();
        let [PipelineEvent::VersionSaved(v1)] = &first[..] else { panic!() };
        assert_eq!((v1.message.as_str(), v1.layout.len()), ("first cut", 1), "trimmed; placements of unknown nodes dropped");
        let state = fold::<Pipeline>(&first);
        assert_eq!(Pipeline::decide(&with(placed(10)), &state).unwrap(), []);
        assert_eq!(Pipeline::decide(&with(placed(20)), &state).unwrap().len(), 1);
        let far = save_with(good(), Some(Access::Full), context(), "", vec![], Some(9));
        assert!(matches!(Pipeline::decide(&far, &state), Err(DomainError::InvalidInput { field: "basedOn", .. })));
    }

    #[test]
    fn a_dry_run_is_recorded_and_changes_no_version() {
        let state = fold::<Pipeline>(&Pipeline::decide(&save(good(), Some(Access::Full)), &PipelineState::default()).unwrap());
        let outcome = PipelineDryRun { environment: "staging".into(), version: Some(1), problems: 0, fits_on: None };
        let run = |access| PipelineCommand::RecordDryRun { access, project: "shop".into(), outcome: outcome.clone() };
        let events = Pipeline::decide(&run(Some(Access::Full)), &state).unwrap();
        assert_eq!(events, [PipelineEvent::DryRun(outcome.clone())]);
        assert_eq!(fold::<Pipeline>(&events).latest, None);
        assert!(matches!(Pipeline::decide(&run(Some(Access::ReadOnly)), &state), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn read_only_members_cannot_save() {
        for access in [None, Some(Access::ReadOnly)] {
            assert!(matches!(Pipeline::decide(&save(good(), access), &PipelineState::default()), Err(DomainError::Forbidden(_))));
        }
    }
}
