//! Live tag listing: asks the service's registry, briefly caches the answer. Shared by the
//! API (tag pickers, dry runs) and the processes that ask for deployments (which check that a
//! chosen tag exists).

use nullops_domain::catalog::credentials_purpose;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullops_events::catalog::RegistryDefinition;
use nullops_keyring::Keyring;
use nullops_registry::{Credentials, Registry, RegistryClient};
use zeroize::Zeroizing;

/// Why a registry's tags could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    /// The registry's stored credentials cannot be unsealed.
    #[error(transparent)]
    Keyring(#[from] nullops_keyring::KeyringError),
    /// The registry refused or did not answer.
    #[error(transparent)]
    Registry(#[from] nullops_registry::RegistryError),
    /// The stored credentials unsealed to something that is not `user:password`.
    #[error("the stored credentials of registry {0} are not in the form user:password")]
    CorruptCredentials(String),
}

/// How long a registry's answer is reused: long enough to spare it a burst of page loads,
/// short enough that a tag pushed a moment ago shows up soon.
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_ENTRIES: usize = 512;
/// Even when asked to refresh, an answer this fresh is reused: however many callers insist, a
/// registry gets at most one call per repository in this time.
const REFRESH_FLOOR: Duration = Duration::from_secs(2);

type Cached = (Instant, Arc<Vec<String>>);

pub struct TagLister {
    client: RegistryClient,
    cache: Mutex<HashMap<String, Cached>>,
}

impl TagLister {
    /// `deadline` bounds every registry call; `egress` says where they may go.
    pub fn new(deadline: Duration, egress: Arc<nullops_egress::Egress>) -> Self {
        TagLister { client: RegistryClient::new(deadline, egress), cache: Mutex::new(HashMap::new()) }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The registry with its credentials decrypted, ready to be called.
    pub async fn open(keyring: &Keyring, registry: &RegistryDefinition) -> Result<Registry, TagsError> {
        let credentials = match &registry.credentials {
            None => None,
            Some(sealed) => {
                let plain = keyring.unseal(sealed, &credentials_purpose(&registry.name)).await?;
                let corrupt = || TagsError::CorruptCredentials(registry.name.clone());
                let text = Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| corrupt())?);
                let (user, pass) = text.split_once(':').ok_or_else(corrupt)?;
                Some(Credentials { username: user.to_owned(), password: Zeroizing::new(pass.to_owned()) })
            }
        };
        Ok(Registry { name: registry.name.clone(), url: registry.url.clone(), credentials })
    }

    /// Every tag of `repository`, from the cache when fresh (with `refresh`: fresher than 2 s).
    pub async fn tags(&self, keyring: &Keyring, registry: &RegistryDefinition, repository: &str, refresh: bool) -> Result<Arc<Vec<String>>, TagsError> {
        // The key covers everything that changes the answer, credentials included.
        let key = format!("{}|{}|{:?}|{repository}", registry.name, registry.url, registry.credentials.as_ref().map(|c| c.key_id));
        let fresh_enough = if refresh { REFRESH_FLOOR } else { CACHE_TTL };
        if let Some((at, tags)) = self.cache.lock().expect("tag cache lock").get(&key) {
            if at.elapsed() < fresh_enough {
                return Ok(tags.clone());
            }
        }
        let target = Self::open(keyring, registry).await?;
        let tags = Arc::new(self.client.list_tags(&target, repository).await?);
        let mut cache = self.cache.lock().expect("tag cache lock");
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        if cache.len() >= CACHE_ENTRIES {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone()) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), tags.clone()));
        Ok(tags)
    }
}
