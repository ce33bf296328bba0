//! The demo a fresh `nullops up` offers: project `demo`, deployable at once to the `local`
//! environment with no registry to set up. Its images are built from the `nullops` binary's own
//! examples into the local Docker engine ([`IMAGES`], built by `nullops up`), and the catalog
//! names them through a registry that is that engine ([`LOCAL_ENGINE_URL`]).
//!
//! The pipeline: service `api` (pinned), then plugin step `wait-for-api` (the http-check example
//! waits until api answers), then service `web`, whose version the deployer picks (v1 or v2).
//! Both services are the echo example: they answer with the request they got, under a banner
//! naming their version.

use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::pipeline::{DraftAction, DraftNode, Pipeline, PipelineCommand, PipelineContext, PipelineDraft};
use nullops_domain::Issuer;
use nullops_events::catalog::{
    Access, EnvVar, HealthCheck, PipelineEdge, PluginDefinition, Probe, ProjectDefinition, RegistryDefinition, ServiceDefinition, TagMode, LOCAL_ENGINE_URL,
};
use nullops_events::EventMetadata;

use crate::catalog::catalog_state;
use crate::error::ApiResult;
use crate::{dispatch, App};

/// The registry the demo's images come from: the local engine.
pub const REGISTRY: &str = "local-engine";
pub const PROJECT: &str = "demo";
/// The environment `nullops up`'s own node belongs to.
pub const ENVIRONMENT: &str = "local";

/// An image the demo runs: built `FROM` the image holding the binary, with its own entrypoint.
pub struct DemoImage {
    pub repository: &'static str,
    pub tag: &'static str,
    pub entrypoint: &'static [&'static str],
    /// Set as `ECHO_BANNER`: the first line the echo example answers.
    pub banner: Option<&'static str>,
}

const ECHO: &[&str] = &["/nullops", "example", "echo"];
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const IMAGES: [DemoImage; 4] = [
    DemoImage { repository: "nullops.local/demo/web", tag: "v1", entrypoint: ECHO, banner: Some("NullOps demo: web v1") },
    DemoImage { repository: "nullops.local/demo/web", tag: "v2", entrypoint: ECHO, banner: Some("NullOps demo: web v2") },
    DemoImage { repository: "nullops.local/demo/api", tag: "v1", entrypoint: ECHO, banner: Some("NullOps demo: api v1") },
    DemoImage { repository: "nullops.local/demo/http-check", tag: VERSION, entrypoint: &["/nullops", "plugin", "http-check"], banner: None },
];

/// Sets the demo up in a catalog that has no project yet and never had the demo's registry: a
/// first start. Returns whether it did.
pub async fn seed(app: &App) -> ApiResult<bool> {
    let state = catalog_state(app).await?;
    if !state.projects.is_empty() || state.registries.contains_key(REGISTRY) || !state.environments.contains_key(ENVIRONMENT) {
        return Ok(false);
    }
    let health = || Some(HealthCheck { probe: Probe::Http("/healthz".into()), interval_secs: 2, timeout_secs: 2, retries: 3 });
    let service = |name: &str, image: &str, tag: TagMode, env: Vec<EnvVar>| ServiceDefinition {
        name: name.into(),
        registry: REGISTRY.into(),
        image: image.into(),
        tag,
        port: 8080,
        health_check: health(),
        env,
    };
    let plugin = PluginDefinition {
        name: "http-check".into(),
        registry: REGISTRY.into(),
        repository: IMAGES[3].repository.into(),
        tag: VERSION.into(),
        description: "Waits until a URL inside the deployment answers the expected status".into(),
        parameters_schema: serde_json::json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "description": "An http:// URL inside the deployment's network, such as http://api:8080/healthz"},
                "timeout_secs": {"type": "integer", "minimum": 1},
                "expect_status": {"type": "integer"}
            }
        })
        .to_string(),
        cpu_millis: 100,
        memory_mib: 64,
        timeout_secs: 120,
        joins_deployment_network: true,
    };
    let project = ProjectDefinition {
        project_id: uuid::Uuid::now_v7(),
        name: PROJECT.into(),
        environments: vec![ENVIRONMENT.into()],
        cpu_millis: 500,
        memory_mib: 256,
        cleanup_after_secs: Some(4 * 3600),
    };
    let actions = [
        CatalogAction::AddRegistry(RegistryDefinition { name: REGISTRY.into(), url: LOCAL_ENGINE_URL.into(), credentials: None }),
        CatalogAction::CreateService(service("api", IMAGES[2].repository, TagMode::Pinned("v1".into()), vec![])),
        CatalogAction::CreateService(service(
            "web",
            IMAGES[0].repository,
            TagMode::Selectable(Some("v*".into())),
            vec![EnvVar { name: "API_URL".into(), value: "http://api:8080".into() }],
        )),
        CatalogAction::CreatePlugin(plugin),
        CatalogAction::CreateProject(project.clone()),
    ];
    for action in actions {
        dispatch::<Catalog>(app, EventMetadata::system(), CATALOG_KEY, CatalogCommand { by: Issuer::System, action }).await?;
    }
    let state = catalog_state(app).await?;
    let node = |id: &str, action| DraftNode { id: id.into(), action };
    let draft = PipelineDraft {
        nodes: vec![
            node("api", DraftAction::StartService { service: "api".into() }),
            node(
                "wait-for-api",
                DraftAction::RunPlugin { plugin: "http-check".into(), parameters: serde_json::json!({"url": "http://api:8080/healthz", "timeout_secs": 60}) },
            ),
            node("web", DraftAction::StartService { service: "web".into() }),
        ],
        edges: vec![PipelineEdge { from: "api".into(), to: "wait-for-api".into() }, PipelineEdge { from: "wait-for-api".into(), to: "web".into() }],
    };
    let context = PipelineContext {
        services: state.services,
        plugins: state.plugins,
        secrets: Default::default(),
        digests: Default::default(),
        limits: (project.cpu_millis, project.memory_mib),
    };
    let save = PipelineCommand::Save {
        access: Some(Access::Full),
        project: PROJECT.into(),
        project_id: project.project_id,
        draft,
        context,
        message: "the demo: an API, a check that it answers, then a web front".into(),
        layout: vec![],
        based_on: None,
    };
    dispatch::<Pipeline>(app, EventMetadata::system(), &project.project_id.to_string(), save).await?;
    Ok(true)
}
