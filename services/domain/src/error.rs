//! Why a command was refused. The kinds map one-to-one onto API error codes.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{field}: {message}")]
    InvalidInput { field: &'static str, message: String },
    /// The command is valid but not in the aggregate's current state.
    #[error("{0}")]
    Conflict(String),
    /// No node has room for what is asked.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// A pipeline with these problems (never empty), each naming its node and field.
    #[error("pipeline: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidPipeline(Vec<crate::pipeline::Problem>),
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::InvalidInput { field, message: message.into() }
    }
}
