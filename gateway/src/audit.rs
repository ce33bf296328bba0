//! The audit history's entry as the API shows it: one event of the log, with what changed in
//! words. Served by `auditLog` and `auditEvents` (`schema.rs`) and a deployment's `history`.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use nullops_projections::audit;

use crate::context::time;

#[derive(SimpleObject)]
pub struct AuditEntryGql {
    /// Global position in the event log.
    position: String,
    event_id: String,
    stream: String,
    stream_version: i64,
    event_type: String,
    actor: String,
    occurred_at: DateTime<Utc>,
    correlation_id: String,
    causation_id: Option<String>,
    /// What changed, in words, with the names involved (never a secret).
    summary: String,
}

impl From<audit::AuditEntry> for AuditEntryGql {
    fn from(e: audit::AuditEntry) -> Self {
        AuditEntryGql {
            position: e.position.seq.to_string(),
            event_id: e.event_id,
            stream: e.stream_id,
            stream_version: e.stream_version,
            event_type: e.event_type,
            actor: e.actor,
            occurred_at: time(e.occurred_at),
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            summary: e.summary,
        }
    }
}
