//! One error type for the API. Every error leaves with a stable `extensions.code` and a message
//! a person can act on; internal details are logged, never returned.

use async_graphql::ErrorExtensions;
use nullops_domain::DomainError;
use nullops_projections::ProjectionError;
use nullops_store::commands::CommandError;
use nullops_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The change is stored but a read model had not caught up within the wait.
    #[error("the change was saved but is not visible yet ({0}); reload shortly")]
    NotYetVisible(String),
    #[error("the service is temporarily unavailable; try again")]
    Unavailable,
    #[error("internal error (logged with correlation id {0})")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::InvalidInput(_) => "INVALID_INPUT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::NotYetVisible(_) => "NOT_YET_VISIBLE",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
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
            e @ DomainError::InvalidInput { .. } => ApiError::InvalidInput(e.to_string()),
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
        match e {
            ProjectionError::CatchUpTimeout { ref projection, .. } => {
                tracing::warn!(error = %e, "read model lagging");
                ApiError::NotYetVisible(format!("read model {projection} is behind"))
            }
            ProjectionError::Database(ref db) if is_unavailable(db) => ApiError::Unavailable,
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
        async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry {
                ext.set("retryAfterSeconds", secs);
            }
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
