//! GraphQL shapes of the catalog, and their conversions to and from the event types.

use async_graphql::{Enum, InputObject, Json, SimpleObject};
use chrono::{DateTime, Utc};
use nullops_events::catalog::*;
use nullops_projections::catalog::{Entry, GrantRow, SecretRow};

use crate::context::time;
use crate::error::{ApiError, ApiResult};

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "Access")]
pub enum AccessGql {
    ReadOnly,
    Full,
}

impl From<AccessGql> for Access {
    fn from(a: AccessGql) -> Self {
        match a {
            AccessGql::ReadOnly => Access::ReadOnly,
            AccessGql::Full => Access::Full,
        }
    }
}

impl From<Access> for AccessGql {
    fn from(a: Access) -> Self {
        match a {
            Access::ReadOnly => AccessGql::ReadOnly,
            Access::Full => AccessGql::Full,
        }
    }
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "AccessTargetKind")]
pub enum TargetKindGql {
    Project,
    Environment,
}

#[derive(InputObject)]
#[graphql(name = "AccessTargetInput")]
pub struct AccessTargetInput {
    pub kind: TargetKindGql,
    pub name: String,
}

impl AccessTargetInput {
    pub fn target(&self) -> AccessTarget {
        match self.kind {
            TargetKindGql::Project => AccessTarget::Project(self.name.clone()),
            TargetKindGql::Environment => AccessTarget::Environment(self.name.clone()),
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Grant")]
pub struct GrantGql {
    pub team: String,
    pub target_kind: TargetKindGql,
    pub target: String,
    pub access: AccessGql,
}

impl From<GrantRow> for GrantGql {
    fn from(g: GrantRow) -> Self {
        GrantGql {
            team: g.team,
            target_kind: if g.target_kind == "PROJECT" { TargetKindGql::Project } else { TargetKindGql::Environment },
            target: g.target_name,
            access: g.access.into(),
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Team")]
pub struct TeamGql {
    pub name: String,
    pub members: Vec<String>,
    pub grants: Vec<GrantGql>,
    pub created_at: DateTime<Utc>,
}

/// A GraphQL number that must not be negative (`i32` into `u32`, `i64` into `u64`).
pub fn count<I, U: TryFrom<I>>(field: &str, value: I) -> ApiResult<U> {
    U::try_from(value).map_err(|_| ApiError::InvalidInput(format!("{field}: must not be negative")))
}

// ---------------------------------------------------------------------------------------------
// Registries

#[derive(SimpleObject)]
#[graphql(name = "Registry")]
pub struct RegistryGql {
    pub name: String,
    pub url: String,
    /// Whether credentials are stored; they are never returned.
    pub has_credentials: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Entry<RegistryDefinition>> for RegistryGql {
    fn from(e: Entry<RegistryDefinition>) -> Self {
        RegistryGql {
            has_credentials: e.definition.credentials.is_some(),
            name: e.definition.name,
            url: e.definition.url,
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
        }
    }
}

#[derive(InputObject)]
pub struct RegistryInput {
    pub name: String,
    /// Base URL of a Registry HTTP API v2, e.g. `https://ghcr.io`; or `docker-engine://local` for the images
    /// already in the Docker engine (tags listed from the engine beside the server; nothing pulled).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(InputObject)]
pub struct RegistryUpdateInput {
    pub name: String,
    pub url: String,
    /// With `password`: replaces the stored credentials (the old ones are destroyed).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Removes the stored credentials for good.
    #[graphql(default = false)]
    pub clear_credentials: bool,
}

// ---------------------------------------------------------------------------------------------
// Services

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "TagMode")]
pub enum TagModeGql {
    /// Always the given tag.
    Pinned,
    /// Chosen per deployment, among tags matching the optional pattern.
    Selectable,
}

#[derive(SimpleObject, InputObject)]
#[graphql(name = "HealthCheck", input_name = "HealthCheckInput")]
pub struct HealthCheckGql {
    /// An HTTP GET on the container port at this path must answer 2xx or 3xx.
    pub http_path: Option<String>,
    /// Or: this command, run in the container, must exit 0.
    pub command: Option<Vec<String>>,
    #[graphql(default = 10)]
    pub interval_seconds: i32,
    #[graphql(default = 5)]
    pub timeout_seconds: i32,
    #[graphql(default = 3)]
    pub retries: i32,
}

impl From<nullops_events::catalog::HealthCheck> for HealthCheckGql {
    fn from(h: nullops_events::catalog::HealthCheck) -> Self {
        let (http_path, command) = match h.probe {
            Probe::Http(p) => (Some(p), None),
            Probe::Command(c) => (None, Some(c)),
        };
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        HealthCheckGql { http_path, command, interval_seconds: int(h.interval_secs), timeout_seconds: int(h.timeout_secs), retries: int(h.retries) }
    }
}

#[derive(SimpleObject, InputObject, Clone)]
#[graphql(name = "EnvVar", input_name = "EnvVarInput")]
pub struct EnvVarGql {
    pub name: String,
    /// May reference project secrets: `${{ secrets.NAME }}`.
    pub value: String,
}

/// What keeps a service or plugin from being deleted.
#[derive(SimpleObject)]
#[graphql(name = "CatalogUse")]
pub struct CatalogUseGql {
    /// The project that uses it.
    pub project: String,
    pub kind: CatalogUseKind,
    /// In words: "the latest pipeline of project shop".
    pub description: String,
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "CatalogUseKind")]
pub enum CatalogUseKind {
    /// The project's latest pipeline version starts or runs it.
    Pipeline,
    /// The project's repository link deploys it as its previews.
    RepositoryLink,
}

impl From<nullops_domain::catalog::Use> for CatalogUseGql {
    fn from(u: nullops_domain::catalog::Use) -> Self {
        use nullops_domain::catalog::Use;
        let kind = match u {
            Use::Pipeline { .. } => CatalogUseKind::Pipeline,
            Use::Link { .. } => CatalogUseKind::RepositoryLink,
        };
        CatalogUseGql { project: u.project().to_owned(), kind, description: u.to_string() }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Service", complex)]
pub struct ServiceGql {
    pub name: String,
    pub registry: String,
    pub image: String,
    pub tag_mode: TagModeGql,
    /// The tag, when PINNED.
    pub tag: Option<String>,
    /// The glob that selectable tags must match, when SELECTABLE.
    pub tag_pattern: Option<String>,
    pub port: i32,
    pub health_check: Option<HealthCheckGql>,
    pub env: Vec<EnvVarGql>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Entry<ServiceDefinition>> for ServiceGql {
    fn from(e: Entry<ServiceDefinition>) -> Self {
        let s = e.definition;
        let (tag_mode, tag, tag_pattern) = match s.tag {
            TagMode::Pinned(t) => (TagModeGql::Pinned, Some(t), None),
            TagMode::Selectable(p) => (TagModeGql::Selectable, None, p),
        };
        ServiceGql {
            name: s.name,
            registry: s.registry,
            image: s.image,
            tag_mode,
            tag,
            tag_pattern,
            port: i32::from(s.port),
            health_check: s.health_check.map(HealthCheckGql::from),
            env: s.env.into_iter().map(|v| EnvVarGql { name: v.name, value: v.value }).collect(),
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
        }
    }
}

#[derive(InputObject)]
pub struct ServiceInput {
    pub name: String,
    pub registry: String,
    /// Repository in the registry, e.g. `shop/api`.
    pub image: String,
    pub tag_mode: TagModeGql,
    /// Required when PINNED.
    pub tag: Option<String>,
    /// Optional when SELECTABLE: `v*`, `1.2.*`, `feature-*`.
    pub tag_pattern: Option<String>,
    pub port: i32,
    pub health_check: Option<HealthCheckGql>,
    #[graphql(default)]
    pub env: Vec<EnvVarGql>,
}

impl ServiceInput {
    pub fn definition(self) -> ApiResult<ServiceDefinition> {
        let tag = match self.tag_mode {
            TagModeGql::Pinned => TagMode::Pinned(self.tag.ok_or_else(|| ApiError::InvalidInput("tag: a PINNED service needs its tag".into()))?),
            TagModeGql::Selectable => {
                if self.tag.is_some() {
                    return Err(ApiError::InvalidInput("tag: a SELECTABLE service takes a tagPattern, not a tag".into()));
                }
                TagMode::Selectable(self.tag_pattern)
            }
        };
        let port = u16::try_from(self.port).map_err(|_| ApiError::InvalidInput("port: use 1 to 65535".into()))?;
        let health_check = match self.health_check {
            None => None,
            Some(h) => Some(HealthCheck {
                probe: match (h.http_path, h.command) {
                    (Some(path), None) => Probe::Http(path),
                    (None, Some(argv)) => Probe::Command(argv),
                    _ => return Err(ApiError::InvalidInput("healthCheck: give the path the image serves (httpPath) or a command to run in it".into())),
                },
                interval_secs: count("healthCheck.intervalSeconds", h.interval_seconds)?,
                timeout_secs: count("healthCheck.timeoutSeconds", h.timeout_seconds)?,
                retries: count("healthCheck.retries", h.retries)?,
            }),
        };
        Ok(ServiceDefinition {
            name: self.name,
            registry: self.registry,
            image: self.image,
            tag,
            port,
            health_check,
            env: self.env.into_iter().map(|v| EnvVar { name: v.name, value: v.value }).collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plugins

#[derive(SimpleObject)]
#[graphql(name = "Plugin", complex)]
pub struct PluginGql {
    pub name: String,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub description: String,
    /// JSON Schema of the parameters a pipeline gives the plugin.
    pub parameters_schema: Json<serde_json::Value>,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub timeout_seconds: i32,
    pub joins_deployment_network: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Entry<PluginDefinition>> for PluginGql {
    fn from(e: Entry<PluginDefinition>) -> Self {
        let p = e.definition;
        PluginGql {
            parameters_schema: Json(serde_json::from_str(&p.parameters_schema).unwrap_or_default()),
            name: p.name,
            registry: p.registry,
            repository: p.repository,
            tag: p.tag,
            description: p.description,
            cpu_millis: p.cpu_millis as i32,
            memory_mib: p.memory_mib as i32,
            timeout_seconds: p.timeout_secs as i32,
            joins_deployment_network: p.joins_deployment_network,
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
        }
    }
}

#[derive(InputObject)]
pub struct PluginInput {
    pub name: String,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    #[graphql(default)]
    pub description: String,
    /// A JSON Schema; `{}` accepts any parameters.
    pub parameters_schema: Json<serde_json::Value>,
    #[graphql(default = 500)]
    pub cpu_millis: i32,
    #[graphql(default = 256)]
    pub memory_mib: i32,
    #[graphql(default = 300)]
    pub timeout_seconds: i32,
    #[graphql(default = false)]
    pub joins_deployment_network: bool,
}

impl PluginInput {
    pub fn definition(self) -> ApiResult<PluginDefinition> {
        Ok(PluginDefinition {
            name: self.name,
            registry: self.registry,
            repository: self.repository,
            tag: self.tag,
            description: self.description,
            parameters_schema: self.parameters_schema.0.to_string(),
            cpu_millis: count("cpuMillis", self.cpu_millis)?,
            memory_mib: count("memoryMib", self.memory_mib)?,
            timeout_secs: count("timeoutSeconds", self.timeout_seconds)?,
            joins_deployment_network: self.joins_deployment_network,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Environments

#[derive(SimpleObject)]
#[graphql(name = "Environment", complex)]
pub struct EnvironmentGql {
    pub name: String,
    pub base_domain: String,
    /// Deployments are deleted this long after creation unless extended.
    pub cleanup_after_seconds: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_graphql::ComplexObject]
impl EnvironmentGql {
    /// The DNS record to create so that its URLs reach the ingress; null when none is needed
    /// (under `localhost`).
    async fn dns_record(&self, ctx: &async_graphql::Context<'_>) -> Option<DnsRecordGql> {
        let record = crate::context::app(ctx).ingress.dns_record(&self.name, &self.base_domain)?;
        let zone_line = format!("{} 300 IN {} {}", record.name, record.kind, record.value.as_deref().unwrap_or("INGRESS-ADDRESS"));
        Some(DnsRecordGql { name: record.name, r#type: record.kind.to_owned(), value: record.value, zone_line })
    }
}

/// A DNS record, as a zone file has it.
#[derive(SimpleObject)]
#[graphql(name = "DnsRecord")]
pub struct DnsRecordGql {
    /// A wildcard covering every service of every deployment: `*.staging.qa.example.com.`.
    name: String,
    /// `A`, `AAAA` or `CNAME`.
    r#type: String,
    /// The ingress's address; null until the server is told it (`--ingress-public-address`).
    value: Option<String>,
    /// The record as one zone-file line (`INGRESS-ADDRESS` stands for an unknown address).
    zone_line: String,
}

impl From<Entry<EnvironmentDefinition>> for EnvironmentGql {
    fn from(e: Entry<EnvironmentDefinition>) -> Self {
        EnvironmentGql {
            name: e.definition.name,
            base_domain: e.definition.base_domain,
            cleanup_after_seconds: e.definition.cleanup_after_secs as i64,
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
        }
    }
}

#[derive(InputObject)]
pub struct EnvironmentInput {
    pub name: String,
    /// Deployments answer at `service.deployment.NAME.BASE_DOMAIN`.
    pub base_domain: String,
    #[graphql(default = 86400)]
    pub cleanup_after_seconds: i64,
}

impl EnvironmentInput {
    pub fn definition(self) -> ApiResult<EnvironmentDefinition> {
        Ok(EnvironmentDefinition {
            name: self.name,
            base_domain: self.base_domain,
            cleanup_after_secs: count("cleanupAfterSeconds", self.cleanup_after_seconds)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Projects

#[derive(InputObject)]
pub struct ProjectInput {
    pub name: String,
    /// Environments the project may deploy to.
    pub environments: Vec<String>,
    /// CPU limit of each deployment, in millicores.
    pub cpu_millis: i32,
    /// Memory limit of each deployment, in MiB.
    pub memory_mib: i32,
    /// Overrides the environments' auto-cleanup duration.
    pub cleanup_after_seconds: Option<i64>,
}

impl ProjectInput {
    pub fn definition(self, project_id: uuid::Uuid) -> ApiResult<ProjectDefinition> {
        let cleanup_after_secs = self.cleanup_after_seconds.map(|s| count("cleanupAfterSeconds", s)).transpose()?;
        let mut environments = self.environments;
        environments.sort();
        environments.dedup();
        Ok(ProjectDefinition {
            project_id,
            name: self.name,
            environments,
            cpu_millis: count("cpuMillis", self.cpu_millis)?,
            memory_mib: count("memoryMib", self.memory_mib)?,
            cleanup_after_secs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines and secrets

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "PipelineNodeKind")]
pub enum NodeKindGql {
    Service,
    Plugin,
}

#[derive(SimpleObject)]
#[graphql(name = "PinnedImage")]
pub struct PinnedImageGql {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "PipelineNode")]
pub struct PipelineNodeGql {
    pub id: String,
    pub kind: NodeKindGql,
    pub service: Option<String>,
    pub plugin: Option<String>,
    /// The plugin image as pinned when this version was saved.
    pub image: Option<PinnedImageGql>,
    pub parameters: Option<Json<serde_json::Value>>,
}

#[derive(SimpleObject, InputObject, Clone)]
#[graphql(name = "PipelineEdge", input_name = "PipelineEdgeInput")]
pub struct PipelineEdgeGql {
    pub from: String,
    pub to: String,
}

/// Where the editor drew a node, in canvas units.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(name = "NodePlacement", input_name = "NodePlacementInput")]
pub struct NodePlacementGql {
    pub node: String,
    pub x: i32,
    pub y: i32,
}

#[derive(SimpleObject)]
#[graphql(name = "PipelineVersion")]
pub struct PipelineVersionGql {
    pub version: i32,
    pub saved_at: DateTime<Utc>,
    pub saved_by: String,
    /// What its author said of it ('' when nothing).
    pub message: String,
    /// The version it was started from, when its author began from an older one.
    pub based_on: Option<i32>,
    pub nodes: Vec<PipelineNodeGql>,
    pub edges: Vec<PipelineEdgeGql>,
    /// Where the editor drew its nodes; nodes without a place are laid out automatically.
    pub layout: Vec<NodePlacementGql>,
}

impl From<nullops_projections::catalog::PipelineVersionRow> for PipelineVersionGql {
    fn from(v: nullops_projections::catalog::PipelineVersionRow) -> Self {
        PipelineVersionGql {
            version: v.version as i32,
            saved_at: time(v.saved_at),
            saved_by: v.saved_by,
            message: v.message,
            based_on: v.based_on.map(|b| b as i32),
            layout: v.layout.into_iter().map(|p| NodePlacementGql { node: p.node, x: p.x, y: p.y }).collect(),
            nodes: v
                .graph
                .nodes
                .into_iter()
                .map(|n| match n.action {
                    PipelineAction::StartService { service } => {
                        PipelineNodeGql { id: n.id, kind: NodeKindGql::Service, service: Some(service), plugin: None, image: None, parameters: None }
                    }
                    PipelineAction::RunPlugin { plugin, image, parameters } => PipelineNodeGql {
                        id: n.id,
                        kind: NodeKindGql::Plugin,
                        service: None,
                        plugin: Some(plugin),
                        image: Some(PinnedImageGql { registry: image.registry, repository: image.repository, tag: image.tag, digest: image.digest }),
                        parameters: Some(Json(serde_json::from_str(&parameters).unwrap_or_default())),
                    },
                })
                .collect(),
            edges: v.graph.edges.into_iter().map(|e| PipelineEdgeGql { from: e.from, to: e.to }).collect(),
        }
    }
}

#[derive(InputObject)]
pub struct PipelineNodeInput {
    /// Unique in the pipeline; other nodes refer to its outputs as `${{ nodes.ID.outputs.KEY }}`.
    pub id: String,
    /// Start this service (give either `service` or `plugin`).
    pub service: Option<String>,
    /// Run this plugin with `parameters`, checked against its schema.
    pub plugin: Option<String>,
    pub parameters: Option<Json<serde_json::Value>>,
}

#[derive(InputObject)]
pub struct PipelineInput {
    pub nodes: Vec<PipelineNodeInput>,
    /// `to` starts after `from` has finished.
    #[graphql(default)]
    pub edges: Vec<PipelineEdgeGql>,
    /// Where the editor drew each node (optional; kept with the version).
    #[graphql(default)]
    pub layout: Vec<NodePlacementGql>,
}

/// What is wrong with a pipeline, by kind (the descriptions say what to do).
#[derive(Enum, Copy, Clone, PartialEq, Eq, serde::Serialize)]
#[graphql(name = "PipelineProblemCode", remote = "nullops_domain::pipeline::ProblemCode")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProblemCodeGql {
    /// The pipeline has no node: add one.
    EmptyPipeline,
    /// More nodes than a pipeline may have.
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
    /// The plugin's parameter schema is not a valid JSON Schema: an admin must fix the plugin.
    BadSchema,
    /// A parameter does not match the plugin's schema.
    BadParameter,
    /// A parameter the plugin's schema requires is missing.
    MissingParameter,
    /// A `${{ }}` expression that is malformed or of an unknown kind.
    BadExpression,
    /// An expression uses the outputs of a node that does not run before this one.
    NotUpstream,
    /// An expression names a secret the project does not have.
    UnknownSecret,
    /// The project's CPU or memory cannot be split among the pipeline's services.
    OverLimits,
    /// An image tag is not in its registry (or none was chosen for a selectable service).
    MissingTag,
    /// An image's registry could not be asked.
    ImageUnresolved,
}

/// One problem of a pipeline, on the node and field it names.
#[derive(SimpleObject, serde::Serialize)]
#[graphql(name = "PipelineProblem")]
pub struct PipelineProblemGql {
    /// The node's id; none when the problem is the whole graph's.
    pub node: Option<String>,
    /// The node's field: `id`, `service`, `plugin`, `parameters.NAME`, `env.NAME`, `edges`, or
    /// `tags.SERVICE` for a deployment's tag.
    pub field: Option<String>,
    pub code: ProblemCodeGql,
    pub message: String,
}

impl From<&nullops_domain::pipeline::Problem> for PipelineProblemGql {
    fn from(p: &nullops_domain::pipeline::Problem) -> Self {
        PipelineProblemGql { node: p.node.clone(), field: p.field.clone(), code: p.code.into(), message: p.message.clone() }
    }
}

impl PipelineProblemGql {
    /// As an error extension.
    pub fn to_value(&self) -> async_graphql::Value {
        async_graphql::to_value(self).unwrap_or_default()
    }
}

/// Whether a deployment would be admitted now.
#[derive(SimpleObject)]
#[graphql(name = "DryRunAdmission")]
pub struct DryRunAdmissionGql {
    pub fits: bool,
    /// The node (`host:port`) it would be placed on.
    pub node: Option<String>,
    /// Where it fits, or how much more room it needs than any node has free.
    pub message: String,
}

/// An image a deployment would run, as its registry knows it now.
#[derive(SimpleObject)]
#[graphql(name = "DryRunImage")]
pub struct DryRunImageGql {
    /// The pipeline node that runs it.
    pub node: String,
    /// `registry/repository:tag` as the node would pull it.
    pub image: String,
    /// Its digest, when the registry reported one.
    pub digest: Option<String>,
    /// Whether the registry has it.
    pub found: bool,
}

/// What a dry run found: nothing was deployed or saved.
#[derive(SimpleObject)]
#[graphql(name = "DryRun")]
pub struct DryRunGql {
    /// No problem and the deployment fits on a node now.
    pub ok: bool,
    pub problems: Vec<PipelineProblemGql>,
    /// The steps that start together, in order (each inner list is one parallel stage).
    pub order: Vec<Vec<String>>,
    pub images: Vec<DryRunImageGql>,
    pub admission: DryRunAdmissionGql,
    /// The saved version checked; none for a draft.
    pub version: Option<i32>,
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "PipelineChangeKind")]
pub enum ChangeKindGql {
    Added,
    Removed,
    Changed,
}

#[derive(SimpleObject)]
#[graphql(name = "PipelineChange")]
pub struct PipelineChangeGql {
    pub kind: ChangeKindGql,
    /// `node ID` or `edge FROM -> TO`.
    pub subject: String,
    pub detail: String,
}

#[derive(SimpleObject)]
#[graphql(name = "Secret")]
pub struct SecretGql {
    /// The value is never returned.
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl From<SecretRow> for SecretGql {
    fn from(s: SecretRow) -> Self {
        SecretGql { name: s.name, created_at: time(s.created_at), updated_at: time(s.updated_at), updated_by: s.updated_by }
    }
}

#[async_graphql::ComplexObject]
impl ServiceGql {
    /// What keeps it from being deleted (admins): the projects whose latest pipeline starts it,
    /// and the repository links that deploy it.
    async fn used_by(&self, ctx: &async_graphql::Context<'_>) -> ApiResult<Vec<CatalogUseGql>> {
        crate::context::request(ctx).admin()?;
        Ok(super::uses_of(crate::context::app(ctx), &self.name, false).await?.into_iter().map(Into::into).collect())
    }
}

#[async_graphql::ComplexObject]
impl PluginGql {
    /// What keeps it from being deleted (admins): the projects whose latest pipeline runs it.
    async fn used_by(&self, ctx: &async_graphql::Context<'_>) -> ApiResult<Vec<CatalogUseGql>> {
        crate::context::request(ctx).admin()?;
        Ok(super::uses_of(crate::context::app(ctx), &self.name, true).await?.into_iter().map(Into::into).collect())
    }
}
