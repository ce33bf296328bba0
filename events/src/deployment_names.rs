//! Deployment name events (stream `deploymentname-<environment>.<name>`): which live deployment
//! holds a name of an environment. Two requests racing for one name are serialised by its
//! stream's version: a name is never held twice.

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
