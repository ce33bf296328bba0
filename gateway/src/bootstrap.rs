//! First start: make sure an admin exists and the catalog holds Docker Hub.

use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::identity::{User, UserCommand};
use nullops_domain::{Decider, Issuer, Password, Username};
use nullops_events::catalog::RegistryDefinition;
use nullops_events::identity::Role;
use nullops_events::EventMetadata;
use rand::distributions::{Alphanumeric, DistString};

use crate::error::{ApiError, ApiResult};
use crate::{dispatch, App};

/// Registers the user `admin` if it does not exist yet, with `password` or a generated one.
/// Returns the generated password (to be shown once), if one was generated.
pub async fn bootstrap_admin(app: &App, password: Option<String>) -> ApiResult<Option<String>> {
    let username = Username::parse("admin")?;
    if !app.store.read_stream(&<User as Decider>::stream_id("admin"), 0).await.map_err(ApiError::internal)?.is_empty() {
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (Alphanumeric.sample_string(&mut rand::thread_rng(), 24), true),
    };
    let password = Password::parse(&password).map_err(|e| ApiError::InvalidInput(format!("NULLOPS_ADMIN_PASSWORD: {e}")))?;
    let password_hash = app.passwords.hash(password.expose().to_owned()).await?;
    let command = UserCommand::Register { by: Issuer::System, user_id: uuid::Uuid::now_v7(), username, password_hash, role: Role::Admin };
    match saved_anyway(dispatch::<User>(app, EventMetadata::system(), "admin", command).await) {
        Ok(()) => Ok(generated.then_some(password.expose().to_owned())),
        // Another server bootstrapped it first.
        Err(ApiError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Docker Hub, present from the start. Added only to a catalog that has never held anything, so
/// an admin who removes it does not see it come back.
pub async fn bootstrap_catalog(app: &App) -> ApiResult<()> {
    // Through the cache: the first catalog command then starts from the state read here.
    let (_, version) = app.catalog.load(&*app.store, CATALOG_KEY).await?;
    if version > 0 {
        return Ok(());
    }
    let docker_hub = RegistryDefinition { name: "docker-hub".into(), url: "https://registry-1.docker.io".into(), credentials: None };
    let command = CatalogCommand { by: Issuer::System, action: CatalogAction::AddRegistry(docker_hub) };
    match saved_anyway(dispatch::<Catalog>(app, EventMetadata::system(), CATALOG_KEY, command).await) {
        // Another server added it first.
        Ok(()) | Err(ApiError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A first start's command is saved even when the read models have not shown it yet (a busy
/// machine, a long replay): that is success. Failing there would stop the start after the admin
/// was made, and lose the generated password it is the only chance to show.
fn saved_anyway<T>(result: ApiResult<T>) -> ApiResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(ApiError::NotYetVisible(why)) => {
            tracing::warn!(why, "a first-start change is saved but not visible yet");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
