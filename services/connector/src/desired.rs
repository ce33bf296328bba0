//! A node's desired state, from the deployments read model: what each deployment's plan says to
//! run, with the project's secrets and the registries' credentials unsealed for this one send
//! (they live in memory only, here and on the agent).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nullops_domain::catalog::{credentials_purpose, Catalog};
use nullops_domain::plan::{image_host, images_in_use, service_share};
use nullops_domain::secrets::{secret_purpose, Secrets as ProjectSecrets};
use nullops_events::catalog::Probe;
use nullops_events::deployment::{PlannedAction, PlannedStep};
use nullops_keyring::Keyring;
use nullops_projections::catalog::latest_pipeline_version;
use nullops_projections::deployments::{on_node, DeploymentRow};
use nullops_projections::ReadModelDb;
use nullops_store::commands::{load, StateCache};
use nullops_store::EventStore;
use nullops_wire::message::{
    check_deployment, is_image_reference, registry_of, ContainerSpec, DesiredDeployment, HealthProbe, PluginStep, ProbeCheck, RegistryAuth, Secrets,
    ServiceStep, Step, StepAction, MAX_PREFETCH_IMAGES,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{DesiredStates, NodeDesired, Prefetch};

/// Why a node's desired state could not be read. Logged; the node's status tells people
/// only that it could not be (`words::desired_unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    ReadModel(#[from] nullops_projections::ProjectionError),
    #[error(transparent)]
    Log(#[from] nullops_store::commands::CommandError),
    #[error("secret {name} of project {project_id} cannot be unsealed: {source}")]
    Secret { project_id: Uuid, name: String, source: nullops_keyring::KeyringError },
    #[error("secret {name} of project {project_id} is not UTF-8")]
    SecretNotText { project_id: Uuid, name: String },
    #[error("the credentials of registry {registry} cannot be unsealed: {source}")]
    Credentials { registry: String, source: nullops_keyring::KeyringError },
    #[error("the credentials of registry {0} are not UTF-8")]
    CredentialsNotText(String),
}

/// The platform's source of desired states.
pub struct FromDeployments {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
    pub keyring: Arc<Keyring>,
    catalog: StateCache<Catalog>,
}

impl FromDeployments {
    pub fn new(store: Arc<dyn EventStore>, read_models: ReadModelDb, keyring: Arc<Keyring>) -> Self {
        FromDeployments { store, read_models, keyring, catalog: StateCache::new(1) }
    }

    async fn build(&self, node_id: Uuid) -> Result<NodeDesired, DesiredError> {
        let rows = on_node(&self.read_models, node_id).await?;
        let mut desired = NodeDesired::default();
        let mut secrets_of: BTreeMap<Uuid, Secrets> = BTreeMap::new();
        let mut auth: Option<Vec<RegistryAuth>> = None;
        for row in rows {
            // What is wanted of it, against what is seen of it: wanted removed and not yet seen
            // gone, its node removes it; wanted running and placed there, its node runs it.
            if row.life.removing() {
                desired.removing.insert(wire_id(row.deployment_id));
                continue;
            }
            if !row.life.on_node() {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = secrets_of.entry(row.project_id) {
                slot.insert(self.secrets(row.project_id).await?);
            }
            if auth.is_none() {
                auth = Some(self.registry_auth().await?);
            }
            let mut d = desired_deployment(&row);
            d.secrets = secrets_of[&row.project_id].clone();
            let registries: HashSet<&str> = d.steps.iter().map(|s| registry_of(image_of(s))).collect();
            d.registry_auth = auth.iter().flatten().filter(|a| registries.contains(a.registry.as_str())).cloned().collect();
            // One deployment the node cannot take must not keep it from the others.
            match check_deployment(&d) {
                Ok(()) => desired.run.push(d),
                Err(reason) => desired.refused.push((row.deployment_id, reason)),
            }
        }
        desired.prefetch = self.prefetch(node_id, auth).await?;
        Ok(desired)
    }

    /// What the node should hold: the images the latest pipeline of every project of its
    /// environment would run (at most what one message may name).
    async fn prefetch(&self, node_id: Uuid, auth: Option<Vec<RegistryAuth>>) -> Result<Prefetch, DesiredError> {
        let Some(node) = nullops_projections::nodes::node(&self.read_models, node_id).await? else {
            return Ok(Prefetch::default());
        };
        let (catalog, _) = self.catalog.load(&*self.store, "main").await?;
        let mut images: BTreeSet<String> = BTreeSet::new();
        for project in catalog.projects.values().filter(|p| p.environments.contains(&node.environment)) {
            let latest = latest_pipeline_version(&self.read_models, project.project_id).await?;
            for (_, image) in latest.iter().flat_map(|v| images_in_use(&v.graph, &catalog)) {
                images.insert(image);
            }
        }
        let images: Vec<String> = images.into_iter().filter(|i| is_image_reference(i)).take(MAX_PREFETCH_IMAGES).collect();
        let auth = match auth {
            Some(auth) => auth,
            None if images.is_empty() => vec![],
            None => self.registry_auth().await?,
        };
        let registries: HashSet<&str> = images.iter().map(|i| registry_of(i)).collect();
        let auth = auth.into_iter().filter(|a| registries.contains(a.registry.as_str())).collect();
        Ok(Prefetch { images, auth })
    }

    async fn secrets(&self, project_id: Uuid) -> Result<Secrets, DesiredError> {
        let (state, _) = load::<ProjectSecrets>(&*self.store, &project_id.to_string()).await?;
        let mut values = BTreeMap::new();
        for (name, sealed) in &state.values {
            let plain = self.keyring.unseal(sealed, &secret_purpose(project_id, name)).await.map_err(|source| DesiredError::Secret {
                project_id,
                name: name.clone(),
                source,
            })?;
            let text = String::from_utf8(plain.to_vec()).map_err(|_| DesiredError::SecretNotText { project_id, name: name.clone() })?;
            values.insert(name.clone(), text);
        }
        Ok(Secrets(values))
    }

    /// The credentials of every registry that has some, by the host its images name.
    async fn registry_auth(&self) -> Result<Vec<RegistryAuth>, DesiredError> {
        let (catalog, _) = self.catalog.load(&*self.store, "main").await?;
        let mut out = Vec::new();
        // The local engine holds its images already: nothing to sign in to.
        for registry in catalog.registries.values().filter(|r| !r.is_local_engine()) {
            let Some(sealed) = &registry.credentials else { continue };
            let plain = self
                .keyring
                .unseal(sealed, &credentials_purpose(&registry.name))
                .await
                .map_err(|source| DesiredError::Credentials { registry: registry.name.clone(), source })?;
            let text = Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| DesiredError::CredentialsNotText(registry.name.clone()))?);
            let Some((username, password)) = text.split_once(':') else { continue };
            let host = image_host(registry).unwrap_or("docker.io").to_owned();
            out.push(RegistryAuth { registry: host, username: username.to_owned(), password: password.to_owned() });
        }
        Ok(out)
    }
}

impl DesiredStates for FromDeployments {
    fn for_node(&self, node_id: Uuid) -> Pin<Box<dyn Future<Output = Result<NodeDesired, DesiredError>> + Send + '_>> {
        Box::pin(self.build(node_id))
    }
}

/// The name a deployment has on its node: its id, which no other deployment ever has.
pub fn wire_id(deployment_id: Uuid) -> String {
    deployment_id.simple().to_string()
}

fn image_of(step: &Step) -> &str {
    match &step.action {
        StepAction::Service(s) => &s.container.image,
        StepAction::Plugin(p) => &p.image,
    }
}

/// The deployment's plan as the agent's steps. The project's CPU and memory are shared evenly
/// among its services, so that together they never use more than was reserved for it.
pub fn desired_deployment(row: &DeploymentRow) -> DesiredDeployment {
    let services = row.plan.steps.iter().filter(|s| matches!(s.action, PlannedAction::Service(_))).count();
    let share = service_share(row.cpu_millis, row.memory_mib, services);
    let steps = row.plan.steps.iter().map(|s| step(s, row, share)).collect();
    let context = BTreeMap::from([
        ("project".to_owned(), row.project.clone()),
        ("environment".to_owned(), row.environment.clone()),
        ("name".to_owned(), row.name.clone()),
        ("node".to_owned(), row.node_id.map(|n| n.to_string()).unwrap_or_default()),
    ]);
    let trace = row.trace_context.clone();
    DesiredDeployment { attempt: row.attempt, context, trace, ..DesiredDeployment::new(wire_id(row.deployment_id), steps) }
}

/// `share`: each service's CPU and memory.
fn step(planned: &PlannedStep, row: &DeploymentRow, share: (u32, u32)) -> Step {
    let needs = row.plan.edges.iter().filter(|e| e.to == planned.id).map(|e| e.from.clone()).collect();
    let action = match &planned.action {
        PlannedAction::Service(s) => StepAction::Service(ServiceStep {
            container: ContainerSpec {
                name: s.service.clone(),
                image: s.image.clone(),
                env: s.env.iter().map(|v| (v.name.clone(), v.value.clone())).collect(),
                command: vec![],
                cpu_millis: share.0,
                memory_mib: share.1,
                port: Some(s.port),
            },
            health: s.health_check.as_ref().map(|h| HealthProbe {
                check: match &h.probe {
                    Probe::Http(path) => ProbeCheck::Http { path: path.clone() },
                    Probe::Command(argv) => ProbeCheck::Command { argv: argv.clone() },
                },
                interval_secs: h.interval_secs,
                timeout_secs: h.timeout_secs,
                retries: h.retries,
            }),
        }),
        PlannedAction::Plugin(p) => StepAction::Plugin(PluginStep {
            plugin: p.plugin.clone(),
            image: p.image.clone(),
            action: "deploy".into(),
            // Checked against the plugin's schema when the pipeline was saved.
            parameters: serde_json::from_str(&p.parameters).unwrap_or(serde_json::Value::Null),
            cpu_millis: p.cpu_millis,
            memory_mib: p.memory_mib,
            timeout_secs: p.timeout_secs,
            joins_network: p.joins_deployment_network,
        }),
    };
    Step { id: planned.id.clone(), needs, action }
}
