//! The local Docker engine as a registry ([`LOCAL_ENGINE_URL`]): its tags are those of the
//! images the engine holds, and it reports no digests (nothing is pulled from it).

use std::collections::HashMap;

use bollard::query_parameters::ListImagesOptions;
use bollard::Docker;
pub use nullops_events::catalog::LOCAL_ENGINE_URL;

use crate::{Registry, RegistryError};

pub(crate) fn is_engine(registry: &Registry) -> bool {
    registry.url == LOCAL_ENGINE_URL
}

/// The tags the engine holds of `repository`.
pub(crate) async fn tags(registry: &Registry, repository: &str) -> Result<Vec<String>, RegistryError> {
    let unreachable = |reason: String| RegistryError::Unreachable { registry: registry.name.clone(), reason };
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(format!("no Docker engine beside this server ({e})")))?;
    let filters = HashMap::from([("reference".to_owned(), vec![repository.to_owned()])]);
    let images = docker
        .list_images(Some(ListImagesOptions { filters: Some(filters), ..Default::default() }))
        .await
        .map_err(|e| unreachable(format!("the Docker engine beside this server did not answer ({e})")))?;
    let prefix = format!("{repository}:");
    let mut tags: Vec<String> = images.iter().flat_map(|i| i.repo_tags.iter()).filter_map(|t| t.strip_prefix(&prefix)).map(str::to_owned).collect();
    tags.sort();
    tags.dedup();
    if tags.is_empty() {
        return Err(RegistryError::RepositoryNotFound { registry: registry.name.clone(), repository: repository.to_owned() });
    }
    Ok(tags)
}
