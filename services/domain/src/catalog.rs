//! The catalog aggregate (stream `catalog-main`): teams and their grants, registries, services,
//! plugins, environments and projects. Only admins (or the platform itself) change it.
//!
//! One aggregate holds them all so that every reference is checked against one consistent state:
//! a service names an existing registry, a project existing environments, a grant an existing
//! target, and nothing in use can be removed from under its users.

use std::collections::{BTreeMap, BTreeSet};

use nullops_events::catalog::*;
use nullops_events::DomainEvent;
use uuid::Uuid;

use crate::pipeline::{references, Reference};
use crate::tags::{check_tag, TagPattern};
use crate::{access, DnsLabel, DomainError, DomainName, Issuer, Principal, Username};

/// The key of the one catalog stream.
pub const CATALOG_KEY: &str = "main";

pub struct CatalogCommand {
    pub by: Issuer,
    pub action: CatalogAction,
}

/// How a registry change treats its stored credentials.
pub enum CredentialsChange {
    Keep,
    Set(Sealed),
    Clear,
}

pub enum CatalogAction {
    CreateTeam {
        team_id: Uuid,
        name: String,
    },
    RenameTeam {
        name: String,
        new_name: String,
    },
    DeleteTeam {
        name: String,
    },
    /// The command layer has checked that the user exists.
    AddTeamMember {
        team: String,
        username: Username,
    },
    RemoveTeamMember {
        team: String,
        username: Username,
    },
    Grant {
        team: String,
        target: AccessTarget,
        access: Access,
    },
    Revoke {
        team: String,
        target: AccessTarget,
    },
    AddRegistry(RegistryDefinition),
    ChangeRegistry {
        name: String,
        url: String,
        credentials: CredentialsChange,
    },
    RemoveRegistry {
        name: String,
    },
    CreateService(ServiceDefinition),
    UpdateService(ServiceDefinition),
    /// `pipelines`: the projects whose latest pipeline starts it, as the caller read them
    /// (pipelines are aggregates of their own).
    RemoveService {
        name: String,
        pipelines: Vec<String>,
    },
    CreatePlugin(PluginDefinition),
    UpdatePlugin(PluginDefinition),
    /// `pipelines`: the projects whose latest pipeline runs it, as the caller read them.
    RemovePlugin {
        name: String,
        pipelines: Vec<String>,
    },
    CreateEnvironment(EnvironmentDefinition),
    UpdateEnvironment(EnvironmentDefinition),
    RemoveEnvironment {
        name: String,
    },
    /// `project_id` is fresh; an update keeps the existing one.
    CreateProject(ProjectDefinition),
    /// `services`: how many services the project's latest pipeline runs, as the caller read it
    /// (they share the project's limits).
    UpdateProject {
        project: ProjectDefinition,
        services: usize,
    },
    RemoveProject {
        name: String,
    },
    /// `webhook_id` is fresh and `secret` sealed by the command layer.
    CreateWebhook(WebhookDefinition),
    RotateWebhookSecret {
        webhook_id: Uuid,
        secret: Sealed,
    },
    DeleteWebhook {
        webhook_id: Uuid,
    },
    /// Links (or links again) a project's repository; `credentials` sealed by the command
    /// layer for [`repository_credentials_purpose`].
    LinkRepository(RepositoryLink),
    UnlinkRepository {
        project: String,
    },
}

/// The most webhooks a catalog holds.
pub const MAX_WEBHOOKS: usize = 100;

/// Whether `raw` can be a webhook's endpoint or a forge's API (`field`): an http(s) URL with a
/// host, no credentials in it.
fn check_http_url(field: &'static str, raw: &str, example: &str) -> Result<(), DomainError> {
    let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://")).unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(['@', ' ']) || raw.len() > 2048 || raw.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, format!("{raw:?} is not an http:// or https:// URL such as {example}")));
    }
    Ok(())
}

/// Tags a preview tag rule gives, as examples: a service's pattern must admit every one, or
/// some (usually every) pull request's preview could never deploy.
fn preview_examples(rule: PreviewTagRule) -> [String; 5] {
    match rule {
        PreviewTagRule::PrNumber => [1u64, 7, 42, 123, 4567].map(|n| rule.tag(n, "")),
        PreviewTagRule::ShortSha => ["1a2b3c4", "deadbee", "0123456", "abcdef0", "9f8e7d6"].map(|sha| rule.tag(0, sha)),
    }
}

/// A service whose tag pattern refuses a tag a repository link's previews would ask for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "service {service}'s tag pattern {pattern} does not admit {tag}, a tag the previews' rule gives: previews could never deploy it; widen the pattern (e.g. to {wider}) or choose another rule"
)]
struct PreviewsCannotDeploy {
    service: String,
    pattern: String,
    tag: String,
    /// A pattern that admits every tag of the rule.
    wider: &'static str,
}

/// Whether the previews of a link with `rule` can deploy `service`: its tag pattern (if any)
/// admits the tags the rule gives; else why not, naming the pattern and a tag it refuses.
fn previews_can_deploy(rule: PreviewTagRule, service: &ServiceDefinition) -> Result<(), PreviewsCannotDeploy> {
    let TagMode::Selectable(Some(pattern)) = &service.tag else { return Ok(()) };
    let Ok(glob) = TagPattern::parse(pattern) else { return Ok(()) };
    match preview_examples(rule).into_iter().find(|tag| !glob.matches(tag)) {
        None => Ok(()),
        Some(tag) => Err(PreviewsCannotDeploy {
            service: service.name.clone(),
            pattern: pattern.clone(),
            tag,
            wider: match rule {
                PreviewTagRule::PrNumber => "pr-*",
                PreviewTagRule::ShortSha => "*",
            },
        }),
    }
}

/// Whether `raw` names a repository on `forge`: `owner/name` on GitHub, `group[/subgroup…]/name`
/// on GitLab, each part letters, digits, `.`, `_` or `-`.
fn check_forge_repository(forge: Forge, raw: &str) -> Result<(), DomainError> {
    let parts: Vec<&str> = raw.split('/').collect();
    let well_formed = parts.iter().all(|p| !p.is_empty() && p.len() <= 100 && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    let counted = match forge {
        Forge::GitHub => parts.len() == 2,
        Forge::GitLab => (2..=20).contains(&parts.len()),
    };
    if !well_formed || !counted {
        let example = match forge {
            Forge::GitHub => "acme/shop",
            Forge::GitLab => "acme/web/shop",
        };
        return Err(DomainError::invalid("repository", format!("{raw:?} is not a {} repository path such as {example}", forge.slug())));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamState {
    pub name: String,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogState {
    pub teams: BTreeMap<Uuid, TeamState>,
    pub grants: BTreeMap<(Uuid, AccessTarget), Access>,
    pub registries: BTreeMap<String, RegistryDefinition>,
    pub services: BTreeMap<String, ServiceDefinition>,
    pub plugins: BTreeMap<String, PluginDefinition>,
    pub environments: BTreeMap<String, EnvironmentDefinition>,
    pub projects: BTreeMap<String, ProjectDefinition>,
    pub webhooks: BTreeMap<Uuid, WebhookDefinition>,
    /// Repository links by project name.
    pub links: BTreeMap<String, RepositoryLink>,
}

impl CatalogState {
    pub fn team_id(&self, name: &str) -> Result<Uuid, DomainError> {
        self.teams.iter().find(|(_, t)| t.name == name).map(|(id, _)| *id).ok_or_else(|| DomainError::NotFound(format!("no team named {name}")))
    }

    pub fn project(&self, name: &str) -> Result<&ProjectDefinition, DomainError> {
        self.projects.get(name).ok_or_else(|| DomainError::NotFound(format!("no project named {name}")))
    }

    /// The caller's effective access to any of `targets` (see [`crate::access`]).
    pub fn access(&self, by: &Principal, targets: &[AccessTarget]) -> Option<Access> {
        let user = by.username.as_str();
        let held = self
            .grants
            .iter()
            .filter(|((team, target), _)| targets.contains(target) && self.teams.get(team).is_some_and(|t| t.members.contains(user)))
            .map(|(_, a)| *a);
        access::effective(by.is_admin(), held)
    }

    /// The caller's access to a project's own resources (pipeline, secrets).
    pub fn project_access(&self, by: &Principal, project: &str) -> Option<Access> {
        self.access(by, &[AccessTarget::Project(project.to_owned())])
    }
}

pub struct Catalog;

/// The associated data that binds sealed registry credentials to their registry.
pub fn credentials_purpose(registry: &str) -> String {
    format!("registry:{registry}")
}

/// What a repository link's credentials are sealed for.
pub fn repository_credentials_purpose(project_id: Uuid) -> String {
    format!("repository:{project_id}")
}

/// What a webhook's signing secret is sealed for.
pub fn webhook_secret_purpose(webhook_id: Uuid) -> String {
    format!("webhook:{webhook_id}")
}

fn exists<T>(map: &BTreeMap<String, T>, kind: &str, name: &str) -> Result<(), DomainError> {
    if map.contains_key(name) {
        Ok(())
    } else {
        Err(DomainError::NotFound(format!("no {kind} named {name}")))
    }
}

fn absent<T>(map: &BTreeMap<String, T>, kind: &str, name: &str) -> Result<(), DomainError> {
    if map.contains_key(name) {
        Err(DomainError::AlreadyExists(format!("a {kind} named {name} already exists")))
    } else {
        Ok(())
    }
}

fn check_range(field: &'static str, value: u64, range: std::ops::RangeInclusive<u64>, unit: &str) -> Result<(), DomainError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(DomainError::invalid(field, format!("use {} to {} {unit}", range.start(), range.end())))
    }
}

fn check_url(raw: &str) -> Result<(), DomainError> {
    if raw == nullops_events::catalog::LOCAL_ENGINE_URL {
        return Ok(());
    }
    let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://"));
    let host = rest.map(|r| r.trim_end_matches('/')).unwrap_or_default();
    if host.is_empty() || host.contains(['?', '#', ' ', '@']) || raw.len() > 2048 {
        return Err(DomainError::invalid(
            "url",
            format!("{raw:?} is not a registry URL such as https://registry.example.com (or docker-engine://local for the images in the local Docker engine)"),
        ));
    }
    Ok(())
}

/// A repository path as registries accept it: lower-case components joined by `/`.
fn check_repository(field: &'static str, raw: &str) -> Result<(), DomainError> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
    };
    if raw.len() > 255 || !raw.split('/').all(component_ok) {
        return Err(DomainError::invalid(field, format!("{raw:?} is not an image repository such as shop/api")));
    }
    Ok(())
}

fn check_env(env: &[EnvVar]) -> Result<(), DomainError> {
    let mut seen = BTreeSet::new();
    for var in env {
        let ok = !var.name.is_empty()
            && var.name.len() <= 128
            && var.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !var.name.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(DomainError::invalid("env", format!("{:?} is not an environment variable name", var.name)));
        }
        if !seen.insert(&var.name) {
            return Err(DomainError::invalid("env", format!("{} is set twice", var.name)));
        }
        for reference in references(&var.value).map_err(|m| DomainError::invalid("env", format!("{}: {m}", var.name)))? {
            if let Reference::NodeOutput { .. } = reference {
                return Err(DomainError::invalid("env", format!("{}: a service's variables may reference secrets only", var.name)));
            }
        }
    }
    Ok(())
}

fn check_service(s: &ServiceDefinition, state: &CatalogState) -> Result<(), DomainError> {
    DnsLabel::parse("name", &s.name)?;
    exists(&state.registries, "registry", &s.registry)?;
    check_repository("image", &s.image)?;
    match &s.tag {
        TagMode::Pinned(tag) => check_tag("tag", tag)?,
        TagMode::Selectable(Some(pattern)) => {
            TagPattern::parse(pattern)?;
        }
        TagMode::Selectable(None) => {}
    }
    if s.port == 0 {
        return Err(DomainError::invalid("port", "use 1 to 65535"));
    }
    if let Some(h) = &s.health_check {
        match &h.probe {
            Probe::Http(path) if !path.starts_with('/') || path.contains(char::is_whitespace) => {
                return Err(DomainError::invalid("healthCheck.httpPath", "use an absolute path such as /healthz"))
            }
            Probe::Command(argv) if argv.is_empty() || argv[0].is_empty() => {
                return Err(DomainError::invalid("healthCheck.command", "give the command and its arguments"))
            }
            _ => {}
        }
        check_range("healthCheck.intervalSeconds", h.interval_secs.into(), 1..=3600, "seconds")?;
        check_range("healthCheck.timeoutSeconds", h.timeout_secs.into(), 1..=600, "seconds")?;
        check_range("healthCheck.retries", h.retries.into(), 0..=100, "retries")?;
    }
    check_env(&s.env)
}

fn check_plugin(p: &PluginDefinition, state: &CatalogState) -> Result<(), DomainError> {
    DnsLabel::parse("name", &p.name)?;
    exists(&state.registries, "registry", &p.registry)?;
    check_repository("repository", &p.repository)?;
    check_tag("tag", &p.tag)?;
    if p.description.chars().count() > 2000 {
        return Err(DomainError::invalid("description", "use at most 2000 characters"));
    }
    crate::pipeline::compile_schema(&p.parameters_schema).map_err(|m| DomainError::invalid("parametersSchema", m.to_string()))?;
    check_range("cpuMillis", p.cpu_millis.into(), 1..=256_000, "millicores")?;
    check_range("memoryMib", p.memory_mib.into(), 4..=1_048_576, "MiB")?;
    check_range("timeoutSeconds", p.timeout_secs.into(), 1..=86_400, "seconds")
}

/// From seconds (a CI job's throwaway deployment) to a year.
const CLEANUP_RANGE: std::ops::RangeInclusive<u64> = 5..=365 * 86_400;

fn check_environment(e: &EnvironmentDefinition) -> Result<(), DomainError> {
    DnsLabel::parse("name", &e.name)?;
    DomainName::parse("baseDomain", &e.base_domain)?;
    check_range("cleanupAfterSeconds", e.cleanup_after_secs, CLEANUP_RANGE, "seconds")
}

/// A project's definition, its limits shared by `services` services.
fn check_project(p: &ProjectDefinition, state: &CatalogState, services: usize) -> Result<(), DomainError> {
    DnsLabel::parse("name", &p.name)?;
    if p.environments.is_empty() {
        return Err(DomainError::invalid("environments", "name at least one environment the project may deploy to"));
    }
    for env in &p.environments {
        exists(&state.environments, "environment", env)?;
    }
    check_range("cpuMillis", p.cpu_millis.into(), 1..=1_024_000, "millicores")?;
    check_range("memoryMib", p.memory_mib.into(), 4..=4_194_304, "MiB")?;
    if let Some(secs) = p.cleanup_after_secs {
        check_range("cleanupAfterSeconds", secs, CLEANUP_RANGE, "seconds")?;
    }
    if let Some((field, why)) = crate::plan::split_problem(p.cpu_millis, p.memory_mib, services) {
        return Err(DomainError::invalid(field, why));
    }
    Ok(())
}

fn check_target(target: &AccessTarget, state: &CatalogState) -> Result<(), DomainError> {
    match target {
        AccessTarget::Project(p) => exists(&state.projects, "project", p),
        AccessTarget::Environment(e) => exists(&state.environments, "environment", e),
    }
}

/// What keeps a service or plugin from being deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// The latest pipeline version of this project starts or runs it.
    Pipeline { project: String },
    /// This project's repository link deploys it as its previews.
    Link { project: String },
}

impl Use {
    pub fn project(&self) -> &str {
        match self {
            Use::Pipeline { project } | Use::Link { project } => project,
        }
    }
}

impl std::fmt::Display for Use {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Use::Pipeline { project } => write!(f, "the latest pipeline of project {project}"),
            Use::Link { project } => write!(f, "the repository link of project {project}"),
        }
    }
}

impl CatalogState {
    /// Every use of service (or, with `plugin`, plugin) `name`: the latest pipelines of
    /// `pipelines` (as the caller read them) and this catalog's repository links, in order.
    pub fn uses(&self, name: &str, plugin: bool, pipelines: &[String]) -> Vec<Use> {
        let links = self.links.values().filter(|l| !plugin && l.service == name).map(|l| Use::Link { project: l.project.clone() });
        let mut uses: Vec<Use> = pipelines.iter().map(|p| Use::Pipeline { project: p.clone() }).chain(links).collect();
        uses.sort();
        uses.dedup();
        uses
    }
}

/// Refuses to remove `name` while `users` (names of things that use it) is not empty.
fn unused(kind: &str, name: &str, users: Vec<String>) -> Result<(), DomainError> {
    if users.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Conflict(format!("{kind} {name} is in use by {}; change or remove those first", users.join(", "))))
    }
}

impl crate::Decider for Catalog {
    type Command = CatalogCommand;
    type Event = CatalogEvent;
    type State = CatalogState;
    const KIND: &'static str = "catalog";

    fn decide(command: &CatalogCommand, state: &CatalogState) -> Result<Vec<CatalogEvent>, DomainError> {
        use CatalogAction::*;
        if !command.by.is_admin_or_system() {
            return Err(DomainError::Forbidden("only an admin may change teams, registries, services, plugins, environments or projects".into()));
        }
        let event = match &command.action {
            CreateTeam { team_id, name } => {
                DnsLabel::parse("name", name)?;
                if state.team_id(name).is_ok() {
                    return Err(DomainError::AlreadyExists(format!("a team named {name} already exists")));
                }
                CatalogEvent::TeamCreated(TeamCreated { team_id: *team_id, name: name.clone() })
            }
            RenameTeam { name, new_name } => {
                let team_id = state.team_id(name)?;
                DnsLabel::parse("newName", new_name)?;
                if name == new_name {
                    return Ok(vec![]);
                }
                if state.team_id(new_name).is_ok() {
                    return Err(DomainError::AlreadyExists(format!("a team named {new_name} already exists")));
                }
                CatalogEvent::TeamRenamed(TeamRenamed { team_id, name: new_name.clone() })
            }
            DeleteTeam { name } => CatalogEvent::TeamDeleted(TeamDeleted { team_id: state.team_id(name)? }),
            AddTeamMember { team, username } => {
                let team_id = state.team_id(team)?;
                if state.teams[&team_id].members.contains(username.as_str()) {
                    return Ok(vec![]);
                }
                CatalogEvent::TeamMemberAdded(TeamMember { team_id, username: username.to_string() })
            }
            RemoveTeamMember { team, username } => {
                let team_id = state.team_id(team)?;
                if !state.teams[&team_id].members.contains(username.as_str()) {
                    return Ok(vec![]);
                }
                CatalogEvent::TeamMemberRemoved(TeamMember { team_id, username: username.to_string() })
            }
            Grant { team, target, access } => {
                let team_id = state.team_id(team)?;
                check_target(target, state)?;
                if state.grants.get(&(team_id, target.clone())) == Some(access) {
                    return Ok(vec![]);
                }
                CatalogEvent::AccessGranted(AccessGranted { team_id, target: target.clone(), access: *access })
            }
            Revoke { team, target } => {
                let team_id = state.team_id(team)?;
                if !state.grants.contains_key(&(team_id, target.clone())) {
                    return Ok(vec![]);
                }
                CatalogEvent::AccessRevoked(AccessRevoked { team_id, target: target.clone() })
            }
            AddRegistry(r) => {
                DnsLabel::parse("name", &r.name)?;
                check_url(&r.url)?;
                absent(&state.registries, "registry", &r.name)?;
                CatalogEvent::RegistryAdded(r.clone())
            }
            ChangeRegistry { name, url, credentials } => {
                let current = state.registries.get(name).ok_or_else(|| DomainError::NotFound(format!("no registry named {name}")))?;
                check_url(url)?;
                let old_key = current.credentials.as_ref().map(|c| c.key_id);
                let (credentials, retired_key) = match credentials {
                    CredentialsChange::Keep => (current.credentials.clone(), None),
                    CredentialsChange::Set(sealed) => (Some(sealed.clone()), old_key),
                    CredentialsChange::Clear => (None, old_key),
                };
                let definition = RegistryDefinition { name: name.clone(), url: url.clone(), credentials };
                if definition == *current {
                    return Ok(vec![]);
                }
                CatalogEvent::RegistryChanged(RegistryChanged { definition, retired_key })
            }
            RemoveRegistry { name } => {
                let current = state.registries.get(name).ok_or_else(|| DomainError::NotFound(format!("no registry named {name}")))?;
                let users = state
                    .services
                    .values()
                    .filter(|s| s.registry == *name)
                    .map(|s| format!("service {}", s.name))
                    .chain(state.plugins.values().filter(|p| p.registry == *name).map(|p| format!("plugin {}", p.name)))
                    .collect();
                unused("registry", name, users)?;
                CatalogEvent::RegistryRemoved(RegistryRemoved { name: name.clone(), retired_key: current.credentials.as_ref().map(|c| c.key_id) })
            }
            CreateWebhook(w) => {
                check_http_url("url", &w.url, "https://ci.example.com/hooks/nullops")?;
                if w.topics.is_empty() {
                    return Err(DomainError::invalid("events", "choose at least one event to be told of"));
                }
                if let Some(p) = &w.project {
                    exists(&state.projects, "project", p)?;
                }
                if let Some(e) = &w.environment {
                    exists(&state.environments, "environment", e)?;
                }
                if state.webhooks.len() >= MAX_WEBHOOKS {
                    return Err(DomainError::Conflict(format!("there are {MAX_WEBHOOKS} webhooks already: delete one first")));
                }
                let mut w = w.clone();
                w.topics.sort();
                w.topics.dedup();
                CatalogEvent::WebhookCreated(w)
            }
            RotateWebhookSecret { webhook_id, secret } => {
                let current = state.webhooks.get(webhook_id).ok_or_else(|| DomainError::NotFound(format!("no webhook {webhook_id}")))?;
                CatalogEvent::WebhookSecretRotated(WebhookSecretRotated { webhook_id: *webhook_id, secret: secret.clone(), retired_key: current.secret.key_id })
            }
            DeleteWebhook { webhook_id } => {
                let current = state.webhooks.get(webhook_id).ok_or_else(|| DomainError::NotFound(format!("no webhook {webhook_id}")))?;
                CatalogEvent::WebhookDeleted(WebhookDeleted { webhook_id: *webhook_id, retired_key: current.secret.key_id })
            }
            LinkRepository(link) => {
                let project = state.project(&link.project)?;
                check_forge_repository(link.forge, &link.repository)?;
                check_http_url("apiUrl", &link.api_url, link.forge.public_api())?;
                if !project.environments.contains(&link.environment) {
                    return Err(DomainError::invalid("environment", format!("project {} does not deploy to {}", link.project, link.environment)));
                }
                let service = state.services.get(&link.service).ok_or_else(|| DomainError::invalid("service", format!("no service named {}", link.service)))?;
                if !matches!(service.tag, TagMode::Selectable(_)) {
                    return Err(DomainError::invalid(
                        "service",
                        format!("service {} runs a pinned tag: a preview needs a service whose tag is chosen per deployment", link.service),
                    ));
                }
                previews_can_deploy(link.tag_rule, service).map_err(|why| DomainError::invalid("tagRule", why.to_string()))?;
                let current = state.links.get(&link.project);
                CatalogEvent::RepositoryLinked(RepositoryLinked { link: link.clone(), retired_key: current.map(|c| c.credentials.key_id) })
            }
            UnlinkRepository { project } => {
                let current = state.links.get(project).ok_or_else(|| DomainError::NotFound(format!("project {project} has no linked repository")))?;
                CatalogEvent::RepositoryUnlinked(RepositoryUnlinked { project: project.clone(), retired_key: current.credentials.key_id })
            }
            CreateService(s) => {
                absent(&state.services, "service", &s.name)?;
                check_service(s, state)?;
                CatalogEvent::ServiceCreated(s.clone())
            }
            UpdateService(s) => {
                exists(&state.services, "service", &s.name)?;
                check_service(s, state)?;
                // A linked repository's previews must still be able to deploy it.
                for link in state.links.values().filter(|l| l.service == s.name) {
                    previews_can_deploy(link.tag_rule, s)
                        .map_err(|why| DomainError::invalid("tagPattern", format!("{why} (the repository link of project {} uses it)", link.project)))?;
                }
                if state.services.get(&s.name) == Some(s) {
                    return Ok(vec![]);
                }
                CatalogEvent::ServiceUpdated(s.clone())
            }
            RemoveService { name, pipelines } => {
                exists(&state.services, "service", name)?;
                unused("service", name, state.uses(name, false, pipelines).iter().map(Use::to_string).collect())?;
                CatalogEvent::ServiceRemoved(Removed { name: name.clone() })
            }
            CreatePlugin(p) => {
                absent(&state.plugins, "plugin", &p.name)?;
                check_plugin(p, state)?;
                CatalogEvent::PluginCreated(p.clone())
            }
            UpdatePlugin(p) => {
                exists(&state.plugins, "plugin", &p.name)?;
                check_plugin(p, state)?;
                if state.plugins.get(&p.name) == Some(p) {
                    return Ok(vec![]);
                }
                CatalogEvent::PluginUpdated(p.clone())
            }
            RemovePlugin { name, pipelines } => {
                exists(&state.plugins, "plugin", name)?;
                unused("plugin", name, state.uses(name, true, pipelines).iter().map(Use::to_string).collect())?;
                CatalogEvent::PluginRemoved(Removed { name: name.clone() })
            }
            CreateEnvironment(e) => {
                absent(&state.environments, "environment", &e.name)?;
                check_environment(e)?;
                CatalogEvent::EnvironmentCreated(e.clone())
            }
            UpdateEnvironment(e) => {
                exists(&state.environments, "environment", &e.name)?;
                check_environment(e)?;
                if state.environments.get(&e.name) == Some(e) {
                    return Ok(vec![]);
                }
                CatalogEvent::EnvironmentUpdated(e.clone())
            }
            RemoveEnvironment { name } => {
                exists(&state.environments, "environment", name)?;
                let users = state
                    .projects
                    .values()
                    .filter(|p| p.environments.contains(name))
                    .map(|p| format!("project {}", p.name))
                    .chain(state.webhooks.values().filter(|w| w.environment.as_ref() == Some(name)).map(|w| format!("webhook {}", w.url)))
                    .chain(state.links.values().filter(|l| l.environment == *name).map(|l| format!("the repository link of project {}", l.project)))
                    .collect();
                unused("environment", name, users)?;
                CatalogEvent::EnvironmentRemoved(Removed { name: name.clone() })
            }
            CreateProject(p) => {
                absent(&state.projects, "project", &p.name)?;
                // No pipeline yet: it will run at least one service.
                check_project(p, state, 1)?;
                CatalogEvent::ProjectCreated(p.clone())
            }
            UpdateProject { project: p, services } => {
                let current = state.project(&p.name)?;
                check_project(p, state, *services)?;
                let updated = ProjectDefinition { project_id: current.project_id, ..p.clone() };
                if updated == *current {
                    return Ok(vec![]);
                }
                CatalogEvent::ProjectUpdated(updated)
            }
            RemoveProject { name } => {
                state.project(name)?;
                let users = state
                    .webhooks
                    .values()
                    .filter(|w| w.project.as_ref() == Some(name))
                    .map(|w| format!("webhook {}", w.url))
                    .chain(state.links.get(name).map(|l| format!("its link to repository {}", l.repository)))
                    .collect();
                unused("project", name, users)?;
                CatalogEvent::ProjectRemoved(Removed { name: name.clone() })
            }
        };
        Ok(vec![event])
    }

    fn evolve(mut state: CatalogState, event: &CatalogEvent) -> CatalogState {
        use CatalogEvent::*;
        match event {
            TeamCreated(e) => {
                state.teams.insert(e.team_id, TeamState { name: e.name.clone(), members: BTreeSet::new() });
            }
            TeamRenamed(e) => {
                if let Some(t) = state.teams.get_mut(&e.team_id) {
                    t.name = e.name.clone();
                }
            }
            TeamDeleted(e) => {
                state.teams.remove(&e.team_id);
                state.grants.retain(|(team, _), _| *team != e.team_id);
            }
            TeamMemberAdded(e) => {
                if let Some(t) = state.teams.get_mut(&e.team_id) {
                    t.members.insert(e.username.clone());
                }
            }
            TeamMemberRemoved(e) => {
                if let Some(t) = state.teams.get_mut(&e.team_id) {
                    t.members.remove(&e.username);
                }
            }
            AccessGranted(e) => {
                state.grants.insert((e.team_id, e.target.clone()), e.access);
            }
            AccessRevoked(e) => {
                state.grants.remove(&(e.team_id, e.target.clone()));
            }
            RegistryAdded(r) => {
                state.registries.insert(r.name.clone(), r.clone());
            }
            RegistryChanged(e) => {
                state.registries.insert(e.definition.name.clone(), e.definition.clone());
            }
            RegistryRemoved(e) => {
                state.registries.remove(&e.name);
            }
            ServiceCreated(s) | ServiceUpdated(s) => {
                state.services.insert(s.name.clone(), s.clone());
            }
            ServiceRemoved(e) => {
                state.services.remove(&e.name);
            }
            PluginCreated(p) | PluginUpdated(p) => {
                state.plugins.insert(p.name.clone(), p.clone());
            }
            PluginRemoved(e) => {
                state.plugins.remove(&e.name);
            }
            EnvironmentCreated(e) | EnvironmentUpdated(e) => {
                state.environments.insert(e.name.clone(), e.clone());
            }
            EnvironmentRemoved(e) => {
                state.environments.remove(&e.name);
                state.grants.retain(|(_, target), _| *target != AccessTarget::Environment(e.name.clone()));
            }
            ProjectCreated(p) | ProjectUpdated(p) => {
                state.projects.insert(p.name.clone(), p.clone());
            }
            ProjectRemoved(e) => {
                state.projects.remove(&e.name);
                state.grants.retain(|(_, target), _| *target != AccessTarget::Project(e.name.clone()));
            }
            WebhookCreated(w) => {
                state.webhooks.insert(w.webhook_id, w.clone());
            }
            WebhookSecretRotated(e) => {
                if let Some(w) = state.webhooks.get_mut(&e.webhook_id) {
                    w.secret = e.secret.clone();
                }
            }
            WebhookDeleted(e) => {
                state.webhooks.remove(&e.webhook_id);
            }
            RepositoryLinked(e) => {
                state.links.insert(e.link.project.clone(), e.link.clone());
            }
            RepositoryUnlinked(e) => {
                state.links.remove(&e.project);
            }
        }
        state
    }

    fn select(event: DomainEvent) -> Option<CatalogEvent> {
        match event {
            DomainEvent::Catalog(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod webhook_tests {
    use super::*;
    use crate::{fold, Decider};

    fn admin(action: CatalogAction) -> CatalogCommand {
        CatalogCommand { by: Issuer::System, action }
    }
    fn sealed(key: u128) -> Sealed {
        Sealed { key_id: Uuid::from_u128(key), nonce: vec![0; 12], ciphertext: vec![1; 48] }
    }
    fn hook(url: &str, topics: Vec<WebhookTopic>) -> WebhookDefinition {
        WebhookDefinition { webhook_id: Uuid::from_u128(9), url: url.into(), topics, project: None, environment: None, secret: sealed(1) }
    }

    #[test]
    fn a_webhook_is_an_http_url_with_events_its_secret_rotates_and_its_keys_are_retired() {
        let given = Catalog::decide(
            &admin(CatalogAction::CreateWebhook(hook("http://127.0.0.1:9000/in", vec![WebhookTopic::NodeOnline, WebhookTopic::NodeOnline]))),
            &CatalogState::default(),
        )
        .unwrap();
        let state = fold::<Catalog>(&given);
        assert_eq!(state.webhooks[&Uuid::from_u128(9)].topics, [WebhookTopic::NodeOnline], "topics once each");
        for bad in ["ftp://x", "http://", "https://user:pw@host/", "http://a b"] {
            let refused = Catalog::decide(&admin(CatalogAction::CreateWebhook(hook(bad, vec![WebhookTopic::NodeOnline]))), &state);
            assert!(matches!(refused, Err(DomainError::InvalidInput { field: "url", .. })), "{bad}: {refused:?}");
        }
        assert!(matches!(
            Catalog::decide(&admin(CatalogAction::CreateWebhook(hook("http://x/", vec![]))), &state),
            Err(DomainError::InvalidInput { field: "events", .. })
        ));
        let rotated = Catalog::decide(&admin(CatalogAction::RotateWebhookSecret { webhook_id: Uuid::from_u128(9), secret: sealed(2) }), &state).unwrap();
        assert_eq!(
            rotated,
            [CatalogEvent::WebhookSecretRotated(WebhookSecretRotated { webhook_id: Uuid::from_u128(9), secret: sealed(2), retired_key: Uuid::from_u128(1) })]
        );
        let state = fold::<Catalog>(&[given, rotated].concat());
        let deleted = Catalog::decide(&admin(CatalogAction::DeleteWebhook { webhook_id: Uuid::from_u128(9) }), &state).unwrap();
        assert_eq!(deleted, [CatalogEvent::WebhookDeleted(WebhookDeleted { webhook_id: Uuid::from_u128(9), retired_key: Uuid::from_u128(2) })]);
        let user = CatalogCommand {
            by: Issuer::User(Principal { username: Username::parse("bob").unwrap(), role: nullops_events::identity::Role::User }),
            action: CatalogAction::DeleteWebhook { webhook_id: Uuid::from_u128(9) },
        };
        assert!(matches!(Catalog::decide(&user, &state), Err(DomainError::Forbidden(_))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fold, Decider};
    use nullops_events::identity::Role;

    fn admin() -> Issuer {
        Issuer::User(Principal { username: Username::parse("root").unwrap(), role: Role::Admin })
    }
    fn user(name: &str) -> Principal {
        Principal { username: Username::parse(name).unwrap(), role: Role::User }
    }
    fn when(given: &[CatalogEvent], action: CatalogAction) -> Result<Vec<CatalogEvent>, DomainError> {
        Catalog::decide(&CatalogCommand { by: admin(), action }, &fold::<Catalog>(given))
    }
    fn team(id: u128, name: &str) -> CatalogEvent {
        CatalogEvent::TeamCreated(TeamCreated { team_id: Uuid::from_u128(id), name: name.into() })
    }
    fn member(id: u128, name: &str) -> CatalogEvent {
        CatalogEvent::TeamMemberAdded(TeamMember { team_id: Uuid::from_u128(id), username: name.into() })
    }
    fn grant(id: u128, target: AccessTarget, access: Access) -> CatalogEvent {
        CatalogEvent::AccessGranted(AccessGranted { team_id: Uuid::from_u128(id), target, access })
    }
    fn environment(name: &str) -> EnvironmentDefinition {
        EnvironmentDefinition { name: name.into(), base_domain: "qa.example.com".into(), cleanup_after_secs: 86_400 }
    }
    fn project(name: &str, envs: &[&str]) -> ProjectDefinition {
        ProjectDefinition {
            project_id: Uuid::from_u128(9),
            name: name.into(),
            environments: envs.iter().map(|e| e.to_string()).collect(),
            cpu_millis: 2000,
            memory_mib: 2048,
            cleanup_after_secs: None,
        }
    }
    fn registry(name: &str) -> RegistryDefinition {
        RegistryDefinition { name: name.into(), url: "http://127.0.0.1:5050".into(), credentials: None }
    }
    fn service(name: &str, registry: &str) -> ServiceDefinition {
        ServiceDefinition {
            name: name.into(),
            registry: registry.into(),
            image: "shop/api".into(),
            tag: TagMode::Selectable(Some("v*".into())),
            port: 8080,
            health_check: None,
            env: vec![],
        }
    }
    fn sealed(key: u128) -> Sealed {
        Sealed { key_id: Uuid::from_u128(key), nonce: vec![0; 12], ciphertext: vec![1, 2, 3] }
    }
    fn link(key: u128) -> RepositoryLink {
        RepositoryLink {
            project: "shop".into(),
            forge: Forge::GitHub,
            repository: "acme/shop".into(),
            api_url: "http://127.0.0.1:9999".into(),
            environment: "staging".into(),
            service: "api".into(),
            tag_rule: PreviewTagRule::PrNumber,
            credentials: sealed(key),
        }
    }

    #[test]
    fn a_repository_link_names_the_projects_environment_and_a_selectable_service_and_retires_its_old_keys() {
        let given = vec![
            CatalogEvent::EnvironmentCreated(environment("staging")),
            CatalogEvent::EnvironmentCreated(environment("prod")),
            CatalogEvent::RegistryAdded(registry("local")),
            CatalogEvent::ServiceCreated(ServiceDefinition { tag: TagMode::Selectable(Some("pr-*".into())), ..service("api", "local") }),
            CatalogEvent::ServiceCreated(ServiceDefinition { tag: TagMode::Pinned("1".into()), ..service("db", "local") }),
            CatalogEvent::ProjectCreated(project("shop", &["staging"])),
        ];
        let linked = when(&given, CatalogAction::LinkRepository(link(1))).unwrap();
        assert_eq!(linked, [CatalogEvent::RepositoryLinked(RepositoryLinked { link: link(1), retired_key: None })]);
        let given = [given, linked].concat();
        // Linked again (a new token): the old credentials' key is retired.
        assert_eq!(
            when(&given, CatalogAction::LinkRepository(link(2))).unwrap(),
            [CatalogEvent::RepositoryLinked(RepositoryLinked { link: link(2), retired_key: Some(Uuid::from_u128(1)) })]
        );
        for (bad, field) in [
            (RepositoryLink { repository: "acme".into(), ..link(3) }, "repository"),
            (RepositoryLink { repository: "acme/shop/x".into(), ..link(3) }, "repository"),
            (RepositoryLink { api_url: "git@github.com".into(), ..link(3) }, "apiUrl"),
            (RepositoryLink { environment: "prod".into(), ..link(3) }, "environment"),
            (RepositoryLink { service: "db".into(), ..link(3) }, "service"),
            (RepositoryLink { service: "nope".into(), ..link(3) }, "service"),
        ] {
            let refused = when(&given, CatalogAction::LinkRepository(bad.clone()));
            assert!(matches!(refused, Err(DomainError::InvalidInput { field: f, .. }) if f == field), "{bad:?}: {refused:?}");
        }
        assert!(when(&given, CatalogAction::LinkRepository(RepositoryLink { forge: Forge::GitLab, repository: "acme/web/shop".into(), ..link(3) })).is_ok());
        // What a link uses stays until it is unlinked.
        assert!(matches!(when(&given, CatalogAction::RemoveService { name: "api".into(), pipelines: vec![] }), Err(DomainError::Conflict(_))));
        assert!(matches!(when(&given, CatalogAction::RemoveProject { name: "shop".into() }), Err(DomainError::Conflict(_))));
        let unlinked = when(&given, CatalogAction::UnlinkRepository { project: "shop".into() }).unwrap();
        assert_eq!(unlinked, [CatalogEvent::RepositoryUnlinked(RepositoryUnlinked { project: "shop".into(), retired_key: Uuid::from_u128(1) })]);
        let given = [given, unlinked].concat();
        assert!(fold::<Catalog>(&given).links.is_empty());
        assert!(when(&given, CatalogAction::RemoveService { name: "api".into(), pipelines: vec![] }).is_ok());
        // While pipelines start it, every one of them is named
        let refused = when(&given, CatalogAction::RemoveService { name: "api".into(), pipelines: vec!["web".into(), "shop".into()] });
        assert_eq!(
            refused,
            Err(DomainError::Conflict(
                "service api is in use by the latest pipeline of project shop, the latest pipeline of project web; change or remove those first".into()
            ))
        );
        assert!(matches!(when(&given, CatalogAction::UnlinkRepository { project: "shop".into() }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn a_link_whose_previews_could_never_deploy_its_service_is_refused() {
        // Given a service whose pattern admits only v* tags
        let versioned = |pattern: &str| ServiceDefinition { tag: TagMode::Selectable(Some(pattern.into())), ..service("api", "local") };
        let given = vec![
            CatalogEvent::EnvironmentCreated(environment("staging")),
            CatalogEvent::RegistryAdded(registry("local")),
            CatalogEvent::ServiceCreated(versioned("v*")),
            CatalogEvent::ProjectCreated(project("shop", &["staging"])),
        ];
        // When a link's previews would tag pr-<number>, or a commit's short sha
        for rule in [PreviewTagRule::PrNumber, PreviewTagRule::ShortSha] {
            let refused = when(&given, CatalogAction::LinkRepository(RepositoryLink { tag_rule: rule, ..link(1) }));
            // Then it is refused beside the rule, naming the pattern and a tag it refuses
            let Err(DomainError::InvalidInput { field, message }) = refused else { panic!("{rule:?}: {refused:?}") };
            assert_eq!(field, "tagRule");
            assert!(message.contains("v*") && message.contains(&rule.tag(1, "1a2b3c4")), "{message}");
        }
        // A pattern that admits them is fine, and is then kept so
        let given = [given, vec![CatalogEvent::ServiceUpdated(versioned("pr-*"))]].concat();
        let linked = when(&given, CatalogAction::LinkRepository(link(1))).unwrap();
        let given = [given, linked].concat();
        let narrowed = when(&given, CatalogAction::UpdateService(versioned("pr-1?")));
        assert!(
            matches!(&narrowed, Err(DomainError::InvalidInput { field, message }) if *field == "tagPattern" && message.contains("project shop")),
            "{narrowed:?}"
        );
        assert!(when(&given, CatalogAction::UpdateService(versioned("*"))).is_ok());
    }

    #[test]
    fn only_admins_change_the_catalog_and_users_get_no_events() {
        let denied = Catalog::decide(
            &CatalogCommand { by: Issuer::User(user("alice")), action: CatalogAction::CreateTeam { team_id: Uuid::nil(), name: "qa".into() } },
            &CatalogState::default(),
        );
        assert!(matches!(denied, Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn team_names_are_unique_labels_and_renames_keep_members() {
        let given = [team(1, "qa"), team(2, "dev"), member(1, "alice")];
        assert!(matches!(when(&given, CatalogAction::CreateTeam { team_id: Uuid::from_u128(3), name: "qa".into() }), Err(DomainError::AlreadyExists(_))));
        assert!(matches!(when(&given, CatalogAction::CreateTeam { team_id: Uuid::from_u128(3), name: "Q A".into() }), Err(DomainError::InvalidInput { .. })));
        assert!(matches!(when(&given, CatalogAction::RenameTeam { name: "qa".into(), new_name: "dev".into() }), Err(DomainError::AlreadyExists(_))));
        let renamed = when(&given, CatalogAction::RenameTeam { name: "qa".into(), new_name: "testers".into() }).unwrap();
        assert_eq!(renamed, [CatalogEvent::TeamRenamed(TeamRenamed { team_id: Uuid::from_u128(1), name: "testers".into() })]);
        let state = fold::<Catalog>(&[&given[..], &renamed].concat());
        assert!(state.teams[&Uuid::from_u128(1)].members.contains("alice"));
    }

    #[test]
    fn access_is_the_highest_grant_of_any_of_the_users_teams() {
        let shop = AccessTarget::Project("shop".into());
        let staging = AccessTarget::Environment("staging".into());
        let state = fold::<Catalog>(&[
            CatalogEvent::EnvironmentCreated(environment("staging")),
            CatalogEvent::ProjectCreated(project("shop", &["staging"])),
            team(1, "viewers"),
            team(2, "builders"),
            member(1, "alice"),
            member(2, "alice"),
            member(1, "bob"),
            grant(1, shop.clone(), Access::ReadOnly),
            grant(2, shop.clone(), Access::Full),
            grant(2, staging.clone(), Access::ReadOnly),
        ]);
        assert_eq!(state.project_access(&user("alice"), "shop"), Some(Access::Full));
        assert_eq!(state.project_access(&user("bob"), "shop"), Some(Access::ReadOnly));
        assert_eq!(state.project_access(&user("carol"), "shop"), None);
        // A deployment: the higher of the grants on its project and on its environment.
        assert_eq!(state.access(&user("alice"), std::slice::from_ref(&staging)), Some(Access::ReadOnly));
        assert_eq!(state.access(&user("alice"), &[shop, staging]), Some(Access::Full));
    }

    #[test]
    fn removing_a_team_or_target_drops_its_grants() {
        let shop = AccessTarget::Project("shop".into());
        let given = [
            CatalogEvent::EnvironmentCreated(environment("staging")),
            CatalogEvent::ProjectCreated(project("shop", &["staging"])),
            team(1, "qa"),
            member(1, "alice"),
            grant(1, shop.clone(), Access::Full),
        ];
        let removed = when(&given, CatalogAction::RemoveProject { name: "shop".into() }).unwrap();
        let state = fold::<Catalog>(&[&given[..], &removed].concat());
        assert!(state.grants.is_empty());
        let deleted = when(&given, CatalogAction::DeleteTeam { name: "qa".into() }).unwrap();
        assert!(fold::<Catalog>(&[&given[..], &deleted].concat()).grants.is_empty());
    }

    #[test]
    fn references_must_exist_and_things_in_use_stay() {
        assert!(matches!(when(&[], CatalogAction::CreateService(service("api", "local"))), Err(DomainError::NotFound(m)) if m.contains("registry")));
        assert!(matches!(when(&[], CatalogAction::CreateProject(project("shop", &["nope"]))), Err(DomainError::NotFound(m)) if m.contains("environment")));
        let given = [CatalogEvent::RegistryAdded(registry("local")), CatalogEvent::ServiceCreated(service("api", "local"))];
        let refused = when(&given, CatalogAction::RemoveRegistry { name: "local".into() }).unwrap_err();
        assert_eq!(refused, DomainError::Conflict("registry local is in use by service api; change or remove those first".into()));
        let given = [CatalogEvent::EnvironmentCreated(environment("staging")), CatalogEvent::ProjectCreated(project("shop", &["staging"]))];
        assert!(matches!(when(&given, CatalogAction::RemoveEnvironment { name: "staging".into() }), Err(DomainError::Conflict(_))));
        let grant_on_nothing = CatalogAction::Grant { team: "qa".into(), target: AccessTarget::Project("nope".into()), access: Access::Full };
        assert!(matches!(when(&[team(1, "qa")], grant_on_nothing), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn replacing_or_clearing_credentials_retires_their_data_key() {
        let given = [CatalogEvent::RegistryAdded(RegistryDefinition { credentials: Some(sealed(7)), ..registry("local") })];
        let change = |credentials| CatalogAction::ChangeRegistry { name: "local".into(), url: "http://127.0.0.1:5050".into(), credentials };
        let retired = |events: Vec<CatalogEvent>| match &events[..] {
            [CatalogEvent::RegistryChanged(c)] => c.retired_key,
            other => panic!("{other:?}"),
        };
        assert_eq!(retired(when(&given, change(CredentialsChange::Set(sealed(8)))).unwrap()), Some(Uuid::from_u128(7)));
        assert_eq!(retired(when(&given, change(CredentialsChange::Clear)).unwrap()), Some(Uuid::from_u128(7)));
        assert_eq!(when(&given, change(CredentialsChange::Keep)).unwrap(), []);
        let removed = when(&given, CatalogAction::RemoveRegistry { name: "local".into() }).unwrap();
        assert_eq!(removed, [CatalogEvent::RegistryRemoved(RegistryRemoved { name: "local".into(), retired_key: Some(Uuid::from_u128(7)) })]);
    }

    #[test]
    fn definitions_are_validated() {
        let given = [CatalogEvent::RegistryAdded(registry("local"))];
        let bad_port = ServiceDefinition { port: 0, ..service("api", "local") };
        assert!(matches!(when(&given, CatalogAction::CreateService(bad_port)), Err(DomainError::InvalidInput { field: "port", .. })));
        let bad_pattern = ServiceDefinition { tag: TagMode::Selectable(Some("v[1]".into())), ..service("api", "local") };
        assert!(matches!(when(&given, CatalogAction::CreateService(bad_pattern)), Err(DomainError::InvalidInput { field: "tagPattern", .. })));
        let bad_env = ServiceDefinition { env: vec![EnvVar { name: "X".into(), value: "${{ nodes.db.outputs.url }}".into() }], ..service("api", "local") };
        assert!(matches!(when(&given, CatalogAction::CreateService(bad_env)), Err(DomainError::InvalidInput { field: "env", .. })));
        let bad_domain = EnvironmentDefinition { base_domain: "not a domain".into(), ..environment("staging") };
        assert!(matches!(when(&[], CatalogAction::CreateEnvironment(bad_domain)), Err(DomainError::InvalidInput { field: "baseDomain", .. })));
        let bad_schema = PluginDefinition {
            name: "create-db".into(),
            registry: "local".into(),
            repository: "plugins/create-db".into(),
            tag: "1.0".into(),
            description: String::new(),
            parameters_schema: r#"{"type": 12}"#.into(),
            cpu_millis: 500,
            memory_mib: 128,
            timeout_secs: 300,
            joins_deployment_network: true,
        };
        assert!(matches!(when(&given, CatalogAction::CreatePlugin(bad_schema)), Err(DomainError::InvalidInput { field: "parametersSchema", .. })));
    }

    #[test]
    fn an_update_keeps_the_project_id() {
        let given = [CatalogEvent::EnvironmentCreated(environment("staging")), CatalogEvent::ProjectCreated(project("shop", &["staging"]))];
        let update = ProjectDefinition { project_id: Uuid::from_u128(42), memory_mib: 4096, ..project("shop", &["staging"]) };
        let [CatalogEvent::ProjectUpdated(p)] = &when(&given, CatalogAction::UpdateProject { project: update, services: 1 }).unwrap()[..] else { panic!() };
        assert_eq!((p.project_id, p.memory_mib), (Uuid::from_u128(9), 4096));
    }

    #[test]
    fn a_projects_limits_must_stretch_to_each_of_its_services() {
        let given = [CatalogEvent::EnvironmentCreated(environment("staging")), CatalogEvent::ProjectCreated(project("shop", &["staging"]))];
        let thin = |cpu_millis, memory_mib| ProjectDefinition { cpu_millis, memory_mib, ..project("shop", &["staging"]) };
        // 10 millicores for two services: 5 each, below what Docker gives a container.
        let refused = when(&given, CatalogAction::UpdateProject { project: thin(10, 512), services: 2 });
        assert!(
            matches!(&refused, Err(DomainError::InvalidInput { field: "cpuMillis", message }) if message.contains("at least 20 millicores")),
            "{refused:?}"
        );
        let refused = when(&given, CatalogAction::UpdateProject { project: thin(500, 10), services: 2 });
        assert!(matches!(&refused, Err(DomainError::InvalidInput { field: "memoryMib", message }) if message.contains("at least 12 MiB")), "{refused:?}");
        assert!(when(&given, CatalogAction::UpdateProject { project: thin(20, 12), services: 2 }).is_ok());
        // A new project has no pipeline yet: its limits must fit one service.
        let new = ProjectDefinition { cpu_millis: 5, ..project("blog", &["staging"]) };
        assert!(matches!(when(&given, CatalogAction::CreateProject(new)), Err(DomainError::InvalidInput { field: "cpuMillis", .. })));
    }
}
