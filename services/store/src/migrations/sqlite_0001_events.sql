-- The embedded event log. SQLite serialises writers, so commit order is position order.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BLOB    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         BLOB    NOT NULL,
    occurred_at     INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    correlation_id  BLOB    NOT NULL,
    causation_id    BLOB,
    trace_context   TEXT,
    UNIQUE (stream_id, stream_version)
)
-- statement
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
)
-- statement
CREATE TABLE store_checkpoints (
    name       TEXT PRIMARY KEY,
    commit_pos INTEGER NOT NULL,
    seq        INTEGER NOT NULL
)
