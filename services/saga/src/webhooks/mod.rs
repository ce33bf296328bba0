//! The `webhooks` process: a checkpointed saga (lease `saga:webhooks`, one runner at a time)
//! that turns each event a webhook is told of into a delivery row (idempotent: made again after
//! a crash, never twice), and sends the due ones: CloudEvents 1.0 in structured mode, signed as
//! Standard Webhooks says, one subject's deliveries in the order of their events, retried with
//! growing pauses, at least once (a crash between an answer and its record sends the same
//! `webhook-id` again). Redirects are never followed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nullops_domain::catalog::{webhook_secret_purpose, Catalog};
use nullops_domain::deployment::DeploymentStatus;
use nullops_events::catalog::{PipelineEvent, WebhookDefinition, WebhookTopic};
use nullops_events::deployment::{DeletionReason, DeploymentEvent};
use nullops_events::node::NodeEvent;
use nullops_events::{DomainEvent, StoredEvent, Timestamp};
use nullops_projections::webhooks::{self as rows, AttemptRow, DeliveryRow};
use nullops_projections::{WorkingRows, WorkingWrite};
use nullops_store::commands::StateCache;
use serde_json::{json, Value};
use uuid::Uuid;

use nullops_egress::Failure;

use crate::core::Core;
use crate::{Pacing, Saga, SagaError};

pub mod sign;

/// Sends at once, across all endpoints.
const CONCURRENCY: usize = 32;
/// Sends at once to one webhook: a slow or hanging endpoint holds only these, never the others'.
const PER_WEBHOOK: usize = 4;
/// Attempts before a delivery is given up (about an hour and a half of pauses).
pub const MAX_ATTEMPTS: u32 = 200;
/// A webhook's pending deliveries looked at per tick (each webhook is scanned on its own).
const SCAN: u32 = 200;
/// How long ended deliveries stay visible, and how often the old ones are forgotten.
const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long an event's read model may take to show it before the delivery is made from what
/// it has.
const READ_MODEL_WAIT: Duration = Duration::from_secs(5);

pub struct WebhookProcess {
    app: Arc<Core>,
    catalog: StateCache<Catalog>,
    http: reqwest::Client,
    /// Each webhook's endpoint as this process knows it: what is being sent to it now, and its
    /// pause after failures.
    endpoints: Arc<Mutex<HashMap<Uuid, Endpoint>>>,
    /// When ended deliveries were last forgotten.
    pruned: Mutex<Option<Instant>>,
}

impl WebhookProcess {
    pub fn new(app: Arc<Core>) -> Self {
        let http = app.egress.client(reqwest::Client::builder().timeout(app.pacing.webhook_attempt_timeout).redirect(reqwest::redirect::Policy::none()));
        WebhookProcess { app, catalog: StateCache::new(1), http, endpoints: Arc::default(), pruned: Mutex::new(None) }
    }

    /// What `event` tells webhooks: its topic, subject, project and environment, and the data.
    async fn describe(&self, stored: &StoredEvent, event: &DomainEvent, catalog: &nullops_domain::catalog::CatalogState) -> Result<Option<Told>, SagaError> {
        let key = stored.stream_id.key();
        let app = &self.app;
        Ok(match event {
            DomainEvent::Deployment(e) => {
                let topic = match e {
                    DeploymentEvent::Requested(_) => WebhookTopic::DeploymentCreated,
                    DeploymentEvent::Running(_) => WebhookTopic::DeploymentRunning,
                    DeploymentEvent::Failed(_) => WebhookTopic::DeploymentFailed,
                    DeploymentEvent::Removed(_) => WebhookTopic::DeploymentDeleted,
                    DeploymentEvent::DeletionRequested(d) if d.reason == DeletionReason::Expired => WebhookTopic::DeploymentExpired,
                    _ => return Ok(None),
                };
                let Ok(deployment_id) = Uuid::try_parse(key) else { return Ok(None) };
                let _ = app.read_models.wait_for(&["deployments"], stored.position, READ_MODEL_WAIT).await;
                let Some(row) = nullops_projections::deployments::deployment(&app.read_models, deployment_id).await? else { return Ok(None) };
                let urls = app.service_urls(catalog, &row);
                let failure = &row.failure;
                // The state the event put it in (not the read model's: that may be later).
                let state = match topic {
                    WebhookTopic::DeploymentCreated => DeploymentStatus::Pending,
                    WebhookTopic::DeploymentRunning => DeploymentStatus::Running,
                    WebhookTopic::DeploymentFailed => DeploymentStatus::Failed,
                    WebhookTopic::DeploymentExpired => DeploymentStatus::Deleting,
                    _ => DeploymentStatus::Deleted,
                }
                .name();
                let data = json!({
                    "deployment": {
                        "id": row.deployment_id, "name": row.name, "project": row.project, "projectId": row.project_id,
                        "environment": row.environment, "state": state, "attempt": row.attempt, "pipelineVersion": row.pipeline_version,
                        "node": row.node_id, "urls": urls, "createdBy": row.created_by, "expiresAt": time(row.expires_at),
                        "failure": failure.as_ref().map(|f| json!({"step": f.step, "reason": f.reason, "exitCode": f.exit_code, "oomKilled": f.oom_killed})),
                    },
                });
                Some(Told { topic, subject: format!("deployment/{deployment_id}"), project: Some(row.project), environment: Some(row.environment), data })
            }
            DomainEvent::Node(e) => {
                let topic = match e {
                    NodeEvent::Connected(_) => WebhookTopic::NodeOnline,
                    NodeEvent::Disconnected(_) => WebhookTopic::NodeOffline,
                    _ => return Ok(None),
                };
                let Ok(node_id) = Uuid::try_parse(key) else { return Ok(None) };
                let _ = app.read_models.wait_for(&["nodes"], stored.position, READ_MODEL_WAIT).await;
                let Some(node) = nullops_projections::nodes::node(&app.read_models, node_id).await? else { return Ok(None) };
                let reason = match e {
                    NodeEvent::Disconnected(d) => Some(d.reason.clone()),
                    _ => None,
                };
                let data = json!({"node": {"id": node_id, "host": node.host, "port": node.port, "environment": node.environment}, "reason": reason});
                Some(Told { topic, subject: format!("node/{node_id}"), project: None, environment: Some(node.environment), data })
            }
            DomainEvent::Pipeline(PipelineEvent::VersionSaved(v)) => {
                let Some(project) = catalog.projects.values().find(|p| p.project_id == v.project_id) else { return Ok(None) };
                let data = json!({"project": project.name, "projectId": project.project_id, "version": v.version, "message": v.message});
                Some(Told {
                    topic: WebhookTopic::PipelineSaved,
                    subject: format!("project/{}", project.project_id),
                    project: Some(project.name.clone()),
                    environment: None,
                    data,
                })
            }
            _ => None,
        })
    }
}

/// What an event tells.
struct Told {
    topic: WebhookTopic,
    subject: String,
    project: Option<String>,
    environment: Option<String>,
    data: Value,
}

/// `micros` since the epoch as RFC 3339, as CloudEvents write times.
fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default().to_rfc3339()
}

/// Whether webhook `w` is told of `told`.
fn wants(w: &WebhookDefinition, told: &Told) -> bool {
    w.topics.contains(&told.topic)
        && w.project.as_ref().is_none_or(|p| told.project.as_ref() == Some(p))
        && w.environment.as_ref().is_none_or(|e| told.environment.as_ref() == Some(e))
}

/// The pause before attempt `attempts + 1`: the first pause, doubled with each failure in a
/// row, at most the longest (`Pacing::webhook_first_pause`, `Pacing::webhook_max_pause`).
fn pause_micros(attempts: u32, pacing: &Pacing) -> i64 {
    let first = micros(pacing.webhook_first_pause);
    first.saturating_mul(1i64 << attempts.saturating_sub(1).min(20)).min(micros(pacing.webhook_max_pause))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Saga for WebhookProcess {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("deployment.") || event_type.starts_with("node.") || event_type == nullops_events::codec::types::PIPELINE_VERSION_SAVED.0
    }

    fn working_rows(&self) -> Option<WorkingRows> {
        Some(self.app.read_models.working_rows())
    }

    /// A delivery for each webhook that wants to be told of `stored`.
    async fn record(&self, stored: &StoredEvent) -> Result<Vec<WorkingWrite>, SagaError> {
        let (catalog, _) = self.catalog.load(&*self.app.store, "main").await?;
        if catalog.webhooks.is_empty() {
            return Ok(vec![]);
        }
        let event = stored.decode()?.event;
        let Some(told) = self.describe(stored, &event, &catalog).await? else { return Ok(vec![]) };
        let mut deliveries = Vec::new();
        for w in catalog.webhooks.values().filter(|w| wants(w, &told)) {
            let body = json!({
                "specversion": "1.0",
                "id": stored.event_id.to_string(),
                "source": "nullops",
                "type": told.topic.cloud_event_type(),
                "subject": told.subject,
                "time": time(stored.occurred_at.0),
                "datacontenttype": "application/json",
                "data": {"actor": stored.metadata.actor.to_stored(), "occurredAt": time(stored.occurred_at.0), "event": stored.event_type, "details": told.data},
            });
            let row = DeliveryRow {
                webhook_id: w.webhook_id,
                event_id: stored.event_id.to_string(),
                topic: told.topic.cloud_event_type().to_owned(),
                subject: told.subject.clone(),
                position: (i64::try_from(stored.position.commit).unwrap_or(i64::MAX), i64::try_from(stored.position.seq).unwrap_or(i64::MAX)),
                body: body.to_string(),
                made_at: Timestamp::now().0,
                attempts: 0,
                next_at: Timestamp::now().0,
                state: rows::DeliveryState::Pending,
            };
            deliveries.push(WorkingWrite::Delivery(row));
        }
        Ok(deliveries)
    }

    /// Sends what is due: each subject's oldest pending delivery of each webhook.
    async fn tick(&self) -> Result<(), SagaError> {
        let prune = {
            let mut last = self.pruned.lock().expect("prune lock");
            let due = last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if prune {
            let before = Timestamp::now().0 - i64::try_from(KEEP_FOR.as_micros()).unwrap_or(i64::MAX);
            let gone = rows::prune(&self.app.read_models.working_rows(), before).await?;
            if gone > 0 {
                tracing::info!(deliveries = gone, "forgot webhook deliveries that ended over a week ago");
            }
        }
        let (catalog, _) = self.catalog.load(&*self.app.store, "main").await?;
        // Deliveries of webhooks deleted since are given up.
        for id in rows::pending_webhooks(&self.app.read_models).await? {
            if !catalog.webhooks.contains_key(&id) {
                rows::abandon(&self.app.read_models.working_rows(), id).await?;
                self.endpoints.lock().expect("endpoints lock").remove(&id);
            }
        }
        let now = Timestamp::now().0;
        for webhook in catalog.webhooks.values() {
            let (idle, room) = {
                let endpoints = self.endpoints.lock().expect("endpoints lock");
                let busy: usize = endpoints.values().map(|e| e.sending.len()).sum();
                let endpoint = endpoints.get(&webhook.webhook_id).cloned().unwrap_or_default();
                (endpoint.paused_until <= now && endpoint.sending.len() < PER_WEBHOOK, CONCURRENCY.saturating_sub(busy))
            };
            if !idle || room == 0 {
                continue;
            }
            let pending = rows::pending_of(&self.app.read_models, webhook.webhook_id, SCAN).await?;
            let chosen = {
                let mut endpoints = self.endpoints.lock().expect("endpoints lock");
                let endpoint = endpoints.entry(webhook.webhook_id).or_default();
                let chosen = choose(&pending, endpoint, now, room);
                endpoint.sending.extend(chosen.iter().map(|&i| pending[i].event_id.clone()));
                chosen
            };
            for i in chosen {
                let d = pending[i].clone();
                let (app, http, endpoints, webhook) = (self.app.clone(), self.http.clone(), self.endpoints.clone(), webhook.clone());
                tokio::spawn(async move {
                    let delivered = send(&app, &http, &webhook, &d).await;
                    let mut endpoints = endpoints.lock().expect("endpoints lock");
                    let endpoint = endpoints.entry(webhook.webhook_id).or_default();
                    endpoint.sending.remove(&d.event_id);
                    endpoint.answered(delivered, Timestamp::now().0, &app.pacing);
                });
            }
        }
        Ok(())
    }
}

/// Why an attempt got no answer, as a person reads it in the deliveries' list: a class of
/// failure in our words (the library's text goes to the log).
fn unanswered(failure: &Failure, pacing: &Pacing) -> String {
    match failure {
        Failure::TimedOut => format!("no answer within {}", crate::pacing::shown(pacing.webhook_attempt_timeout)),
        f => f.to_string(),
    }
}

/// One webhook's endpoint, as this process knows it between ticks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Endpoint {
    /// Event ids being sent to it now.
    sending: HashSet<String>,
    /// Failed attempts in a row: a dead endpoint backs off as a whole, alone.
    failures: u32,
    /// Nothing more is sent to it before this (microseconds).
    paused_until: i64,
}

impl Endpoint {
    fn answered(&mut self, delivered: bool, now: i64, pacing: &Pacing) {
        if delivered {
            self.failures = 0;
            self.paused_until = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.paused_until = now + pause_micros(self.failures, pacing);
        }
    }
}

/// Which of one webhook's pending deliveries (oldest first) to send now, as indexes: each
/// subject's oldest (the order of its events is kept), when it is due and not being sent, while
/// the endpoint is not paused after failures, up to the webhook's own share ([`PER_WEBHOOK`])
/// and the `room` left in the process. What other webhooks have pending plays no part.
fn choose(pending: &[DeliveryRow], endpoint: &Endpoint, now: i64, room: usize) -> Vec<usize> {
    if endpoint.paused_until > now {
        return vec![];
    }
    let free = PER_WEBHOOK.saturating_sub(endpoint.sending.len()).min(room);
    let mut heads = HashSet::new();
    pending
        .iter()
        .enumerate()
        .filter(|(_, d)| heads.insert(d.subject.as_str()))
        .filter(|(_, d)| d.next_at <= now && !endpoint.sending.contains(&d.event_id))
        .map(|(i, _)| i)
        .take(free)
        .collect()
}

/// One attempt at `d`, recorded; whether it was delivered.
async fn send(app: &Core, http: &reqwest::Client, webhook: &WebhookDefinition, d: &DeliveryRow) -> bool {
    let attempt = d.attempts + 1;
    let started = Instant::now();
    let outcome = post(app, http, webhook, d).await;
    let millis = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = Timestamp::now().0;
    let delivered = outcome.is_ok();
    let (row, next_at, state) = match outcome {
        Ok(status) => (AttemptRow { attempt, at: now, status: Some(status), error: String::new(), millis }, now, rows::DeliveryState::Delivered),
        Err((status, error)) => {
            tracing::info!(webhook = %webhook.webhook_id, url = %webhook.url, attempt, %error, "a webhook delivery failed; it will be tried again");
            let state = if attempt >= MAX_ATTEMPTS { rows::DeliveryState::Abandoned } else { rows::DeliveryState::Pending };
            (AttemptRow { attempt, at: now, status, error, millis }, now + pause_micros(attempt, &app.pacing), state)
        }
    };
    if let Err(e) = rows::attempted(&app.read_models.working_rows(), d, &row, next_at, state).await {
        tracing::warn!(webhook = %webhook.webhook_id, error = %e, "cannot record a webhook delivery attempt; it will be sent again");
    }
    delivered
}

/// Posts `d` to the webhook's endpoint, signed: the status it answered, or why it did not
/// deliver (the status when it answered, and what a person reads).
async fn post(app: &Core, http: &reqwest::Client, webhook: &WebhookDefinition, d: &DeliveryRow) -> Result<u16, (Option<u16>, String)> {
    let secret = app
        .keyring
        .unseal(&webhook.secret, &webhook_secret_purpose(webhook.webhook_id))
        .await
        .map_err(|e| (None, format!("the signing secret cannot be read: {e}")))?;
    let secret = String::from_utf8_lossy(&secret).into_owned();
    let timestamp = Timestamp::now().0 / 1_000_000;
    let signature = sign::signature(&secret, &d.event_id, timestamp, &d.body).ok_or((None, "the signing secret is not a whsec_ secret".to_owned()))?;
    let url = reqwest::Url::parse(&webhook.url).map_err(|_| (None, "its URL is not a URL".to_owned()))?;
    app.egress.admit(&url).await.map_err(|refusal| (None, unanswered(&Failure::Refused(refusal), &app.pacing)))?;
    let request = http
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone());
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err((Some(r.status().as_u16()), format!("answered {}", r.status()))),
        Err(e) => {
            tracing::info!(webhook = %webhook.webhook_id, error = %e, "a webhook delivery got no answer");
            Err((None, unanswered(&nullops_egress::failure(&e), &app.pacing)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(webhook: u128, n: i64, subject: &str, next_at: i64) -> DeliveryRow {
        DeliveryRow {
            webhook_id: Uuid::from_u128(webhook),
            event_id: format!("e{n}"),
            topic: "io.nullops.deployment.created".into(),
            subject: subject.into(),
            position: (n, 0),
            body: String::new(),
            made_at: 0,
            attempts: 0,
            next_at,
            state: rows::DeliveryState::Pending,
        }
    }

    #[test]
    fn a_backlog_or_a_dead_endpoint_of_one_webhook_never_delays_another() {
        // Given webhook 1 with 5000 deliveries pending for a dead endpoint, and webhook 2 with one
        let backlog: Vec<DeliveryRow> = (0..5000).map(|n| delivery(1, n, &format!("deployment/{n}"), 0)).collect();
        let healthy = vec![delivery(2, 1, "deployment/x", 0)];
        let pacing = Pacing::default();
        let mut dead = Endpoint::default();
        // When webhook 1 is chosen for, it gets its own share only
        let first = choose(&backlog, &dead, 10, CONCURRENCY);
        assert_eq!(first.len(), PER_WEBHOOK);
        dead.sending.extend(first.iter().map(|&i| backlog[i].event_id.clone()));
        // And webhook 2, chosen for on its own, is sent at once
        assert_eq!(choose(&healthy, &Endpoint::default(), 10, CONCURRENCY - PER_WEBHOOK), vec![0]);
        // While webhook 1 hangs, it gets nothing more
        assert_eq!(choose(&backlog, &dead, 10, CONCURRENCY), Vec::<usize>::new());
        // Once its attempts fail, it pauses as a whole, growing with each failure in a row
        dead.sending.clear();
        dead.answered(false, 10, &pacing);
        assert_eq!(choose(&backlog, &dead, 10 + pause_micros(1, &pacing) - 1, CONCURRENCY), Vec::<usize>::new());
        assert_eq!(choose(&backlog, &dead, 10 + pause_micros(1, &pacing), CONCURRENCY).len(), PER_WEBHOOK);
        dead.answered(false, 20, &pacing);
        assert_eq!(dead.paused_until, 20 + pause_micros(2, &pacing));
        dead.answered(true, 30, &pacing);
        assert_eq!((dead.failures, dead.paused_until), (0, 0));
    }

    #[test]
    fn each_subject_goes_in_the_order_of_its_events() {
        // The oldest of a subject waits for its pause: the newer ones of the subject wait too.
        let pending = vec![delivery(1, 1, "deployment/a", 100), delivery(1, 2, "deployment/a", 0), delivery(1, 3, "deployment/b", 0)];
        assert_eq!(choose(&pending, &Endpoint::default(), 50, CONCURRENCY), vec![2]);
        assert_eq!(choose(&pending, &Endpoint::default(), 100, CONCURRENCY), vec![0, 2]);
        // The process's own room bounds it too.
        assert_eq!(choose(&pending, &Endpoint::default(), 100, 1), vec![0]);
    }

    #[test]
    fn pauses_grow_and_stop_growing() {
        let pacing = Pacing::default();
        assert_eq!((1..=7).map(|a| pause_micros(a, &pacing) / 1_000_000).collect::<Vec<_>>(), [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(pause_micros(u32::MAX, &pacing) / 1_000_000, 30);
        // Quicker, as the test servers run it.
        let quick = Pacing::parse("webhook_first_pause=100ms,webhook_max_pause=1s").unwrap();
        assert_eq!((1..=6).map(|a| pause_micros(a, &quick) / 1000).collect::<Vec<_>>(), [100, 200, 400, 800, 1000, 1000]);
    }
}
