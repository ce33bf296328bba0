//! `nullops bench events`: append throughput against pgbench on the same database, and
//! command-to-projection latency, all measured in one run.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nullops_domain::identity::{ApiToken, ApiTokenCommand};
use nullops_domain::{Principal, TokenName, Username};
use nullops_events::identity::{Role, UserDisabled, UserEvent};
use nullops_events::{EventMetadata, NewEvent, StreamId};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::postgres::PgEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 5;

pub async fn events(database_url: &str, duration: Duration, commands: usize) -> anyhow::Result<()> {
    let store = Arc::new(PgEventStore::connect(database_url).await?);
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)")
        .execute(store.pool())
        .await?;

    // Latency first, on a quiet log: a backlog left by the throughput runs would be measured too.
    println!("== command-to-projection latency ({commands} commands) ==");
    let (p50, p99) = command_to_projection(store.clone(), database_url, commands).await?;
    println!("p50: {:.2} ms   p99: {:.2} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);

    // The machine's speed drifts (shared hosts, fsync latency): alternate the baseline and ours in
    // short rounds and report the median ratio, so drift hits both sides alike.
    println!("== append throughput ({ROUNDS} alternating rounds of {}s each) ==", duration.as_secs());
    let mut ratios = Vec::new();
    for writers in [1usize, 16] {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let baseline = pgbench(database_url, writers, duration).await?;
            let ours = appends_per_second(store.clone(), writers, duration).await?;
            rounds.push((ours / baseline, baseline, ours));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, baseline, ours) = rounds[ROUNDS / 2];
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
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
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

/// From the start of a command to both read models showing its events, through the relay and
/// the bus (NATS when NULLOPS_NATS_URL is reachable, else in-process).
async fn command_to_projection(store: Arc<PgEventStore>, database_url: &str, commands: usize) -> anyhow::Result<(Duration, Duration)> {
    let store: Arc<dyn EventStore> = store;
    let bus: Arc<dyn nullops_bus::Bus> = match std::env::var("NULLOPS_NATS_URL") {
        Ok(url) => Arc::new(nullops_bus::NatsBus::connect(&url, &format!("bench-{}", uuid::Uuid::now_v7().simple())).await?),
        Err(_) => Arc::new(nullops_bus::InProcessBus::default()),
    };
    let db = ReadModelDb::open(database_url).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nullops_bus::relay::run(store.clone(), bus.clone(), shutdown.clone()));
    let projections = nullops_projections::all();
    for p in &projections {
        let runner = Runner { projection: p.clone(), db: db.clone(), store: store.clone(), bus: bus.clone() };
        tasks.spawn(runner.run(shutdown.clone()));
    }
    // Let the projections catch up with whatever the log already holds.
    let head = store.read_all(nullops_events::LogPosition::START, u32::MAX).await?.last().map(|e| e.position);
    if let Some(head) = head {
        db.wait_for(&["identity", "audit"], head, Duration::from_secs(120)).await?;
        // And the relay with the bus: a backlog there would be measured as latency.
        let deadline = Instant::now() + Duration::from_secs(120);
        while store.load_checkpoint("relay").await? < head {
            if Instant::now() > deadline {
                bail!("the relay did not catch up within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let by = Principal { username: Username::parse("bench")?, role: Role::User };
    let mut samples = Vec::with_capacity(commands);
    for i in 0..commands {
        let token_id = uuid::Uuid::now_v7();
        let command = ApiTokenCommand::Create {
            by: by.clone(),
            token_id,
            name: TokenName::parse(&format!("bench {i}"))?,
            token_hash: token_id.as_bytes().to_vec(),
            expires_at: None,
        };
        let started = Instant::now();
        let executed = nullops_store::commands::execute::<ApiToken>(&*store, &token_id.to_string(), &command, &EventMetadata::system()).await?;
        let last = executed.last.context("command appended nothing")?;
        db.wait_for(&["identity", "audit"], last, Duration::from_secs(5)).await?;
        samples.push(started.elapsed());
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok((pct(0.50), pct(0.99)))
}
