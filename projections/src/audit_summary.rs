//! What an audit entry says in words: a short sentence of what changed, with the names involved
//! (a project's, a secret's, a deployment's), never a secret value, a token or a hash.
//!
//! Many events name what they change only by id (a secret's project, a deployment's steps, a
//! team's members), so the audit projection keeps labels learned from the events that name them
//! (`learned`): a project's id to its name, a deployment's id to its name, project and
//! environment. A summary asks for the labels it needs (`wanted`) and falls back to the id.
//! Every match here is exhaustive: a new event does not compile until it is described.

use nullops_events::capacity::CapacityEvent;
use nullops_events::catalog::{Access, AccessTarget, CatalogEvent, PipelineAction, PipelineEvent, PreviewTagRule, SecretEvent, TagMode};
use nullops_events::deployment::{DeletionReason, DeploymentEvent, StepState};
use nullops_events::deployment_names::DeploymentNameEvent;
use nullops_events::identity::{ApiTokenEvent, Role, SessionEvent, UserEvent};
use nullops_events::node::{NodeEvent, Refusal};
use nullops_events::preview::{PreviewEvent, PreviewWish};
use nullops_events::{DomainEvent, StreamId};

/// Labels are looked up by keys of these shapes.
fn key(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{kind}:{id}")
}

/// The labels `event` on `stream` teaches: key and label.
pub fn learned(stream: &StreamId, event: &DomainEvent) -> Vec<(String, String)> {
    let id = stream.key();
    match event {
        DomainEvent::Session(SessionEvent::Started(s)) => vec![(key("session", id), s.username.clone())],
        DomainEvent::ApiToken(ApiTokenEvent::Created(t)) => vec![(key("apitoken", id), format!("{} of {}", t.name, t.username))],
        DomainEvent::Catalog(CatalogEvent::TeamCreated(t)) => vec![(key("team", t.team_id), t.name.clone())],
        DomainEvent::Catalog(CatalogEvent::TeamRenamed(t)) => vec![(key("team", t.team_id), t.name.clone())],
        DomainEvent::Catalog(CatalogEvent::ProjectCreated(p) | CatalogEvent::ProjectUpdated(p)) => vec![(key("project", p.project_id), p.name.clone())],
        DomainEvent::Catalog(CatalogEvent::WebhookCreated(w)) => vec![(key("webhook", w.webhook_id), w.url.clone())],
        DomainEvent::Node(NodeEvent::Added(n)) => vec![(key("node", id), format!("{}:{} ({})", n.host, n.port, n.environment))],
        DomainEvent::Node(NodeEvent::Moved(m)) => vec![(key("node", id), format!("{}:{}", m.host, m.port))],
        DomainEvent::Deployment(DeploymentEvent::Requested(r)) => vec![(key("deployment", id), format!("{} ({} in {})", r.name, r.project, r.environment))],
        _ => vec![],
    }
}

/// The keys whose labels the summary of `event` on `stream` uses.
pub fn wanted(stream: &StreamId, event: &DomainEvent) -> Vec<String> {
    let id = stream.key();
    match event {
        DomainEvent::Session(_) => vec![key("session", id)],
        DomainEvent::ApiToken(_) => vec![key("apitoken", id)],
        DomainEvent::Catalog(e) => match e {
            CatalogEvent::TeamRenamed(t) => vec![key("team", t.team_id)],
            CatalogEvent::TeamDeleted(t) => vec![key("team", t.team_id)],
            CatalogEvent::TeamMemberAdded(m) | CatalogEvent::TeamMemberRemoved(m) => vec![key("team", m.team_id)],
            CatalogEvent::AccessGranted(g) => vec![key("team", g.team_id)],
            CatalogEvent::AccessRevoked(r) => vec![key("team", r.team_id)],
            CatalogEvent::WebhookSecretRotated(w) => vec![key("webhook", w.webhook_id)],
            CatalogEvent::WebhookDeleted(w) => vec![key("webhook", w.webhook_id)],
            _ => vec![],
        },
        DomainEvent::Pipeline(PipelineEvent::DryRun(d)) => std::iter::once(key("project", id)).chain(d.fits_on.map(|n| key("node", n))).collect(),
        DomainEvent::Pipeline(_) | DomainEvent::Secret(_) => vec![key("project", id)],
        DomainEvent::Node(_) => vec![key("node", id)],
        DomainEvent::Capacity(CapacityEvent::Reserved(r)) => vec![key("node", id), key("deployment", r.deployment_id)],
        DomainEvent::Capacity(CapacityEvent::Released(r)) => vec![key("node", id), key("deployment", r.deployment_id)],
        DomainEvent::DeploymentName(DeploymentNameEvent::Claimed(c) | DeploymentNameEvent::Released(c)) => vec![key("deployment", c.deployment_id)],
        DomainEvent::Deployment(DeploymentEvent::Scheduled(s)) => vec![key("deployment", id), key("node", s.node_id)],
        DomainEvent::Deployment(_) => vec![key("deployment", id)],
        DomainEvent::User(_) | DomainEvent::Preview(_) => vec![],
    }
}

/// The sentence for `event` on `stream`; `label` gives what `wanted` asked for, when known.
pub fn summary(stream: &StreamId, event: &DomainEvent, label: &dyn Fn(&str) -> Option<String>) -> String {
    let id = stream.key();
    let called = |kind: &str, of: &dyn std::fmt::Display| label(&key(kind, of)).unwrap_or_else(|| of.to_string());
    match event {
        DomainEvent::User(e) => user(id, e),
        DomainEvent::Session(e) => {
            let who = called("session", &id);
            match e {
                SessionEvent::Started(_) => format!("{who} signed in"),
                SessionEvent::Ended(_) => format!("{who}'s session ended"),
            }
        }
        DomainEvent::ApiToken(e) => match e {
            ApiTokenEvent::Created(t) => format!("API token {} created for {}", t.name, t.username),
            ApiTokenEvent::Revoked(_) => format!("API token {} revoked", called("apitoken", &id)),
        },
        DomainEvent::Catalog(e) => catalog(e, &|team| called("team", &team), &|hook| called("webhook", &hook)),
        DomainEvent::Pipeline(PipelineEvent::VersionSaved(v)) => {
            let services = v.graph.services();
            let plugins = v.graph.nodes.iter().filter(|n| matches!(n.action, PipelineAction::RunPlugin { .. })).count();
            let said = if v.message.is_empty() { String::new() } else { format!(" ({})", v.message) };
            format!("pipeline version {} of project {} saved: {services} service(s), {plugins} plugin step(s){said}", v.version, called("project", &id))
        }
        DomainEvent::Pipeline(PipelineEvent::DryRun(d)) => {
            let what = d.version.map_or_else(|| "a draft of the pipeline".to_owned(), |v| format!("pipeline version {v}"));
            let problems = match d.problems {
                0 => "no problem".to_owned(),
                1 => "1 problem".to_owned(),
                n => format!("{n} problems"),
            };
            let fits = d.fits_on.map_or_else(|| ", fits on no node now".to_owned(), |n| format!(", fits on node {}", called("node", &n)));
            format!("dry run of {what} of project {} in environment {}: {problems}{fits}", called("project", &id), d.environment)
        }
        DomainEvent::Secret(e) => {
            let project = called("project", &id);
            match e {
                SecretEvent::Created(s) => format!("secret {} of project {project} set", s.name),
                SecretEvent::Updated(s) => format!("secret {} of project {project} replaced", s.name),
                SecretEvent::Deleted(s) => format!("secret {} of project {project} deleted", s.name),
            }
        }
        DomainEvent::Node(e) => node(&called("node", &id), e),
        DomainEvent::Capacity(e) => {
            let node = called("node", &id);
            match e {
                CapacityEvent::Reserved(r) => {
                    format!(
                        "{} millicores and {} MiB of node {node} reserved for deployment {}",
                        r.cpu_millis,
                        r.memory_mib,
                        called("deployment", &r.deployment_id)
                    )
                }
                CapacityEvent::Released(r) => format!("the room of deployment {} on node {node} given back", called("deployment", &r.deployment_id)),
            }
        }
        DomainEvent::DeploymentName(e) => {
            let environment = id.split_once('.').map_or(id, |(environment, _)| environment);
            match e {
                DeploymentNameEvent::Claimed(c) => {
                    format!("name {} in environment {environment} held by deployment {}", c.name, called("deployment", &c.deployment_id))
                }
                DeploymentNameEvent::Released(c) => format!("name {} in environment {environment} free again", c.name),
            }
        }
        DomainEvent::Deployment(e) => deployment(&called("deployment", &id), e, &|node| called("node", &node)),
        DomainEvent::Preview(PreviewEvent::Requested(r)) => {
            let what = match &r.wish {
                PreviewWish::Deploy { .. } => {
                    format!("deploy {} at commit {} with tag {}", nullops_events::preview::preview_name(r.number), short_sha(&r.head_sha), r.tag)
                }
                PreviewWish::Remove { merged: true } => format!("merged: remove {}", nullops_events::preview::preview_name(r.number)),
                PreviewWish::Remove { merged: false } => format!("remove {}", nullops_events::preview::preview_name(r.number)),
            };
            format!("{} {} #{} of project {} {} by {}: {what}", r.forge.slug(), r.forge.request_noun(), r.number, r.project, r.action, r.sender)
        }
    }
}

/// A commit's first seven hex digits.
fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

fn user(username: &str, e: &UserEvent) -> String {
    match e {
        UserEvent::Registered(r) => format!("user {username} created{}", if r.role == Role::Admin { " as an admin" } else { "" }),
        UserEvent::PasswordChanged(p) if p.reset_by_admin => format!("password of user {username} reset by an admin"),
        UserEvent::PasswordChanged(_) => format!("user {username} changed their password"),
        UserEvent::Disabled(_) => format!("user {username} disabled"),
        UserEvent::Enabled(_) => format!("user {username} enabled"),
    }
}

fn target(t: &AccessTarget) -> String {
    match t {
        AccessTarget::Project(p) => format!("project {p}"),
        AccessTarget::Environment(e) => format!("environment {e}"),
    }
}

fn access(a: Access) -> &'static str {
    match a {
        Access::Full => "FULL",
        Access::ReadOnly => "READ_ONLY",
    }
}

fn catalog(e: &CatalogEvent, team: &dyn Fn(uuid::Uuid) -> String, webhook: &dyn Fn(uuid::Uuid) -> String) -> String {
    match e {
        CatalogEvent::WebhookCreated(w) => {
            let topics: Vec<&str> = w.topics.iter().map(|t| t.cloud_event_type()).collect();
            let scope = match (&w.project, &w.environment) {
                (Some(p), Some(e)) => format!(" of project {p} in environment {e}"),
                (Some(p), None) => format!(" of project {p}"),
                (None, Some(e)) => format!(" in environment {e}"),
                (None, None) => String::new(),
            };
            format!("webhook to {} created for {}{scope}", w.url, topics.join(", "))
        }
        CatalogEvent::WebhookSecretRotated(w) => format!("the signing secret of webhook {} rotated", webhook(w.webhook_id)),
        CatalogEvent::WebhookDeleted(w) => format!("webhook {} deleted", webhook(w.webhook_id)),
        CatalogEvent::RepositoryLinked(l) => {
            let l = &l.link;
            let tag = match l.tag_rule {
                PreviewTagRule::PrNumber => "pr-<number>",
                PreviewTagRule::ShortSha => "<short commit>",
            };
            format!(
                "project {} linked to {} repository {}: its {}s deploy service {} tagged {tag} to environment {}",
                l.project,
                l.forge.slug(),
                l.repository,
                l.forge.request_noun(),
                l.service,
                l.environment
            )
        }
        CatalogEvent::RepositoryUnlinked(u) => format!("project {} unlinked from its repository", u.project),
        CatalogEvent::TeamCreated(t) => format!("team {} created", t.name),
        CatalogEvent::TeamRenamed(t) => format!("team {} renamed to {}", team(t.team_id), t.name),
        CatalogEvent::TeamDeleted(t) => format!("team {} deleted", team(t.team_id)),
        CatalogEvent::TeamMemberAdded(m) => format!("{} added to team {}", m.username, team(m.team_id)),
        CatalogEvent::TeamMemberRemoved(m) => format!("{} removed from team {}", m.username, team(m.team_id)),
        CatalogEvent::AccessGranted(g) => format!("team {} granted {} on {}", team(g.team_id), access(g.access), target(&g.target)),
        CatalogEvent::AccessRevoked(r) => format!("team {}'s access to {} revoked", team(r.team_id), target(&r.target)),
        CatalogEvent::RegistryAdded(r) => format!("registry {} added at {}{}", r.name, r.url, if r.credentials.is_some() { ", with credentials" } else { "" }),
        CatalogEvent::RegistryChanged(c) => {
            let credentials = match (&c.definition.credentials, c.retired_key) {
                (Some(_), Some(_)) => ", credentials replaced",
                (Some(_), None) => ", credentials set",
                (None, Some(_)) => ", credentials removed",
                (None, None) => "",
            };
            format!("registry {} changed: at {}{credentials}", c.definition.name, c.definition.url)
        }
        CatalogEvent::RegistryRemoved(r) => format!("registry {} removed", r.name),
        CatalogEvent::ServiceCreated(s) | CatalogEvent::ServiceUpdated(s) => {
            let verb = if matches!(e, CatalogEvent::ServiceCreated(_)) { "created" } else { "changed" };
            let tag = match &s.tag {
                TagMode::Pinned(tag) => format!("pinned to {tag}"),
                TagMode::Selectable(Some(pattern)) => format!("tags matching {pattern} selectable"),
                TagMode::Selectable(None) => "any tag selectable".to_owned(),
            };
            format!("service {} {verb}: {} from registry {}, {tag}, port {}", s.name, s.image, s.registry, s.port)
        }
        CatalogEvent::ServiceRemoved(r) => format!("service {} removed", r.name),
        CatalogEvent::PluginCreated(p) | CatalogEvent::PluginUpdated(p) => {
            let verb = if matches!(e, CatalogEvent::PluginCreated(_)) { "created" } else { "changed" };
            format!("plugin {} {verb}: {}:{} from registry {}, timeout {} s", p.name, p.repository, p.tag, p.registry, p.timeout_secs)
        }
        CatalogEvent::PluginRemoved(r) => format!("plugin {} removed", r.name),
        CatalogEvent::EnvironmentCreated(env) | CatalogEvent::EnvironmentUpdated(env) => {
            let verb = if matches!(e, CatalogEvent::EnvironmentCreated(_)) { "created" } else { "changed" };
            format!("environment {} {verb}: base domain {}, deployments cleaned up after {} s", env.name, env.base_domain, env.cleanup_after_secs)
        }
        CatalogEvent::EnvironmentRemoved(r) => format!("environment {} removed", r.name),
        CatalogEvent::ProjectCreated(p) | CatalogEvent::ProjectUpdated(p) => {
            let verb = if matches!(e, CatalogEvent::ProjectCreated(_)) { "created" } else { "changed" };
            format!("project {} {verb}: deploys to {}, {} millicores and {} MiB", p.name, p.environments.join(", "), p.cpu_millis, p.memory_mib)
        }
        CatalogEvent::ProjectRemoved(r) => format!("project {} removed", r.name),
    }
}

/// The first 12 characters of a thumbprint: enough to tell certificates apart in a sentence.
fn short(thumbprint: &str) -> &str {
    thumbprint.get(..12).unwrap_or(thumbprint)
}

fn node(node: &str, e: &NodeEvent) -> String {
    match e {
        NodeEvent::Added(n) => format!("node {}:{} added to environment {}", n.host, n.port, n.environment),
        NodeEvent::Moved(m) => format!("node {node} moved to {}:{}", m.host, m.port),
        NodeEvent::TokenRotated(_) => format!("token of node {node} rotated"),
        NodeEvent::TokenRevoked(_) => format!("token of node {node} revoked"),
        NodeEvent::Disabled(_) => format!("node {node} disabled"),
        NodeEvent::Enabled(_) => format!("node {node} enabled"),
        NodeEvent::Removed(_) => format!("node {node} removed"),
        NodeEvent::ThumbprintPinned(t) => format!("certificate {} of node {node} pinned", short(&t.thumbprint)),
        NodeEvent::ThumbprintRejected(t) => {
            format!("node {node} presented another certificate ({}): untrusted until an admin approves it", short(&t.thumbprint))
        }
        NodeEvent::ThumbprintApproved(t) => format!("certificate {} of node {node} approved", short(&t.thumbprint)),
        NodeEvent::Connected(c) => format!("node {node} connected (agent {}, protocol {})", c.agent_version, c.protocol),
        NodeEvent::Disconnected(d) => format!("node {node} disconnected: {}", d.reason),
        NodeEvent::Refused(r) => match r.refusal {
            Refusal::Token => format!("node {node} refused the control plane's token"),
            Refusal::Incompatible { agent_protocol } => format!("node {node} speaks protocol {agent_protocol}, not the control plane's"),
        },
    }
}

fn step_state(s: StepState) -> &'static str {
    match s {
        StepState::Running => "started",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::RolledBack => "rolled back",
    }
}

fn deployment(d: &str, e: &DeploymentEvent, node: &dyn Fn(uuid::Uuid) -> String) -> String {
    match e {
        DeploymentEvent::Requested(r) => {
            let versions: Vec<String> = r.versions.iter().map(|v| format!("{} {}", v.service, v.tag)).collect();
            format!("deployment {} of project {} requested in {} ({})", r.name, r.project, r.environment, versions.join(", "))
        }
        DeploymentEvent::Retried(r) => format!("deployment {d} retried with pipeline version {}", r.pipeline_version),
        DeploymentEvent::Scheduled(s) => format!("deployment {d} placed on node {}", node(s.node_id)),
        DeploymentEvent::RunStarted(_) => format!("deployment {d}: its run started"),
        // A running step that says something new: a starting service's probe answer.
        DeploymentEvent::StepChanged(s) if s.state == StepState::Running && !s.detail.is_empty() => format!("deployment {d}: step {}: {}", s.step, s.detail),
        DeploymentEvent::StepChanged(s) => format!("deployment {d}: step {} {}", s.step, step_state(s.state)),
        DeploymentEvent::HealthChanged(h) if h.healthy => format!("deployment {d}: service {} healthy", h.service),
        DeploymentEvent::HealthChanged(h) => format!("deployment {d}: service {} unhealthy: {}", h.service, h.detail),
        DeploymentEvent::Running(_) => format!("deployment {d} running"),
        DeploymentEvent::EndpointsChanged(_) => format!("deployment {d}: its services published anew"),
        DeploymentEvent::Failed(f) => match &f.step {
            Some(step) => format!("deployment {d} failed at step {step}: {}", f.reason),
            None => format!("deployment {d} failed: {}", f.reason),
        },
        DeploymentEvent::DeletionRequested(r) => match r.reason {
            DeletionReason::User => format!("deletion of deployment {d} requested"),
            DeletionReason::Expired => format!("deployment {d} expired: deleting it"),
        },
        DeploymentEvent::Removed(_) => format!("deployment {d} removed from its node"),
        DeploymentEvent::Extended(x) => format!("deployment {d} extended until {}", when(x.expires_at)),
        DeploymentEvent::Rejected(r) => format!("deployment {d} refused: {}", r.reason),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of microseconds since the epoch.
fn when(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(|| micros.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullops_events::catalog::{Sealed, SecretSet};

    #[test]
    fn a_secret_is_named_with_its_project_and_never_shown() {
        let project_id = uuid::Uuid::from_u128(7);
        let stream = StreamId::new("secrets", &project_id.to_string());
        let set = DomainEvent::Secret(SecretEvent::Created(SecretSet {
            name: "DB_PASSWORD".into(),
            value: Sealed { key_id: uuid::Uuid::nil(), nonce: vec![1; 12], ciphertext: b"hunter22-hunter22-hunter".to_vec() },
            retired_key: None,
        }));
        assert_eq!(wanted(&stream, &set), [format!("project:{project_id}")]);
        let text = summary(&stream, &set, &|k| (k == format!("project:{project_id}")).then(|| "shop".to_owned()));
        assert_eq!(text, "secret DB_PASSWORD of project shop set");
        assert!(!text.contains("hunter"));
    }

    #[test]
    fn times_are_written_as_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_795_000_000_000_000), "2026-11-18 11:06:40 UTC");
    }
}
