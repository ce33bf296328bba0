//! Deployment events (stream `deployment-<deployment id>`): a deployment's request, its node,
//! the run of its pipeline as the agent reports it, its end, and its lifetime.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{EnvVar, HealthCheck, PipelineEdge};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentEvent {
    Requested(DeploymentRequested),
    Retried(DeploymentRetried),
    Scheduled(DeploymentScheduled),
    RunStarted(RunStarted),
    StepChanged(StepChanged),
    HealthChanged(HealthChanged),
    Running(DeploymentRunning),
    EndpointsChanged(EndpointsChanged),
    Failed(DeploymentFailed),
    DeletionRequested(DeletionRequested),
    Removed(DeploymentRemoved),
    Extended(DeploymentExtended),
    Rejected(DeploymentRejected),
}

/// A service and the version picked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenVersion {
    pub service: String,
    pub image: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRequested {
    pub deployment_id: Uuid,
    pub project_id: Uuid,
    pub project: String,
    pub environment: String,
    /// A DNS label, unique in the environment: the `deployment` part of its URLs.
    pub name: String,
    pub versions: Vec<ChosenVersion>,
    pub pipeline_version: u32,
    pub plan: DeploymentPlan,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Inactivity after which the reaper deletes it.
    pub lifetime_secs: u64,
    /// Microseconds since the epoch; the lifetime counts from here until extended.
    pub expires_at: i64,
}

/// What a deployment runs: its pipeline version resolved against the catalog when it was
/// requested (images with their registry host and tag), so that later catalog changes do not
/// change a deployment. Secrets stay `${{ secrets.NAME }}` references, filled on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentPlan {
    pub steps: Vec<PlannedStep>,
    pub edges: Vec<PipelineEdge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The pipeline node's id.
    pub id: String,
    pub action: PlannedAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannedAction {
    Service(PlannedService),
    Plugin(PlannedPlugin),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedService {
    pub service: String,
    /// `host[:port]/repository:tag`, or `repository:tag` on Docker Hub.
    pub image: String,
    /// The container port the ingress reaches, published on the node.
    pub port: u16,
    pub env: Vec<EnvVar>,
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPlugin {
    pub plugin: String,
    /// As pinned by the pipeline version: by digest when the registry reported one.
    pub image: String,
    /// JSON text, checked against the plugin's schema when the pipeline was saved.
    pub parameters: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub timeout_secs: u32,
    pub joins_deployment_network: bool,
}

/// A failed deployment runs again, under the same name, with the latest pipeline version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRetried {
    pub pipeline_version: u32,
    pub plan: DeploymentPlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentScheduled {
    pub node_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {}

crate::named_enum! {
    /// A step's progress (its name: the read model's).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum StepState {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
    }
}

/// A pipeline node's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepChanged {
    pub step: String,
    pub state: StepState,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChanged {
    pub service: String,
    pub healthy: bool,
    pub detail: String,
}

/// Every step succeeded and every service is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRunning {
    /// Where each service with a port is published on its node.
    pub endpoints: Vec<Endpoint>,
}

/// A running deployment's services are published elsewhere now (a container was recreated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsChanged {
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub service: String,
    pub host_port: u16,
}

/// The run failed and was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentFailed {
    /// The pipeline node that failed, when one did.
    pub step: Option<String>,
    pub reason: String,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionReason {
    /// A user deleted it (or cancelled it while it was being created).
    User,
    /// Its lifetime ran out.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRequested {
    pub reason: DeletionReason,
}

/// The agent removed everything the deployment had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRemoved {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentExtended {
    pub expires_at: i64,
}

crate::named_enum! {
    /// Why a request could not be placed at all. The request ends there (nothing ran, no name
    /// or capacity is held); a retry that cannot be placed is a failure instead. (Its name: the
    /// read model's.)
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RejectionCode {
        /// Another live deployment of the environment holds the name.
        NameTaken = "name_taken",
        /// No online node of the environment has room for it.
        NoRoom = "no_room",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRejected {
    pub code: RejectionCode,
    /// For people: what was asked and what stood in the way.
    pub reason: String,
}
