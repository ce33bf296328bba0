//! Decoding event rows, shared by both backends (they select the same columns in the same order).

use nullops_events::{Actor, CorrelationId, EventId, EventMetadata, LogPosition, StoredEvent, StreamId, Timestamp};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::StoreError;

/// The columns every event query selects, in this order, after `commit_pos, seq`.
pub(crate) const EVENT_COLUMNS: &str = "event_id, stream_id, stream_version, event_type, schema_version, \
     payload, occurred_at, actor, correlation_id, causation_id, trace_context";

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

pub(crate) fn stored_event<'r, R>(row: &'r R) -> Result<StoredEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
{
    let schema_version: i32 = row.try_get(6)?;
    let stream_id: String = row.try_get(3)?;
    Ok(StoredEvent {
        position: LogPosition { commit: unsigned(row.try_get(0)?, "commit")?, seq: unsigned(row.try_get(1)?, "position")? },
        event_id: EventId(row.try_get(2)?),
        stream_version: unsigned(row.try_get(4)?, "stream version")?,
        event_type: row.try_get(5)?,
        schema_version: u16::try_from(schema_version).map_err(|_| StoreError::Corrupt(format!("schema version {schema_version} in {stream_id}")))?,
        stream_id: StreamId::from_stored(stream_id),
        payload: row.try_get(7)?,
        occurred_at: Timestamp(row.try_get(8)?),
        metadata: EventMetadata {
            actor: Actor::from_stored(&row.try_get::<String, _>(9)?),
            correlation_id: CorrelationId(row.try_get(10)?),
            causation_id: row.try_get(11)?,
            trace_context: row.try_get(12)?,
        },
    })
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
