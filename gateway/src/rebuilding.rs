//! Queries do not answer from a read model while it replays the log from its start: its tables
//! are partial until then (an upgrade reshaped it, or `nullops projections rebuild` reset it),
//! and a partial answer looks like a whole one. [`ReadModelGate`] answers such a query
//! `UNAVAILABLE … rebuilding (N of M events)` instead; the platform's health still answers, and
//! says the same.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::{ServerResult, Value};
use nullops_projections::{audit, catalog, deployments, identity, nodes};

use crate::error::ApiError;
use crate::App;

/// Who may see what: every signed-in query reads the caller's credential and, for what teams
/// may see, the catalog's grants.
const ACCESS: [&str; 2] = [identity::NAME, catalog::NAME];

/// The read models a root query field answers from (`None`: a field this list does not know;
/// a unit test keeps every field of the schema in it).
fn read_models_of(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        // The platform's health says what is being rebuilt: it answers throughout.
        "projections" | "platformHealth" => &[],
        "me" | "users" | "user" | "apiTokens" => &[identity::NAME],
        // Working rows of their processes, not rebuilt from the log.
        "webhooks" | "webhook" => &[identity::NAME],
        "teams" | "team" | "registries" | "services" | "service" | "plugins" | "plugin" | "environments" | "availableTags" | "registryTags" | "projects"
        | "project" | "repositoryLink" | "previews" => &ACCESS,
        "auditLog" | "auditEventTypes" => &[identity::NAME, catalog::NAME, audit::NAME],
        "nodes" | "node" => &[identity::NAME, catalog::NAME, nodes::NAME],
        "deployments" | "deployment" => &[identity::NAME, catalog::NAME, deployments::NAME],
        _ => return None,
    })
}

/// The refusal for a query on `reads` while one of them is in `rebuilding`.
fn refusal(reads: &[&str], rebuilding: &[nullops_projections::Rebuilding], head: u64) -> Option<ApiError> {
    let r = rebuilding.iter().find(|r| reads.contains(&r.name.as_str()))?;
    Some(ApiError::Rebuilding { read_model: r.name.clone(), at: r.at_seq.min(head), of: head })
}

/// Refuses when one of `reads` is being rebuilt (a database round trip only after a runner moved).
async fn open_for(app: &App, reads: &[&str]) -> Result<(), ApiError> {
    if reads.is_empty() {
        return Ok(());
    }
    let rebuilding = app.read_models.rebuilding_now().await?;
    if !rebuilding.iter().any(|r| reads.contains(&r.name.as_str())) {
        return Ok(());
    }
    let head = app.core.store.head().await.map_err(nullops_projections::ProjectionError::from)?;
    refusal(reads, &rebuilding, head).map_or(Ok(()), Err)
}

pub struct ReadModelGate;

impl ExtensionFactory for ReadModelGate {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ReadModelGate)
    }
}

#[async_trait::async_trait]
impl Extension for ReadModelGate {
    async fn resolve(&self, ctx: &ExtensionContext<'_>, info: ResolveInfo<'_>, next: NextResolve<'_>) -> ServerResult<Option<Value>> {
        let root_query = info.path_node.parent.is_none() && info.parent_type == "Query" && !info.is_for_introspection;
        if let (true, Some(reads), Ok(app)) = (root_query, read_models_of(info.name), ctx.data::<Arc<App>>()) {
            if let Err(refused) = open_for(app, reads).await {
                let at_field = vec![async_graphql::PathSegment::Field(info.name.to_owned())];
                return Err(async_graphql::Error::from(refused).into_server_error(async_graphql::Pos::default()).with_path(at_field));
            }
        }
        next.run(ctx, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field of `type Query` in the schema, skipping its descriptions.
    fn query_fields(sdl: &str) -> Vec<String> {
        let block = sdl.split("type Query {").nth(1).expect("a Query type").split("\n}").next().unwrap_or_default();
        let mut in_description = false;
        let mut fields = Vec::new();
        for line in block.lines().map(str::trim) {
            if line.starts_with("\"\"\"") {
                in_description = !(in_description || (line.len() > 3 && line.ends_with("\"\"\"")));
                continue;
            }
            if in_description || line.is_empty() {
                continue;
            }
            let name: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                fields.push(name);
            }
        }
        fields
    }

    #[test]
    fn every_query_field_says_which_read_models_it_answers_from() {
        let fields = query_fields(&crate::schema::sdl());
        assert!(fields.len() > 20 && fields.contains(&"deployments".to_owned()), "{fields:?}");
        let unknown: Vec<_> = fields.iter().filter(|f| read_models_of(f).is_none()).collect();
        assert!(unknown.is_empty(), "say in read_models_of which read models these answer from: {unknown:?}");
    }

    #[test]
    fn a_query_on_a_read_model_being_rebuilt_is_refused_with_its_progress() {
        let audit = nullops_projections::Rebuilding { name: audit::NAME.into(), since: 0, events_applied: 900, at_seq: 1200 };
        // Given the audit read model at event 1,200 of a log of 5,000 …
        let rebuilding = [audit];
        // … a query on the audit log is refused, naming it and how far it has got;
        let refused = refusal(read_models_of("auditLog").unwrap(), &rebuilding, 5000).expect("refused");
        assert_eq!(refused.code(), "UNAVAILABLE");
        assert_eq!(
            refused.message(),
            "the audit read model is being rebuilt from the event log and answers once it is whole; try again shortly: rebuilding (1200 of 5000 events)"
        );
        // … while queries on other read models, and the health, answer.
        assert!(refusal(read_models_of("deployments").unwrap(), &rebuilding, 5000).is_none());
        assert!(refusal(read_models_of("platformHealth").unwrap(), &rebuilding, 5000).is_none());
    }
}
