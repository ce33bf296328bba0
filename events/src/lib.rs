//! The vocabulary of NullOps: every fact the platform records is an event defined here.
//!
//! An event is stored as `(event_type, schema_version, postcard payload)`. postcard is not
//! self-describing, so the type and version beside the payload are what make old bytes readable:
//! [`codec`] decodes a payload of an older schema version through its frozen type and upcasts it.
//! Each event struct is encoded on its own (never the enum that groups them), so the order of enum
//! variants never affects stored bytes.

pub mod capacity;
pub mod catalog;
pub mod codec;
pub mod deployment;
pub mod deployment_names;
pub mod envelope;
pub mod expressions;
pub mod identity;
#[macro_use]
pub mod named;
pub mod node;
pub mod phase;
pub mod preview;
pub mod thumbprint;
pub mod urls;

pub use codec::DecodeError;
pub use envelope::{Actor, CorrelationId, EventId, EventMetadata, LogPosition, NewEvent, RecordedEvent, StoredEvent, StreamId, Timestamp};

/// Every event of every aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    User(identity::UserEvent),
    Session(identity::SessionEvent),
    ApiToken(identity::ApiTokenEvent),
    Catalog(catalog::CatalogEvent),
    Pipeline(catalog::PipelineEvent),
    Secret(catalog::SecretEvent),
    Node(node::NodeEvent),
    Capacity(capacity::CapacityEvent),
    DeploymentName(deployment_names::DeploymentNameEvent),
    Deployment(deployment::DeploymentEvent),
    Preview(preview::PreviewEvent),
}

impl From<identity::UserEvent> for DomainEvent {
    fn from(e: identity::UserEvent) -> Self {
        DomainEvent::User(e)
    }
}
impl From<identity::SessionEvent> for DomainEvent {
    fn from(e: identity::SessionEvent) -> Self {
        DomainEvent::Session(e)
    }
}
impl From<identity::ApiTokenEvent> for DomainEvent {
    fn from(e: identity::ApiTokenEvent) -> Self {
        DomainEvent::ApiToken(e)
    }
}
impl From<preview::PreviewEvent> for DomainEvent {
    fn from(e: preview::PreviewEvent) -> Self {
        DomainEvent::Preview(e)
    }
}
impl From<catalog::CatalogEvent> for DomainEvent {
    fn from(e: catalog::CatalogEvent) -> Self {
        DomainEvent::Catalog(e)
    }
}
impl From<catalog::PipelineEvent> for DomainEvent {
    fn from(e: catalog::PipelineEvent) -> Self {
        DomainEvent::Pipeline(e)
    }
}
impl From<catalog::SecretEvent> for DomainEvent {
    fn from(e: catalog::SecretEvent) -> Self {
        DomainEvent::Secret(e)
    }
}
impl From<node::NodeEvent> for DomainEvent {
    fn from(e: node::NodeEvent) -> Self {
        DomainEvent::Node(e)
    }
}
impl From<deployment_names::DeploymentNameEvent> for DomainEvent {
    fn from(e: deployment_names::DeploymentNameEvent) -> Self {
        DomainEvent::DeploymentName(e)
    }
}

impl From<capacity::CapacityEvent> for DomainEvent {
    fn from(e: capacity::CapacityEvent) -> Self {
        DomainEvent::Capacity(e)
    }
}
impl From<deployment::DeploymentEvent> for DomainEvent {
    fn from(e: deployment::DeploymentEvent) -> Self {
        DomainEvent::Deployment(e)
    }
}
