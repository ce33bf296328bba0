//! Deployment name events (stream `deploymentnames-<environment>`): which live deployment holds
//! each name of an environment. One stream per environment, so two requests racing for one name
//! are serialised by its version: a name is never held twice.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentNameEvent {
    Claimed(NameClaim),
    Released(NameClaim),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    pub name: String,
    pub deployment_id: Uuid,
}
