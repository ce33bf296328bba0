//! One error type for the API. Every error leaves with a stable `extensions.code` and a message
//! a person can act on; internal details are logged, never returned.

use async_graphql::ErrorExtensions;
use nullops_domain::DomainError;
use nullops_projections::ProjectionError;
use nullops_store::commands::CommandError;
use nullops_store::StoreError;

/// Deliberately not `Display`: async-graphql turns any `Display` error into a bare message, and
/// this type's own conversion is what attaches `extensions.code`.
#[derive(Debug, Clone)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    InvalidInput(String),
    /// No node has room; the message gives the figures asked and the best free.
    ResourcesExhausted(String),
    /// A pipeline with these problems: INVALID_INPUT on field `pipeline`, each problem also in
    /// `extensions.problems` as `{node, field, code, message}` for an editor to show on its node.
    InvalidPipeline(Vec<nullops_domain::pipeline::Problem>),
    RateLimited {
        retry_after_secs: u64,
    },
    /// The change is stored but a read model had not caught up within the wait.
    NotYetVisible(String),
    Unavailable,
    /// A read model the answer comes from is replaying the log from its start (an upgrade
    /// reshaped it, or `nullops projections rebuild`): its tables are partial until it is done.
    Rebuilding {
        read_model: String,
        /// The `seq` it has read to, and the log's head.
        at: u64,
        of: u64,
    },
    /// Something the platform depends on (a registry, the keyring) failed; the message names it.
    Upstream {
        code: &'static str,
        message: String,
    },
    /// Logged under this id; the id is all the caller sees.
    Internal(String),
    // Refusals of plain HTTP requests (the GraphQL endpoint's body, the forge hooks):
    /// The body is larger than the endpoint takes.
    PayloadTooLarge(String),
    /// The body is not what the endpoint reads.
    BadRequest(String),
    /// The body is not sent as JSON (cross-site protection).
    UnsupportedMediaType(String),
    /// Another site's page sent it (cross-site protection).
    CrossSite(String),
    /// A forge's hook about another repository than the project's link.
    WrongRepository(String),
}

impl ApiError {
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::InvalidInput(m)
            | ApiError::ResourcesExhausted(m)
            | ApiError::Upstream { message: m, .. }
            | ApiError::PayloadTooLarge(m)
            | ApiError::BadRequest(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::CrossSite(m)
            | ApiError::WrongRepository(m) => m.clone(),
            ApiError::RateLimited { retry_after_secs } => {
                format!("too many failed attempts; try again in {retry_after_secs} s")
            }
            ApiError::InvalidPipeline(problems) => DomainError::InvalidPipeline(problems.clone()).to_string(),
            ApiError::NotYetVisible(m) => format!("the change was saved but is not visible yet ({m}); reload shortly"),
            ApiError::Unavailable => "the service is temporarily unavailable; try again".into(),
            ApiError::Rebuilding { read_model, at, of } => {
                format!("the {read_model} read model is being rebuilt from the event log and answers once it is whole; try again shortly: rebuilding ({at} of {of} events)")
            }
            ApiError::Internal(id) => format!("internal error (logged with error id {id})"),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::InvalidInput(_) | ApiError::InvalidPipeline(_) => "INVALID_INPUT",
            ApiError::ResourcesExhausted(_) => "RESOURCES_EXHAUSTED",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::NotYetVisible(_) => "NOT_YET_VISIBLE",
            ApiError::Unavailable | ApiError::Rebuilding { .. } => "UNAVAILABLE",
            ApiError::Upstream { code, .. } => code,
            ApiError::Internal(_) => "INTERNAL",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::CrossSite(_) => "CROSS_SITE_REQUEST",
            ApiError::WrongRepository(_) => "WRONG_REPOSITORY",
        }
    }

    /// The HTTP status of this error where it is answered outside GraphQL (the forge hooks,
    /// the metrics, the GraphQL endpoint's own refusals).
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::Unauthenticated(_) => 401,
            ApiError::Forbidden(_) | ApiError::CrossSite(_) => 403,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::BadRequest(_) => 400,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::WrongRepository(_) => 422,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::InvalidInput(_) | ApiError::InvalidPipeline(_) => 400,
            ApiError::RateLimited { .. } => 429,
            ApiError::ResourcesExhausted(_) | ApiError::Unavailable | ApiError::Rebuilding { .. } | ApiError::NotYetVisible(_) => 503,
            ApiError::Upstream { .. } => 502,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn sign_in() -> Self {
        ApiError::Unauthenticated("sign in first: send 'Authorization: Bearer <token>' or the session cookie".into())
    }

    /// Logs an unexpected failure with a fresh id and returns an error naming only that id.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        tracing::error!(error_id = %id, error = %err, "internal error");
        ApiError::Internal(id)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(m) => ApiError::NotFound(m),
            DomainError::AlreadyExists(m) | DomainError::Conflict(m) => ApiError::Conflict(m),
            DomainError::Forbidden(m) => ApiError::Forbidden(m),
            DomainError::ResourcesExhausted(m) => ApiError::ResourcesExhausted(m),
            e @ DomainError::InvalidInput { .. } => ApiError::InvalidInput(e.to_string()),
            DomainError::InvalidPipeline(problems) => ApiError::InvalidPipeline(problems),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Contention { .. } => ApiError::Conflict(e.to_string()),
            CommandError::Store(StoreError::Conflict { .. }) => ApiError::Conflict(e.to_string()),
            CommandError::Store(StoreError::Database(ref db)) if is_unavailable(db) => {
                tracing::warn!(error = %e, "event store unavailable");
                ApiError::Unavailable
            }
            other => ApiError::internal(other),
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        (&e).into()
    }
}

/// A read model error shared by a batch of loads (`loaders.rs`) converts the same way.
impl From<&ProjectionError> for ApiError {
    fn from(e: &ProjectionError) -> Self {
        match e {
            ProjectionError::CatchUpTimeout { projection, .. } => {
                tracing::warn!(error = %e, "read model lagging");
                ApiError::NotYetVisible(format!("read model {projection} is behind"))
            }
            ProjectionError::Database(db) if is_unavailable(db) => ApiError::Unavailable,
            other => ApiError::internal(other),
        }
    }
}

impl From<nullops_registry::RegistryError> for ApiError {
    fn from(e: nullops_registry::RegistryError) -> Self {
        use nullops_registry::RegistryError as R;
        match e {
            R::RepositoryNotFound { .. } => ApiError::NotFound(e.to_string()),
            R::Unauthorized { .. } => ApiError::Upstream { code: "REGISTRY_AUTH_FAILED", message: e.to_string() },
            R::Unreachable { .. } | R::TimedOut { .. } | R::Protocol { .. } => ApiError::Upstream { code: "REGISTRY_UNAVAILABLE", message: e.to_string() },
        }
    }
}

impl From<nullops_saga::DispatchError> for ApiError {
    fn from(e: nullops_saga::DispatchError) -> Self {
        match e {
            nullops_saga::DispatchError::Command(e) => e.into(),
            nullops_saga::DispatchError::ReadModel(e) => e.into(),
        }
    }
}

impl From<nullops_saga::SagaError> for ApiError {
    fn from(e: nullops_saga::SagaError) -> Self {
        use nullops_saga::SagaError as S;
        match e {
            S::Command(e) => e.into(),
            S::ReadModel(e) => e.into(),
            S::Store(StoreError::Database(ref db)) if is_unavailable(db) => ApiError::Unavailable,
            other => ApiError::internal(other),
        }
    }
}

impl From<nullops_saga::TagsError> for ApiError {
    fn from(e: nullops_saga::TagsError) -> Self {
        match e {
            nullops_saga::TagsError::Keyring(e) => e.into(),
            nullops_saga::TagsError::Registry(e) => e.into(),
            e @ nullops_saga::TagsError::CorruptCredentials(_) => ApiError::internal(e),
        }
    }
}

impl From<nullops_saga::RequestError> for ApiError {
    fn from(e: nullops_saga::RequestError) -> Self {
        use nullops_saga::RequestError as R;
        match e {
            R::Domain(e) => e.into(),
            R::Command(e) => e.into(),
            R::ReadModel(e) => e.into(),
            R::Tags(e) => e.into(),
        }
    }
}

impl From<nullops_keyring::KeyringError> for ApiError {
    fn from(e: nullops_keyring::KeyringError) -> Self {
        use nullops_keyring::KeyringError as K;
        match e {
            K::Destroyed(_) | K::WrongMasterKey { .. } | K::Corrupt(_) => {
                tracing::warn!(error = %e, "a sealed value cannot be read");
                ApiError::Upstream { code: "SECRET_UNREADABLE", message: e.to_string() }
            }
            K::Database(ref db) if is_unavailable(db) => ApiError::Unavailable,
            other => ApiError::internal(other),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        let retry = match &e {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let field = match &e {
            ApiError::InvalidInput(m) => field_of(m),
            ApiError::InvalidPipeline(_) => Some("pipeline"),
            _ => None,
        };
        let problems = match &e {
            ApiError::InvalidPipeline(problems) => problems.iter().map(crate::catalog::types::PipelineProblemGql::from).collect(),
            _ => Vec::new(),
        };
        async_graphql::Error::new(e.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry {
                ext.set("retryAfterSeconds", secs);
            }
            if let Some(field) = field {
                ext.set("field", field);
            }
            if !problems.is_empty() {
                ext.set("problems", async_graphql::Value::List(problems.iter().map(|p| p.to_value()).collect()));
            }
        })
    }
}

/// The one plain-HTTP error answer: the body GraphQL errors have (`{"errors": [{"message",
/// "extensions": {"code", ...}}]}`), so a client reads every refusal of the server the same way.
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{header, StatusCode};
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = match &self {
            ApiError::RateLimited { retry_after_secs } => Some(retry_after_secs.to_string()),
            _ => None,
        };
        let error = async_graphql::Error::from(self).into_server_error(async_graphql::Pos::default());
        let body = serde_json::json!({ "errors": [{ "message": error.message, "extensions": error.extensions }] });
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(secs) = retry.and_then(|s| header::HeaderValue::from_str(&s).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        response
    }
}

/// The input an INVALID_INPUT message is about: every such message starts `field: `, the
/// argument or input field's name as the schema spells it (`baseDomain`, `page.first`), so a
/// client can show the message beside that field.
fn field_of(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(": ")?;
    let mut chars = field.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')).then_some(field)
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_input_names_its_field_when_its_message_starts_with_one() {
        let extensions = |e: ApiError| async_graphql::Error::from(e).extensions.map(|x| format!("{x:?}")).unwrap_or_default();
        assert!(extensions(DomainError::invalid("baseDomain", "\"x\" is not a domain").into()).contains("\"baseDomain\""));
        assert!(extensions(ApiError::InvalidInput("page.first: use 1 to 500".into())).contains("\"page.first\""));
        assert!(!extensions(ApiError::InvalidInput("project shop has no pipeline yet: save one first".into())).contains("field"));
        assert!(!extensions(ApiError::Conflict("name: taken".into())).contains("field"));
    }
}
