//! Identity events: users, login sessions and personal API tokens.
//!
//! Each aggregate has its own stream: `user-<username>`, `session-<id>`, `apitoken-<id>`.
//! Field and variant order inside these types is part of the stored format (postcard encodes enum
//! variants by index): add new variants at the end, and change a struct only through a new schema
//! version with a frozen copy of the old one in `codec`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Timestamp;

/// What a user may do platform-wide. Admins may do everything; users get access through teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::User => "USER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    Registered(UserRegistered),
    PasswordChanged(PasswordChanged),
    Disabled(UserDisabled),
    Enabled(UserEnabled),
}

/// Schema version 2: version 1 carried `admin: bool` instead of a role (see `codec::frozen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub username: String,
    /// argon2id PHC string; never the password.
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub password_hash: String,
    /// True when an admin reset it rather than the user changing it.
    pub reset_by_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDisabled {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnabled {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Started(SessionStarted),
    Ended(SessionEnded),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub session_id: Uuid,
    pub username: String,
    /// SHA-256 of the bearer token; the token itself is never stored.
    pub token_hash: Vec<u8>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTokenEvent {
    Created(ApiTokenCreated),
    Revoked(ApiTokenRevoked),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    pub token_id: Uuid,
    pub username: String,
    pub name: String,
    /// SHA-256 of the token; the token is shown once to its owner and never stored.
    pub token_hash: Vec<u8>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRevoked {}
