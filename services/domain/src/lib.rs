//! The decisions of NullOps, free of I/O.
//!
//! Every aggregate is a [`Decider`]: `decide` turns a command and the current state into events (or
//! refuses it), `evolve` folds an event into the state. Both are pure and synchronous; loading,
//! appending and retrying live in `nullops-store`.

pub mod access;
pub mod capacity;
pub mod catalog;
pub mod deployment;
pub mod deployment_names;
pub mod error;
pub mod identity;
pub mod names;
pub mod node;
pub mod pipeline;
pub mod plan;
pub mod preview;
pub mod secrets;
pub mod tags;

pub use error::DomainError;
pub use names::{DnsLabel, DomainName, Password, SecretName, TokenName, Username};

use nullops_events::{DomainEvent, StreamId};

/// An aggregate in the decider pattern.
pub trait Decider {
    type Command;
    type Event: Clone + Into<DomainEvent>;
    type State: Default + Clone;

    /// Stream kind: the aggregate `key` lives in stream `<KIND>-<key>`.
    const KIND: &'static str;

    fn decide(command: &Self::Command, state: &Self::State) -> Result<Vec<Self::Event>, DomainError>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Picks this aggregate's events out of the decoded log; `None` for any other event.
    fn select(event: DomainEvent) -> Option<Self::Event>;

    fn stream_id(key: &str) -> StreamId {
        StreamId::new(Self::KIND, key)
    }
}

/// Who issues a command, as the command layer authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// The platform itself: bootstrap, reconcilers.
    System,
    User(Principal),
}

/// An authenticated user and their platform role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: Username,
    pub role: nullops_events::identity::Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == nullops_events::identity::Role::Admin
    }
}

impl Issuer {
    pub fn is_admin_or_system(&self) -> bool {
        match self {
            Issuer::System => true,
            Issuer::User(p) => p.is_admin(),
        }
    }
    pub fn is_user(&self, username: &str) -> bool {
        matches!(self, Issuer::User(p) if p.username.as_str() == username)
    }
}

/// Given events, when a command: the resulting state (for tests and the command layer).
pub fn fold<D: Decider>(events: &[D::Event]) -> D::State {
    events.iter().fold(D::State::default(), |s, e| D::evolve(s, e))
}
