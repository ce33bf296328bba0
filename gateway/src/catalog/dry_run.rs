//! The I/O half of a pipeline dry run: each image looked up in its registry, and admission
//! asked where the deployment would go. The pure half (graph, parameters, secrets, stages) is
//! `nullops_domain::pipeline::check`.

use std::collections::BTreeMap;

use nullops_domain::capacity::{Capacity, Resources};
use nullops_domain::catalog::CatalogState;
use nullops_domain::pipeline::{DraftAction, PipelineDraft, Problem, ProblemCode};
use nullops_domain::plan::{choose_tag, image_reference};
use nullops_domain::DomainError;
use nullops_events::catalog::RegistryDefinition;
use nullops_saga::admission::{Admission, Preview};
use nullops_store::commands::StateCache;

use super::types::DryRunImageGql;
use crate::error::{ApiError, ApiResult};
use crate::App;

/// One image a node would run.
struct Wanted<'a> {
    node: &'a str,
    registry: &'a RegistryDefinition,
    repository: &'a str,
    tag: String,
}

/// The message of a refusal, without its field prefix (the problem names the field).
fn said(e: DomainError) -> String {
    match e {
        DomainError::InvalidInput { message, .. } => message,
        other => other.to_string(),
    }
}

/// Every image the draft's nodes would run with `chosen` tags, as its registry knows it now;
/// what cannot be found or chosen is added to `problems` on its node.
pub(super) async fn images(
    app: &App,
    state: &CatalogState,
    draft: &PipelineDraft,
    chosen: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) -> Vec<DryRunImageGql> {
    let mut wanted = Vec::new();
    let mut services_in = Vec::new();
    for node in &draft.nodes {
        let (registry, repository, tag) = match &node.action {
            DraftAction::StartService { service } => {
                services_in.push(service.as_str());
                // An unknown service is already a problem of the graph.
                let Some(def) = state.services.get(service) else { continue };
                match choose_tag(service, &def.tag, chosen.get(service)) {
                    Ok(tag) => (&def.registry, def.image.as_str(), tag),
                    Err(e) => {
                        problems.push(Problem::at(&node.id, &format!("tags.{service}"), ProblemCode::MissingTag, said(e)));
                        continue;
                    }
                }
            }
            DraftAction::RunPlugin { plugin, .. } => {
                let Some(def) = state.plugins.get(plugin) else { continue };
                (&def.registry, def.repository.as_str(), def.tag.clone())
            }
        };
        match state.registries.get(registry) {
            Some(registry) => wanted.push(Wanted { node: &node.id, registry, repository, tag }),
            None => problems.push(Problem::at(&node.id, "image", ProblemCode::ImageUnresolved, format!("registry {registry} no longer exists"))),
        }
    }
    for service in chosen.keys().filter(|s| !services_in.contains(&s.as_str())) {
        problems.push(Problem {
            node: None,
            field: Some(format!("tags.{service}")),
            code: ProblemCode::MissingTag,
            message: format!("service {service} is not in this pipeline: choose tags only for the services it starts"),
        });
    }
    let lookups = wanted.iter().map(|w| async move {
        let tags = app.registries.tags(&app.keyring, w.registry, w.repository, true).await?;
        if !tags.contains(&w.tag) {
            return Ok::<_, ApiError>((false, None));
        }
        let opened = super::definitions::open_registry(app, &w.registry.name).await?;
        Ok((true, app.registries.client().manifest_digest(&opened, w.repository, &w.tag).await?))
    });
    let answers = futures::future::join_all(lookups).await;
    let mut out = Vec::new();
    for (w, answer) in wanted.iter().zip(answers) {
        let image = image_reference(w.registry, w.repository, &w.tag);
        match answer {
            Ok((found, digest)) => {
                if !found {
                    problems.push(Problem::at(
                        w.node,
                        "image",
                        ProblemCode::MissingTag,
                        format!("{}:{} does not exist in registry {}: push it or choose another tag", w.repository, w.tag, w.registry.name),
                    ));
                }
                out.push(DryRunImageGql { node: w.node.to_owned(), image, digest, found });
            }
            Err(e) => {
                problems.push(Problem::at(
                    w.node,
                    "image",
                    ProblemCode::ImageUnresolved,
                    format!("registry {} could not be asked: {}", w.registry.name, e.message()),
                ));
                out.push(DryRunImageGql { node: w.node.to_owned(), image, digest: None, found: false });
            }
        }
    }
    out
}

/// Where admission would place a deployment of `request` in `environment` now.
pub(super) async fn admission(app: &App, environment: &str, request: Resources) -> ApiResult<Preview> {
    // A throwaway cache: a dry run reads each node's reservations once.
    let capacities = StateCache::<Capacity>::new(0);
    let admission = Admission { store: &*app.store, read_models: &app.read_models, capacities: &capacities };
    admission.preview(environment, request).await.map_err(ApiError::internal)
}
