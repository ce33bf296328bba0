//! The connector: keeps a connection to every enabled, trusted node's agent.
//!
//! `supervisor.rs` decides which nodes to dial (from the event log, woken by the bus) and runs
//! one `link.rs` task per node; a link dials (`dial.rs`, with the certificate pin of `pin.rs`),
//! records every transition of the node as an event, sends the node's full desired state on each
//! connect, watches heartbeats, and writes what the agent reports. `backoff.rs` paces redials.
//! Only one connector is active per installation (lease `connector`).

mod backoff;
pub mod desired;
pub mod dial;
mod link;
pub mod pin;
mod reports;
mod supervisor;
mod words;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nullops_bus::Bus;
use nullops_keyring::Keyring;
use nullops_projections::ReadModelDb;
use nullops_store::EventStore;
use nullops_wire::message::{DesiredDeployment, RegistryAuth};
use uuid::Uuid;

pub use backoff::Backoff;
pub use link::PING_EVERY;
pub use supervisor::run;

/// What a node should do: run these deployments, and remove everything of those being deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDesired {
    pub run: Vec<DesiredDeployment>,
    /// Node ids (see [`desired::wire_id`]) of deployments being deleted from the node.
    pub removing: HashSet<String>,
    /// Deployments the node cannot be given (`nullops_wire::message::check_deployment`): left
    /// out of `run`, to be failed with the reason.
    pub refused: Vec<(Uuid, nullops_wire::message::Unfit)>,
    /// The images the node should hold before a deployment needs them.
    pub prefetch: Prefetch,
}

impl NodeDesired {
    /// Whether `other` asks the same of the node's deployments (the prefetch aside).
    pub fn same_deployments(&self, other: &NodeDesired) -> bool {
        self.run == other.run && self.removing == other.removing && self.refused == other.refused
    }
}

/// The images of the latest pipelines of the node's environment (see
/// `nullops_domain::plan::images_in_use`), and the credentials of their registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub images: Vec<String>,
    pub auth: Vec<RegistryAuth>,
}

/// Where a node's desired state comes from: the deployments assigned to it.
pub trait DesiredStates: Send + Sync + 'static {
    fn for_node(&self, node_id: Uuid) -> Pin<Box<dyn Future<Output = Result<NodeDesired, desired::DesiredError>> + Send + '_>>;
}

/// What the connector works with.
#[derive(Clone)]
pub struct Connector {
    pub store: Arc<dyn EventStore>,
    pub bus: Arc<dyn Bus>,
    pub read_models: ReadModelDb,
    pub keyring: Arc<Keyring>,
    pub desired: Arc<dyn DesiredStates>,
}
