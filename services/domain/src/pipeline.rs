//! Pipelines (stream `pipeline-<project id>`): a graph of nodes (start a service, run a plugin)
//! whose edges give the order. Saving validates the whole graph and appends a new immutable
//! version with every plugin image pinned.

use std::collections::{BTreeMap, BTreeSet};

use nullops_events::catalog::*;
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::{access, Decider, DomainError};

// ---------------------------------------------------------------------------------------------
// Expressions: `${{ secrets.NAME }}` and `${{ nodes.ID.outputs.KEY }}` inside strings.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Secret(String),
    NodeOutput { node: String, key: String },
}

/// Every reference in `text`, or why one is malformed.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| format!("unterminated expression in {text:?}: close it with }}}}"))?;
        let expr = after[..end].trim();
        let parts: Vec<&str> = expr.split('.').collect();
        let reference = match parts[..] {
            ["secrets", name] if !name.is_empty() => Reference::Secret(name.to_owned()),
            ["nodes", node, "outputs", key] if !node.is_empty() && !key.is_empty() => Reference::NodeOutput { node: node.to_owned(), key: key.to_owned() },
            _ => return Err(format!("unknown expression ${{{{ {expr} }}}}: use ${{{{ secrets.NAME }}}} or ${{{{ nodes.ID.outputs.KEY }}}}")),
        };
        out.push(reference);
        rest = &after[end + 2..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Plugin parameter schemas.

/// Compiles a JSON Schema given as text, or says why it is not one.
pub fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))
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

const MAX_NODES: usize = 200;

fn at(node: &str, message: impl std::fmt::Display) -> DomainError {
    DomainError::invalid("pipeline", format!("node {node:?}: {message}"))
}

fn check_node_id(id: &str) -> Result<(), DomainError> {
    let ok = (1..=63).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(at(id, "an id is 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit"))
    }
}

/// Node ids in an order where every node comes after all nodes with an edge into it, or the
/// nodes of one cycle.
fn topological_order(ids: &[&str], edges: &[PipelineEdge]) -> Result<Vec<String>, Vec<String>> {
    let mut incoming: BTreeMap<&str, usize> = ids.iter().map(|id| (*id, 0)).collect();
    for e in edges {
        *incoming.get_mut(e.to.as_str()).expect("edges were checked") += 1;
    }
    let mut ready: Vec<&str> = ids.iter().copied().filter(|id| incoming[id] == 0).collect();
    let mut order = Vec::new();
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for e in edges.iter().filter(|e| e.from == id) {
            let n = incoming.get_mut(e.to.as_str()).expect("edges were checked");
            *n -= 1;
            if *n == 0 {
                ready.push(&e.to);
            }
        }
    }
    if order.len() == ids.len() {
        return Ok(order);
    }
    // Walk back along edges among the nodes left over: every one has a predecessor there, so
    // the walk must revisit a node, and what lies between is a cycle.
    let left: BTreeSet<&str> = incoming.iter().filter(|(_, n)| **n > 0).map(|(id, _)| *id).collect();
    let mut path = vec![*left.iter().next().expect("a cycle leaves nodes")];
    loop {
        let last = *path.last().expect("not empty");
        let prev = edges.iter().find(|e| e.to == last && left.contains(e.from.as_str())).expect("each has a predecessor");
        if let Some(i) = path.iter().position(|p| *p == prev.from) {
            let mut cycle: Vec<String> = path[i..].iter().rev().map(|s| s.to_string()).collect();
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        path.push(&prev.from);
    }
}

/// Collects every string inside a JSON value.
fn strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Checks a draft against its context and pins its plugin images. Every error names the node.
pub fn validate(draft: &PipelineDraft, context: &PipelineContext) -> Result<PipelineGraph, DomainError> {
    if draft.nodes.is_empty() {
        return Err(DomainError::invalid("pipeline", "add at least one node"));
    }
    if draft.nodes.len() > MAX_NODES {
        return Err(DomainError::invalid("pipeline", format!("use at most {MAX_NODES} nodes")));
    }
    let mut ids = Vec::new();
    for node in &draft.nodes {
        check_node_id(&node.id)?;
        if ids.contains(&node.id.as_str()) {
            return Err(at(&node.id, "two nodes have this id"));
        }
        ids.push(&node.id);
    }
    let mut edges: Vec<PipelineEdge> = draft.edges.clone();
    edges.sort();
    edges.dedup();
    for e in &edges {
        for end in [&e.from, &e.to] {
            if !ids.contains(&end.as_str()) {
                return Err(at(end, format!("the edge {} -> {} names a node that is not in the pipeline", e.from, e.to)));
            }
        }
        if e.from == e.to {
            return Err(at(&e.from, "an edge cannot lead from a node to itself"));
        }
    }
    let order = topological_order(&ids, &edges).map_err(|cycle| at(&cycle[0], format!("the edges form a cycle: {}", cycle.join(" -> "))))?;

    // Every node's ancestors: the nodes that finish before it starts.
    let mut before: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for id in &order {
        let mut ancestors = BTreeSet::new();
        for e in edges.iter().filter(|e| e.to == *id) {
            ancestors.insert(e.from.clone());
            ancestors.extend(before[e.from.as_str()].iter().cloned());
        }
        before.insert(id, ancestors);
    }

    let mut nodes = Vec::new();
    for node in &draft.nodes {
        let (action, texts): (NodeAction, Vec<&str>) = match &node.action {
            DraftAction::StartService { service } => {
                let def = context.services.get(service).ok_or_else(|| at(&node.id, format!("there is no service named {service}")))?;
                (NodeAction::StartService { service: service.clone() }, def.env.iter().map(|v| v.value.as_str()).collect())
            }
            DraftAction::RunPlugin { plugin, parameters } => {
                let def = context.plugins.get(plugin).ok_or_else(|| at(&node.id, format!("there is no plugin named {plugin}")))?;
                let schema = compile_schema(&def.parameters_schema).map_err(|m| at(&node.id, format!("plugin {plugin}'s schema: {m}")))?;
                if let Some(e) = schema.iter_errors(parameters).next() {
                    let path = e.instance_path.to_string();
                    let place = if path.is_empty() { String::new() } else { format!(" at {path}") };
                    return Err(at(&node.id, format!("parameters do not match plugin {plugin}'s schema{place}: {e}")));
                }
                let image = PinnedImage {
                    registry: def.registry.clone(),
                    repository: def.repository.clone(),
                    tag: def.tag.clone(),
                    digest: context.digests.get(plugin).cloned(),
                };
                let mut texts = Vec::new();
                strings(parameters, &mut texts);
                (NodeAction::RunPlugin { plugin: plugin.clone(), image, parameters: parameters.to_string() }, texts)
            }
        };
        for text in texts {
            for reference in references(text).map_err(|m| at(&node.id, m))? {
                match reference {
                    Reference::Secret(name) if !context.secrets.contains(&name) => {
                        return Err(at(&node.id, format!("there is no secret named {name} in this project")));
                    }
                    Reference::NodeOutput { node: other, .. } if !before[node.id.as_str()].contains(&other) => {
                        let why = if ids.contains(&other.as_str()) { "which does not run before it" } else { "which is not in the pipeline" };
                        return Err(at(&node.id, format!("it uses outputs of node {other:?}, {why}")));
                    }
                    _ => {}
                }
            }
        }
        nodes.push(PipelineNode { id: node.id.clone(), action });
    }
    Ok(PipelineGraph { nodes, edges })
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

fn describe(action: &NodeAction) -> String {
    match action {
        NodeAction::StartService { service } => format!("start service {service}"),
        NodeAction::RunPlugin { plugin, image, parameters } => {
            let digest = image.digest.as_deref().map(|d| format!("@{d}")).unwrap_or_default();
            format!("run plugin {plugin} ({}/{}:{}{digest}) with {parameters}", image.registry, image.repository, image.tag)
        }
    }
}

/// What changed from `old` to `new`: nodes by id, then edges.
pub fn diff(old: &PipelineGraph, new: &PipelineGraph) -> Vec<Change> {
    let old_nodes: BTreeMap<&str, &NodeAction> = old.nodes.iter().map(|n| (n.id.as_str(), &n.action)).collect();
    let new_nodes: BTreeMap<&str, &NodeAction> = new.nodes.iter().map(|n| (n.id.as_str(), &n.action)).collect();
    let mut changes = Vec::new();
    for (id, action) in &old_nodes {
        match new_nodes.get(id) {
            None => changes.push(Change { kind: ChangeKind::Removed, subject: format!("node {id}"), detail: describe(action) }),
            Some(now) if now != action => {
                changes.push(Change { kind: ChangeKind::Changed, subject: format!("node {id}"), detail: format!("{} => {}", describe(action), describe(now)) })
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
    Save { access: Option<Access>, project: String, project_id: Uuid, draft: PipelineDraft, context: PipelineContext },
}

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
        let PipelineCommand::Save { access, project, project_id, draft, context } = command;
        access::require(*access, Access::Full, &format!("project {project}"))?;
        let graph = validate(draft, context)?;
        if let Some((_, why)) = crate::plan::split_problem(context.limits.0, context.limits.1, graph.services()) {
            return Err(DomainError::invalid(
                "pipeline",
                format!("project {project}'s limits do not stretch to this pipeline: {why}; raise the project's limits or run fewer services"),
            ));
        }
        if state.latest.as_ref().is_some_and(|v| v.graph == graph) {
            // Saving what is already the latest version changes nothing: scripts can re-apply.
            return Ok(vec![]);
        }
        let version = state.latest.as_ref().map_or(1, |v| v.version + 1);
        Ok(vec![PipelineEvent::VersionSaved(PipelineVersionSaved { project_id: *project_id, version, graph })])
    }

    fn evolve(mut state: PipelineState, event: &PipelineEvent) -> PipelineState {
        let PipelineEvent::VersionSaved(v) = event;
        state.latest = Some(v.clone());
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
        let save = |limits| PipelineCommand::Save {
            access: Some(Access::Full),
            project: "shop".into(),
            project_id: Uuid::nil(),
            draft: draft.clone(),
            context: PipelineContext { limits, ..context() },
        };
        let refused = Pipeline::decide(&save((10, 512)), &PipelineState::default());
        assert!(matches!(&refused, Err(DomainError::InvalidInput { field: "pipeline", message }) if message.contains("at least 20 millicores")), "{refused:?}");
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
    fn rejection(d: PipelineDraft) -> String {
        match validate(&d, &context()) {
            Err(DomainError::InvalidInput { message, .. }) => message,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    fn save(d: PipelineDraft, access: Option<Access>) -> PipelineCommand {
        PipelineCommand::Save { access, project: "shop".into(), project_id: Uuid::nil(), draft: d, context: context() }
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
        assert!(m.starts_with("node \"db\": parameters do not match plugin create-db's schema at /size"), "{m}");
        let m = rejection(draft(vec![plugin("db", json!({}))], &[]));
        assert!(m.starts_with("node \"db\": parameters do not match") && m.contains("name"), "{m}");
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
        assert_eq!(m, "node \"db\": there is no secret named NOPE in this project");
        // A service's variables are checked where the pipeline starts it.
        let mut ctx = context();
        ctx.secrets.clear();
        let Err(DomainError::InvalidInput { message, .. }) = validate(&draft(vec![service("web", "api")], &[]), &ctx) else { panic!() };
        assert_eq!(message, "node \"web\": there is no secret named DB_PASSWORD in this project");
    }

    #[test]
    fn malformed_graphs_are_rejected() {
        assert!(rejection(draft(vec![service("a", "api"), service("a", "api")], &[])).contains("two nodes have this id"));
        assert!(rejection(draft(vec![service("a", "api")], &[("a", "zz")])).starts_with("node \"zz\""));
        assert!(rejection(draft(vec![service("a", "api")], &[("a", "a")])).contains("itself"));
        assert!(rejection(draft(vec![plugin("x", json!({"name": "${{ env.HOME }}"}))], &[])).contains("unknown expression"));
        assert!(rejection(draft(vec![service("Bad Id", "api")], &[])).starts_with("node \"Bad Id\""));
    }

    #[test]
    fn saving_creates_numbered_versions_with_pinned_images() {
        let first = Pipeline::decide(&save(good(), Some(Access::Full)), &PipelineState::default()).unwrap();
        let [PipelineEvent::VersionSaved(v1)] = &first[..] else { panic!() };
        assert_eq!(v1.version, 1);
        let NodeAction::RunPlugin { image, .. } = &v1.graph.nodes[0].action else { panic!() };
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
    fn read_only_members_cannot_save() {
        for access in [None, Some(Access::ReadOnly)] {
            assert!(matches!(Pipeline::decide(&save(good(), access), &PipelineState::default()), Err(DomainError::Forbidden(_))));
        }
    }
}
