//! Deployment events (stream `deployment-<deployment id>`): a deployment's request, its node,
//! the run of its pipeline as the agent reports it, its end, and its lifetime.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentEvent {
    Requested(DeploymentRequested),
    Scheduled(DeploymentScheduled),
    RunStarted(RunStarted),
    StepChanged(StepChanged),
    HealthChanged(HealthChanged),
    Running(DeploymentRunning),
    Failed(DeploymentFailed),
    DeletionRequested(DeletionRequested),
    Removed(DeploymentRemoved),
    Extended(DeploymentExtended),
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
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Inactivity after which the reaper deletes it.
    pub lifetime_secs: u64,
    /// Microseconds since the epoch; the lifetime counts from here until extended.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentScheduled {
    pub node_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Running,
    Succeeded,
    Failed,
    RolledBack,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRunning {}

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
