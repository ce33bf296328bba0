//! The envelope around every event: identity, position and provenance.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

use crate::codec::{self, DecodeError};
use crate::DomainEvent;

/// Unique id of one event (UUID v7: time-ordered). The bus uses it as the de-duplication id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }
}
impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}
impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Ties together every event caused by one request, across aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CorrelationId(pub Uuid);

impl CorrelationId {
    pub fn new() -> Self {
        CorrelationId(Uuid::now_v7())
    }
}
impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

/// Name of one aggregate's stream, `<kind>-<key>`, e.g. `user-admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(kind: &str, key: &str) -> Self {
        StreamId(format!("{kind}-{key}"))
    }
    /// For ids read back from storage, which were built by [`StreamId::new`].
    pub fn from_stored(raw: String) -> Self {
        StreamId(raw)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The aggregate key: what follows `<kind>-`.
    pub fn key(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, key)| key)
    }
    pub fn kind(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(kind, _)| kind)
    }
}
impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(since.as_micros() as i64)
    }
    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }
}

/// Who caused an event: a user, or the platform itself (bootstrap, reconcilers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    User(String),
    System,
}

impl Actor {
    /// The form stored in the log and shown in the audit history.
    pub fn to_stored(&self) -> String {
        match self {
            Actor::User(name) => format!("user:{name}"),
            Actor::System => "system".to_owned(),
        }
    }
    pub fn from_stored(raw: &str) -> Self {
        match raw.strip_prefix("user:") {
            Some(name) => Actor::User(name.to_owned()),
            None => Actor::System,
        }
    }
}

/// Where an event sits in the global order that readers follow.
///
/// `commit` orders transactions by commit visibility (PostgreSQL: the transaction id, read only
/// below the oldest running transaction; SQLite: equal to `seq`, as writes are serialised) and
/// `seq` is the global position assigned at insert. Readers order by `(commit, seq)`, so an event
/// whose transaction commits late is never skipped. See ARCHITECTURE.md, "Global order".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    pub commit: u64,
    pub seq: u64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { commit: 0, seq: 0 };
}
impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.commit, self.seq)
    }
}

/// Provenance shared by every event a command appends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: Actor,
    pub correlation_id: CorrelationId,
    /// The event (or request) that caused this one, when there is one.
    pub causation_id: Option<Uuid>,
    /// W3C `traceparent` of the request that caused it.
    pub trace_context: Option<String>,
}

impl EventMetadata {
    pub fn system() -> Self {
        EventMetadata { actor: Actor::System, correlation_id: CorrelationId::new(), causation_id: None, trace_context: None }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: EventId,
    pub occurred_at: Timestamp,
    pub event_type: &'static str,
    pub schema_version: u16,
    pub payload: Vec<u8>,
    pub metadata: EventMetadata,
}

impl NewEvent {
    pub fn new(event: &DomainEvent, metadata: EventMetadata) -> Self {
        let (event_type, schema_version, payload) = codec::encode(event);
        NewEvent { event_id: EventId::new(), occurred_at: Timestamp::now(), event_type, schema_version, payload, metadata }
    }
}

/// An event as stored: envelope plus undecoded payload. This is also what the bus carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: EventId,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub position: LogPosition,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
    pub occurred_at: Timestamp,
    pub metadata: EventMetadata,
}

impl StoredEvent {
    /// Decodes the payload, upcasting older schema versions; a payload that does not decode is an
    /// error naming the stream and version.
    pub fn decode(&self) -> Result<RecordedEvent, DecodeError> {
        let event = codec::decode(&self.event_type, self.schema_version, &self.payload).map_err(|reason| DecodeError {
            stream_id: self.stream_id.to_string(),
            stream_version: self.stream_version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            reason,
        })?;
        Ok(RecordedEvent { stored: self.clone(), event })
    }
}

/// A stored event together with its decoded, current-version form.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub stored: StoredEvent,
    pub event: DomainEvent,
}
