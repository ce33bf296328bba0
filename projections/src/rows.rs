//! Rows written together. A projection hands its inserts and upserts to [`Writes`], which puts
//! consecutive rows of one [`Shape`] in one statement; any other statement first writes the
//! rows queued before it, so the transaction sees the statements in the order the
//! events asked for them.
//!
//! Why: replaying the log is bound by round trips to the database (about 0.1 ms each on a
//! local PostgreSQL), and a batch of 500 events that each insert a row is then a few statements
//! instead of 500.

use std::collections::HashSet;

use nullops_events::StoredEvent;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use crate::ProjectionError;

/// Most rows in one statement: far under PostgreSQL's 65,535 parameters for any of our tables.
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// A read-model column's value: every column is BIGINT or TEXT, either of them nullable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

/// Rows of one table that can share a statement.
#[derive(Debug)]
pub(crate) struct Shape {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// For an upsert: what a row whose key is there already does.
    pub on_conflict: Option<OnConflict>,
}

#[derive(Debug)]
pub(crate) struct OnConflict {
    /// The key's columns, as positions in [`Shape::columns`].
    pub key: &'static [usize],
    pub then: Then,
}

#[derive(Debug)]
pub(crate) enum Then {
    /// `DO UPDATE SET …`: the row present takes these assignments.
    Update(&'static str),
    /// `DO NOTHING`: the row present stays as it is.
    Nothing,
}

impl Shape {
    fn sql(&self, rows: usize) -> String {
        let mut sql = format!("INSERT INTO {} ({}) VALUES {}", self.table, self.columns.join(", "), placeholders(rows, self.columns.len()));
        if let Some(conflict) = &self.on_conflict {
            let key: Vec<&str> = conflict.key.iter().map(|&i| self.columns[i]).collect();
            let then = match conflict.then {
                Then::Update(set) => format!("DO UPDATE SET {set}"),
                Then::Nothing => "DO NOTHING".to_owned(),
            };
            sql.push_str(&format!(" ON CONFLICT ({}) {then}", key.join(", ")));
        }
        sql
    }

    fn key_of(&self, row: &[Value]) -> Option<Vec<Value>> {
        self.on_conflict.as_ref().map(|c| c.key.iter().map(|&i| row[i].clone()).collect())
    }
}

/// `($1, $2), ($3, $4), …`: `rows` rows of `columns` parameters.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows).map(|r| format!("({})", (1..=columns).map(|c| format!("${}", r * columns + c)).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ")
}

/// The writes of a batch of events, on the runner's transaction.
struct Writes<'c> {
    conn: &'c mut AnyConnection,
    shape: Option<&'static Shape>,
    rows: Vec<Vec<Value>>,
    /// The upsert keys already queued: PostgreSQL refuses a statement that upserts one key
    /// twice, so a repeated key starts a new statement.
    keys: HashSet<Vec<Value>>,
}

impl<'c> Writes<'c> {
    pub fn new(conn: &'c mut AnyConnection) -> Self {
        Writes { conn, shape: None, rows: Vec::new(), keys: HashSet::new() }
    }

    /// Queues a row of `shape`; `values` in the order of its columns.
    pub async fn row(&mut self, shape: &'static Shape, values: Vec<Value>) -> Result<(), ProjectionError> {
        debug_assert_eq!(values.len(), shape.columns.len(), "a row of {} has a value per column", shape.table);
        let key = shape.key_of(&values);
        let same = self.shape.is_some_and(|s| std::ptr::eq(s, shape));
        if !same || self.rows.len() >= ROWS_PER_STATEMENT || key.as_ref().is_some_and(|k| self.keys.contains(k)) {
            self.flush().await?;
        }
        self.shape = Some(shape);
        self.keys.extend(key);
        self.rows.push(values);
        Ok(())
    }

    /// Runs any other statement, after the rows queued before it.
    pub async fn execute(&mut self, sql: &str, values: Vec<Value>) -> Result<(), ProjectionError> {
        self.flush().await?;
        bound(sqlx::query(sql), values).execute(&mut *self.conn).await?;
        Ok(())
    }

    /// Writes what is queued: call at the end of the batch.
    pub async fn finish(mut self) -> Result<(), ProjectionError> {
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ProjectionError> {
        let Some(shape) = self.shape.take() else { return Ok(()) };
        self.keys.clear();
        let rows = std::mem::take(&mut self.rows);
        let sql = shape.sql(rows.len());
        bound(sqlx::query(&sql), rows.into_iter().flatten()).execute(&mut *self.conn).await?;
        Ok(())
    }
}

fn bound<'q>(mut query: Query<'q, Any, AnyArguments<'q>>, values: impl IntoIterator<Item = Value>) -> Query<'q, Any, AnyArguments<'q>> {
    for value in values {
        query = match value {
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
        };
    }
    query
}

/// What one event asks of a projection's tables, as data: deciding it is pure, and
/// [`write_all`] puts the rows of a batch together.
#[derive(Debug)]
pub(crate) enum Write {
    Row(&'static Shape, Vec<Value>),
    /// Any other statement, with its parameters in order.
    Statement(String, Vec<Value>),
}

impl Write {
    pub fn statement(sql: impl Into<String>, values: Vec<Value>) -> Self {
        Write::Statement(sql.into(), values)
    }
}

/// Applies `events` as `write` asks, in order, with the rows of one shape together.
pub(crate) async fn write_all(
    conn: &mut AnyConnection,
    events: &[&StoredEvent],
    write: fn(&StoredEvent) -> Result<Vec<Write>, ProjectionError>,
) -> Result<(), ProjectionError> {
    let mut writes = Writes::new(conn);
    for event in events {
        for w in write(event)? {
            match w {
                Write::Row(shape, values) => writes.row(shape, values).await?,
                Write::Statement(sql, values) => writes.execute(&sql, values).await?,
            }
        }
    }
    writes.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    static UPSERT: Shape =
        Shape { table: "t", columns: &["a", "b", "c"], on_conflict: Some(OnConflict { key: &[0, 1], then: Then::Update("c = excluded.c") }) };

    #[test]
    fn an_upsert_names_its_key_and_what_a_present_row_takes() {
        assert_eq!(UPSERT.sql(2), "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT (a, b) DO UPDATE SET c = excluded.c");
        assert_eq!(UPSERT.key_of(&[1i64.into(), "x".into(), 2i64.into()]), Some(vec![1i64.into(), "x".into()]));
    }
}
