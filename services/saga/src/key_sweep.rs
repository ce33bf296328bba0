//! Destroys data keys that no live value uses any more.
//!
//! Keys are retired by the gateway right after the event that retires them is appended, and a
//! refused command's fresh key is discarded at once; a crash in between leaves a key behind whose
//! value is superseded yet still decryptable. The sweep closes that window: a key is live while
//! the catalog's registry credentials, webhook secrets or repository links' credentials, a project's current secrets or a node's token hash name it, and any other key
//! older than the grace period (far longer than any command takes from sealing to appending) is
//! destroyed. Every new kind of sealed value must be added to `live_keys`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use nullops_domain::catalog::{Catalog, CATALOG_KEY};
use nullops_domain::node::Node;
use nullops_domain::secrets::Secrets;
use nullops_keyring::Keyring;
use nullops_projections::ReadModelDb;
use nullops_store::commands::{self, CommandError};
use nullops_store::EventStore;
use uuid::Uuid;

use crate::periodic::{Periodic, Scope};

/// The data keys of every current sealed value, read from the event log.
async fn live_keys(store: &dyn EventStore, read_models: &ReadModelDb) -> Result<BTreeSet<Uuid>, SweepError> {
    let (catalog, _) = commands::load::<Catalog>(store, CATALOG_KEY).await?;
    let mut live: BTreeSet<Uuid> = catalog.registries.values().filter_map(|r| r.credentials.as_ref().map(|c| c.key_id)).collect();
    live.extend(catalog.webhooks.values().map(|w| w.secret.key_id));
    live.extend(catalog.links.values().map(|l| l.credentials.key_id));
    for project in catalog.projects.values() {
        let (secrets, _) = commands::load::<Secrets>(store, &project.project_id.to_string()).await?;
        live.extend(secrets.keys.values());
    }
    // Nodes are listed by the read model; each one's current token key comes from its stream.
    for node in nullops_projections::nodes::nodes(read_models, None).await? {
        let (state, _) = commands::load::<Node>(store, &node.node_id.to_string()).await?;
        live.extend(state.token.map(|t| t.key_id));
    }
    Ok(live)
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Log(#[from] CommandError),
    #[error(transparent)]
    Keyring(#[from] nullops_keyring::KeyringError),
    #[error(transparent)]
    ReadModel(#[from] nullops_projections::ProjectionError),
}

/// Destroys the data keys older than `grace` that no live value uses; returns how many.
pub async fn sweep_orphaned_keys(store: &dyn EventStore, read_models: &ReadModelDb, keyring: &Keyring, grace: Duration) -> Result<u64, SweepError> {
    // Candidates first: a key sealed after this list is taken cannot be destroyed by this sweep.
    let candidates = keyring.keys_older_than(grace).await?;
    let live = live_keys(store, read_models).await?;
    let mut destroyed = 0;
    for key_id in candidates.into_iter().filter(|k| !live.contains(k)) {
        if keyring.destroy(key_id).await? {
            tracing::info!(%key_id, "destroyed an orphaned data key");
            destroyed += 1;
        }
    }
    Ok(destroyed)
}

/// The sweep as a [`Periodic`] process, leased: one server sweeps at a time.
pub struct KeySweep {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelDb,
    pub keyring: Arc<Keyring>,
    /// How old an unused key must be to be destroyed (`Pacing::key_sweep_grace`): far longer
    /// than any command takes from sealing a value to appending its event.
    pub grace: Duration,
}

#[async_trait]
impl Periodic for KeySweep {
    type Error = SweepError;
    const NAME: &'static str = "key-sweep";
    const SCOPE: Scope = Scope::Leased;

    async fn run_once(&self) -> Result<(), SweepError> {
        sweep_orphaned_keys(&*self.store, &self.read_models, &self.keyring, self.grace).await.map(drop)
    }
}
