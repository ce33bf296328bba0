//! The command layer: load an aggregate, decide, append; on a version conflict, reload and retry.

use std::time::Duration;

use nullops_domain::{Decider, DomainError};
use nullops_events::{DecodeError, DomainEvent, EventMetadata, LogPosition, NewEvent};
use rand::Rng;

use crate::{EventStore, StoreError};

/// How often a command is decided again after losing a race on its stream.
const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{stream} is being changed by many requests at once; try again")]
    Contention { stream: String },
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::Store(e)
    }
}

/// What a command appended: nothing (it was already in effect), or `events` up to `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub last: Option<LogPosition>,
    pub event_types: Vec<&'static str>,
    pub events: Vec<DomainEvent>,
}

/// The current state of aggregate `key` of `D`, and the stream version it reflects.
pub async fn load<D: Decider>(store: &dyn EventStore, key: &str) -> Result<(D::State, u64), CommandError> {
    let stored = store.read_stream(&D::stream_id(key), 0).await?;
    let mut state = D::State::default();
    for s in &stored {
        if let Some(event) = D::select(s.decode()?.event) {
            state = D::evolve(state, &event);
        }
    }
    Ok((state, stored.last().map_or(0, |s| s.stream_version)))
}

/// Loads the aggregate `key` of `D`, decides `command` and appends the result atomically.
pub async fn execute<D: Decider>(
    store: &dyn EventStore,
    key: &str,
    command: &D::Command,
    metadata: &EventMetadata,
) -> Result<Executed, CommandError> {
    let stream = D::stream_id(key);
    for attempt in 0..MAX_ATTEMPTS {
        let (state, version) = load::<D>(store, key).await?;
        let events: Vec<DomainEvent> = D::decide(command, &state)?.into_iter().map(Into::into).collect();
        if events.is_empty() {
            return Ok(Executed { last: None, event_types: vec![], events });
        }
        let new: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e, metadata.clone())).collect();
        match store.append(&stream, version, &new).await {
            Ok(appended) => {
                return Ok(Executed { last: Some(appended.last), event_types: new.iter().map(|e| e.event_type).collect(), events })
            }
            Err(StoreError::Conflict { .. }) => {
                // Jittered, growing pause so racing writers do not collide again in lockstep.
                let micros = rand::thread_rng().gen_range(0..(200u64 << attempt.min(6)));
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention { stream: stream.to_string() })
}
