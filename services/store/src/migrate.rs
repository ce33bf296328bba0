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

pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// Applies the migrations not yet recorded, inside the caller's transaction.
pub(crate) async fn apply<DB>(tx: &mut sqlx::Transaction<'_, DB>, migrations: &[Migration]) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query(CREATE_TABLE).execute(&mut **tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut **tx).await?;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in statements(m.sql) {
            sqlx::query(statement).execute(&mut **tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(nullops_events::Timestamp::now().0)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
