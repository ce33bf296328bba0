//! Resolving a deployment request into what its node runs: the project's pipeline version with
//! every service's chosen tag and every image's registry host filled in, checked against the
//! catalog. Whether a selectable tag exists in its registry is I/O, checked by the caller first.

use std::collections::BTreeMap;

use nullops_events::catalog::{PinnedImage, PipelineAction, PipelineGraph, RegistryDefinition, TagMode};
use nullops_events::deployment::{ChosenVersion, DeploymentPlan, PlannedAction, PlannedPlugin, PlannedService, PlannedStep};

use crate::catalog::CatalogState;
use crate::tags::{check_tag, TagPattern};
use crate::DomainError;

/// The least CPU and memory Docker gives a container (below, it refuses to start it).
pub const MIN_SERVICE_CPU_MILLIS: u32 = 10;
pub const MIN_SERVICE_MEMORY_MIB: u32 = 6;

/// Each service's share of a project's CPU and memory: split evenly among its `services` (at
/// least one), so that together they never use more than was reserved for the deployment.
pub fn service_share(cpu_millis: u32, memory_mib: u32, services: usize) -> (u32, u32) {
    let n = u32::try_from(services.max(1)).unwrap_or(u32::MAX);
    (cpu_millis / n, memory_mib / n)
}

/// Why limits of `cpu_millis` and `memory_mib` cannot be split among `services` (each share at
/// least what Docker gives a container): the field and what would do, for people.
pub fn split_problem(cpu_millis: u32, memory_mib: u32, services: usize) -> Option<(&'static str, String)> {
    let n = services.max(1);
    let (cpu, memory) = service_share(cpu_millis, memory_mib, n);
    let among = if n == 1 { "one service".to_owned() } else { format!("{n} services") };
    let needed = |min: u32| u64::from(min) * n as u64;
    if cpu < MIN_SERVICE_CPU_MILLIS {
        return Some((
            "cpuMillis",
            format!(
                "{cpu_millis} millicores shared by {among} gives each {cpu}; Docker gives a container at least {MIN_SERVICE_CPU_MILLIS}, so this needs at least {} millicores",
                needed(MIN_SERVICE_CPU_MILLIS)
            ),
        ));
    }
    if memory < MIN_SERVICE_MEMORY_MIB {
        return Some((
            "memoryMib",
            format!(
                "{memory_mib} MiB shared by {among} gives each {memory}; Docker gives a container at least {MIN_SERVICE_MEMORY_MIB} MiB, so this needs at least {} MiB",
                needed(MIN_SERVICE_MEMORY_MIB)
            ),
        ));
    }
    None
}

/// The host part of image references from `registry`: none for Docker Hub and the local engine,
/// else the URL's `host[:port]`.
pub fn image_host(registry: &RegistryDefinition) -> Option<&str> {
    // The engine's own images are named as the engine has them.
    if registry.is_local_engine() {
        return None;
    }
    let host = registry.url.split_once("://").map_or(registry.url.as_str(), |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host);
    (!matches!(host, "registry-1.docker.io" | "docker.io" | "index.docker.io")).then_some(host)
}

/// `host/repository:tag`, or `repository:tag` on Docker Hub.
pub fn image_reference(registry: &RegistryDefinition, repository: &str, tag: &str) -> String {
    match image_host(registry) {
        Some(host) => format!("{host}/{repository}:{tag}"),
        None => format!("{repository}:{tag}"),
    }
}

fn pinned_reference(registry: &RegistryDefinition, image: &PinnedImage) -> String {
    match &image.digest {
        Some(digest) => {
            let base = image_reference(registry, &image.repository, &image.tag);
            let name = base.rsplit_once(':').map_or(base.as_str(), |(name, _)| name);
            format!("{name}@{digest}")
        }
        None => image_reference(registry, &image.repository, &image.tag),
    }
}

/// The tag a service runs: its pinned tag, or the chosen one, which must match its pattern.
pub fn choose_tag(service: &str, mode: &TagMode, chosen: Option<&String>) -> Result<String, DomainError> {
    match (mode, chosen) {
        (TagMode::Pinned(tag), None) => Ok(tag.clone()),
        (TagMode::Pinned(tag), Some(other)) if other == tag => Ok(tag.clone()),
        (TagMode::Pinned(tag), Some(other)) => Err(DomainError::invalid("tags", format!("service {service} is pinned to {tag}; it cannot run {other}"))),
        (TagMode::Selectable(_), None) => Err(DomainError::invalid("tags", format!("choose a tag for service {service}"))),
        (TagMode::Selectable(pattern), Some(tag)) => {
            check_tag("tags", tag)?;
            if let Some(pattern) = pattern {
                let glob = TagPattern::parse(pattern)?;
                if !glob.matches(tag) {
                    return Err(DomainError::invalid("tags", format!("tag {tag} of service {service} does not match its pattern {pattern}")));
                }
            }
            Ok(tag.clone())
        }
    }
}

/// The services of `graph` that need a tag chosen, with their patterns.
pub fn selectable_services<'a>(graph: &PipelineGraph, catalog: &'a CatalogState) -> Vec<&'a nullops_events::catalog::ServiceDefinition> {
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.action {
            PipelineAction::StartService { service } => catalog.services.get(service),
            PipelineAction::RunPlugin { .. } => None,
        })
        .filter(|s| matches!(s.tag, TagMode::Selectable(_)))
        .collect()
}

/// The images a deployment of `graph` would run whatever tags are chosen, as its plan names
/// them (so a node that holds them pulls nothing): every plugin's pinned image and every pinned
/// service's, each with the name of its registry. A selectable service's tag is chosen per
/// deployment, so it is not known here. Entries the catalog no longer has are left out.
pub fn images_in_use(graph: &PipelineGraph, catalog: &CatalogState) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for node in &graph.nodes {
        let found = match &node.action {
            PipelineAction::StartService { service } => catalog.services.get(service).and_then(|def| match &def.tag {
                TagMode::Pinned(tag) => catalog.registries.get(&def.registry).map(|r| (def.registry.clone(), image_reference(r, &def.image, tag))),
                TagMode::Selectable(_) => None,
            }),
            PipelineAction::RunPlugin { image, .. } => catalog.registries.get(&image.registry).map(|r| (image.registry.clone(), pinned_reference(r, image))),
        };
        out.extend(found);
    }
    out
}

/// Resolves `graph` with the chosen `tags` (service to tag) against `catalog`. Every service of
/// the graph must be known and every chosen tag must name one of its services.
pub fn resolve(graph: &PipelineGraph, tags: &BTreeMap<String, String>, catalog: &CatalogState) -> Result<(DeploymentPlan, Vec<ChosenVersion>), DomainError> {
    let registry = |name: &str| catalog.registries.get(name).ok_or_else(|| DomainError::NotFound(format!("registry {name} no longer exists")));
    let mut steps = Vec::with_capacity(graph.nodes.len());
    let mut versions = Vec::new();
    for node in &graph.nodes {
        let action = match &node.action {
            PipelineAction::StartService { service } => {
                let def = catalog.services.get(service).ok_or_else(|| DomainError::NotFound(format!("service {service} of the pipeline no longer exists")))?;
                let tag = choose_tag(service, &def.tag, tags.get(service))?;
                let image = image_reference(registry(&def.registry)?, &def.image, &tag);
                versions.push(ChosenVersion { service: service.clone(), image: def.image.clone(), tag });
                PlannedAction::Service(PlannedService {
                    service: service.clone(),
                    image,
                    port: def.port,
                    env: def.env.clone(),
                    health_check: def.health_check.clone(),
                })
            }
            PipelineAction::RunPlugin { plugin, image, parameters } => {
                let def = catalog.plugins.get(plugin).ok_or_else(|| DomainError::NotFound(format!("plugin {plugin} of the pipeline no longer exists")))?;
                PlannedAction::Plugin(PlannedPlugin {
                    plugin: plugin.clone(),
                    image: pinned_reference(registry(&image.registry)?, image),
                    parameters: parameters.clone(),
                    cpu_millis: def.cpu_millis,
                    memory_mib: def.memory_mib,
                    timeout_secs: def.timeout_secs,
                    joins_deployment_network: def.joins_deployment_network,
                })
            }
        };
        steps.push(PlannedStep { id: node.id.clone(), action });
    }
    if let Some(stray) = tags.keys().find(|s| !versions.iter().any(|v| &v.service == *s)) {
        return Err(DomainError::invalid("tags", format!("the pipeline starts no service named {stray}")));
    }
    Ok((DeploymentPlan { steps, edges: graph.edges.clone() }, versions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullops_events::catalog::{PipelineEdge, PipelineNode, PluginDefinition, ServiceDefinition};

    fn catalog() -> CatalogState {
        let mut c = CatalogState::default();
        for (name, url) in [("local", "http://127.0.0.1:5050"), ("docker-hub", "https://registry-1.docker.io")] {
            c.registries.insert(name.into(), RegistryDefinition { name: name.into(), url: url.into(), credentials: None });
        }
        let service = |name: &str, registry: &str, tag: TagMode| ServiceDefinition {
            name: name.into(),
            registry: registry.into(),
            image: format!("shop/{name}"),
            tag,
            port: 8080,
            health_check: None,
            env: vec![],
        };
        c.services.insert("web".into(), service("web", "local", TagMode::Selectable(Some("v*".into()))));
        c.services.insert("cache".into(), service("cache", "docker-hub", TagMode::Pinned("7".into())));
        c.plugins.insert(
            "create-db".into(),
            PluginDefinition {
                name: "create-db".into(),
                registry: "local".into(),
                repository: "nullops/create-db".into(),
                tag: "1".into(),
                description: String::new(),
                parameters_schema: "{}".into(),
                cpu_millis: 100,
                memory_mib: 64,
                timeout_secs: 60,
                joins_deployment_network: true,
            },
        );
        c
    }

    fn graph() -> PipelineGraph {
        let service = |id: &str| PipelineNode { id: id.into(), action: PipelineAction::StartService { service: id.into() } };
        let image = PinnedImage { registry: "local".into(), repository: "nullops/create-db".into(), tag: "1".into(), digest: Some("sha256:ab".into()) };
        PipelineGraph {
            nodes: vec![
                service("web"),
                service("cache"),
                PipelineNode { id: "db".into(), action: PipelineAction::RunPlugin { plugin: "create-db".into(), image, parameters: "{}".into() } },
            ],
            edges: vec![PipelineEdge { from: "db".into(), to: "web".into() }],
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(s, t)| (s.to_string(), t.to_string())).collect()
    }

    #[test]
    fn images_get_their_registry_host_and_tags_their_service_rules() {
        let (plan, versions) = resolve(&graph(), &tags(&[("web", "v2")]), &catalog()).unwrap();
        let images: Vec<String> = plan
            .steps
            .iter()
            .map(|s| match &s.action {
                PlannedAction::Service(s) => s.image.clone(),
                PlannedAction::Plugin(p) => p.image.clone(),
            })
            .collect();
        assert_eq!(images, ["127.0.0.1:5050/shop/web:v2", "shop/cache:7", "127.0.0.1:5050/nullops/create-db@sha256:ab"]);
        assert_eq!(versions.iter().map(|v| v.tag.as_str()).collect::<Vec<_>>(), ["v2", "7"]);
        assert_eq!(plan.edges, graph().edges);
    }

    #[test]
    fn wrong_or_missing_tags_are_refused_with_the_reason() {
        let refused = |pairs: &[(&str, &str)]| match resolve(&graph(), &tags(pairs), &catalog()) {
            Err(DomainError::InvalidInput { message, .. }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(&[]).contains("choose a tag for service web"));
        assert!(refused(&[("web", "2.0")]).contains("does not match its pattern v*"));
        assert!(refused(&[("web", "v1"), ("cache", "8")]).contains("pinned to 7"));
        assert!(refused(&[("web", "v1"), ("db", "1")]).contains("no service named db"));
        assert!(refused(&[("web", "v 1")]).contains("not an image tag"));
        // Naming a pinned service's own tag is fine.
        assert!(resolve(&graph(), &tags(&[("web", "v1"), ("cache", "7")]), &catalog()).is_ok());
    }
}
