//! What the agent remembers across restarts: the desired state it was last given and the ids of
//! the requests it has applied. The control plane stays the source of truth: a missing or
//! corrupt file only means starting empty until the next connection brings the full state.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use nullops_wire::message::DesiredDeployment;
use nullops_wire::RequestId;
use serde::{Deserialize, Serialize};

use crate::files::write_atomically;
use crate::runner::RunRecord;
use crate::AgentError;

pub const STATE_FILE: &str = "state.json";

/// How many applied request ids are remembered for deduplication.
const REMEMBERED_REQUESTS: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub desired: Vec<DesiredDeployment>,
    pub applied: VecDeque<RequestId>,
    /// How each deployment's run went.
    #[serde(default)]
    pub runs: BTreeMap<String, RunRecord>,
}

impl AgentState {
    pub fn has_applied(&self, id: RequestId) -> bool {
        self.applied.contains(&id)
    }

    /// Remembers `desired` without its registry credentials and secrets: those never reach the
    /// disk.
    pub fn record(&mut self, id: RequestId, desired: Vec<DesiredDeployment>) {
        self.desired = desired.into_iter().map(|d| DesiredDeployment { registry_auth: vec![], secrets: Default::default(), ..d }).collect();
        if self.applied.len() == REMEMBERED_REQUESTS {
            self.applied.pop_front();
        }
        self.applied.push_back(id);
    }
}

/// The state in memory and on disk, changed one change at a time: each change is saved in the
/// order it was made (an older snapshot never overwrites a newer one), and no two saves ever
/// share the temporary file.
pub struct Saved {
    state: std::sync::Mutex<AgentState>,
    file: StateFile,
    /// Held across a change and its save.
    saving: tokio::sync::Mutex<()>,
}

impl Saved {
    /// What `data_dir` holds (see [`StateFile::load`]).
    pub fn load(data_dir: &Path) -> Saved {
        let file = StateFile::new(data_dir);
        Saved { state: std::sync::Mutex::new(file.load()), file, saving: tokio::sync::Mutex::new(()) }
    }

    /// Reads the state in memory.
    pub fn read<R>(&self, read: impl FnOnce(&AgentState) -> R) -> R {
        read(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the state and writes it (fsync off the runtime's threads) before the next change.
    pub async fn change(&self, change: impl FnOnce(&mut AgentState)) -> Result<(), AgentError> {
        let _one_at_a_time = self.saving.lock().await;
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut state);
            state.clone()
        };
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.save(&snapshot)).await.map_err(|e| AgentError::Io(format!("saving the agent state panicked: {e}")))?
    }
}

#[derive(Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> Self {
        StateFile { path: data_dir.join(STATE_FILE) }
    }

    /// The saved state; empty when there is none or it cannot be read (the unreadable file is
    /// kept beside it, renamed, for a person to look at).
    pub fn load(&self) -> AgentState {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return AgentState::default(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the agent state; starting empty");
                return AgentState::default();
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(e) => {
                let aside = self.path.with_extension("json.corrupt");
                let _ = std::fs::rename(&self.path, &aside);
                tracing::warn!(path = %self.path.display(), moved_to = %aside.display(), error = %e, "the agent state is corrupt; starting empty until the control plane sends the full state");
                AgentState::default()
            }
        }
    }

    pub fn save(&self, state: &AgentState) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec(state).expect("agent state serializes");
        write_atomically(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saves that come at once (a desired state and a run's progress, say) all succeed, and the
    /// file ends with the last change (they used to share one temporary file and race).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn changes_that_come_at_once_are_all_saved_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let saved = std::sync::Arc::new(Saved::load(dir.path()));
        let changes = (0..64).map(|_| {
            let saved = saved.clone();
            tokio::spawn(async move { saved.change(|state| state.record(RequestId::new(), vec![])).await })
        });
        for result in futures::future::join_all(changes).await {
            result.unwrap().expect("every save succeeds");
        }
        let on_disk = StateFile::new(dir.path()).load();
        assert_eq!(on_disk, saved.read(Clone::clone), "the file holds the last change");
        assert_eq!(on_disk.applied.len(), 64);
    }
    use nullops_wire::message::{ContainerSpec, Secrets, Step};

    #[test]
    fn state_survives_a_restart_and_corruption_means_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load(), AgentState::default());
        let mut state = AgentState::default();
        let id = RequestId::new();
        let spec = ContainerSpec { name: "web".into(), image: "web:1".into(), ..Default::default() };
        let secrets = Secrets([("DB_PASSWORD".to_owned(), "hunter22".to_owned())].into());
        let desired = DesiredDeployment {
            id: "pr-1".into(),
            attempt: 1,
            steps: vec![Step::service(spec)],
            secrets,
            registry_auth: vec![],
            context: Default::default(),
            trace: None,
        };
        state.record(id, vec![desired]);
        file.save(&state).unwrap();
        let saved = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(saved.contains("web:1") && !saved.contains("hunter22"), "{saved}");
        assert_eq!(file.load(), state);
        assert!(file.load().has_applied(id));

        std::fs::write(dir.path().join(STATE_FILE), b"{\"desired\": [tru").unwrap();
        assert_eq!(file.load(), AgentState::default());
        assert!(dir.path().join("state.json.corrupt").exists());
    }

    #[test]
    fn only_recent_requests_are_remembered() {
        let mut state = AgentState::default();
        let first = RequestId::new();
        state.record(first, vec![]);
        for _ in 0..REMEMBERED_REQUESTS {
            state.record(RequestId::new(), vec![]);
        }
        assert!(!state.has_applied(first));
        assert_eq!(state.applied.len(), REMEMBERED_REQUESTS);
    }
}
