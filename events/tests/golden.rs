//! Stored event shapes are frozen: a fixed sample of every event type, in its current schema
//! version, encodes to exactly the bytes recorded in `golden/events.hex`, and those bytes decode
//! back to the sample. Changing an event's struct fails here: that needs a new schema version,
//! with the old shape frozen in `codec::frozen` and upcast, never an edit of what is stored.
//!
//! A new event type has no line yet: `NULLOPS_WRITE_GOLDEN=1 cargo test -p nullops-events --test
//! golden` adds the lines that are missing (it never changes a line that exists).

use std::collections::BTreeMap;
use std::path::PathBuf;

use nullops_events::capacity::*;
use nullops_events::catalog::*;
use nullops_events::codec::{current_types, decode, encode};
use nullops_events::deployment::*;
use nullops_events::deployment_names::*;
use nullops_events::identity::*;
use nullops_events::node::*;
use nullops_events::preview::*;
use nullops_events::{DomainEvent, Timestamp};
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn sealed() -> Sealed {
    Sealed { key_id: id(0xa1), nonce: vec![7; 12], ciphertext: vec![9; 24] }
}

fn service() -> ServiceDefinition {
    ServiceDefinition {
        name: "api".into(),
        registry: "local".into(),
        image: "shop/api".into(),
        tag: TagMode::Selectable(Some("v*".into())),
        port: 8080,
        health_check: Some(HealthCheck { probe: Probe::Http("/healthz".into()), interval_secs: 5, timeout_secs: 2, retries: 3 }),
        env: vec![EnvVar { name: "DB".into(), value: "${{ secrets.DB }}".into() }],
    }
}

fn plugin() -> PluginDefinition {
    PluginDefinition {
        name: "create-db".into(),
        registry: "local".into(),
        repository: "plugins/create-db".into(),
        tag: "1.0".into(),
        description: "Creates a database".into(),
        parameters_schema: "{\"type\":\"object\"}".into(),
        cpu_millis: 500,
        memory_mib: 128,
        timeout_secs: 300,
        joins_deployment_network: true,
    }
}

fn project() -> ProjectDefinition {
    ProjectDefinition {
        project_id: id(3),
        name: "shop".into(),
        environments: vec!["staging".into()],
        cpu_millis: 500,
        memory_mib: 256,
        cleanup_after_secs: Some(3600),
    }
}

fn environment() -> EnvironmentDefinition {
    EnvironmentDefinition { name: "staging".into(), base_domain: "qa.example.com".into(), cleanup_after_secs: 86_400 }
}

fn registry() -> RegistryDefinition {
    RegistryDefinition { name: "local".into(), url: "http://127.0.0.1:5050".into(), credentials: Some(sealed()) }
}

fn plan() -> DeploymentPlan {
    DeploymentPlan {
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
                    image: "127.0.0.1:5050/plugins/create-db@sha256:ab".into(),
                    parameters: "{}".into(),
                    cpu_millis: 100,
                    memory_mib: 64,
                    timeout_secs: 300,
                    joins_deployment_network: true,
                }),
            },
        ],
        edges: vec![PipelineEdge { from: "db".into(), to: "api".into() }],
    }
}

/// One sample of every event type.
fn samples() -> Vec<DomainEvent> {
    let member = TeamMember { team_id: id(2), username: "bob".into() };
    let thumbprint = Thumbprint { thumbprint: "ab".repeat(32) };
    let set = SecretSet { name: "DB_PASSWORD".into(), value: sealed(), retired_key: Some(id(0xa0)) };
    vec![
        UserEvent::Registered(UserRegistered { user_id: id(1), username: "alice".into(), password_hash: "$argon2id$v=19$x".into(), role: Role::Admin }).into(),
        UserEvent::PasswordChanged(PasswordChanged { password_hash: "$argon2id$v=19$y".into(), reset_by_admin: true }).into(),
        UserEvent::Disabled(UserDisabled {}).into(),
        UserEvent::Enabled(UserEnabled {}).into(),
        SessionEvent::Started(SessionStarted {
            session_id: id(4),
            username: "alice".into(),
            token_hash: vec![1; 32],
            expires_at: Timestamp(1_800_000_000_000_000),
        })
        .into(),
        SessionEvent::Ended(SessionEnded {}).into(),
        ApiTokenEvent::Created(ApiTokenCreated {
            token_id: id(5),
            username: "alice".into(),
            name: "ci".into(),
            token_hash: vec![2; 32],
            expires_at: Some(Timestamp(5)),
        })
        .into(),
        ApiTokenEvent::Revoked(ApiTokenRevoked {}).into(),
        CatalogEvent::TeamCreated(TeamCreated { team_id: id(2), name: "qa".into() }).into(),
        CatalogEvent::TeamRenamed(TeamRenamed { team_id: id(2), name: "testers".into() }).into(),
        CatalogEvent::TeamDeleted(TeamDeleted { team_id: id(2) }).into(),
        CatalogEvent::TeamMemberAdded(member.clone()).into(),
        CatalogEvent::TeamMemberRemoved(member).into(),
        CatalogEvent::AccessGranted(AccessGranted { team_id: id(2), target: AccessTarget::Project("shop".into()), access: Access::Full }).into(),
        CatalogEvent::AccessRevoked(AccessRevoked { team_id: id(2), target: AccessTarget::Environment("staging".into()) }).into(),
        CatalogEvent::RegistryAdded(registry()).into(),
        CatalogEvent::RegistryChanged(RegistryChanged { definition: registry(), retired_key: Some(id(0xa0)) }).into(),
        CatalogEvent::RegistryRemoved(RegistryRemoved { name: "local".into(), retired_key: None }).into(),
        CatalogEvent::ServiceCreated(service()).into(),
        CatalogEvent::ServiceUpdated(ServiceDefinition { tag: TagMode::Pinned("v2".into()), health_check: None, ..service() }).into(),
        CatalogEvent::ServiceRemoved(Removed { name: "api".into() }).into(),
        CatalogEvent::PluginCreated(plugin()).into(),
        CatalogEvent::PluginUpdated(PluginDefinition { timeout_secs: 60, ..plugin() }).into(),
        CatalogEvent::PluginRemoved(Removed { name: "create-db".into() }).into(),
        CatalogEvent::EnvironmentCreated(environment()).into(),
        CatalogEvent::EnvironmentUpdated(EnvironmentDefinition { cleanup_after_secs: 600, ..environment() }).into(),
        CatalogEvent::EnvironmentRemoved(Removed { name: "staging".into() }).into(),
        CatalogEvent::ProjectCreated(project()).into(),
        CatalogEvent::ProjectUpdated(ProjectDefinition { cleanup_after_secs: None, ..project() }).into(),
        CatalogEvent::ProjectRemoved(Removed { name: "shop".into() }).into(),
        CatalogEvent::WebhookCreated(WebhookDefinition {
            webhook_id: id(0xb0),
            url: "https://ci.example.com/hooks/nullops".into(),
            topics: vec![WebhookTopic::DeploymentRunning, WebhookTopic::DeploymentFailed],
            project: Some("shop".into()),
            environment: None,
            secret: sealed(),
        })
        .into(),
        CatalogEvent::WebhookSecretRotated(WebhookSecretRotated { webhook_id: id(0xb0), secret: sealed(), retired_key: id(0xa2) }).into(),
        CatalogEvent::WebhookDeleted(WebhookDeleted { webhook_id: id(0xb0), retired_key: id(0xa3) }).into(),
        CatalogEvent::RepositoryLinked(RepositoryLinked {
            link: RepositoryLink {
                project: "shop".into(),
                forge: Forge::GitHub,
                repository: "acme/shop".into(),
                api_url: "https://api.github.com".into(),
                environment: "staging".into(),
                service: "api".into(),
                tag_rule: PreviewTagRule::PrNumber,
                credentials: sealed(),
            },
            retired_key: Some(id(0xa4)),
        })
        .into(),
        CatalogEvent::RepositoryUnlinked(RepositoryUnlinked { project: "shop".into(), retired_key: id(0xa5) }).into(),
        PreviewEvent::Requested(PreviewRequested {
            project_id: id(3),
            project: "shop".into(),
            number: 7,
            forge: Forge::GitLab,
            delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            action: "opened".into(),
            wish: PreviewWish::Deploy { deployment_id: id(0xc0) },
            head_sha: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
            tag: "pr-7".into(),
            title: "Faster checkout".into(),
            url: "https://github.com/acme/shop/pull/7".into(),
            sender: "octocat".into(),
            updated_at: 1_764_407_692_000_000,
        })
        .into(),
        PipelineEvent::VersionSaved(PipelineVersionSaved {
            project_id: id(3),
            version: 2,
            graph: PipelineGraph {
                nodes: vec![
                    PipelineNode { id: "api".into(), action: PipelineAction::StartService { service: "api".into() } },
                    PipelineNode {
                        id: "db".into(),
                        action: PipelineAction::RunPlugin {
                            plugin: "create-db".into(),
                            image: PinnedImage {
                                registry: "local".into(),
                                repository: "plugins/create-db".into(),
                                tag: "1.0".into(),
                                digest: Some("sha256:ab".into()),
                            },
                            parameters: "{\"name\":\"shop\"}".into(),
                        },
                    },
                ],
                edges: vec![PipelineEdge { from: "db".into(), to: "api".into() }],
            },
            message: "seed the shop database first".into(),
            layout: vec![NodePlacement { node: "api".into(), x: 240, y: -16 }, NodePlacement { node: "db".into(), x: 0, y: 0 }],
            based_on: Some(1),
        })
        .into(),
        PipelineEvent::DryRun(PipelineDryRun { environment: "staging".into(), version: None, problems: 2, fits_on: Some(id(6)) }).into(),
        SecretEvent::Created(SecretSet { retired_key: None, ..set.clone() }).into(),
        SecretEvent::Updated(set).into(),
        SecretEvent::Deleted(SecretDeleted { name: "DB_PASSWORD".into(), retired_key: id(0xa1) }).into(),
        NodeEvent::Added(NodeAdded { node_id: id(6), environment: "staging".into(), host: "10.0.0.7".into(), port: 5000, token_hash: sealed() }).into(),
        NodeEvent::Moved(NodeMoved { host: "10.0.0.8".into(), port: 5001 }).into(),
        NodeEvent::TokenRotated(NodeTokenRotated { token_hash: sealed(), retired_key: Some(id(0xa0)) }).into(),
        NodeEvent::TokenRevoked(NodeTokenRevoked { retired_key: id(0xa1) }).into(),
        NodeEvent::Disabled(NodeToggled {}).into(),
        NodeEvent::Enabled(NodeToggled {}).into(),
        NodeEvent::Removed(NodeRemoved { retired_key: None }).into(),
        NodeEvent::ThumbprintPinned(thumbprint.clone()).into(),
        NodeEvent::ThumbprintRejected(Thumbprint { thumbprint: "cd".repeat(32) }).into(),
        NodeEvent::ThumbprintApproved(thumbprint).into(),
        NodeEvent::Connected(NodeConnected { agent_version: "0.1.0".into(), protocol: 2 }).into(),
        NodeEvent::Disconnected(NodeDisconnected { reason: "no heartbeat for 3 s".into() }).into(),
        NodeEvent::Refused(NodeRefused { refusal: Refusal::Incompatible { agent_protocol: 1 } }).into(),
        DeploymentNameEvent::Claimed(NameClaim { name: "pr-1".into(), deployment_id: id(7) }).into(),
        DeploymentNameEvent::Released(NameClaim { name: "pr-1".into(), deployment_id: id(7) }).into(),
        CapacityEvent::Reserved(CapacityReserved { deployment_id: id(7), cpu_millis: 500, memory_mib: 256 }).into(),
        CapacityEvent::Released(CapacityReleased { deployment_id: id(7) }).into(),
        DeploymentEvent::Requested(DeploymentRequested {
            deployment_id: id(7),
            project_id: id(3),
            project: "shop".into(),
            environment: "staging".into(),
            name: "pr-1".into(),
            versions: vec![ChosenVersion { service: "api".into(), image: "shop/api".into(), tag: "v1".into() }],
            pipeline_version: 2,
            plan: plan(),
            cpu_millis: 500,
            memory_mib: 256,
            lifetime_secs: 3600,
            expires_at: 1_800_000_000_000_000,
        })
        .into(),
        DeploymentEvent::Retried(DeploymentRetried { pipeline_version: 3, plan: plan() }).into(),
        DeploymentEvent::Scheduled(DeploymentScheduled { node_id: id(6) }).into(),
        DeploymentEvent::RunStarted(RunStarted {}).into(),
        DeploymentEvent::StepChanged(StepChanged { step: "db".into(), state: StepState::RolledBack, detail: "removed".into() }).into(),
        DeploymentEvent::HealthChanged(HealthChanged { service: "api".into(), healthy: false, detail: "3 probes failed".into() }).into(),
        DeploymentEvent::Running(DeploymentRunning { endpoints: vec![Endpoint { service: "api".into(), host_port: 32768 }] }).into(),
        DeploymentEvent::EndpointsChanged(EndpointsChanged { endpoints: vec![Endpoint { service: "api".into(), host_port: 32999 }] }).into(),
        DeploymentEvent::Failed(DeploymentFailed { step: Some("db".into()), reason: "exit code 1".into(), exit_code: Some(1), oom_killed: false }).into(),
        DeploymentEvent::DeletionRequested(DeletionRequested { reason: DeletionReason::Expired }).into(),
        DeploymentEvent::Removed(DeploymentRemoved {}).into(),
        DeploymentEvent::Extended(DeploymentExtended { expires_at: 1_800_003_600_000_000 }).into(),
        DeploymentEvent::Rejected(DeploymentRejected { code: RejectionCode::NoRoom, reason: "no node has room".into() }).into(),
    ]
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/events.hex")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// `type@version` to its recorded bytes.
fn recorded() -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(golden_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').expect("`type@version hex`"))
        .map(|(k, v)| (k.to_owned(), unhex(v)))
        .collect()
}

/// Older schema versions still decode from their recorded bytes, upcast to the current shape.
#[test]
fn older_versions_decode_from_their_recorded_bytes() {
    let golden = recorded();
    let v1 = golden.get("pipeline.version_saved@1").expect("recorded");
    let DomainEvent::Pipeline(PipelineEvent::VersionSaved(v)) = decode("pipeline.version_saved", 1, v1).expect("decodes") else { panic!("wrong event") };
    assert_eq!((v.version, v.graph.nodes.len(), v.message.as_str(), v.layout.len(), v.based_on), (2, 2, "", 0, None));
    let v1 = golden.get("preview.requested@1").expect("recorded");
    let DomainEvent::Preview(PreviewEvent::Requested(r)) = decode("preview.requested", 1, v1).expect("decodes") else { panic!("wrong event") };
    assert_eq!((r.number, r.tag.as_str(), r.sender.as_str(), r.updated_at), (7, "pr-7", "octocat", 0), "the forge's time is unknown before v2");
}

#[test]
fn every_event_type_has_a_sample() {
    let sampled: Vec<(&str, u16)> = samples().iter().map(|e| encode(e)).map(|(t, v, _)| (t, v)).collect();
    for current in current_types() {
        assert!(sampled.contains(&current), "no sample of {}@{}: add one", current.0, current.1);
    }
    assert_eq!(sampled.len(), current_types().len(), "one sample per type");
}

#[test]
fn stored_shapes_are_frozen() {
    let mut golden = recorded();
    let mut missing = Vec::new();
    for sample in samples() {
        let (name, version, bytes) = encode(&sample);
        let key = format!("{name}@{version}");
        match golden.get(&key) {
            Some(frozen) => {
                assert_eq!(hex(&bytes), hex(frozen), "{key} no longer encodes as stored: give it a new schema version instead");
                assert_eq!(decode(name, version, frozen).expect("the stored bytes decode"), sample, "{key}");
            }
            None => missing.push((key, bytes)),
        }
    }
    if std::env::var("NULLOPS_WRITE_GOLDEN").is_ok() {
        let mut text = std::fs::read_to_string(golden_path()).unwrap_or_else(|_| "# type@version postcard payload (hex); see tests/golden.rs\n".into());
        for (key, bytes) in &missing {
            text.push_str(&format!("{key} {}\n", hex(bytes)));
            golden.insert(key.clone(), bytes.clone());
        }
        std::fs::write(golden_path(), text).expect("write the golden file");
        return;
    }
    let keys: Vec<&String> = missing.iter().map(|(k, _)| k).collect();
    assert!(missing.is_empty(), "no recorded bytes for {keys:?}: record them with NULLOPS_WRITE_GOLDEN=1");
}
