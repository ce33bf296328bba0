//! postcard encoding of events, keyed by event type and schema version.
//!
//! The event type names and versions below are stored in the log: never rename one. A change to an
//! event's shape adds a schema version, freezes the old struct in [`frozen`] and upcasts it here.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::capacity::*;
use crate::catalog::*;
use crate::deployment::*;
use crate::deployment_names::*;
use crate::identity::*;
use crate::node::*;
use crate::preview::*;
use crate::DomainEvent;

/// A stored payload that could not be decoded. Names where it lives so an operator can find it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("event {stream_id}@{stream_version} ({event_type} v{schema_version}) does not decode: {reason}")]
pub struct DecodeError {
    pub stream_id: String,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub reason: Undecodable,
}

/// Why a payload does not decode as the type and version stored beside it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Undecodable {
    /// Written by a newer NullOps, or by none: this build knows no such type at that version.
    #[error("this NullOps knows no event type {event_type} at version {version} (written by a newer release?)")]
    UnknownType { event_type: String, version: u16 },
    /// The bytes are not that type's shape.
    #[error("the payload is not the shape of its type ({0})")]
    Malformed(postcard::Error),
    /// The type's shape read, with bytes to spare: the stored type or version is wrong.
    #[error("{0} bytes are left over after the event: its stored type or version is wrong")]
    TrailingBytes(usize),
}

/// Type names and current schema versions, in one place.
pub mod types {
    pub const USER_REGISTERED: (&str, u16) = ("user.registered", 2);
    pub const USER_PASSWORD_CHANGED: (&str, u16) = ("user.password_changed", 1);
    pub const USER_DISABLED: (&str, u16) = ("user.disabled", 1);
    pub const USER_ENABLED: (&str, u16) = ("user.enabled", 1);
    pub const SESSION_STARTED: (&str, u16) = ("session.started", 1);
    pub const SESSION_ENDED: (&str, u16) = ("session.ended", 1);
    pub const API_TOKEN_CREATED: (&str, u16) = ("api_token.created", 1);
    pub const API_TOKEN_REVOKED: (&str, u16) = ("api_token.revoked", 1);
    pub const TEAM_CREATED: (&str, u16) = ("team.created", 1);
    pub const TEAM_RENAMED: (&str, u16) = ("team.renamed", 1);
    pub const TEAM_DELETED: (&str, u16) = ("team.deleted", 1);
    pub const TEAM_MEMBER_ADDED: (&str, u16) = ("team.member_added", 1);
    pub const TEAM_MEMBER_REMOVED: (&str, u16) = ("team.member_removed", 1);
    pub const ACCESS_GRANTED: (&str, u16) = ("access.granted", 1);
    pub const ACCESS_REVOKED: (&str, u16) = ("access.revoked", 1);
    pub const REGISTRY_ADDED: (&str, u16) = ("registry.added", 1);
    pub const REGISTRY_CHANGED: (&str, u16) = ("registry.changed", 1);
    pub const REGISTRY_REMOVED: (&str, u16) = ("registry.removed", 1);
    pub const SERVICE_CREATED: (&str, u16) = ("service.created", 1);
    pub const SERVICE_UPDATED: (&str, u16) = ("service.updated", 1);
    pub const SERVICE_REMOVED: (&str, u16) = ("service.removed", 1);
    pub const PLUGIN_CREATED: (&str, u16) = ("plugin.created", 1);
    pub const PLUGIN_UPDATED: (&str, u16) = ("plugin.updated", 1);
    pub const PLUGIN_REMOVED: (&str, u16) = ("plugin.removed", 1);
    pub const ENVIRONMENT_CREATED: (&str, u16) = ("environment.created", 1);
    pub const ENVIRONMENT_UPDATED: (&str, u16) = ("environment.updated", 1);
    pub const ENVIRONMENT_REMOVED: (&str, u16) = ("environment.removed", 1);
    pub const PROJECT_CREATED: (&str, u16) = ("project.created", 1);
    pub const PROJECT_UPDATED: (&str, u16) = ("project.updated", 1);
    pub const PROJECT_REMOVED: (&str, u16) = ("project.removed", 1);
    pub const WEBHOOK_CREATED: (&str, u16) = ("webhook.created", 1);
    pub const WEBHOOK_SECRET_ROTATED: (&str, u16) = ("webhook.secret_rotated", 1);
    pub const WEBHOOK_DELETED: (&str, u16) = ("webhook.deleted", 1);
    pub const REPOSITORY_LINKED: (&str, u16) = ("repository.linked", 1);
    pub const REPOSITORY_UNLINKED: (&str, u16) = ("repository.unlinked", 1);
    pub const PREVIEW_REQUESTED: (&str, u16) = ("preview.requested", 2);
    pub const PIPELINE_VERSION_SAVED: (&str, u16) = ("pipeline.version_saved", 2);
    pub const PIPELINE_DRY_RUN: (&str, u16) = ("pipeline.dry_run", 1);
    pub const SECRET_CREATED: (&str, u16) = ("secret.created", 1);
    pub const SECRET_UPDATED: (&str, u16) = ("secret.updated", 1);
    pub const NODE_ADDED: (&str, u16) = ("node.added", 1);
    pub const NODE_MOVED: (&str, u16) = ("node.moved", 1);
    pub const NODE_TOKEN_ROTATED: (&str, u16) = ("node.token_rotated", 1);
    pub const NODE_TOKEN_REVOKED: (&str, u16) = ("node.token_revoked", 1);
    pub const NODE_DISABLED: (&str, u16) = ("node.disabled", 1);
    pub const NODE_ENABLED: (&str, u16) = ("node.enabled", 1);
    pub const NODE_REMOVED: (&str, u16) = ("node.removed", 1);
    pub const NODE_THUMBPRINT_PINNED: (&str, u16) = ("node.thumbprint_pinned", 1);
    pub const NODE_THUMBPRINT_REJECTED: (&str, u16) = ("node.thumbprint_rejected", 1);
    pub const NODE_THUMBPRINT_APPROVED: (&str, u16) = ("node.thumbprint_approved", 1);
    pub const NODE_CONNECTED: (&str, u16) = ("node.connected", 1);
    pub const NODE_DISCONNECTED: (&str, u16) = ("node.disconnected", 1);
    pub const NODE_REFUSED: (&str, u16) = ("node.refused", 1);
    pub const CAPACITY_RESERVED: (&str, u16) = ("capacity.reserved", 1);
    pub const CAPACITY_RELEASED: (&str, u16) = ("capacity.released", 1);
    pub const DEPLOYMENT_REQUESTED: (&str, u16) = ("deployment.requested", 1);
    pub const DEPLOYMENT_NAME_CLAIMED: (&str, u16) = ("deployment.name_claimed", 1);
    pub const DEPLOYMENT_NAME_RELEASED: (&str, u16) = ("deployment.name_released", 1);
    pub const DEPLOYMENT_ENDPOINTS_CHANGED: (&str, u16) = ("deployment.endpoints_changed", 1);
    pub const DEPLOYMENT_RETRIED: (&str, u16) = ("deployment.retried", 1);
    pub const DEPLOYMENT_SCHEDULED: (&str, u16) = ("deployment.scheduled", 1);
    pub const DEPLOYMENT_RUN_STARTED: (&str, u16) = ("deployment.run_started", 1);
    pub const DEPLOYMENT_STEP_CHANGED: (&str, u16) = ("deployment.step_changed", 1);
    pub const DEPLOYMENT_HEALTH_CHANGED: (&str, u16) = ("deployment.health_changed", 1);
    pub const DEPLOYMENT_RUNNING: (&str, u16) = ("deployment.running", 1);
    pub const DEPLOYMENT_FAILED: (&str, u16) = ("deployment.failed", 1);
    pub const DEPLOYMENT_DELETION_REQUESTED: (&str, u16) = ("deployment.deletion_requested", 1);
    pub const DEPLOYMENT_REMOVED: (&str, u16) = ("deployment.removed", 1);
    pub const DEPLOYMENT_EXTENDED: (&str, u16) = ("deployment.extended", 1);
    pub const SECRET_DELETED: (&str, u16) = ("secret.deleted", 1);
    pub const DEPLOYMENT_REJECTED: (&str, u16) = ("deployment.rejected", 1);
}

/// Older shapes of events, frozen as they were stored. Never edit these.
pub mod frozen {
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// `user.registered` v1: a boolean admin flag, replaced by `Role` in v2.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct UserRegisteredV1 {
        pub user_id: Uuid,
        pub username: String,
        pub password_hash: String,
        pub admin: bool,
    }

    /// `preview.requested` v1: before the forge's `updated_at`. (`Forge` and `PreviewWish` have
    /// not changed shape since.)
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PreviewRequestedV1 {
        pub project_id: Uuid,
        pub project: String,
        pub number: u64,
        pub forge: crate::catalog::Forge,
        pub delivery: String,
        pub action: String,
        pub wish: crate::preview::PreviewWish,
        pub head_sha: String,
        pub tag: String,
        pub title: String,
        pub url: String,
        pub sender: String,
    }

    /// `pipeline.version_saved` v1: before the author's message, the editor's layout and the
    /// version it was based on. (`PipelineGraph` has not changed shape since.)
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PipelineVersionSavedV1 {
        pub project_id: Uuid,
        pub version: u32,
        pub graph: crate::catalog::PipelineGraph,
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, integers and byte vectors always serialise.
    postcard::to_allocvec(value).expect("postcard serialises plain structs")
}

/// The current schema version of every event: one line each, so encode and decode cannot drift.
macro_rules! current_events {
    ($($outer:ident($inner:path) => $ty:ident,)*) => {
        /// Encodes an event as `(type, schema version, payload)`.
        pub fn encode(event: &DomainEvent) -> (&'static str, u16, Vec<u8>) {
            use types::*;
            let ((name, version), bytes) = match event {
                $(DomainEvent::$outer($inner(e)) => ($ty, to_bytes(e)),)*
            };
            (name, version, bytes)
        }

        /// Every event type and its current schema version.
        pub fn current_types() -> Vec<(&'static str, u16)> {
            use types::*;
            vec![$($ty,)*]
        }

        fn decode_current(key: (&str, u16), bytes: &[u8]) -> Option<Result<DomainEvent, Undecodable>> {
            use types::*;
            $(if key == $ty {
                return Some(from_bytes(bytes).map(|e| DomainEvent::$outer($inner(e))));
            })*
            None
        }
    };
}

current_events! {
    User(UserEvent::Registered) => USER_REGISTERED,
    User(UserEvent::PasswordChanged) => USER_PASSWORD_CHANGED,
    User(UserEvent::Disabled) => USER_DISABLED,
    User(UserEvent::Enabled) => USER_ENABLED,
    Session(SessionEvent::Started) => SESSION_STARTED,
    Session(SessionEvent::Ended) => SESSION_ENDED,
    ApiToken(ApiTokenEvent::Created) => API_TOKEN_CREATED,
    ApiToken(ApiTokenEvent::Revoked) => API_TOKEN_REVOKED,
    Catalog(CatalogEvent::TeamCreated) => TEAM_CREATED,
    Catalog(CatalogEvent::TeamRenamed) => TEAM_RENAMED,
    Catalog(CatalogEvent::TeamDeleted) => TEAM_DELETED,
    Catalog(CatalogEvent::TeamMemberAdded) => TEAM_MEMBER_ADDED,
    Catalog(CatalogEvent::TeamMemberRemoved) => TEAM_MEMBER_REMOVED,
    Catalog(CatalogEvent::AccessGranted) => ACCESS_GRANTED,
    Catalog(CatalogEvent::AccessRevoked) => ACCESS_REVOKED,
    Catalog(CatalogEvent::RegistryAdded) => REGISTRY_ADDED,
    Catalog(CatalogEvent::RegistryChanged) => REGISTRY_CHANGED,
    Catalog(CatalogEvent::RegistryRemoved) => REGISTRY_REMOVED,
    Catalog(CatalogEvent::ServiceCreated) => SERVICE_CREATED,
    Catalog(CatalogEvent::ServiceUpdated) => SERVICE_UPDATED,
    Catalog(CatalogEvent::ServiceRemoved) => SERVICE_REMOVED,
    Catalog(CatalogEvent::PluginCreated) => PLUGIN_CREATED,
    Catalog(CatalogEvent::PluginUpdated) => PLUGIN_UPDATED,
    Catalog(CatalogEvent::PluginRemoved) => PLUGIN_REMOVED,
    Catalog(CatalogEvent::EnvironmentCreated) => ENVIRONMENT_CREATED,
    Catalog(CatalogEvent::EnvironmentUpdated) => ENVIRONMENT_UPDATED,
    Catalog(CatalogEvent::EnvironmentRemoved) => ENVIRONMENT_REMOVED,
    Catalog(CatalogEvent::ProjectCreated) => PROJECT_CREATED,
    Catalog(CatalogEvent::ProjectUpdated) => PROJECT_UPDATED,
    Catalog(CatalogEvent::ProjectRemoved) => PROJECT_REMOVED,
    Catalog(CatalogEvent::WebhookCreated) => WEBHOOK_CREATED,
    Catalog(CatalogEvent::WebhookSecretRotated) => WEBHOOK_SECRET_ROTATED,
    Catalog(CatalogEvent::WebhookDeleted) => WEBHOOK_DELETED,
    Catalog(CatalogEvent::RepositoryLinked) => REPOSITORY_LINKED,
    Catalog(CatalogEvent::RepositoryUnlinked) => REPOSITORY_UNLINKED,
    Preview(PreviewEvent::Requested) => PREVIEW_REQUESTED,
    Pipeline(PipelineEvent::VersionSaved) => PIPELINE_VERSION_SAVED,
    Pipeline(PipelineEvent::DryRun) => PIPELINE_DRY_RUN,
    Secret(SecretEvent::Created) => SECRET_CREATED,
    Secret(SecretEvent::Updated) => SECRET_UPDATED,
    Secret(SecretEvent::Deleted) => SECRET_DELETED,
    Node(NodeEvent::Added) => NODE_ADDED,
    Node(NodeEvent::Moved) => NODE_MOVED,
    Node(NodeEvent::TokenRotated) => NODE_TOKEN_ROTATED,
    Node(NodeEvent::TokenRevoked) => NODE_TOKEN_REVOKED,
    Node(NodeEvent::Disabled) => NODE_DISABLED,
    Node(NodeEvent::Enabled) => NODE_ENABLED,
    Node(NodeEvent::Removed) => NODE_REMOVED,
    Node(NodeEvent::ThumbprintPinned) => NODE_THUMBPRINT_PINNED,
    Node(NodeEvent::ThumbprintRejected) => NODE_THUMBPRINT_REJECTED,
    Node(NodeEvent::ThumbprintApproved) => NODE_THUMBPRINT_APPROVED,
    Node(NodeEvent::Connected) => NODE_CONNECTED,
    Node(NodeEvent::Disconnected) => NODE_DISCONNECTED,
    Node(NodeEvent::Refused) => NODE_REFUSED,
    DeploymentName(DeploymentNameEvent::Claimed) => DEPLOYMENT_NAME_CLAIMED,
    DeploymentName(DeploymentNameEvent::Released) => DEPLOYMENT_NAME_RELEASED,
    Capacity(CapacityEvent::Reserved) => CAPACITY_RESERVED,
    Capacity(CapacityEvent::Released) => CAPACITY_RELEASED,
    Deployment(DeploymentEvent::Requested) => DEPLOYMENT_REQUESTED,
    Deployment(DeploymentEvent::Retried) => DEPLOYMENT_RETRIED,
    Deployment(DeploymentEvent::Scheduled) => DEPLOYMENT_SCHEDULED,
    Deployment(DeploymentEvent::RunStarted) => DEPLOYMENT_RUN_STARTED,
    Deployment(DeploymentEvent::StepChanged) => DEPLOYMENT_STEP_CHANGED,
    Deployment(DeploymentEvent::HealthChanged) => DEPLOYMENT_HEALTH_CHANGED,
    Deployment(DeploymentEvent::Running) => DEPLOYMENT_RUNNING,
    Deployment(DeploymentEvent::EndpointsChanged) => DEPLOYMENT_ENDPOINTS_CHANGED,
    Deployment(DeploymentEvent::Failed) => DEPLOYMENT_FAILED,
    Deployment(DeploymentEvent::DeletionRequested) => DEPLOYMENT_DELETION_REQUESTED,
    Deployment(DeploymentEvent::Removed) => DEPLOYMENT_REMOVED,
    Deployment(DeploymentEvent::Extended) => DEPLOYMENT_EXTENDED,
    Deployment(DeploymentEvent::Rejected) => DEPLOYMENT_REJECTED,
}

/// Decodes a whole payload: trailing bytes mean the type or version is wrong, so they are an error.
fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Undecodable> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(Undecodable::Malformed)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Undecodable::TrailingBytes(rest.len()))
    }
}

/// Decodes a payload of any known schema version into the current event type.
pub fn decode(event_type: &str, version: u16, bytes: &[u8]) -> Result<DomainEvent, Undecodable> {
    if let Some(current) = decode_current((event_type, version), bytes) {
        return current;
    }
    if (event_type, version) == (types::USER_REGISTERED.0, 1) {
        let v1: frozen::UserRegisteredV1 = from_bytes(bytes)?;
        return Ok(UserEvent::Registered(UserRegistered {
            user_id: v1.user_id,
            username: v1.username,
            password_hash: v1.password_hash,
            role: if v1.admin { Role::Admin } else { Role::User },
        })
        .into());
    }
    if (event_type, version) == (types::PIPELINE_VERSION_SAVED.0, 1) {
        let v1: frozen::PipelineVersionSavedV1 = from_bytes(bytes)?;
        return Ok(PipelineEvent::VersionSaved(PipelineVersionSaved {
            project_id: v1.project_id,
            version: v1.version,
            graph: v1.graph,
            message: String::new(),
            layout: Vec::new(),
            based_on: None,
        })
        .into());
    }
    if (event_type, version) == (types::PREVIEW_REQUESTED.0, 1) {
        let v1: frozen::PreviewRequestedV1 = from_bytes(bytes)?;
        return Ok(crate::preview::PreviewEvent::Requested(crate::preview::PreviewRequested {
            project_id: v1.project_id,
            project: v1.project,
            number: v1.number,
            forge: v1.forge,
            delivery: v1.delivery,
            action: v1.action,
            wish: v1.wish,
            head_sha: v1.head_sha,
            tag: v1.tag,
            title: v1.title,
            url: v1.url,
            sender: v1.sender,
            updated_at: 0,
        })
        .into());
    }
    Err(Undecodable::UnknownType { event_type: event_type.to_owned(), version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn registered() -> UserRegistered {
        UserRegistered { user_id: Uuid::nil(), username: "alice".into(), password_hash: "$argon2id$...".into(), role: Role::User }
    }

    #[test]
    fn every_event_round_trips_through_its_type_and_version() {
        let events: Vec<DomainEvent> = vec![
            UserEvent::Registered(registered()).into(),
            UserEvent::PasswordChanged(PasswordChanged { password_hash: "h".into(), reset_by_admin: true }).into(),
            UserEvent::Disabled(UserDisabled {}).into(),
            UserEvent::Enabled(UserEnabled {}).into(),
            SessionEvent::Started(SessionStarted {
                session_id: Uuid::nil(),
                username: "alice".into(),
                token_hash: vec![1; 32],
                expires_at: crate::Timestamp(5),
            })
            .into(),
            SessionEvent::Ended(SessionEnded {}).into(),
            ApiTokenEvent::Created(ApiTokenCreated {
                token_id: Uuid::nil(),
                username: "alice".into(),
                name: "ci".into(),
                token_hash: vec![2; 32],
                expires_at: None,
            })
            .into(),
            ApiTokenEvent::Revoked(ApiTokenRevoked {}).into(),
            CatalogEvent::AccessGranted(AccessGranted { team_id: Uuid::nil(), target: AccessTarget::Environment("staging".into()), access: Access::ReadOnly })
                .into(),
            CatalogEvent::ServiceUpdated(ServiceDefinition {
                name: "api".into(),
                registry: "local".into(),
                image: "shop/api".into(),
                tag: TagMode::Selectable(Some("v*".into())),
                port: 8080,
                health_check: Some(HealthCheck { probe: Probe::Http("/healthz".into()), interval_secs: 5, timeout_secs: 2, retries: 3 }),
                env: vec![EnvVar { name: "DB".into(), value: "${{ secrets.DB }}".into() }],
            })
            .into(),
            SecretEvent::Deleted(SecretDeleted { name: "DB".into(), retired_key: Uuid::nil() }).into(),
            NodeEvent::Added(NodeAdded {
                node_id: Uuid::nil(),
                environment: "staging".into(),
                host: "10.0.0.7".into(),
                port: 5000,
                token_hash: Sealed { key_id: Uuid::nil(), nonce: vec![0; 12], ciphertext: vec![1; 48] },
            })
            .into(),
            NodeEvent::Refused(NodeRefused { refusal: Refusal::Incompatible { agent_protocol: 2 } }).into(),
            NodeEvent::ThumbprintRejected(Thumbprint { thumbprint: "ab".repeat(32) }).into(),
            CapacityEvent::Reserved(CapacityReserved { deployment_id: Uuid::nil(), cpu_millis: 500, memory_mib: 256 }).into(),
            DeploymentNameEvent::Claimed(NameClaim { name: "pr-1".into(), deployment_id: Uuid::nil() }).into(),
            DeploymentEvent::Requested(DeploymentRequested {
                deployment_id: Uuid::nil(),
                project_id: Uuid::nil(),
                project: "shop".into(),
                environment: "staging".into(),
                name: "pr-1".into(),
                versions: vec![ChosenVersion { service: "api".into(), image: "shop/api".into(), tag: "v1".into() }],
                pipeline_version: 2,
                plan: DeploymentPlan {
                    steps: vec![
                        PlannedStep {
                            id: "api".into(),
                            action: PlannedAction::Service(PlannedService {
                                service: "api".into(),
                                image: "127.0.0.1:5050/shop/api:v1".into(),
                                port: 8080,
                                env: vec![EnvVar { name: "DB".into(), value: "${{ nodes.db.outputs.url }}".into() }],
                                health_check: None,
                            }),
                        },
                        PlannedStep {
                            id: "db".into(),
                            action: PlannedAction::Plugin(PlannedPlugin {
                                plugin: "create-db".into(),
                                image: "127.0.0.1:5050/nullops/create-db@sha256:ab".into(),
                                parameters: "{}".into(),
                                cpu_millis: 100,
                                memory_mib: 64,
                                timeout_secs: 300,
                                joins_deployment_network: true,
                            }),
                        },
                    ],
                    edges: vec![PipelineEdge { from: "db".into(), to: "api".into() }],
                },
                cpu_millis: 500,
                memory_mib: 256,
                lifetime_secs: 3600,
                expires_at: 5,
            })
            .into(),
            DeploymentEvent::StepChanged(StepChanged { step: "db".into(), state: StepState::RolledBack, detail: "removed".into() }).into(),
            DeploymentEvent::Failed(DeploymentFailed { step: None, reason: "oom".into(), exit_code: Some(137), oom_killed: true }).into(),
            DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::Expired }).into(),
            DeploymentEvent::EndpointsChanged(EndpointsChanged { endpoints: vec![Endpoint { service: "api".into(), host_port: 32768 }] }).into(),
        ];
        for event in events {
            let (name, version, bytes) = encode(&event);
            assert_eq!(decode(name, version, &bytes).unwrap(), event, "{name}");
        }
    }

    #[test]
    fn version_1_registration_is_upcast_to_a_role() {
        let v1 = frozen::UserRegisteredV1 { user_id: Uuid::nil(), username: "root".into(), password_hash: "h".into(), admin: true };
        let bytes = postcard::to_allocvec(&v1).unwrap();
        let DomainEvent::User(UserEvent::Registered(e)) = decode("user.registered", 1, &bytes).unwrap() else { panic!("wrong event") };
        assert_eq!(e.role, Role::Admin);
        assert_eq!(e.username, "root");
    }

    #[test]
    fn garbage_unknown_types_and_trailing_bytes_are_errors_not_panics() {
        assert!(matches!(decode("user.registered", 2, &[0xff, 0xff, 0xff]), Err(Undecodable::Malformed(_))));
        let unknown = |event_type: &str, version| Undecodable::UnknownType { event_type: event_type.into(), version };
        assert_eq!(decode("user.registered", 9, &[]), Err(unknown("user.registered", 9)));
        assert_eq!(decode("no.such", 1, &[]), Err(unknown("no.such", 1)));
        let (name, version, mut bytes) = encode(&UserEvent::Disabled(UserDisabled {}).into());
        bytes.push(7);
        assert_eq!(decode(name, version, &bytes), Err(Undecodable::TrailingBytes(1)));
    }

    #[test]
    fn a_stored_event_that_does_not_decode_names_stream_and_version() {
        let stored = crate::StoredEvent {
            event_id: crate::EventId::new(),
            stream_id: crate::StreamId::new("user", "bob"),
            stream_version: 7,
            position: crate::LogPosition { commit: 1, seq: 1 },
            event_type: "user.registered".into(),
            schema_version: 2,
            payload: vec![0xff],
            occurred_at: crate::Timestamp(0),
            metadata: crate::EventMetadata::system(),
        };
        let err = stored.decode().unwrap_err().to_string();
        assert!(err.contains("user-bob@7"), "{err}");
    }
}
