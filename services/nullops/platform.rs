//! Wiring: the same components on embedded or production backends.

use std::fs::{File, OpenOptions};
use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nullops_bus::{Bus, InProcessBus, NatsBus};
use nullops_gateway::{App, GatewayConfig};
use nullops_keyring::{Keyring, MasterKey};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_saga::{periodic, TagLister};
use nullops_store::commands::StateCache;
use nullops_store::postgres::PgEventStore;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

use crate::{local_agent, IngressArgs, ServeArgs};

/// Bound on every call to a container registry.
const REGISTRY_DEADLINE: Duration = Duration::from_secs(10);
/// How long a command waits for the read models to show its effect (read-your-writes).
const CONSISTENCY_WAIT: Duration = Duration::from_secs(5);

pub struct Backends {
    store: Arc<dyn EventStore>,
    bus: Arc<dyn Bus>,
    read_models: ReadModelDb,
    /// Where the data keys live: beside the event log.
    keyring_url: String,
    /// Embedded mode: the data dir, which may hold the master key.
    data_dir: Option<PathBuf>,
    /// Embedded mode: the lock on the data dir, held for the life of the process.
    _data_dir_lock: Option<File>,
}

impl Backends {
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }
    pub fn read_models(&self) -> ReadModelDb {
        self.read_models.clone()
    }

    /// SQLite files and an in-process bus under `data_dir`, which only its owner can read.
    pub async fn embedded(data_dir: &Path) -> anyhow::Result<Self> {
        private_dir(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let lock = File::create(data_dir.join("lock"))?;
        if lock.try_lock().is_err() {
            bail!("another nullops process is using {}", data_dir.display());
        }
        let store = SqliteEventStore::open(&data_dir.join("events.db")).await.context("cannot open the event log")?;
        let read_models =
            ReadModelDb::open(&format!("sqlite://{}?mode=rwc", data_dir.join("readmodels.db").display())).await.context("cannot open the read models")?;
        read_models.whole_if_the_log_is_empty(&store).await.context("cannot open the read models")?;
        Ok(Backends {
            store: Arc::new(store),
            bus: Arc::new(InProcessBus::default()),
            read_models,
            keyring_url: format!("sqlite://{}?mode=rwc", data_dir.join("keys.db").display()),
            data_dir: Some(data_dir.to_owned()),
            _data_dir_lock: Some(lock),
        })
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
        read_models.whole_if_the_log_is_empty(&store).await.context("cannot open the read models")?;
        Ok(Backends {
            store: Arc::new(store),
            bus: Arc::new(InProcessBus::default()),
            read_models,
            keyring_url: database_url.to_owned(),
            data_dir: None,
            _data_dir_lock: None,
        })
    }
}

/// Files this process creates are its owner's alone (0600, directories 0700): the event log,
/// read models and keys of `nullops up`, and what SQLite adds beside them, hold secrets'
/// ciphertext, sessions and the history.
pub fn private_files() {
    // SAFETY: umask only sets the process's file mode creation mask; it takes no pointer and
    // cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (0700), or makes an existing one and what it holds (files and directories one
/// level down, as an earlier version left them) readable by their owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
            for inner in std::fs::read_dir(entry.path())? {
                let inner = inner?;
                if inner.file_type()?.is_file() {
                    std::fs::set_permissions(inner.path(), std::fs::Permissions::from_mode(0o600))?;
                }
            }
        } else if kind.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Where the master key came from.
enum MasterKeySource {
    Environment,
    File(PathBuf),
}

const MASTER_KEY_HELP: &str = "set NULLOPS_MASTER_KEY to 64 hex characters (e.g. from `openssl rand -hex 32`)";

/// The secrets master key: `NULLOPS_MASTER_KEY`; in embedded mode without it, a key generated
/// once into the data dir, readable by its owner only.
fn master_key(data_dir: Option<&Path>) -> anyhow::Result<(MasterKey, MasterKeySource)> {
    if let Ok(hex) = std::env::var("NULLOPS_MASTER_KEY") {
        let key = MasterKey::from_hex(&hex).map_err(|e| anyhow!("NULLOPS_MASTER_KEY: {e}"))?;
        return Ok((key, MasterKeySource::Environment));
    }
    let Some(dir) = data_dir else { bail!("the server keeps no key on disk: {MASTER_KEY_HELP}") };
    let path = dir.join("master.key");
    if !path.exists() {
        let key = MasterKey::generate();
        write_key_file(&path, &key)?;
        tracing::info!(path = %path.display(), "generated the secrets master key");
    }
    let hex = zeroize::Zeroizing::new(std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?);
    let key = MasterKey::from_hex(&hex).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((key, MasterKeySource::File(path)))
}

fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key.to_hex().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

async fn keyring(b: &Backends) -> anyhow::Result<(Keyring, MasterKeySource)> {
    let (key, source) = master_key(b.data_dir.as_deref())?;
    let keyring = Keyring::open(&b.keyring_url, key).await.context("cannot open the keyring")?;
    Ok((keyring, source))
}

/// `nullops keys rotate`: re-wraps every data key under a new master key (from
/// `NULLOPS_NEW_MASTER_KEY`, or generated when the current one is the data dir's file). Events
/// are not touched.
pub async fn rotate_keys(b: Backends) -> anyhow::Result<()> {
    // A running server would go on sealing under the old key: every server holds or waits for the
    // relay lease, so holding it here means none is running (embedded: the data dir lock).
    let Some(_relay) = b.store.try_lease("relay").await? else {
        bail!("a nullops server is running on this database; stop every server, rotate, then start them with the new key");
    };
    let (keyring, source) = keyring(&b).await?;
    let (new, file) = match (std::env::var("NULLOPS_NEW_MASTER_KEY"), &source) {
        (Ok(hex), _) => (MasterKey::from_hex(&hex).map_err(|e| anyhow!("NULLOPS_NEW_MASTER_KEY: {e}"))?, None),
        (Err(_), MasterKeySource::File(path)) => (MasterKey::generate(), Some(path.clone())),
        (Err(_), MasterKeySource::Environment) => bail!("set NULLOPS_NEW_MASTER_KEY to the new master key (64 hex characters)"),
    };
    if new.id() == keyring.master_key_id() {
        bail!("the new master key is the current one");
    }
    // The new key is on disk before any data key depends on it.
    let staged = file.as_ref().map(|p| p.with_extension("key.new"));
    if let Some(staged) = &staged {
        let _ = std::fs::remove_file(staged);
        write_key_file(staged, &new)?;
    }
    let count = match keyring.rotate(&new).await {
        Ok(n) => n,
        Err(e) => {
            if let Some(staged) = &staged {
                let _ = std::fs::remove_file(staged);
            }
            return Err(e).context("rotation failed; nothing was changed");
        }
    };
    match (staged, file) {
        (Some(staged), Some(path)) => {
            std::fs::rename(&staged, &path).with_context(|| format!("keys were re-wrapped; move {} to {} by hand", staged.display(), path.display()))?;
            println!("re-wrapped {count} data keys under master key {} (stored in {})", new.id(), path.display());
        }
        _ => println!("re-wrapped {count} data keys under master key {}; start nullops with NULLOPS_MASTER_KEY set to the new key", new.id()),
    }
    Ok(())
}

/// `nullops keys sweep`: destroys data keys that no live value uses, older than `grace`.
pub async fn sweep_keys(b: Backends, grace: Duration) -> anyhow::Result<()> {
    let (keyring, _) = keyring(&b).await?;
    let destroyed = nullops_saga::key_sweep::sweep_orphaned_keys(&*b.store, &b.read_models, &keyring, grace).await?;
    println!("destroyed {destroyed} orphaned data keys");
    Ok(())
}

/// `nullops keys verify`: unwraps every data key with the current master key.
pub async fn verify_keys(b: Backends) -> anyhow::Result<()> {
    let (keyring, _) = keyring(&b).await?;
    let count = keyring.verify().await?;
    println!("all {count} data keys unwrap under master key {}", keyring.master_key_id());
    Ok(())
}

/// Runs the relay, projections, live events and the gateway until SIGINT or SIGTERM.
/// `nullops up`'s own node: where its agent listens, and whether the demo is offered.
pub struct LocalNode {
    pub listen: SocketAddr,
    pub demo: bool,
}

/// Serves `/metrics` without authentication on `listen`, when given: the platform's state too
/// when `app` is given (which then never calls it), else what this process counts.
pub async fn serve_metrics(listen: Option<SocketAddr>, app: Option<Arc<nullops_gateway::App>>) -> anyhow::Result<()> {
    let Some(listen) = listen else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("the metrics cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if let Some(app) = &app {
        app.egress.listening(addr);
    }
    println!("Metrics at http://{addr}/metrics");
    let router = nullops_gateway::metrics::open_router(app);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

pub async fn serve(b: Backends, args: ServeArgs, local: Option<LocalNode>, metrics_listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let egress = Arc::new(nullops_egress::Egress::new(&args.allowed_private_targets)?);
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

    let (keyring, _) = keyring(&b).await?;
    let keyring = Arc::new(keyring);
    let pacing = args.pacing;
    let sweep = nullops_saga::key_sweep::KeySweep {
        store: b.store.clone(),
        read_models: b.read_models.clone(),
        keyring: keyring.clone(),
        grace: pacing.key_sweep_grace,
    };
    tasks.spawn(periodic::run(sweep, pacing.key_sweep_every, b.store.clone(), shutdown.clone()));
    let ingress = if args.no_ingress {
        public_origin(&args.ingress, args.ingress.ingress_listen.port())
    } else {
        start_ingress(&b, &args.ingress, &mut tasks, &shutdown, &egress).await?
    };
    let core = Arc::new(nullops_saga::Core {
        store: b.store.clone(),
        read_models: b.read_models.clone(),
        projections,
        keyring,
        registries: TagLister::new(REGISTRY_DEADLINE, egress.clone()),
        catalog: StateCache::new(1),
        consistency_wait: CONSISTENCY_WAIT,
        egress,
        ingress,
        pacing,
    });
    let app = Arc::new(App {
        core,
        passwords: nullops_gateway::auth::PasswordHasherPool::new().await,
        throttle: nullops_gateway::auth::LoginThrottle::new(b.read_models.clone()),
        live,
        config: GatewayConfig { session_ttl: Duration::from_secs(args.session_ttl_secs), allowed_origins: args.allowed_origins.clone(), ..Default::default() },
        shutdown: shutdown.clone(),
        sockets: Default::default(),
    });
    let sockets = app.sockets.clone();
    match nullops_gateway::bootstrap_admin(&app, args.admin_password.clone()).await {
        Ok(Some(password)) => println!("Created user 'admin' with password: {password}\n(shown once; set NULLOPS_ADMIN_PASSWORD to choose it)"),
        Ok(None) => {}
        Err(e) => bail!("cannot create the admin user: {}", e.message()),
    }
    nullops_gateway::bootstrap_catalog(&app).await.map_err(|e| anyhow!("cannot set up the catalog: {}", e.message()))?;
    // The local agent listens (at its address of last time, when it can) before the connector
    // dials and the saga places deployments: after a restart its node is back at once.
    let mut offer_demo = false;
    if let (Some(local), Some(data_dir)) = (&local, &b.data_dir) {
        match local_agent::start(&b.store, &app.keyring, local.listen, data_dir).await {
            Ok(agent) => {
                app.egress.listening(agent.local_addr());
                tasks.spawn(agent.serve(shutdown.clone()));
                offer_demo = local.demo;
            }
            Err(e) => tracing::warn!(error = %e, "the local agent did not start; deployments need another node"),
        }
    }
    tasks.spawn(nullops_connector::run(connector(&b, app.keyring.clone()), shutdown.clone()));
    let reaper = nullops_saga::reaper::Reaper { store: b.store.clone(), read_models: b.read_models.clone() };
    tasks.spawn(periodic::run(reaper, pacing.reap_every, b.store.clone(), shutdown.clone()));
    let saga = nullops_saga::DeploymentSaga::new(b.store.clone(), b.read_models.clone(), pacing.node_grace);
    tasks.spawn(nullops_saga::SagaRunner { saga: Arc::new(saga), store: b.store.clone(), bus: b.bus.clone() }.run(shutdown.clone()));
    let sampler = nullops_saga::samplers::PlatformSampler::new(app.core.clone());
    tasks.spawn(periodic::run(sampler, nullops_saga::samplers::SAMPLE_EVERY, b.store.clone(), shutdown.clone()));
    let webhooks = nullops_saga::webhooks::WebhookProcess::new(app.core.clone());
    tasks.spawn(nullops_saga::SagaRunner { saga: Arc::new(webhooks), store: b.store.clone(), bus: b.bus.clone() }.run(shutdown.clone()));
    let previews = nullops_saga::previews::PreviewProcess::new(app.core.clone());
    tasks.spawn(nullops_saga::SagaRunner { saga: Arc::new(previews), store: b.store.clone(), bus: b.bus.clone() }.run(shutdown.clone()));

    serve_metrics(metrics_listen, Some(app.clone())).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    app.egress.listening(addr);
    println!("NullOps is up: http://{addr}/ (GraphQL API at http://{addr}/graphql)");
    if offer_demo {
        tasks.spawn(demo(app.clone(), addr));
    }
    let router = nullops_gateway::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = shutdown.clone();
    let serving = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            stop.cancel();
        })
        .into_future();
    tokio::pin!(serving);
    // On a signal the HTTP server ends as soon as its requests have (it does not follow
    // upgraded connections), often in the same instant the signal cancels `shutdown`: whichever
    // is seen first, the stop below runs, so that no subscription is cut without its close frame.
    let ended_first = tokio::select! {
        served = &mut serving => Some(served),
        () = shutdown.cancelled() => None,
    };
    // The open subscriptions are being closed (1001) and requests finish; the process is gone
    // within STOP_WITHIN whatever still hangs.
    exit_if_still_running_after(STOP_WITHIN);
    shutdown.cancel();
    sockets.close();
    let drained = tokio::time::timeout(DRAIN_WITHIN, async {
        if ended_first.is_none() {
            let _ = (&mut serving).await;
        }
        sockets.wait().await;
    });
    if drained.await.is_err() {
        tracing::warn!("connections still open {} s after the signal; stopping anyway", DRAIN_WITHIN.as_secs());
    }
    if tokio::time::timeout(TASKS_WITHIN, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("background tasks still running {} ms after the server stopped; stopping anyway", TASKS_WITHIN.as_millis());
    }
    if let Some(served) = ended_first {
        served?;
    }
    Ok(())
}

/// How soon after SIGTERM or SIGINT the process is gone, whatever is connected: requests and
/// subscriptions get `DRAIN_WITHIN`, background tasks `TASKS_WITHIN` more, and a watchdog ends
/// the process at `STOP_WITHIN`.
const STOP_WITHIN: Duration = Duration::from_secs(5);
const DRAIN_WITHIN: Duration = Duration::from_secs(3);
const TASKS_WITHIN: Duration = Duration::from_millis(1500);

/// Ends the process after `limit`, from a thread of its own (a runtime that hangs cannot stop it).
fn exit_if_still_running_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("nullops did not stop within {} s of the signal; exiting", limit.as_secs());
        std::process::exit(1);
    });
}

pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Empties the read models `names` (every one when `None`) and replays the log into them, all at
/// once: the log is read once for all of them, and on PostgreSQL they apply each batch side by
/// side. A read model a running server holds is replayed by that server: its runner finds its
/// checkpoint reset.
pub async fn rebuild(b: Backends, names: Option<&[String]>) -> anyhow::Result<()> {
    let all = nullops_projections::all();
    let chosen: Vec<_> = match names {
        None => all.clone(),
        Some(names) => {
            let mut chosen = Vec::new();
            for name in names {
                let Some(projection) = all.iter().find(|p| p.name() == name) else {
                    let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
                    bail!("no read model named {name}; the read models are: {}", known.join(", "));
                };
                if !chosen.iter().any(|c: &Arc<dyn nullops_projections::Projection>| c.name() == projection.name()) {
                    chosen.push(projection.clone());
                }
            }
            chosen
        }
    };
    // The leases are held for the whole replay: a server starting meanwhile leaves these alone.
    let mut leases = Vec::new();
    let mut runners = Vec::new();
    for projection in chosen {
        let name = projection.name();
        let lease = b.store.try_lease(&format!("projection:{name}")).await?;
        b.read_models.reset(&*projection).await?;
        match lease {
            Some(lease) => {
                leases.push(lease);
                runners.push(Runner { projection, db: b.read_models.clone(), store: b.store.clone(), bus: b.bus.clone() });
            }
            None => println!("reset {name}; the running server that holds it is replaying the event log"),
        }
    }
    let started = std::time::Instant::now();
    let reached = Runner::catch_up_together(&runners).await?;
    let took = started.elapsed();
    for (runner, at) in runners.iter().zip(reached) {
        let name = runner.projection.name();
        let status = b.read_models.checkpoint(name).await?;
        println!(
            "rebuilt {name}: {} events applied, at position {}, in {:.2} s ({:.0} log events/s)",
            status.events_applied,
            at.seq,
            took.as_secs_f64(),
            at.seq as f64 / took.as_secs_f64().max(1e-6)
        );
    }
    drop(leases);
    Ok(())
}

/// Builds the demo's images (in the background: a first build copies this binary into the
/// engine), then sets the demo up in a catalog that is still empty. Everything else works
/// meanwhile, and without it.
async fn demo(app: Arc<App>, addr: SocketAddr) {
    match crate::demo::ensure_images().await {
        Ok(0) => {}
        Ok(built) => tracing::info!(built, "the demo's images are built"),
        Err(e) => {
            tracing::warn!(error = %e, "the demo's images could not be built; the demo is not offered");
            return;
        }
    }
    match nullops_gateway::demo::seed(&app).await {
        Ok(true) => println!("The demo is ready: deploy project demo at http://{addr}/#/deployments/new?project=demo"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e.message(), "the demo could not be set up"),
    }
}

/// How users reach an ingress that listens on `port`.
fn public_origin(args: &IngressArgs, port: u16) -> nullops_events::urls::PublicOrigin {
    let listen = args.ingress_listen.ip();
    let address = args.ingress_public_address.clone().or_else(|| (!listen.is_unspecified()).then(|| listen.to_string()));
    nullops_events::urls::PublicOrigin { https: args.ingress_tls_cert.is_some(), port: args.ingress_public_port.unwrap_or(port), address }
}

/// Starts the ingress on `args` with a routing table kept from the read models, and says how
/// users reach it.
async fn start_ingress(
    b: &Backends,
    args: &IngressArgs,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
    egress: &nullops_egress::Egress,
) -> anyhow::Result<nullops_events::urls::PublicOrigin> {
    let tls = match (&args.ingress_tls_cert, &args.ingress_tls_key) {
        (Some(cert), Some(key)) => Some(nullops_ingress::tls::server_config(cert, key)?),
        _ => None,
    };
    let routes = nullops_ingress::RouteBook::new(b.read_models.clone());
    // The first table is in place before the first request.
    if let Err(e) = routes.reload().await {
        tracing::warn!(error = %e, "the ingress starts with no routes; it retries as events arrive");
    }
    let ingress = nullops_ingress::Ingress::bind(args.ingress_listen, tls, routes.clone())
        .await
        .with_context(|| format!("the ingress cannot listen on {}", args.ingress_listen))?;
    let addr = ingress.local_addr();
    egress.listening(addr);
    println!("NullOps ingress is up: {}://{addr}/ (serving SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN)", if ingress.is_tls() { "https" } else { "http" });
    tasks.spawn(nullops_ingress::live::follow(routes, b.read_models.clone(), b.bus.clone(), shutdown.clone()));
    tasks.spawn(ingress.serve(shutdown.clone()));
    let sampler = TrafficSampler { read_models: b.read_models.clone(), traffic: Default::default() };
    tasks.spawn(periodic::run(sampler, nullops_saga::samplers::SAMPLE_EVERY, b.store.clone(), shutdown.clone()));
    Ok(public_origin(args, addr.port()))
}

/// Writes what the ingress answered per deployment into the traffic chart's samples, every
/// sampling window (its only write: telemetry, beside the read models).
struct TrafficSampler {
    read_models: nullops_projections::ReadModelDb,
    /// The previous reading of the ingress's counts (read by this sampler alone).
    traffic: std::sync::Mutex<nullops_ingress::traffic::Traffic>,
}

#[async_trait::async_trait]
impl periodic::Periodic for TrafficSampler {
    type Error = nullops_projections::ProjectionError;
    const NAME: &'static str = "traffic-sampler";
    const SCOPE: periodic::Scope = periodic::Scope::EachServer;

    async fn run_once(&self) -> Result<(), Self::Error> {
        use nullops_projections::samples::{self, Series};
        let now = nullops_events::Timestamp::now().0;
        let read = self.traffic.lock().unwrap_or_else(|p| p.into_inner()).read();
        for since in read {
            let series = Series::Traffic { environment: since.environment.clone(), deployment: since.deployment.clone() };
            let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            samples::add(&self.read_models.working_rows(), &series, now, big(since.requests), big(since.errors)).await?;
            // Only now: a write that failed leaves the counts for the next turn.
            self.traffic.lock().unwrap_or_else(|p| p.into_inner()).written(&since);
        }
        Ok(())
    }
}

/// `nullops ingress`: only the ingress, routing from the read models the servers keep.
pub async fn run_ingress(b: Backends, args: &IngressArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Alone, it makes no calls of its own that its listener could be the target of.
    start_ingress(&b, args, &mut tasks, &shutdown, &nullops_egress::Egress::default()).await?;
    wait_for_signal().await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn connector(b: &Backends, keyring: Arc<Keyring>) -> nullops_connector::Connector {
    nullops_connector::Connector {
        store: b.store.clone(),
        bus: b.bus.clone(),
        read_models: b.read_models.clone(),
        keyring: keyring.clone(),
        desired: Arc::new(nullops_connector::desired::FromDeployments::new(b.store.clone(), b.read_models.clone(), keyring)),
    }
}

/// `nullops connector`: only the relay and the connector, for installations that run the
/// connector apart from the API servers (it takes the `connector` lease like any server would).
pub async fn run_connector(b: Backends) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (keyring, _) = keyring(&b).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nullops_bus::relay::run(b.store.clone(), b.bus.clone(), shutdown.clone()));
    // The read models the connector works from.
    let projections: [Arc<dyn nullops_projections::Projection>; 2] =
        [Arc::new(nullops_projections::nodes::NodesProjection), Arc::new(nullops_projections::deployments::DeploymentsProjection)];
    for projection in projections {
        let runner = Runner { projection, db: b.read_models.clone(), store: b.store.clone(), bus: b.bus.clone() };
        tasks.spawn(runner.run(shutdown.clone()));
    }
    tasks.spawn(nullops_connector::run(connector(&b, Arc::new(keyring)), shutdown.clone()));
    println!("NullOps connector is up");
    wait_for_signal().await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
