//! Schema migrations, applied in order at start and recorded in `schema_migrations`.

/// One schema step: a version and the statements that take the schema there.
pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// Splits a migration script into statements. Scripts separate statements with a line holding
/// only `-- statement`, so bodies of functions may contain semicolons.
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split("\n-- statement\n").map(str::trim).filter(|s| !s.is_empty())
}

pub(crate) const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
