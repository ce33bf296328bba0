//! Capacity events (stream `capacity-<node id>`): what the control plane has promised of a
//! node's CPU and memory. One stream per node, so two reservations racing for the same node are
//! serialised by its version: a node is never promised more than it has.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityEvent {
    Reserved(CapacityReserved),
    Released(CapacityReleased),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReserved {
    pub deployment_id: Uuid,
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReleased {
    pub deployment_id: Uuid,
}
