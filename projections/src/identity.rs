//! The identity read model: users, live sessions and API tokens, as the gateway needs them to
//! authenticate requests and to answer `me`, `users` and `apiTokens`.

use async_trait::async_trait;
use nullops_events::identity::{ApiTokenEvent, SessionEvent, UserEvent};
use nullops_events::{DomainEvent, StoredEvent};
use sqlx::{AnyConnection, Row};

use crate::rows::{write_all, Shape, Value, Write};
use crate::{Projection, ProjectionError, ReadModelDb};

/// The name of this read model (its checkpoint's key; what `nullops projections rebuild` takes).
pub const NAME: &str = "identity";

pub struct IdentityProjection;

/// Lower-case hex, the form token hashes take in the read model.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl Projection for IdentityProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        ["user.", "session.", "api_token."].iter().any(|p| event_type.starts_with(p))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users", "sessions", "api_tokens"]
    }

    async fn apply(&self, conn: &mut AnyConnection, stored: &StoredEvent) -> Result<(), ProjectionError> {
        write_all(conn, &[stored], write).await
    }

    async fn apply_all(&self, conn: &mut AnyConnection, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        write_all(conn, events, write).await
    }
}

static USER: Shape =
    Shape { table: "users", columns: &["username", "user_id", "role", "disabled", "password_hash", "created_at", "updated_at"], on_conflict: None };
static SESSION: Shape = Shape { table: "sessions", columns: &["token_hash", "session_id", "username", "started_at", "expires_at", "ended"], on_conflict: None };
static API_TOKEN: Shape =
    Shape { table: "api_tokens", columns: &["token_id", "token_hash", "username", "name", "created_at", "expires_at", "revoked_at"], on_conflict: None };

/// What `stored` asks of the identity tables.
fn write(stored: &StoredEvent) -> Result<Vec<Write>, ProjectionError> {
    let key = stored.stream_id.key();
    let at = stored.occurred_at.0;
    let write = match stored.decode()?.event {
        DomainEvent::User(UserEvent::Registered(e)) => {
            let row = vec![e.username.into(), e.user_id.to_string().into(), e.role.as_str().into(), 0i64.into(), e.password_hash.into(), at.into(), at.into()];
            Write::Row(&USER, row)
        }
        DomainEvent::User(UserEvent::PasswordChanged(e)) => {
            Write::statement("UPDATE users SET password_hash = $1, updated_at = $2 WHERE username = $3", vec![e.password_hash.into(), at.into(), key.into()])
        }
        DomainEvent::User(UserEvent::Disabled(_)) => {
            Write::statement("UPDATE users SET disabled = 1, updated_at = $1 WHERE username = $2", vec![at.into(), key.into()])
        }
        DomainEvent::User(UserEvent::Enabled(_)) => {
            Write::statement("UPDATE users SET disabled = 0, updated_at = $1 WHERE username = $2", vec![at.into(), key.into()])
        }
        DomainEvent::Session(SessionEvent::Started(e)) => {
            let row = vec![hex(&e.token_hash).into(), e.session_id.to_string().into(), e.username.into(), at.into(), e.expires_at.0.into(), 0i64.into()];
            Write::Row(&SESSION, row)
        }
        DomainEvent::Session(SessionEvent::Ended(_)) => Write::statement("UPDATE sessions SET ended = 1 WHERE session_id = $1", vec![key.into()]),
        DomainEvent::ApiToken(ApiTokenEvent::Created(e)) => {
            let row = vec![
                e.token_id.to_string().into(),
                hex(&e.token_hash).into(),
                e.username.into(),
                e.name.into(),
                at.into(),
                e.expires_at.map(|t| t.0).into(),
                Value::Int(None),
            ];
            Write::Row(&API_TOKEN, row)
        }
        DomainEvent::ApiToken(ApiTokenEvent::Revoked(_)) => {
            Write::statement("UPDATE api_tokens SET revoked_at = $1 WHERE token_id = $2", vec![at.into(), key.into()])
        }
        DomainEvent::Catalog(_)
        | DomainEvent::Pipeline(_)
        | DomainEvent::Secret(_)
        | DomainEvent::Node(_)
        | DomainEvent::Capacity(_)
        | DomainEvent::Deployment(_)
        | DomainEvent::DeploymentName(_)
        | DomainEvent::Preview(_) => return Ok(vec![]),
    };
    Ok(vec![write])
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub username: String,
    pub user_id: String,
    pub role: String,
    pub disabled: bool,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const USER_COLUMNS: &str = "username, user_id, role, disabled, password_hash, created_at, updated_at";

fn user_row(r: &sqlx::any::AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        username: r.try_get(0)?,
        user_id: r.try_get(1)?,
        role: r.try_get(2)?,
        disabled: r.try_get::<i64, _>(3)? != 0,
        password_hash: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

pub async fn user(db: &ReadModelDb, username: &str) -> Result<Option<UserRow>, ProjectionError> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1")).bind(username).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(user_row).transpose()?)
}

pub async fn users(db: &ReadModelDb) -> Result<Vec<UserRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(user_row).collect::<Result<_, _>>()?)
}

/// Who a bearer credential (session or API token) belongs to, and whether it is still good.
#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub role: String,
    pub user_disabled: bool,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// The session id, for logout; `None` for an API token.
    pub session_id: Option<String>,
}

pub async fn session_by_token_hash(db: &ReadModelDb, token_hash: &str) -> Result<Option<Credential>, ProjectionError> {
    credential(
        db,
        "SELECT u.username, u.role, u.disabled, s.expires_at, s.ended, s.session_id \
         FROM sessions s JOIN users u ON u.username = s.username WHERE s.token_hash = $1",
        token_hash,
    )
    .await
}

pub async fn api_token_by_hash(db: &ReadModelDb, token_hash: &str) -> Result<Option<Credential>, ProjectionError> {
    credential(
        db,
        "SELECT u.username, u.role, u.disabled, t.expires_at, \
         CAST(CASE WHEN t.revoked_at IS NULL THEN 0 ELSE 1 END AS BIGINT), CAST(NULL AS TEXT) \
         FROM api_tokens t JOIN users u ON u.username = t.username WHERE t.token_hash = $1",
        token_hash,
    )
    .await
}

/// `sql` selects username, role, disabled, expires_at, revoked (0/1) and session id (or NULL).
async fn credential(db: &ReadModelDb, sql: &str, token_hash: &str) -> Result<Option<Credential>, ProjectionError> {
    let Some(r) = sqlx::query(sql).bind(token_hash).fetch_optional(db.pool()).await? else { return Ok(None) };
    Ok(Some(Credential {
        username: r.try_get(0)?,
        role: r.try_get(1)?,
        user_disabled: r.try_get::<i64, _>(2)? != 0,
        expires_at: r.try_get(3)?,
        revoked: r.try_get::<i64, _>(4)? != 0,
        session_id: r.try_get(5)?,
    }))
}

#[derive(Debug, Clone)]
pub struct ApiTokenRow {
    pub token_id: String,
    pub username: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const API_TOKEN_COLUMNS: &str = "token_id, username, name, created_at, expires_at, revoked_at";

fn api_token_row(r: &sqlx::any::AnyRow) -> Result<ApiTokenRow, sqlx::Error> {
    Ok(ApiTokenRow {
        token_id: r.try_get(0)?,
        username: r.try_get(1)?,
        name: r.try_get(2)?,
        created_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
    })
}

pub async fn api_tokens_of(db: &ReadModelDb, username: &str) -> Result<Vec<ApiTokenRow>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE username = $1 ORDER BY created_at, token_id"))
        .bind(username)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(api_token_row).collect::<Result<_, _>>()?)
}

pub async fn api_token(db: &ReadModelDb, token_id: &str) -> Result<Option<ApiTokenRow>, ProjectionError> {
    let row = sqlx::query(&format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = $1")).bind(token_id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(api_token_row).transpose()?)
}
