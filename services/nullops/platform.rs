//! Wiring: the same components on embedded or production backends.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nullops_bus::{Bus, InProcessBus, NatsBus};
use nullops_gateway::{App, GatewayConfig};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::postgres::PgEventStore;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

use crate::ServeArgs;

pub struct Backends {
    store: Arc<dyn EventStore>,
    bus: Arc<dyn Bus>,
    read_models: ReadModelDb,
    /// Embedded mode: the lock on the data dir, held for the life of the process.
    _data_dir_lock: Option<File>,
}

impl Backends {
    /// SQLite files and an in-process bus under `data_dir`.
    pub async fn embedded(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let lock = File::create(data_dir.join("lock"))?;
        if lock.try_lock().is_err() {
            bail!("another nullops process is using {}", data_dir.display());
        }
        ensure_master_key(data_dir)?;
        let store = SqliteEventStore::open(&data_dir.join("events.db")).await.context("cannot open the event log")?;
        let read_models = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", data_dir.join("readmodels.db").display()))
            .await
            .context("cannot open the read models")?;
        Ok(Backends { store: Arc::new(store), bus: Arc::new(InProcessBus::default()), read_models, _data_dir_lock: Some(lock) })
    }

    /// PostgreSQL for the log and read models, NATS JetStream for the bus.
    pub async fn production(database_url: &str, nats_url: &str, nats_prefix: &str) -> anyhow::Result<Self> {
        let mut b = Self::postgres_only(database_url).await?;
        b.bus = Arc::new(NatsBus::connect(nats_url, nats_prefix).await?);
        Ok(b)
    }

    /// PostgreSQL only, with a bus local to this process (for maintenance commands).
    pub async fn postgres_only(database_url: &str) -> anyhow::Result<Self> {
        let store = PgEventStore::connect(database_url).await.context("cannot open the event store")?;
        let read_models = ReadModelDb::open(database_url).await.context("cannot open the read models")?;
        Ok(Backends { store: Arc::new(store), bus: Arc::new(InProcessBus::default()), read_models, _data_dir_lock: None })
    }
}

/// The secrets master key: `NULLOPS_MASTER_KEY`, else a key generated once into the data dir,
/// readable by its owner only.
fn ensure_master_key(data_dir: &Path) -> anyhow::Result<()> {
    if std::env::var_os("NULLOPS_MASTER_KEY").is_some() {
        return Ok(());
    }
    let path = data_dir.join("master.key");
    if path.exists() {
        return Ok(());
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(hex.as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "generated the secrets master key");
    Ok(())
}

/// Runs the relay, projections, live events and the gateway until SIGINT or SIGTERM.
pub async fn serve(b: Backends, args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let projections = nullops_projections::all();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nullops_bus::relay::run(b.store.clone(), b.bus.clone(), shutdown.clone()));
    for projection in &projections {
        let runner = Runner { projection: projection.clone(), db: b.read_models.clone(), store: b.store.clone(), bus: b.bus.clone() };
        tasks.spawn(runner.run(shutdown.clone()));
    }
    let live = nullops_gateway::live::Live::default();
    tasks.spawn(live.clone().follow(b.bus.clone(), b.store.clone(), shutdown.clone()));

    let app = Arc::new(App {
        store: b.store.clone(),
        read_models: b.read_models.clone(),
        projections,
        passwords: nullops_gateway::auth::PasswordHasherPool::new().await,
        throttle: Default::default(),
        live,
        config: GatewayConfig { session_ttl: Duration::from_secs(args.session_ttl_secs), ..Default::default() },
    });
    match nullops_gateway::bootstrap_admin(&app, args.admin_password.clone()).await {
        Ok(Some(password)) => println!("Created user 'admin' with password: {password}\n(shown once; set NULLOPS_ADMIN_PASSWORD to choose it)"),
        Ok(None) => {}
        Err(e) => bail!("cannot create the admin user: {}", e.message()),
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("NullOps is up: http://{addr}/ (GraphQL API at http://{addr}/graphql)");
    let router = nullops_gateway::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            stop.cancel();
        })
        .await?;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Empties one read model and replays the log into it. When a running server holds the
/// projection, that server replays it: its next checkpoint update finds the checkpoint reset.
pub async fn rebuild(b: Backends, name: &str) -> anyhow::Result<()> {
    let projection = nullops_projections::all()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| anyhow!("no projection named {name}; known: identity, audit"))?;
    let lease = b.store.try_lease(&format!("projection:{name}")).await?;
    b.read_models.reset(&*projection).await?;
    if lease.is_none() {
        println!("reset {name}; the running server that holds it is replaying the event log");
        return Ok(());
    }
    let runner = Runner { projection, db: b.read_models.clone(), store: b.store.clone(), bus: b.bus.clone() };
    let at = runner.catch_up_once().await?;
    let status = b.read_models.checkpoint(name).await?;
    println!("rebuilt {name}: {} events applied, at position {}", status.events_applied, at.seq);
    Ok(())
}
