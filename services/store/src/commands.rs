//! The command layer: load an aggregate, decide, append; on a version conflict, reload and retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use nullops_domain::{Decider, DomainError};
use nullops_events::{DecodeError, DomainEvent, EventMetadata, LogPosition, NewEvent};
use nullops_metrics::Outcome;
use rand::Rng;
use tracing::Instrument;

use crate::{EventStore, StoreError};

/// How long a command keeps deciding again after losing races on its stream to other processes
/// (within a process, commands on one stream take turns: see [`turn`]), before it answers
/// CONFLICT. Bounded by time, not by a count: a process whose queue for the stream is full wins
/// the next race about half the time whatever the count, and a count small enough to answer
/// quickly starved the other process under load (1 of 160 writes through two servers lost 8
/// races in a row in CI).
const CONTENTION_BUDGET: Duration = Duration::from_secs(10);

/// The longest pause after a lost race. Short and flat on purpose: the pause only breaks
/// lockstep; a pause that grows hands every race to the process that did not lose the last one.
const MAX_RETRY_PAUSE_MICROS: u64 = 1_000;

/// Commands on one stream within this process take turns: each decides against the state the
/// one before it appended, so concurrent requests to one aggregate never race each other into a
/// version conflict (the embedded mode has no other process, so none at all). Streams share
/// [`STRIPES`] locks by hash: memory stays bounded whatever the number of streams, and two
/// streams sharing a lock only wait for each other's few milliseconds.
const STRIPES: usize = 256;

fn turn(stream: &nullops_events::StreamId) -> &'static tokio::sync::Mutex<()> {
    static LOCKS: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());
    let hash = stream.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    &locks[(hash % STRIPES as u64) as usize]
}

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
    fold_newer::<D>(store, key, D::State::default(), 0).await
}

/// Folds the events of `key` after `version` into `state`.
async fn fold_newer<D: Decider>(store: &dyn EventStore, key: &str, mut state: D::State, version: u64) -> Result<(D::State, u64), CommandError> {
    let stored = store.read_stream(&D::stream_id(key), version).await?;
    for s in &stored {
        if let Some(event) = D::select(s.decode()?.event) {
            state = D::evolve(state, &event);
        }
    }
    Ok((state, stored.last().map_or(version, |s| s.stream_version)))
}

/// The last state this process saw of a few long-lived aggregates of `D` (the catalog), so that
/// loading one reads only the events appended since instead of its whole stream. The store stays
/// the authority: every load catches up from it, and appends still check the stream version.
pub struct StateCache<D: Decider> {
    entries: Mutex<HashMap<String, (u64, D::State)>>,
    capacity: usize,
}

impl<D: Decider> StateCache<D> {
    /// Keeps at most `capacity` aggregates; others are loaded whole.
    pub fn new(capacity: usize) -> Self {
        StateCache { entries: Mutex::new(HashMap::new()), capacity }
    }

    pub async fn load(&self, store: &dyn EventStore, key: &str) -> Result<(D::State, u64), CommandError> {
        let (state, version) = self.peek(key).unwrap_or_else(|| (D::State::default(), 0));
        let (state, version) = fold_newer::<D>(store, key, state, version).await?;
        self.remember(key, version, &state);
        Ok((state, version))
    }

    /// The last state this process saw of `key` (read, or made by its own append), without
    /// asking the store: possibly behind the stream, never ahead of it. For choosing, not for
    /// deciding: a command decided on it is decided again should the stream have moved on
    /// ([`execute_known`]).
    pub fn peek(&self, key: &str) -> Option<(D::State, u64)> {
        self.lock().get(key).map(|(version, state)| (state.clone(), *version))
    }

    /// Keeps `state` as `key` at `version`, unless a later one is kept already.
    fn remember(&self, key: &str, version: u64, state: &D::State) {
        let mut entries = self.lock();
        let newer = entries.get(key).is_none_or(|(v, _)| *v < version);
        if newer && (entries.len() < self.capacity || entries.contains_key(key)) {
            entries.insert(key.to_owned(), (version, state.clone()));
        }
    }

    /// Forgets every state kept (another process may have appended since).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, D::State)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Loads the aggregate `key` of `D`, decides `command` and appends the result atomically.
pub async fn execute<D: Decider>(store: &dyn EventStore, key: &str, command: &D::Command, metadata: &EventMetadata) -> Result<Executed, CommandError> {
    execute_with::<D>(store, None, key, command, metadata).await
}

/// [`execute`], loading the aggregate through `cache` when given.
pub async fn execute_with<D: Decider>(
    store: &dyn EventStore,
    cache: Option<&StateCache<D>>,
    key: &str,
    command: &D::Command,
    metadata: &EventMetadata,
) -> Result<Executed, CommandError> {
    measured::<D>(decide_and_append::<D>(store, cache, None, key, command, &|_: &DomainEvent| metadata.clone())).await
}

/// [`execute`], deciding first against `known`, the aggregate's state at its version as the
/// caller has just read it (one read fewer); should the stream have moved on since, it is read
/// again and the command decided again, as always.
pub async fn execute_known<D: Decider>(
    store: &dyn EventStore,
    key: &str,
    known: (D::State, u64),
    command: &D::Command,
    metadata: &EventMetadata,
) -> Result<Executed, CommandError> {
    measured::<D>(decide_and_append::<D>(store, None, Some(known), key, command, &|_: &DomainEvent| metadata.clone())).await
}

/// [`execute_with`] through `cache`, deciding first against the state `cache` holds of the
/// aggregate when it holds one ([`StateCache::peek`]: no read at all when this process made
/// the last append there), and as always should the stream have moved on. Each event gets the
/// metadata `metadata_of` gives it: a command deciding for many requests at once (placements
/// in one append) keeps each one's correlation id on its own event.
pub async fn execute_cached<D: Decider>(
    store: &dyn EventStore,
    cache: &StateCache<D>,
    key: &str,
    command: &D::Command,
    metadata_of: &(dyn Fn(&DomainEvent) -> EventMetadata + Sync),
) -> Result<Executed, CommandError> {
    measured::<D>(decide_and_append::<D>(store, Some(cache), cache.peek(key), key, command, metadata_of)).await
}

/// A command's outcome, counted and timed in the metrics, in a span of its own.
#[tracing::instrument(name = "command", skip_all, fields(aggregate = D::KIND))]
async fn measured<D: Decider>(command: impl std::future::Future<Output = Result<Executed, CommandError>>) -> Result<Executed, CommandError> {
    let started = std::time::Instant::now();
    let result = command.await;
    let outcome = match &result {
        Ok(executed) if executed.events.is_empty() => Outcome::unchanged,
        Ok(_) => Outcome::ok,
        Err(CommandError::Domain(_)) => Outcome::refused,
        Err(CommandError::Contention { .. }) => Outcome::contended,
        Err(_) => Outcome::error,
    };
    if let Some(m) = nullops_metrics::recording() {
        m.command(D::KIND, outcome, started.elapsed());
    }
    result
}

async fn decide_and_append<D: Decider>(
    store: &dyn EventStore,
    cache: Option<&StateCache<D>>,
    mut known: Option<(D::State, u64)>,
    key: &str,
    command: &D::Command,
    metadata_of: &(dyn Fn(&DomainEvent) -> EventMetadata + Sync),
) -> Result<Executed, CommandError> {
    let stream = D::stream_id(key);
    let _turn = turn(&stream).lock().await;
    let racing_since = std::time::Instant::now();
    loop {
        let from_known = known.is_some();
        let (state, version) = match (known.take(), cache) {
            (Some(known), _) => known,
            (None, Some(cache)) => cache.load(store, key).await?,
            (None, None) => load::<D>(store, key).await?,
        };
        let decided = D::decide(command, &state);
        // Only an append proves `known` current: a refusal or a no-op decided on it is decided
        // again on the stream as it is.
        if from_known && !matches!(&decided, Ok(events) if !events.is_empty()) {
            continue;
        }
        let decided = decided?;
        let events: Vec<DomainEvent> = decided.iter().cloned().map(Into::into).collect();
        if events.is_empty() {
            return Ok(Executed { last: None, event_types: vec![], events });
        }
        let new: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e, metadata_of(e))).collect();
        let appending = std::time::Instant::now();
        let appended = store.append(&stream, version, &new).instrument(tracing::info_span!("store.append", events = new.len())).await;
        if let Some(m) = nullops_metrics::recording() {
            m.append_seconds.observe(appending.elapsed().as_secs_f64());
        }
        match appended {
            Ok(appended) => {
                if let Some(cache) = cache {
                    // What this append made, so that the next command here reads only what
                    // others appended since.
                    cache.remember(key, appended.stream_version, &decided.iter().fold(state, D::evolve));
                }
                return Ok(Executed { last: Some(appended.last), event_types: new.iter().map(|e| e.event_type).collect(), events });
            }
            Err(StoreError::Conflict { .. }) if racing_since.elapsed() < CONTENTION_BUDGET => {
                let micros = rand::thread_rng().gen_range(0..MAX_RETRY_PAUSE_MICROS);
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            Err(StoreError::Conflict { .. }) => return Err(CommandError::Contention { stream: stream.to_string() }),
            Err(e) => return Err(e.into()),
        }
    }
}
