//! Webhooks out (admins): endpoints told of deployment, node and pipeline events, each delivery
//! signed with the webhook's secret (shown once, sealed like every secret, rotatable), every
//! attempt visible. The deliveries themselves are a process of their own (`nullops_saga::webhooks`).

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use nullops_domain::catalog::{webhook_secret_purpose, CatalogAction};
use nullops_events::catalog::{WebhookDefinition, WebhookTopic};
use nullops_projections::webhooks as rows;
use uuid::Uuid;

use nullops_saga::webhooks::sign;

use crate::catalog::{catalog_state, change_catalog_sealing};
use crate::context::{app, request, time};
use crate::error::{ApiError, ApiResult};

/// What a webhook is told of (the CloudEvents `type` of each is `io.nullops.` and the name in
/// lower case with dots: `io.nullops.deployment.running`).
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "WebhookEvent", remote = "nullops_events::catalog::WebhookTopic")]
pub enum WebhookEventGql {
    /// A deployment was asked for.
    DeploymentCreated,
    /// A deployment is running: every step succeeded.
    DeploymentRunning,
    /// A deployment's run failed (and was rolled back).
    DeploymentFailed,
    /// A deployment is gone from its node.
    DeploymentDeleted,
    /// A deployment outlived its lifetime and is being deleted.
    DeploymentExpired,
    /// A node's agent stopped answering.
    NodeOffline,
    /// A node's agent is connected.
    NodeOnline,
    /// A new version of a project's pipeline was saved.
    PipelineSaved,
}

pub struct WebhookGql(WebhookDefinition);

#[Object(name = "Webhook")]
impl WebhookGql {
    async fn id(&self) -> ID {
        ID(self.0.webhook_id.to_string())
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    async fn events(&self) -> Vec<WebhookEventGql> {
        self.0.topics.iter().map(|t| (*t).into()).collect()
    }
    /// Only events of this project, when set.
    async fn project(&self) -> Option<&str> {
        self.0.project.as_deref()
    }
    /// Only events in this environment, when set.
    async fn environment(&self) -> Option<&str> {
        self.0.environment.as_deref()
    }
    /// Its deliveries, newest first, each with its attempts.
    async fn deliveries(&self, ctx: &Context<'_>, #[graphql(default = 50)] first: i32) -> ApiResult<Vec<DeliveryGql>> {
        let first = u32::try_from(first).ok().filter(|f| (1..=500).contains(f)).ok_or_else(|| ApiError::InvalidInput("first: use 1 to 500".into()))?;
        let app = app(ctx);
        let mut out = Vec::new();
        for d in rows::of_webhook(&app.read_models, self.0.webhook_id, first).await? {
            let attempts = rows::attempts(&app.read_models, d.webhook_id, &d.event_id).await?;
            out.push(DeliveryGql {
                about: about(&d.subject, &d.body),
                event_id: d.event_id,
                event: d.topic,
                subject: d.subject,
                state: d.state.into(),
                made_at: time(d.made_at),
                next_attempt_at: (d.state == rows::DeliveryState::Pending).then(|| time(d.next_at)),
                attempts: attempts
                    .into_iter()
                    .map(|a| AttemptGql { attempt: a.attempt as i32, at: time(a.at), status: a.status.map(i32::from), error: a.error, millis: a.millis as i32 })
                    .collect(),
            });
        }
        Ok(out)
    }
}

/// What a delivery is about, in words, from the CloudEvent it carries (as it was when made):
/// `deployment pr-7 (shop in staging)`, `node 10.0.0.5:5000`, `project shop, pipeline version
/// 4`; its subject when the body says none of these.
fn about(subject: &str, body: &str) -> String {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else { return subject.to_owned() };
    let details = &event["data"]["details"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    if let Some(name) = text(&details["deployment"]["name"]) {
        let project = text(&details["deployment"]["project"]).unwrap_or_default();
        let environment = text(&details["deployment"]["environment"]).unwrap_or_default();
        return format!("deployment {name} ({project} in {environment})");
    }
    if let (Some(host), Some(port)) = (text(&details["node"]["host"]), details["node"]["port"].as_u64()) {
        return format!("node {host}:{port}");
    }
    if let (Some(project), Some(version)) = (text(&details["project"]), details["version"].as_u64()) {
        return format!("project {project}, pipeline version {version}");
    }
    subject.to_owned()
}

#[cfg(test)]
mod about_tests {
    use super::about;

    #[test]
    fn a_delivery_says_what_it_is_about_in_words() {
        let deployment = r#"{"data": {"details": {"deployment": {"name": "pr-7", "project": "shop", "environment": "staging"}}}}"#;
        assert_eq!(about("deployment/0191", deployment), "deployment pr-7 (shop in staging)");
        assert_eq!(about("node/1", r#"{"data": {"details": {"node": {"host": "10.0.0.5", "port": 5000}}}}"#), "node 10.0.0.5:5000");
        assert_eq!(about("project/1", r#"{"data": {"details": {"project": "shop", "version": 4}}}"#), "project shop, pipeline version 4");
        assert_eq!(about("project/1", "not json"), "project/1");
    }
}

/// Where a delivery is.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "WebhookDeliveryState")]
pub enum DeliveryStateGql {
    /// Not delivered yet: tried again at `nextAttemptAt`.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Given up after the most attempts, or its webhook was deleted.
    Abandoned,
}

impl From<rows::DeliveryState> for DeliveryStateGql {
    fn from(s: rows::DeliveryState) -> Self {
        match s {
            rows::DeliveryState::Pending => DeliveryStateGql::Pending,
            rows::DeliveryState::Delivered => DeliveryStateGql::Delivered,
            rows::DeliveryState::Abandoned => DeliveryStateGql::Abandoned,
        }
    }
}

/// One event sent to one webhook.
#[derive(SimpleObject)]
#[graphql(name = "WebhookDelivery")]
pub struct DeliveryGql {
    /// The CloudEvent's `id` and the `webhook-id` header: the same on every attempt.
    event_id: String,
    /// The CloudEvent's `type`.
    event: String,
    subject: String,
    /// What it is about, in words: the deployment's name, the node's address, the project.
    about: String,
    state: DeliveryStateGql,
    made_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    attempts: Vec<AttemptGql>,
}

#[derive(SimpleObject)]
#[graphql(name = "WebhookAttempt")]
pub struct AttemptGql {
    attempt: i32,
    at: DateTime<Utc>,
    /// The HTTP status answered, if one was.
    status: Option<i32>,
    /// Why it failed ('' when it did not).
    error: String,
    millis: i32,
}

/// A webhook with its signing secret, shown this once.
#[derive(SimpleObject)]
pub struct WebhookWithSecret {
    webhook: WebhookGql,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

#[derive(InputObject)]
pub struct WebhookInput {
    /// An http:// or https:// URL; redirects are not followed.
    url: String,
    events: Vec<WebhookEventGql>,
    project: Option<String>,
    environment: Option<String>,
}

fn parse_id(id: &ID) -> ApiResult<Uuid> {
    Uuid::try_parse(id).map_err(|_| ApiError::NotFound(format!("no webhook {}", id.as_str())))
}

async fn webhook(ctx: &Context<'_>, id: Uuid) -> ApiResult<WebhookDefinition> {
    let state = catalog_state(app(ctx)).await?;
    state.webhooks.get(&id).cloned().ok_or_else(|| ApiError::NotFound(format!("no webhook {id}")))
}

/// A fresh secret for webhook `id`, and it sealed.
async fn fresh_secret(ctx: &Context<'_>, id: Uuid) -> ApiResult<(String, nullops_events::catalog::Sealed)> {
    let secret = sign::new_secret();
    let sealed = app(ctx).keyring.seal(secret.as_bytes(), &webhook_secret_purpose(id)).await?;
    Ok((secret, sealed))
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// Every webhook (admins).
    async fn webhooks(&self, ctx: &Context<'_>) -> ApiResult<Vec<WebhookGql>> {
        request(ctx).admin()?;
        Ok(catalog_state(app(ctx)).await?.webhooks.into_values().map(WebhookGql).collect())
    }

    async fn webhook(&self, ctx: &Context<'_>, id: ID) -> ApiResult<WebhookGql> {
        request(ctx).admin()?;
        Ok(WebhookGql(webhook(ctx, parse_id(&id)?).await?))
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Registers an endpoint to be told of `events` (admins); its signing secret is returned
    /// this once.
    async fn create_webhook(&self, ctx: &Context<'_>, input: WebhookInput) -> ApiResult<WebhookWithSecret> {
        request(ctx).admin()?;
        crate::catalog::callable(app(ctx), "url", &input.url).await?;
        let webhook_id = Uuid::now_v7();
        let (secret, sealed) = fresh_secret(ctx, webhook_id).await?;
        let definition = WebhookDefinition {
            webhook_id,
            url: input.url.trim().to_owned(),
            topics: input.events.into_iter().map(WebhookTopic::from).collect(),
            project: input.project.filter(|p| !p.is_empty()),
            environment: input.environment.filter(|e| !e.is_empty()),
            secret: sealed.clone(),
        };
        change_catalog_sealing(ctx, CatalogAction::CreateWebhook(definition), Some(sealed.key_id)).await?;
        Ok(WebhookWithSecret { webhook: WebhookGql(webhook(ctx, webhook_id).await?), secret })
    }

    /// A new signing secret (admins): deliveries from now on are signed with it; the old one
    /// is destroyed. Returned this once.
    async fn rotate_webhook_secret(&self, ctx: &Context<'_>, id: ID) -> ApiResult<WebhookWithSecret> {
        request(ctx).admin()?;
        let webhook_id = parse_id(&id)?;
        let (secret, sealed) = fresh_secret(ctx, webhook_id).await?;
        change_catalog_sealing(ctx, CatalogAction::RotateWebhookSecret { webhook_id, secret: sealed.clone() }, Some(sealed.key_id)).await?;
        Ok(WebhookWithSecret { webhook: WebhookGql(webhook(ctx, webhook_id).await?), secret })
    }

    /// Deletes a webhook (admins); what it had not been sent yet is given up (by the webhooks
    /// process, which owns the deliveries).
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        request(ctx).admin()?;
        let webhook_id = parse_id(&id)?;
        change_catalog_sealing(ctx, CatalogAction::DeleteWebhook { webhook_id }, None).await?;
        Ok(true)
    }
}
