//! `nullops up`'s own agent: on loopback, registered as a node of environment `local` and trusted
//! automatically, so the embedded mode deploys to the local Docker engine over the same protocol
//! as production. This process holds both ends, which is what makes trusting it automatic: it
//! approves only the certificate of the agent it just started.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use nullops_agent::{Agent, AgentConfig};
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::node::{token_purpose, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{DnsLabel, Issuer};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_events::EventMetadata;
use nullops_keyring::Keyring;
use nullops_store::commands::{execute, load};
use nullops_store::EventStore;
use nullops_wire::{NodeToken, PROTOCOL_VERSION};
use uuid::Uuid;

/// The environment of the local node, and the domain its deployments are served under
/// (`*.localhost` resolves to loopback in browsers).
const LOCAL_ENVIRONMENT: &str = "local";
const LOCAL_DOMAIN: &str = "localhost";

pub async fn start(store: &Arc<dyn EventStore>, keyring: &Keyring, listen: SocketAddr, data_dir: &Path) -> anyhow::Result<Agent> {
    let dir = data_dir.join("agent");
    std::fs::create_dir_all(&dir)?;
    let raw_token = zeroize::Zeroizing::new(read_or_create(&dir.join("token"), || NodeToken::generate().expose().to_owned())?);
    let token = || NodeToken::from_configured(&raw_token).ok_or_else(|| anyhow!("{} is empty", dir.join("token").display()));
    let node_id: Uuid = read_or_create(&dir.join("node-id"), || Uuid::now_v7().to_string())?.trim().parse().context("agent/node-id")?;
    let token_hash = token()?.hash();
    let scope = format!("local-{}", &node_id.simple().to_string()[..12]);
    let config = |listen| -> anyhow::Result<AgentConfig> {
        Ok(AgentConfig {
            listen,
            data_dir: dir.clone(),
            token: token()?,
            scope: scope.clone(),
            protocol: PROTOCOL_VERSION,
            reconcile_every: nullops_agent::RECONCILE_EVERY,
            network_pool: Default::default(),
            prefetch_budget_mib: nullops_agent::prefetch::DEFAULT_BUDGET_MIB,
            // Only `nullops bench idle` sets this, for its baseline.
            reconcile_paused: std::env::var(crate::bench_idle::PAUSE_RECONCILE).is_ok_and(|v| v == "1"),
        })
    };
    // Any free port was asked for: the one of last time if it is still free, so that the node's
    // address stays the same across restarts.
    let port_file = dir.join("port");
    let last = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()).filter(|_| listen.port() == 0);
    let agent = match last {
        Some(port) => match Agent::bind(config(SocketAddr::new(listen.ip(), port))?).await {
            Ok(agent) => agent,
            Err(_) => Agent::bind(config(listen)?).await?,
        },
        None => Agent::bind(config(listen)?).await?,
    };
    let addr = agent.local_addr();
    if let Err(e) = write_private(&port_file, &addr.port().to_string()) {
        tracing::warn!(error = %e, "cannot remember the local agent's port");
    }

    let system = |action| NodeCommand { by: Issuer::System, action };
    let run = |command: NodeCommand| {
        let store = store.clone();
        async move { execute::<Node>(&*store, &node_id.to_string(), &command, &EventMetadata::system()).await }
    };
    let (state, _) = load::<Node>(&**store, &node_id.to_string()).await?;
    let host = NodeHost::parse(&addr.ip().to_string())?;
    if !state.exists() {
        ensure_local_environment(store).await?;
        let sealed = keyring.seal(token_hash.as_bytes(), &token_purpose(node_id)).await?;
        run(system(NodeAction::Add {
            node_id,
            environment: DnsLabel::parse("environment", LOCAL_ENVIRONMENT)?,
            environment_exists: true,
            host,
            port: addr.port(),
            token_hash: sealed,
        }))
        .await?;
    } else {
        run(system(NodeAction::Move { host, port: addr.port() })).await?;
        let current = match &state.token {
            Some(sealed) => keyring.unseal(sealed, &token_purpose(node_id)).await.ok(),
            None => None,
        };
        if current.as_deref().map(|c| &c[..]) != Some(&token_hash.as_bytes()[..]) {
            let sealed = keyring.seal(token_hash.as_bytes(), &token_purpose(node_id)).await?;
            let retired = state.token.as_ref().map(|t| t.key_id);
            run(system(NodeAction::RotateToken { token_hash: sealed })).await?;
            if let Some(key) = retired {
                keyring.destroy(key).await?;
            }
        }
    }
    // Trust exactly this agent's certificate.
    run(system(NodeAction::Presented { thumbprint: agent.thumbprint() })).await?;
    let (state, _) = load::<Node>(&**store, &node_id.to_string()).await?;
    if state.pending.is_some() {
        run(system(NodeAction::ApproveThumbprint { thumbprint: agent.thumbprint() })).await?;
    }
    tracing::info!(node = %node_id, %addr, thumbprint = %agent.thumbprint(), "local agent registered");
    Ok(agent)
}

/// The `local` environment, created when missing.
async fn ensure_local_environment(store: &Arc<dyn EventStore>) -> anyhow::Result<()> {
    let (catalog, _) = load::<Catalog>(&**store, CATALOG_KEY).await?;
    if catalog.environments.contains_key(LOCAL_ENVIRONMENT) {
        return Ok(());
    }
    let definition = EnvironmentDefinition { name: LOCAL_ENVIRONMENT.into(), base_domain: LOCAL_DOMAIN.into(), cleanup_after_secs: 86_400 };
    let command = CatalogCommand { by: Issuer::System, action: CatalogAction::CreateEnvironment(definition) };
    execute::<Catalog>(&**store, CATALOG_KEY, &command, &EventMetadata::system()).await?;
    Ok(())
}

/// Writes `value` to `path` (mode 0600), replacing it.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(value.as_bytes())
}

/// The content of `path`, written by `make` (mode 0600) when the file does not exist.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let value = make();
            file.write_all(value.as_bytes())?;
            file.sync_all()?;
            Ok(value)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read_to_string(path)?),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}
