//! Batched reads for the fields a list asks of every item (async-graphql's `DataLoader`). The
//! items of a list resolve concurrently; their loads of one kind that arrive together become one
//! read, and each distinct key is read once. A list of 1,000 deployments asks the read models a
//! handful of times, not 4,000.
//!
//! No cache: a load sees the read model as it is now, as a direct read would.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_projections::catalog::{self as catalog_read, kind, Entry};
use nullops_projections::deployments::{self as read, HealthRow};
use nullops_projections::nodes::{self as nodes_read, NodeRow, UsageRow};
use nullops_projections::{ProjectionError, ReadModelDb};
use uuid::Uuid;

use crate::error::ApiError;

/// A read model error, shared by every load of its batch.
#[derive(Clone)]
pub struct LoadError(Arc<ProjectionError>);

impl From<ProjectionError> for LoadError {
    fn from(e: ProjectionError) -> Self {
        LoadError(Arc::new(e))
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        e.0.as_ref().into()
    }
}

/// Every loader, kept in the schema's data.
pub struct Loaders {
    pub health: DataLoader<HealthOf>,
    pub environments: DataLoader<EnvironmentNamed>,
    pub nodes: DataLoader<NodeById>,
    pub usage: DataLoader<UsageOf>,
}

impl Loaders {
    pub fn new(db: &ReadModelDb) -> Self {
        Loaders {
            health: DataLoader::new(HealthOf(db.clone()), tokio::spawn),
            environments: DataLoader::new(EnvironmentNamed(db.clone()), tokio::spawn),
            nodes: DataLoader::new(NodeById(db.clone()), tokio::spawn),
            usage: DataLoader::new(UsageOf(db.clone()), tokio::spawn),
        }
    }
}

/// A deployment's health rows (one per service that reported), in one query per batch.
pub struct HealthOf(ReadModelDb);

impl Loader<Uuid> for HealthOf {
    type Value = Vec<HealthRow>;
    type Error = LoadError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<HealthRow>>, LoadError> {
        Ok(read::health_of(&self.0, keys).await?)
    }
}

/// Reads each distinct key on its own: for the kinds a list names only a few of (its
/// environments, its nodes), where one read per key is already few.
async fn each<K, V, Fut>(keys: &[K], read: impl Fn(K) -> Fut) -> Result<HashMap<K, V>, LoadError>
where
    K: Clone + Eq + std::hash::Hash,
    Fut: std::future::Future<Output = Result<Option<V>, ProjectionError>>,
{
    let mut out = HashMap::new();
    for key in keys {
        if let Some(value) = read(key.clone()).await? {
            out.insert(key.clone(), value);
        }
    }
    Ok(out)
}

/// An environment's definition by name.
pub struct EnvironmentNamed(ReadModelDb);

impl Loader<String> for EnvironmentNamed {
    type Value = Entry<EnvironmentDefinition>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, LoadError> {
        each(keys, |name| async move { catalog_read::entry_named(&self.0, kind::ENVIRONMENT, &name).await }).await
    }
}

/// A node's row by id.
pub struct NodeById(ReadModelDb);

impl Loader<Uuid> for NodeById {
    type Value = NodeRow;
    type Error = LoadError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, NodeRow>, LoadError> {
        each(keys, |id| nodes_read::node(&self.0, id)).await
    }
}

/// A node's latest usage sample.
pub struct UsageOf(ReadModelDb);

impl Loader<Uuid> for UsageOf {
    type Value = UsageRow;
    type Error = LoadError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, UsageRow>, LoadError> {
        each(keys, |id| nodes_read::usage(&self.0, id)).await
    }
}
