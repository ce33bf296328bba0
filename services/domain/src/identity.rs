//! Identity aggregates: `User`, `Session` (a login) and `ApiToken` (a personal token for scripts).
//!
//! Secrets arrive here already hashed: the command layer hashes passwords (argon2id) and tokens
//! (SHA-256) before building a command, so no decision ever sees a secret in clear.

use nullops_events::identity::*;
use nullops_events::{DomainEvent, Timestamp};
use uuid::Uuid;

use crate::{Decider, DomainError, Issuer, Principal, TokenName, Username};

// ---------------------------------------------------------------------------------------------
// User: stream `user-<username>`.

pub enum UserCommand {
    Register {
        by: Issuer,
        user_id: Uuid,
        username: Username,
        password_hash: String,
        role: Role,
    },
    /// The user changes their own password; the command layer has verified the current one.
    ChangePassword {
        by: Principal,
        password_hash: String,
    },
    ResetPassword {
        by: Principal,
        password_hash: String,
    },
    Disable {
        by: Principal,
    },
    Enable {
        by: Principal,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub registered: Option<RegisteredUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredUser {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
}

pub struct User;

fn require_admin(by: &Principal, what: &str) -> Result<(), DomainError> {
    if by.is_admin() {
        Ok(())
    } else {
        Err(DomainError::Forbidden(format!("only an admin may {what}")))
    }
}

impl UserState {
    fn existing(&self) -> Result<&RegisteredUser, DomainError> {
        self.registered.as_ref().ok_or_else(|| DomainError::NotFound("no such user".into()))
    }
}

impl Decider for User {
    type Command = UserCommand;
    type Event = UserEvent;
    type State = UserState;
    const KIND: &'static str = "user";

    fn decide(command: &UserCommand, state: &UserState) -> Result<Vec<UserEvent>, DomainError> {
        use UserCommand::*;
        match command {
            Register { by, user_id, username, password_hash, role } => {
                if !by.is_admin_or_system() {
                    return Err(DomainError::Forbidden("only an admin may create users".into()));
                }
                if state.registered.is_some() {
                    return Err(DomainError::AlreadyExists(format!("user {username} already exists")));
                }
                Ok(vec![UserEvent::Registered(UserRegistered {
                    user_id: *user_id,
                    username: username.to_string(),
                    password_hash: password_hash.clone(),
                    role: *role,
                })])
            }
            ChangePassword { by, password_hash } => {
                let user = state.existing()?;
                if by.username.as_str() != user.username {
                    return Err(DomainError::Forbidden("you may change only your own password".into()));
                }
                if user.disabled {
                    return Err(DomainError::Forbidden("this account is disabled".into()));
                }
                Ok(vec![UserEvent::PasswordChanged(PasswordChanged { password_hash: password_hash.clone(), reset_by_admin: false })])
            }
            ResetPassword { by, password_hash } => {
                require_admin(by, "reset another user's password")?;
                state.existing()?;
                Ok(vec![UserEvent::PasswordChanged(PasswordChanged { password_hash: password_hash.clone(), reset_by_admin: true })])
            }
            Disable { by } => {
                require_admin(by, "disable users")?;
                let user = state.existing()?;
                if by.username.as_str() == user.username {
                    return Err(DomainError::Conflict("you cannot disable your own account".into()));
                }
                Ok(if user.disabled { vec![] } else { vec![UserEvent::Disabled(UserDisabled {})] })
            }
            Enable { by } => {
                require_admin(by, "enable users")?;
                let user = state.existing()?;
                Ok(if user.disabled { vec![UserEvent::Enabled(UserEnabled {})] } else { vec![] })
            }
        }
    }

    fn evolve(mut state: UserState, event: &UserEvent) -> UserState {
        match event {
            UserEvent::Registered(e) => {
                state.registered = Some(RegisteredUser {
                    user_id: e.user_id,
                    username: e.username.clone(),
                    role: e.role,
                    password_hash: e.password_hash.clone(),
                    disabled: false,
                })
            }
            UserEvent::PasswordChanged(e) => {
                if let Some(u) = state.registered.as_mut() {
                    u.password_hash = e.password_hash.clone();
                }
            }
            UserEvent::Disabled(_) => {
                if let Some(u) = state.registered.as_mut() {
                    u.disabled = true;
                }
            }
            UserEvent::Enabled(_) => {
                if let Some(u) = state.registered.as_mut() {
                    u.disabled = false;
                }
            }
        }
        state
    }

    fn select(event: DomainEvent) -> Option<UserEvent> {
        match event {
            DomainEvent::User(e) => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session: stream `session-<id>`. One login, from `login` to `logout` or expiry.

pub enum SessionCommand {
    /// The command layer has checked the password and that the user is enabled.
    Start {
        session_id: Uuid,
        username: Username,
        token_hash: Vec<u8>,
        expires_at: Timestamp,
    },
    End {
        by: Principal,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub owner: Option<String>,
    pub ended: bool,
}

pub struct Session;

impl Decider for Session {
    type Command = SessionCommand;
    type Event = SessionEvent;
    type State = SessionState;
    const KIND: &'static str = "session";

    fn decide(command: &SessionCommand, state: &SessionState) -> Result<Vec<SessionEvent>, DomainError> {
        match command {
            SessionCommand::Start { session_id, username, token_hash, expires_at } => {
                if state.owner.is_some() {
                    return Err(DomainError::AlreadyExists("session already started".into()));
                }
                Ok(vec![SessionEvent::Started(SessionStarted {
                    session_id: *session_id,
                    username: username.to_string(),
                    token_hash: token_hash.clone(),
                    expires_at: *expires_at,
                })])
            }
            SessionCommand::End { by } => {
                let owner = state.owner.as_deref().ok_or_else(|| DomainError::NotFound("no such session".into()))?;
                if owner != by.username.as_str() && !by.is_admin() {
                    return Err(DomainError::Forbidden("you may end only your own sessions".into()));
                }
                Ok(if state.ended { vec![] } else { vec![SessionEvent::Ended(SessionEnded {})] })
            }
        }
    }

    fn evolve(mut state: SessionState, event: &SessionEvent) -> SessionState {
        match event {
            SessionEvent::Started(e) => state.owner = Some(e.username.clone()),
            SessionEvent::Ended(_) => state.ended = true,
        }
        state
    }

    fn select(event: DomainEvent) -> Option<SessionEvent> {
        match event {
            DomainEvent::Session(e) => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ApiToken: stream `apitoken-<id>`. A personal token for scripts, owned by one user.

pub enum ApiTokenCommand {
    Create { by: Principal, token_id: Uuid, name: TokenName, token_hash: Vec<u8>, expires_at: Option<Timestamp> },
    Revoke { by: Principal },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTokenState {
    pub owner: Option<String>,
    pub revoked: bool,
}

pub struct ApiToken;

impl Decider for ApiToken {
    type Command = ApiTokenCommand;
    type Event = ApiTokenEvent;
    type State = ApiTokenState;
    const KIND: &'static str = "apitoken";

    fn decide(command: &ApiTokenCommand, state: &ApiTokenState) -> Result<Vec<ApiTokenEvent>, DomainError> {
        match command {
            ApiTokenCommand::Create { by, token_id, name, token_hash, expires_at } => {
                if state.owner.is_some() {
                    return Err(DomainError::AlreadyExists("token already exists".into()));
                }
                Ok(vec![ApiTokenEvent::Created(ApiTokenCreated {
                    token_id: *token_id,
                    username: by.username.to_string(),
                    name: name.as_str().to_owned(),
                    token_hash: token_hash.clone(),
                    expires_at: *expires_at,
                })])
            }
            ApiTokenCommand::Revoke { by } => {
                let owner = state.owner.as_deref().ok_or_else(|| DomainError::NotFound("no such API token".into()))?;
                if owner != by.username.as_str() && !by.is_admin() {
                    // Same answer as for a token that does not exist: ids of others' tokens stay secret.
                    return Err(DomainError::NotFound("no such API token".into()));
                }
                Ok(if state.revoked { vec![] } else { vec![ApiTokenEvent::Revoked(ApiTokenRevoked {})] })
            }
        }
    }

    fn evolve(mut state: ApiTokenState, event: &ApiTokenEvent) -> ApiTokenState {
        match event {
            ApiTokenEvent::Created(e) => state.owner = Some(e.username.clone()),
            ApiTokenEvent::Revoked(_) => state.revoked = true,
        }
        state
    }

    fn select(event: DomainEvent) -> Option<ApiTokenEvent> {
        match event {
            DomainEvent::ApiToken(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    fn admin() -> Principal {
        Principal { username: Username::parse("admin").unwrap(), role: Role::Admin }
    }
    fn alice() -> Principal {
        Principal { username: Username::parse("alice").unwrap(), role: Role::User }
    }
    fn alice_registered() -> UserEvent {
        UserEvent::Registered(UserRegistered { user_id: Uuid::nil(), username: "alice".into(), password_hash: "h0".into(), role: Role::User })
    }

    /// given events, when command, then events (or an error).
    fn given_when<D: Decider>(given: &[D::Event], when: D::Command) -> Result<Vec<D::Event>, DomainError> {
        D::decide(&when, &fold::<D>(given))
    }

    #[test]
    fn an_admin_registers_a_new_user() {
        let then = given_when::<User>(
            &[],
            UserCommand::Register {
                by: Issuer::User(admin()),
                user_id: Uuid::nil(),
                username: Username::parse("alice").unwrap(),
                password_hash: "h0".into(),
                role: Role::User,
            },
        );
        assert_eq!(then, Ok(vec![alice_registered()]));
    }

    #[test]
    fn a_user_cannot_register_users_and_nobody_registers_twice() {
        let register =
            |by| UserCommand::Register { by, user_id: Uuid::nil(), username: Username::parse("alice").unwrap(), password_hash: "h".into(), role: Role::User };
        assert!(matches!(given_when::<User>(&[], register(Issuer::User(alice()))), Err(DomainError::Forbidden(_))));
        assert!(matches!(given_when::<User>(&[alice_registered()], register(Issuer::System)), Err(DomainError::AlreadyExists(_))));
    }

    #[test]
    fn disabling_is_admin_only_idempotent_and_never_of_oneself() {
        let given = [alice_registered()];
        assert_eq!(given_when::<User>(&given, UserCommand::Disable { by: admin() }), Ok(vec![UserEvent::Disabled(UserDisabled {})]));
        let disabled = [alice_registered(), UserEvent::Disabled(UserDisabled {})];
        assert_eq!(given_when::<User>(&disabled, UserCommand::Disable { by: admin() }), Ok(vec![]));
        assert!(matches!(given_when::<User>(&given, UserCommand::Disable { by: alice() }), Err(DomainError::Forbidden(_))));
        let admin_user =
            [UserEvent::Registered(UserRegistered { user_id: Uuid::nil(), username: "admin".into(), password_hash: "h".into(), role: Role::Admin })];
        assert!(matches!(given_when::<User>(&admin_user, UserCommand::Disable { by: admin() }), Err(DomainError::Conflict(_))));
        assert_eq!(given_when::<User>(&disabled, UserCommand::Enable { by: admin() }), Ok(vec![UserEvent::Enabled(UserEnabled {})]));
    }

    #[test]
    fn users_change_only_their_own_password_and_not_while_disabled() {
        let given = [alice_registered()];
        let change = |by| UserCommand::ChangePassword { by, password_hash: "h1".into() };
        assert_eq!(
            given_when::<User>(&given, change(alice())),
            Ok(vec![UserEvent::PasswordChanged(PasswordChanged { password_hash: "h1".into(), reset_by_admin: false })])
        );
        assert!(matches!(given_when::<User>(&given, change(admin())), Err(DomainError::Forbidden(_))));
        let disabled = [alice_registered(), UserEvent::Disabled(UserDisabled {})];
        assert!(matches!(given_when::<User>(&disabled, change(alice())), Err(DomainError::Forbidden(_))));
        assert!(matches!(given_when::<User>(&given, UserCommand::ResetPassword { by: alice(), password_hash: "x".into() }), Err(DomainError::Forbidden(_))));
        assert!(matches!(given_when::<User>(&[], UserCommand::ResetPassword { by: admin(), password_hash: "x".into() }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn evolve_tracks_password_and_disabled_flag() {
        let state = fold::<User>(&[
            alice_registered(),
            UserEvent::PasswordChanged(PasswordChanged { password_hash: "h2".into(), reset_by_admin: true }),
            UserEvent::Disabled(UserDisabled {}),
        ]);
        let user = state.registered.unwrap();
        assert_eq!(user.password_hash, "h2");
        assert!(user.disabled);
    }

    #[test]
    fn sessions_end_once_and_only_by_their_owner_or_an_admin() {
        let started =
            [SessionEvent::Started(SessionStarted { session_id: Uuid::nil(), username: "alice".into(), token_hash: vec![0; 32], expires_at: Timestamp(10) })];
        let bob = Principal { username: Username::parse("bob").unwrap(), role: Role::User };
        assert!(matches!(given_when::<Session>(&started, SessionCommand::End { by: bob }), Err(DomainError::Forbidden(_))));
        assert_eq!(given_when::<Session>(&started, SessionCommand::End { by: alice() }), Ok(vec![SessionEvent::Ended(SessionEnded {})]));
        let ended = [started[0].clone(), SessionEvent::Ended(SessionEnded {})];
        assert_eq!(given_when::<Session>(&ended, SessionCommand::End { by: admin() }), Ok(vec![]));
        assert!(matches!(given_when::<Session>(&[], SessionCommand::End { by: alice() }), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn api_tokens_belong_to_their_creator_and_others_cannot_see_them() {
        let created = [ApiTokenEvent::Created(ApiTokenCreated {
            token_id: Uuid::nil(),
            username: "alice".into(),
            name: "ci".into(),
            token_hash: vec![1; 32],
            expires_at: None,
        })];
        let bob = Principal { username: Username::parse("bob").unwrap(), role: Role::User };
        assert!(matches!(given_when::<ApiToken>(&created, ApiTokenCommand::Revoke { by: bob }), Err(DomainError::NotFound(_))));
        assert_eq!(given_when::<ApiToken>(&created, ApiTokenCommand::Revoke { by: alice() }), Ok(vec![ApiTokenEvent::Revoked(ApiTokenRevoked {})]));
        assert_eq!(
            given_when::<ApiToken>(
                &[],
                ApiTokenCommand::Create {
                    by: alice(),
                    token_id: Uuid::nil(),
                    name: TokenName::parse("ci").unwrap(),
                    token_hash: vec![1; 32],
                    expires_at: None,
                }
            ),
            Ok(created.to_vec())
        );
    }
}
