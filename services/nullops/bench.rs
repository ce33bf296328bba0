//! `nullops bench events`: append throughput against pgbench on the same database, and
//! command-to-projection latency, all measured in one run. `nullops bench catalog`: catalog
//! command latency as the catalog grows, against an identity command in the same run.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::identity::{ApiToken, ApiTokenCommand};
use nullops_domain::{Decider, Issuer, Principal, TokenName, Username};
use nullops_events::catalog::{CatalogEvent, EnvironmentDefinition};
use nullops_events::identity::{Role, UserDisabled, UserEvent};
use nullops_events::{EventMetadata, NewEvent, StreamId};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::commands::StateCache;
use nullops_store::postgres::PgEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

pub async fn events(database_url: &str, duration: Duration, round_count: usize, commands: usize) -> anyhow::Result<()> {
    let store = Arc::new(PgEventStore::connect(database_url).await?);
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)").execute(store.pool()).await?;

    // Latency first, on a quiet log: a backlog left by the throughput runs would be measured too.
    println!("== command-to-projection latency ({commands} commands) ==");
    let (p50, p99) = command_to_projection(store.clone(), database_url, commands).await?;
    println!("p50: {:.2} ms   p99: {:.2} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);

    // The machine's speed drifts (shared hosts, fsync latency): alternate the baseline and ours in
    // short rounds and report the median ratio, so drift hits both sides alike.
    println!("== append throughput ({round_count} alternating rounds of {}s each) ==", duration.as_secs());
    let mut ratios = Vec::new();
    for writers in [1usize, 16] {
        let mut rounds = Vec::new();
        for _ in 0..round_count.max(1) {
            let baseline = pgbench(database_url, writers, duration).await?;
            let ours = appends_per_second(store.clone(), writers, duration).await?;
            rounds.push((ours / baseline, baseline, ours));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, baseline, ours) = rounds[rounds.len() / 2];
        println!(
            "writers={writers:>2}  pgbench single-row insert: {baseline:>9.0} tps   nullops append: {ours:>9.0} events/s   median ratio: {ratio:.2}   (all: {})",
            rounds.iter().map(|r| format!("{:.2}", r.0)).collect::<Vec<_>>().join(" ")
        );
        ratios.push((writers, ratio));
    }

    for (writers, ratio) in ratios {
        println!("RESULT append_ratio_writers_{writers}={ratio:.2}");
    }
    println!("RESULT command_to_projection_p50_ms={:.2}", p50.as_secs_f64() * 1e3);
    println!("RESULT command_to_projection_p99_ms={:.2}", p99.as_secs_f64() * 1e3);
    Ok(())
}

/// pgbench running single-row inserts of a payload the size of a small event.
async fn pgbench(database_url: &str, clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join("nullops-bench-insert.sql");
    std::fs::write(&script, format!("INSERT INTO bench_rows (payload) VALUES ('\\x{}');\n", "ab".repeat(64)))?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-f"])
        .arg(&script)
        .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string(), "-T", &duration.as_secs().to_string()])
        .arg(database_url)
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("cannot run pgbench (apt-get install postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = stdout.lines().find_map(|l| l.strip_prefix("tps = ")).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<f64>().ok());
    match tps {
        Some(tps) if out.status.success() => Ok(tps),
        _ => bail!("pgbench failed: {stdout}"),
    }
}

/// Single-event appends, each to its writer's own stream, as fast as they go.
async fn appends_per_second(store: Arc<PgEventStore>, writers: usize, duration: Duration) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let run = uuid::Uuid::now_v7().simple().to_string();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (store, count, stream) = (store.clone(), count.clone(), StreamId::new("bench", &format!("{run}{w}")));
        tasks.spawn(async move {
            let event = UserEvent::Disabled(UserDisabled {}).into();
            let mut version = 0;
            while started.elapsed() < duration {
                let new = [NewEvent::new(&event, EventMetadata::system())];
                version = store.append(&stream, version, &new).await?.stream_version;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, nullops_store::StoreError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The relay and every projection runner, on the bench's store, with the bus of
/// NULLOPS_NATS_URL when set (else in-process): commands timed through it pass the whole path.
struct Running {
    store: Arc<dyn EventStore>,
    db: ReadModelDb,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    async fn start(store: Arc<dyn EventStore>, database_url: &str) -> anyhow::Result<Self> {
        let bus: Arc<dyn nullops_bus::Bus> = match std::env::var("NULLOPS_NATS_URL") {
            Ok(url) => Arc::new(nullops_bus::NatsBus::connect(&url, &format!("bench-{}", uuid::Uuid::now_v7().simple())).await?),
            Err(_) => Arc::new(nullops_bus::InProcessBus::default()),
        };
        let db = ReadModelDb::open(database_url).await?;
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(nullops_bus::relay::run(store.clone(), bus.clone(), shutdown.clone()));
        for p in nullops_projections::all() {
            let runner = Runner { projection: p, db: db.clone(), store: store.clone(), bus: bus.clone() };
            tasks.spawn(runner.run(shutdown.clone()));
        }
        let running = Running { store, db, shutdown, tasks };
        running.settle().await?;
        Ok(running)
    }

    /// Waits until projections, relay and bus hold everything in the log: a backlog there would
    /// be measured as latency.
    async fn settle(&self) -> anyhow::Result<()> {
        let head = self.store.read_all(nullops_events::LogPosition::START, u32::MAX).await?.last().map(|e| e.position);
        if let Some(head) = head {
            let names: Vec<&str> = nullops_projections::all().iter().map(|p| p.name()).collect();
            self.db.wait_for(&names, head, Duration::from_secs(120)).await?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while self.store.load_checkpoint("relay").await? < head {
                if Instant::now() > deadline {
                    bail!("the relay did not catch up within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// From the start of a command to every read model that handles its events showing them.
    async fn timed<D: Decider>(&self, cache: Option<&StateCache<D>>, key: &str, command: &D::Command) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let executed = nullops_store::commands::execute_with::<D>(&*self.store, cache, key, command, &EventMetadata::system()).await?;
        let last = executed.last.context("command appended nothing")?;
        let touched: Vec<&str> = nullops_projections::all().iter().filter(|p| executed.event_types.iter().any(|t| p.handles(t))).map(|p| p.name()).collect();
        self.db.wait_for(&touched, last, Duration::from_secs(5)).await?;
        Ok(started.elapsed())
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50), pct(0.99))
}

fn api_token_command(i: usize) -> anyhow::Result<(String, ApiTokenCommand)> {
    let token_id = uuid::Uuid::now_v7();
    let command = ApiTokenCommand::Create {
        by: Principal { username: Username::parse("bench")?, role: Role::User },
        token_id,
        name: TokenName::parse(&format!("bench {i}"))?,
        token_hash: token_id.as_bytes().to_vec(),
        expires_at: None,
    };
    Ok((token_id.to_string(), command))
}

/// Command-to-projection latency of identity commands.
async fn command_to_projection(store: Arc<PgEventStore>, database_url: &str, commands: usize) -> anyhow::Result<(Duration, Duration)> {
    let running = Running::start(store, database_url).await?;
    let mut samples = Vec::with_capacity(commands);
    for i in 0..commands {
        let (key, command) = api_token_command(i)?;
        samples.push(running.timed::<ApiToken>(None, &key, &command).await?);
    }
    running.stop().await;
    Ok(percentiles(samples))
}

/// `nullops bench catalog`: a catalog command's latency (command to read model) as the catalog
/// grows, as a ratio to an identity command's measured in the same run, alternating.
pub async fn catalog(database_url: &str, sizes: &[usize], commands: usize) -> anyhow::Result<()> {
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::connect(database_url).await?);
    let running = Running::start(store.clone(), database_url).await?;
    let catalog_stream = Catalog::stream_id(CATALOG_KEY);
    let environment = |name: String, cleanup: u64| EnvironmentDefinition { name, base_domain: "qa.example.com".into(), cleanup_after_secs: cleanup };
    let admin = Issuer::System;
    let cache = StateCache::<Catalog>::new(1);
    println!("== catalog command latency vs an identity command, by catalog size ({commands} of each, alternating) ==");
    let mut results = Vec::new();
    for &size in sizes {
        // Grow the catalog to `size` environments, appended directly in large batches.
        let version = store.read_stream(&catalog_stream, 0).await?.last().map_or(0, |e| e.stream_version);
        let have = version as usize;
        if size > have {
            for (chunk, start) in (have..size).step_by(500).enumerate() {
                let events: Vec<NewEvent> = (start..(start + 500).min(size))
                    .map(|i| NewEvent::new(&CatalogEvent::EnvironmentCreated(environment(format!("env-{i}"), 86_400)).into(), EventMetadata::system()))
                    .collect();
                let at = version + (chunk * 500) as u64;
                store.append(&catalog_stream, at, &events).await?;
            }
            running.settle().await?;
        }
        let (mut ours, mut baseline) = (Vec::new(), Vec::new());
        for i in 0..commands {
            let (key, command) = api_token_command(i)?;
            baseline.push(running.timed::<ApiToken>(None, &key, &command).await?);
            let change = CatalogAction::UpdateEnvironment(environment("env-0".into(), 3_600 + (i as u64 % 2) * 60));
            // As the gateway does: through the catalog's state cache.
            ours.push(running.timed::<Catalog>(Some(&cache), CATALOG_KEY, &CatalogCommand { by: admin.clone(), action: change }).await?);
        }
        let ((ours_p50, ours_p99), (base_p50, _)) = (percentiles(ours), percentiles(baseline));
        let ratio = ours_p50.as_secs_f64() / base_p50.as_secs_f64();
        println!(
            "catalog of {size:>5} entries: update p50 {:.2} ms, p99 {:.2} ms   identity command p50 {:.2} ms   ratio {ratio:.2}",
            ours_p50.as_secs_f64() * 1e3,
            ours_p99.as_secs_f64() * 1e3,
            base_p50.as_secs_f64() * 1e3
        );
        results.push((size, ratio, ours_p50));
    }
    running.stop().await;
    for (size, ratio, p50) in results {
        println!("RESULT catalog_update_ratio_size_{size}={ratio:.2}");
        println!("RESULT catalog_update_p50_ms_size_{size}={:.2}", p50.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Where `nullops bench replay` finds its log and read models.
pub enum ReplayStore {
    Postgres(String),
    /// A directory as `nullops up` lays it out: `events.db` and `readmodels.db`.
    Sqlite(std::path::PathBuf),
}

/// `nullops bench replay`: every read model replayed from a log of `events` events (made first
/// when the log is shorter), against the database's own fastest read of the same events (a
/// `COPY` on PostgreSQL, a plain `SELECT` of every row on SQLite), alternating in `rounds`
/// rounds; the median ratio is kept.
pub async fn replay(backend: ReplayStore, events: u64, rounds: usize) -> anyhow::Result<()> {
    let (store, db, baseline): (Arc<dyn EventStore>, ReadModelDb, Baseline) = match &backend {
        ReplayStore::Postgres(url) => {
            let store = Arc::new(PgEventStore::connect(url).await?);
            let pool = store.pool().clone();
            (store, ReadModelDb::open(url).await?, Baseline::Copy(pool))
        }
        ReplayStore::Sqlite(dir) => {
            std::fs::create_dir_all(dir)?;
            let path = dir.join("events.db");
            let store = Arc::new(nullops_store::sqlite::SqliteEventStore::open(&path).await?);
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(nullops_store::sqlite::connect_options(&path)?).await?;
            let db = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", dir.join("readmodels.db").display())).await?;
            (store, db, Baseline::Select(pool))
        }
    };
    let have = store.head().await?;
    if have < events {
        let started = Instant::now();
        fill_log(store.clone(), events - have).await?;
        println!("made {} events in {:.1} s", events - have, started.elapsed().as_secs_f64());
    }
    let total = baseline.count().await?;
    let bus: Arc<dyn nullops_bus::Bus> = Arc::new(nullops_bus::InProcessBus::default());
    println!("== replay of every read model from {total} events vs {} of them ({rounds} alternating rounds) ==", baseline.name());
    let mut results = Vec::new();
    for _ in 0..rounds.max(1) {
        let copy = baseline.read_every_event().await?;
        let started = Instant::now();
        let mut runners = Vec::new();
        for projection in nullops_projections::all() {
            db.reset(&*projection).await?;
            runners.push(Runner { projection, db: db.clone(), store: store.clone(), bus: bus.clone() });
        }
        Runner::catch_up_together(&runners).await?;
        let ours = started.elapsed();
        results.push((ours.as_secs_f64() / copy.as_secs_f64(), copy, ours));
    }
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, copy, ours) = results[results.len() / 2];
    println!(
        "{}: {:.3} s ({:.0} events/s)   replay of every read model: {:.2} s ({:.0} events/s)   median ratio: {ratio:.1}   (all: {})",
        baseline.name(),
        copy.as_secs_f64(),
        total as f64 / copy.as_secs_f64(),
        ours.as_secs_f64(),
        total as f64 / ours.as_secs_f64(),
        results.iter().map(|r| format!("{:.1}", r.0)).collect::<Vec<_>>().join(" ")
    );
    let store = match backend {
        ReplayStore::Postgres(_) => "postgres",
        ReplayStore::Sqlite(_) => "sqlite",
    };
    println!("RESULT replay_ratio_to_copy_{store}={ratio:.1}");
    println!("RESULT replay_events_per_second_{store}={:.0}", total as f64 / ours.as_secs_f64());
    Ok(())
}

/// The database's own fastest read of every event: what a replay cannot beat.
enum Baseline {
    Copy(sqlx::PgPool),
    Select(sqlx::SqlitePool),
}

impl Baseline {
    fn name(&self) -> &'static str {
        match self {
            Baseline::Copy(_) => "COPY",
            Baseline::Select(_) => "SELECT",
        }
    }

    async fn count(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Baseline::Copy(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?,
            Baseline::Select(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?,
        })
    }

    /// The time to read every event out of the log, in its order, every column.
    async fn read_every_event(&self) -> anyhow::Result<Duration> {
        use futures::TryStreamExt;
        let started = Instant::now();
        let mut bytes = 0usize;
        match self {
            Baseline::Copy(pool) => {
                let mut conn = pool.acquire().await?;
                let mut out = conn.copy_out_raw("COPY (SELECT * FROM events ORDER BY tx_id, position) TO STDOUT (FORMAT binary)").await?;
                while let Some(chunk) = out.try_next().await? {
                    bytes += chunk.len();
                }
            }
            Baseline::Select(pool) => {
                // Each row comes with every column's value copied out of the database.
                let mut rows = sqlx::query("SELECT * FROM events ORDER BY position").fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    bytes += sqlx::Row::len(&row);
                }
            }
        }
        anyhow::ensure!(bytes > 0, "the read found no event");
        Ok(started.elapsed())
    }
}

/// Appends `count` events of the kinds a platform writes most, in thirds, by 16 writers at once
/// (so that streams interleave in the log as they do in use): deployments' lives (request,
/// placement, steps, health, running: updates of one row and upserts of its steps, 9 events
/// each), API tokens made (one stream each) and environments changed (the catalog's stream, in
/// batches). Each is applied by the read models it belongs to and by the audit.
async fn fill_log(store: Arc<dyn EventStore>, count: u64) -> anyhow::Result<()> {
    let catalog_stream = Catalog::stream_id(CATALOG_KEY);
    let mut version = store.read_stream(&catalog_stream, 0).await?.last().map_or(0, |e| e.stream_version);
    let environments = count / 3;
    for start in (0..environments).step_by(500) {
        let batch: Vec<NewEvent> = (start..(start + 500).min(environments))
            .map(|i| {
                let definition =
                    EnvironmentDefinition { name: format!("replay-{version}-{i}"), base_domain: "qa.example.com".into(), cleanup_after_secs: 86_400 };
                NewEvent::new(&CatalogEvent::EnvironmentCreated(definition).into(), EventMetadata::system())
            })
            .collect();
        version = store.append(&catalog_stream, version, &batch).await?.stream_version;
    }
    let lives = (count - environments) / 2 / DEPLOYMENT_LIFE as u64;
    let tokens = count - environments - lives * DEPLOYMENT_LIFE as u64;
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, next) = (store.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tokens + lives {
                    return Ok::<_, anyhow::Error>(());
                }
                if i < lives {
                    let deployment_id = uuid::Uuid::now_v7();
                    let stream = StreamId::new("deployment", &deployment_id.to_string());
                    // A life comes in several appends, as the saga and the connector record it.
                    let mut version = 0;
                    for part in deployment_life(deployment_id).chunks(3) {
                        let events: Vec<NewEvent> = part.iter().map(|e| NewEvent::new(&e.clone().into(), EventMetadata::system())).collect();
                        version = store.append(&stream, version, &events).await?.stream_version;
                    }
                    continue;
                }
                let token_id = uuid::Uuid::now_v7();
                let created = nullops_events::identity::ApiTokenCreated {
                    token_id,
                    username: "bench".into(),
                    name: format!("replay {token_id}"),
                    token_hash: token_id.as_bytes().to_vec(),
                    expires_at: None,
                };
                let event = nullops_events::identity::ApiTokenEvent::Created(created).into();
                store.append(&ApiToken::stream_id(&token_id.to_string()), 0, &[NewEvent::new(&event, EventMetadata::system())]).await?;
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r??;
    }
    Ok(())
}

/// Events in a deployment's life as the replay bench writes it.
const DEPLOYMENT_LIFE: usize = 9;

/// A deployment asked for, placed, run through two steps to healthy and running.
fn deployment_life(deployment_id: uuid::Uuid) -> [nullops_events::deployment::DeploymentEvent; DEPLOYMENT_LIFE] {
    use nullops_events::deployment::*;
    let step = |step: &str, state| DeploymentEvent::StepChanged(StepChanged { step: step.into(), state, detail: String::new() });
    [
        DeploymentEvent::Requested(DeploymentRequested {
            deployment_id,
            project_id: uuid::Uuid::from_u128(1),
            project: "shop".into(),
            environment: "qa".into(),
            name: format!("d{}", deployment_id.simple()),
            versions: vec![],
            pipeline_version: 1,
            plan: DeploymentPlan { steps: vec![], edges: vec![] },
            cpu_millis: 100,
            memory_mib: 64,
            lifetime_secs: 3600,
            expires_at: 0,
        }),
        DeploymentEvent::Scheduled(DeploymentScheduled { node_id: uuid::Uuid::from_u128(7) }),
        DeploymentEvent::RunStarted(RunStarted {}),
        step("database", StepState::Running),
        step("database", StepState::Succeeded),
        step("web", StepState::Running),
        step("web", StepState::Succeeded),
        DeploymentEvent::HealthChanged(HealthChanged { service: "web".into(), healthy: true, detail: String::new() }),
        DeploymentEvent::Running(DeploymentRunning { endpoints: vec![] }),
    ]
}

/// The resident set of a process (`"self"` or a pid), in KiB.
pub fn resident_kib(process: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{process}/status"))
}
