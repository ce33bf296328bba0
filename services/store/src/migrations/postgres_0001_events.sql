-- The event log. `position` is assigned at insert; `tx_id` is the inserting transaction, so that
-- readers can stay below the oldest transaction still running (see ARCHITECTURE.md, "Global order").
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           xid8   NOT NULL DEFAULT pg_current_xact_id(),
    event_id        UUID   NOT NULL UNIQUE,
    stream_id       TEXT   NOT NULL,
    stream_version  BIGINT NOT NULL,
    event_type      TEXT   NOT NULL,
    schema_version  INT    NOT NULL,
    payload         BYTEA  NOT NULL,
    occurred_at     BIGINT NOT NULL,
    actor           TEXT   NOT NULL,
    correlation_id  UUID   NOT NULL,
    causation_id    UUID,
    trace_context   TEXT,
    UNIQUE (stream_id, stream_version)
)
-- statement
CREATE INDEX events_global_order ON events (tx_id, position)
-- statement
CREATE TABLE store_checkpoints (
    name       TEXT PRIMARY KEY,
    commit_pos BIGINT NOT NULL,
    seq        BIGINT NOT NULL
)
