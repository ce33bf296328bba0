//! Catalog events: what QA environments are made of and who may touch them.
//!
//! Teams, access grants, registries, services, plugins, environments and projects all live in one
//! stream, `catalog-main`: they are few, change rarely, and refer to one another, so one stream
//! lets every decision check those references consistently. A project's pipeline versions live in
//! `pipeline-<project id>` and its secrets in `secrets-<project id>`.
//!
//! As in `identity`, field and variant order is part of the stored format.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How much a team may do on a project or environment. Ordered: `Full` outranks `ReadOnly`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    ReadOnly,
    Full,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "READ_ONLY",
            Access::Full => "FULL",
        }
    }
}

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccessTarget {
    Project(String),
    Environment(String),
}

impl AccessTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            AccessTarget::Project(_) => "PROJECT",
            AccessTarget::Environment(_) => "ENVIRONMENT",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            AccessTarget::Project(n) | AccessTarget::Environment(n) => n,
        }
    }
}

/// A value encrypted under its own data key (AES-256-GCM). Only the key id and ciphertext are
/// stored; the data key lives, wrapped by the master key, in the keyring, and destroying it makes
/// this ciphertext unreadable for good.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key_id: Uuid,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// What one project's secrets may take, the same for the API (`setSecret`) as for the wire: how
/// many, their names and values together, and one value.
pub const MAX_SECRETS: usize = 256;
pub const MAX_SECRETS_BYTES: usize = 1 << 20;
pub const MAX_SECRET_VALUE_BYTES: usize = 64 << 10;

/// The AES-256-GCM authentication tag every ciphertext ends with.
pub const SEAL_TAG_BYTES: usize = 16;

impl Sealed {
    /// The length of the value in clear (the ciphertext less its tag): what limits count.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len().saturating_sub(SEAL_TAG_BYTES)
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(key {}, {} bytes)", self.key_id, self.ciphertext.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    TeamCreated(TeamCreated),
    TeamRenamed(TeamRenamed),
    TeamDeleted(TeamDeleted),
    TeamMemberAdded(TeamMember),
    TeamMemberRemoved(TeamMember),
    AccessGranted(AccessGranted),
    AccessRevoked(AccessRevoked),
    RegistryAdded(RegistryDefinition),
    RegistryChanged(RegistryChanged),
    RegistryRemoved(RegistryRemoved),
    ServiceCreated(ServiceDefinition),
    ServiceUpdated(ServiceDefinition),
    ServiceRemoved(Removed),
    PluginCreated(PluginDefinition),
    PluginUpdated(PluginDefinition),
    PluginRemoved(Removed),
    EnvironmentCreated(EnvironmentDefinition),
    EnvironmentUpdated(EnvironmentDefinition),
    EnvironmentRemoved(Removed),
    ProjectCreated(ProjectDefinition),
    ProjectUpdated(ProjectDefinition),
    ProjectRemoved(Removed),
    WebhookCreated(WebhookDefinition),
    WebhookSecretRotated(WebhookSecretRotated),
    WebhookDeleted(WebhookDeleted),
    RepositoryLinked(RepositoryLinked),
    RepositoryUnlinked(RepositoryUnlinked),
}

/// A forge whose pull requests open previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Forge {
    GitHub,
    GitLab,
}

impl Forge {
    pub const ALL: [Forge; 2] = [Forge::GitHub, Forge::GitLab];

    /// The path segment of its hook: `/hooks/github/<project>`.
    pub fn slug(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
        }
    }

    /// The public forge's API, used when a link names none.
    pub fn public_api(self) -> &'static str {
        match self {
            Forge::GitHub => "https://api.github.com",
            Forge::GitLab => "https://gitlab.com/api/v4",
        }
    }

    /// What it calls a pull request.
    pub fn request_noun(self) -> &'static str {
        match self {
            Forge::GitHub => "pull request",
            Forge::GitLab => "merge request",
        }
    }
}

/// Which tag of the linked service a pull request's preview runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PreviewTagRule {
    /// `pr-<number>`: CI pushes the branch's image under the request's number.
    PrNumber,
    /// The head commit's first seven hex digits: CI pushes every commit's image.
    ShortSha,
}

impl PreviewTagRule {
    /// The tag for request `number` at head commit `sha`.
    pub fn tag(self, number: u64, sha: &str) -> String {
        match self {
            PreviewTagRule::PrNumber => format!("pr-{number}"),
            PreviewTagRule::ShortSha => sha.chars().take(7).collect(),
        }
    }
}

/// A project's repository: its pull requests deploy previews of `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryLink {
    pub project: String,
    pub forge: Forge,
    /// `owner/name` (GitHub) or the project's path with its groups (GitLab).
    pub repository: String,
    /// The forge's API root, e.g. `https://api.github.com`.
    pub api_url: String,
    /// Where previews are deployed: one of the project's environments.
    pub environment: String,
    /// The selectable service whose tag follows the pull request.
    pub service: String,
    pub tag_rule: PreviewTagRule,
    /// The hook's secret and the API token (a [`ForgeCredentials`] as JSON), sealed together.
    pub credentials: Sealed,
}

/// What a repository link's `credentials` hold in clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeCredentials {
    /// What the forge signs its hooks with (GitHub) or sends as `X-Gitlab-Token` (GitLab).
    pub webhook_secret: String,
    /// What statuses and comments are posted with.
    pub token: String,
}

impl std::fmt::Debug for ForgeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForgeCredentials(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryLinked {
    pub link: RepositoryLink,
    /// The data key of the credentials of the link it replaces: destroy it.
    pub retired_key: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryUnlinked {
    pub project: String,
    /// The data key of its credentials: destroy it.
    pub retired_key: Uuid,
}

/// An endpoint that is told of what happens, signed with its secret (Standard Webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDefinition {
    pub webhook_id: Uuid,
    /// `http://` or `https://`; loopback and private addresses are allowed (admins decide).
    pub url: String,
    /// What it is told of.
    pub topics: Vec<WebhookTopic>,
    /// Only events of this project, when given.
    pub project: Option<String>,
    /// Only events in this environment, when given.
    pub environment: Option<String>,
    /// The signing secret (`whsec_` and base64 of 32 random bytes), sealed.
    pub secret: Sealed,
}

/// What a webhook can be told of: one home for the names the API and the deliveries use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WebhookTopic {
    DeploymentCreated,
    DeploymentRunning,
    DeploymentFailed,
    DeploymentDeleted,
    DeploymentExpired,
    NodeOffline,
    NodeOnline,
    PipelineSaved,
}

impl WebhookTopic {
    pub const ALL: [WebhookTopic; 8] = [
        WebhookTopic::DeploymentCreated,
        WebhookTopic::DeploymentRunning,
        WebhookTopic::DeploymentFailed,
        WebhookTopic::DeploymentDeleted,
        WebhookTopic::DeploymentExpired,
        WebhookTopic::NodeOffline,
        WebhookTopic::NodeOnline,
        WebhookTopic::PipelineSaved,
    ];

    /// The CloudEvents `type` of a delivery: `io.nullops.deployment.running` and so on.
    pub fn cloud_event_type(self) -> &'static str {
        match self {
            WebhookTopic::DeploymentCreated => "io.nullops.deployment.created",
            WebhookTopic::DeploymentRunning => "io.nullops.deployment.running",
            WebhookTopic::DeploymentFailed => "io.nullops.deployment.failed",
            WebhookTopic::DeploymentDeleted => "io.nullops.deployment.deleted",
            WebhookTopic::DeploymentExpired => "io.nullops.deployment.expired",
            WebhookTopic::NodeOffline => "io.nullops.node.offline",
            WebhookTopic::NodeOnline => "io.nullops.node.online",
            WebhookTopic::PipelineSaved => "io.nullops.pipeline.saved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecretRotated {
    pub webhook_id: Uuid,
    pub secret: Sealed,
    /// The data key of the secret it replaces: destroy it.
    pub retired_key: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    pub webhook_id: Uuid,
    /// The data key of its secret: destroy it.
    pub retired_key: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamCreated {
    pub team_id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRenamed {
    pub team_id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamDeleted {
    pub team_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMember {
    pub team_id: Uuid,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGranted {
    pub team_id: Uuid,
    pub target: AccessTarget,
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRevoked {
    pub team_id: Uuid,
    pub target: AccessTarget,
}

/// Removal of a named catalog entry (registry, service, plugin, environment, project).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub name: String,
}

/// A container registry that speaks the Registry HTTP API v2, or the local Docker engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryDefinition {
    pub name: String,
    /// Base URL, e.g. `https://registry-1.docker.io`, or [`LOCAL_ENGINE_URL`].
    pub url: String,
    /// `username:password`, sealed.
    pub credentials: Option<Sealed>,
}

/// The URL of a "registry" that is the images already in the Docker engine: its tags are listed
/// from the engine beside the control plane (`nullops up`'s), and nodes run the images they
/// have without pulling. For a single host, and the demo `nullops up` offers.
pub const LOCAL_ENGINE_URL: &str = "docker-engine://local";

impl RegistryDefinition {
    pub fn is_local_engine(&self) -> bool {
        self.url == LOCAL_ENGINE_URL
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryChanged {
    pub definition: RegistryDefinition,
    /// The data key of the credentials this change replaced or cleared: destroy it.
    pub retired_key: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRemoved {
    pub name: String,
    /// The data key of its credentials: destroy it.
    pub retired_key: Option<Uuid>,
}

/// Which tag of a service's image a deployment runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagMode {
    /// Always this tag.
    Pinned(String),
    /// Chosen per deployment, optionally among tags matching a glob (`v*`, `1.2.*`).
    Selectable(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// An HTTP GET on the container port at this path must answer 2xx or 3xx.
    Http(String),
    /// This command, run in the container, must exit 0.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub retries: u32,
}

/// An environment variable; the value may hold `${{ secrets.NAME }}` references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    pub name: String,
    pub registry: String,
    pub image: String,
    pub tag: TagMode,
    pub port: u16,
    pub health_check: Option<HealthCheck>,
    pub env: Vec<EnvVar>,
}

/// A container that takes JSON on stdin and answers JSON on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDefinition {
    pub name: String,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub description: String,
    /// JSON Schema of the plugin's parameters, as JSON text.
    pub parameters_schema: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub timeout_secs: u32,
    /// Whether the plugin's container joins the deployment's network.
    pub joins_deployment_network: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentDefinition {
    pub name: String,
    /// Deployments are served at `service.deployment.<name>.<base_domain>`.
    pub base_domain: String,
    pub cleanup_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectDefinition {
    pub project_id: Uuid,
    pub name: String,
    pub environments: Vec<String>,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Overrides the environment's auto-cleanup duration.
    pub cleanup_after_secs: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Pipelines: stream `pipeline-<project id>`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineEvent {
    VersionSaved(PipelineVersionSaved),
    /// A dry run was asked for: it changes nothing and is kept only as an audit entry.
    DryRun(PipelineDryRun),
}

/// An immutable pipeline version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVersionSaved {
    pub project_id: Uuid,
    pub version: u32,
    pub graph: PipelineGraph,
    /// What the author said of the change ('' when nothing).
    pub message: String,
    /// Where the editor drew each node; not part of what runs, so not compared by a diff.
    pub layout: Vec<NodePlacement>,
    /// The version this one was started from, when an author began from an older one.
    pub based_on: Option<u32>,
}

/// A node's place on the editor's canvas, in canvas units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlacement {
    pub node: String,
    pub x: i32,
    pub y: i32,
}

/// What a dry run checked and how it came out; the problems themselves are answered to the
/// caller, not stored (they may quote parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDryRun {
    pub environment: String,
    /// The saved version checked, or `None` for an unsaved draft.
    pub version: Option<u32>,
    pub problems: u32,
    /// The node the deployment would be placed on, when it fits.
    pub fits_on: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineGraph {
    pub nodes: Vec<PipelineNode>,
    pub edges: Vec<PipelineEdge>,
}

impl PipelineGraph {
    /// How many services it runs (they share the project's limits).
    pub fn services(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.action, PipelineAction::StartService { .. })).count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineNode {
    pub id: String,
    pub action: PipelineAction,
}

/// What a pipeline node does. (Not to be confused with `nullops_domain::node::NodeAction`, a
/// command on a Docker node.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipelineAction {
    StartService {
        service: String,
    },
    /// `parameters` is JSON text, checked against the plugin's schema when saved.
    RunPlugin {
        plugin: String,
        image: PinnedImage,
        parameters: String,
    },
}

/// A plugin image as it was when the version was saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedImage {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// `sha256:…`, when the registry reported one.
    pub digest: Option<String>,
}

/// `to` runs after `from` has finished.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PipelineEdge {
    pub from: String,
    pub to: String,
}

// ---------------------------------------------------------------------------------------------
// Project secrets: stream `secrets-<project id>`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    Created(SecretSet),
    Updated(SecretSet),
    Deleted(SecretDeleted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSet {
    pub name: String,
    pub value: Sealed,
    /// The data key of the value this one replaced: destroy it.
    pub retired_key: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleted {
    pub name: String,
    /// Destroyed with the secret: its ciphertext in the log can never be read again.
    pub retired_key: Uuid,
}
