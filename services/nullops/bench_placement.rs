//! `nullops bench placement`: `requests` deployments asked for at once in an environment of
//! `nodes` simulated nodes (registered, trusted and connected through the node's own commands,
//! their size reported as the connector reports it), placed by the deployment saga one at a
//! time (the baseline) and side by side, alternating, in the same run. Reports decisions per
//! second and request-to-decision p99, and fails if any node is over-committed or any
//! deployment holds room twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nullops_domain::capacity::Capacity;
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::deployment::{Deployment, DeploymentAction, DeploymentCommand};
use nullops_domain::node::{token_purpose, CertThumbprint, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{DnsLabel, Issuer};
use nullops_events::catalog::{Access, EnvironmentDefinition};
use nullops_events::codec::types;
use nullops_events::deployment::{DeploymentPlan, DeploymentRequested};
use nullops_events::{EventMetadata, LogPosition, Timestamp};
use nullops_keyring::{Keyring, MasterKey};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_saga::deployment::{DeploymentSaga, PLACEMENTS_AT_ONCE};
use nullops_saga::runner::SagaRunner;
use nullops_store::commands::{execute, load};
use nullops_store::postgres::PgEventStore;
use nullops_store::EventStore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Each simulated node's size; each deployment asks for a sixteenth of it, so that the nodes
/// hold 16 each and the requests beyond are refused for want of room.
const NODE_CORES: u32 = 16;
const NODE_MEMORY_MIB: u64 = 64 * 1024;
const ASK_CPU_MILLIS: u32 = 1_000;
const ASK_MEMORY_MIB: u32 = 4 * 1024;

/// What one round measured.
struct Round {
    decisions_per_second: f64,
    p99: Duration,
    scheduled: usize,
}

pub async fn placement(database_url: &str, requests: usize, nodes: usize, rounds: usize) -> anyhow::Result<()> {
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::connect(database_url).await?);
    let db = ReadModelDb::open(database_url).await?;
    let keyring = Keyring::open(database_url, MasterKey::generate()).await?;
    let bus: Arc<dyn nullops_bus::Bus> = Arc::new(nullops_bus::InProcessBus::default());
    let shutdown = CancellationToken::new();
    let mut projections = tokio::task::JoinSet::new();
    // The relay puts the log on the bus, which the projections follow, as in a server.
    projections.spawn(nullops_bus::relay::run(store.clone(), bus.clone(), shutdown.clone()));
    for projection in nullops_projections::all() {
        let runner = Runner { projection, db: db.clone(), store: store.clone(), bus: bus.clone() };
        projections.spawn(runner.run(shutdown.clone()));
    }
    println!("== placement of {requests} deployments asked for at once on {nodes} nodes: one at a time vs {PLACEMENTS_AT_ONCE} at once ({rounds} alternating rounds) ==");
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        for (at_once, results) in [(1, &mut one), (PLACEMENTS_AT_ONCE, &mut many)] {
            let environment = format!("place-{}-{round}-{at_once}", Uuid::now_v7().simple().to_string().get(24..).unwrap_or("x"));
            let node_ids = simulated_nodes(&*store, &db, &keyring, &environment, nodes).await?;
            let saga = DeploymentSaga::new(store.clone(), db.clone(), Duration::from_secs(5)).placing_at_once(at_once);
            let stop = CancellationToken::new();
            let saga = tokio::spawn(SagaRunner { saga: Arc::new(saga), store: store.clone(), bus: bus.clone() }.run(stop.clone()));
            let measured = burst(&*store, &environment, requests).await;
            stop.cancel();
            saga.await?;
            let round = measured?;
            check_room(&*store, &node_ids, round.scheduled).await?;
            println!(
                "{at_once:>2} at once: {:>7.1} decisions/s   request to decision p99 {:>7.1} ms   {} placed, {} refused for want of room",
                round.decisions_per_second,
                round.p99.as_secs_f64() * 1e3,
                round.scheduled,
                requests - round.scheduled
            );
            results.push(round);
        }
    }
    shutdown.cancel();
    while projections.join_next().await.is_some() {}
    let median = |rounds: &mut Vec<Round>| {
        rounds.sort_by(|a, b| a.decisions_per_second.total_cmp(&b.decisions_per_second));
        (rounds[rounds.len() / 2].decisions_per_second, rounds.iter().map(|r| r.p99).max().unwrap_or_default())
    };
    let ((base, base_p99), (ours, ours_p99)) = (median(&mut one), median(&mut many));
    println!(
        "median: {ours:.1} decisions/s side by side against {base:.1} one at a time: ratio {:.1}   worst p99 {:.0} ms (one at a time {:.0} ms)",
        ours / base,
        ours_p99.as_secs_f64() * 1e3,
        base_p99.as_secs_f64() * 1e3
    );
    println!("RESULT placement_ratio={:.1}", ours / base);
    println!("RESULT placement_decisions_per_second={ours:.1}");
    println!("RESULT placement_request_to_decision_p99_ms={:.0}", ours_p99.as_secs_f64() * 1e3);
    Ok(())
}

/// An environment of `count` nodes that admission sees online and measured.
async fn simulated_nodes(store: &dyn EventStore, db: &ReadModelDb, keyring: &Keyring, environment: &str, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let meta = EventMetadata::system();
    let definition = EnvironmentDefinition { name: environment.into(), base_domain: "bench.test".into(), cleanup_after_secs: 3600 };
    execute::<Catalog>(store, CATALOG_KEY, &CatalogCommand { by: Issuer::System, action: CatalogAction::CreateEnvironment(definition) }, &meta).await?;
    let mut ids = Vec::new();
    let mut last = LogPosition::START;
    for i in 0..count {
        let node_id = Uuid::now_v7();
        let token_hash = keyring.seal(node_id.as_bytes(), &token_purpose(node_id)).await?;
        let port = u16::try_from(20_000 + i).context("too many nodes")?;
        let thumbprint = CertThumbprint::parse(&format!("{:064x}", node_id.as_u128())).context("thumbprint")?;
        for action in [
            NodeAction::Add {
                node_id,
                environment: DnsLabel::parse("environment", environment)?,
                environment_exists: true,
                host: NodeHost::parse("127.0.0.1")?,
                port,
                token_hash,
            },
            NodeAction::Presented { thumbprint },
            NodeAction::Connected { agent_version: "bench".into(), protocol: nullops_wire::PROTOCOL_VERSION },
        ] {
            let done = execute::<Node>(store, &node_id.to_string(), &NodeCommand { by: Issuer::System, action }, &meta).await?;
            last = done.last.unwrap_or(last);
        }
        let usage = nullops_projections::nodes::UsageRow {
            cpu_cores: NODE_CORES,
            cpu_used_millicores: 0,
            memory_total_bytes: NODE_MEMORY_MIB << 20,
            memory_used_bytes: 0,
            containers: "[]".into(),
            sampled_at: Timestamp::now().0,
        };
        nullops_projections::nodes::record_usage(db, node_id, &usage).await?;
        ids.push(node_id);
    }
    db.wait_for(&[nullops_projections::nodes::NAME], last, Duration::from_secs(60)).await?;
    Ok(ids)
}

/// Asks for `requests` deployments at once and follows the log until each is decided
/// (scheduled, or refused).
async fn burst(store: &dyn EventStore, environment: &str, requests: usize) -> anyhow::Result<Round> {
    let mut signal = store.append_signal();
    let started = Instant::now();
    let asks = (0..requests).map(|i| async move {
        let deployment_id = Uuid::now_v7();
        let request = DeploymentRequested {
            deployment_id,
            project_id: Uuid::nil(),
            project: "bench".into(),
            environment: environment.into(),
            name: format!("d{i}"),
            versions: vec![],
            pipeline_version: 1,
            plan: DeploymentPlan { steps: vec![], edges: vec![] },
            cpu_millis: ASK_CPU_MILLIS,
            memory_mib: ASK_MEMORY_MIB,
            lifetime_secs: 3600,
            expires_at: Timestamp::now().0 + 3_600_000_000,
        };
        let name = DnsLabel::parse("name", &request.name)?;
        let create = DeploymentCommand { by: Issuer::System, action: DeploymentAction::Create { access: Some(Access::Full), request, name } };
        let asked = Instant::now();
        execute::<Deployment>(store, &deployment_id.to_string(), &create, &EventMetadata::system()).await?;
        Ok::<_, anyhow::Error>((deployment_id, asked))
    });
    let asked: HashMap<Uuid, Instant> = futures::future::try_join_all(asks).await?.into_iter().collect();
    // From each request's start to its decision appearing in the log (read from its start:
    // the ids are new, so every decision found for them is this burst's).
    let mut decided: HashMap<Uuid, Duration> = HashMap::new();
    let mut scheduled = 0;
    let mut after = LogPosition::START;
    let deadline = Instant::now() + Duration::from_secs(300);
    while decided.len() < requests {
        let batch = store.read_all(after, 5_000).await?;
        for e in &batch {
            after = e.position;
            let decision = e.event_type == types::DEPLOYMENT_SCHEDULED.0 || e.event_type == types::DEPLOYMENT_REJECTED.0;
            let Some(id) = e.stream_id.key().parse::<Uuid>().ok().filter(|id| decision && asked.contains_key(id)) else { continue };
            if decided.insert(id, asked[&id].elapsed()).is_none() && e.event_type == types::DEPLOYMENT_SCHEDULED.0 {
                scheduled += 1;
            }
        }
        if batch.is_empty() {
            if Instant::now() > deadline {
                bail!("only {} of {requests} deployments were decided within 300 s", decided.len());
            }
            tokio::select! {
                _ = signal.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
    let took = started.elapsed();
    let mut latencies: Vec<Duration> = decided.into_values().collect();
    latencies.sort();
    let p99 = latencies[((latencies.len() as f64 * 0.99) as usize).min(latencies.len() - 1)];
    Ok(Round { decisions_per_second: requests as f64 / took.as_secs_f64(), p99, scheduled })
}

/// No node holds more than its size, no deployment holds room on two nodes, and every
/// scheduled deployment holds room.
async fn check_room(store: &dyn EventStore, node_ids: &[Uuid], scheduled: usize) -> anyhow::Result<()> {
    let mut holders: HashMap<Uuid, usize> = HashMap::new();
    for node_id in node_ids {
        let (capacity, _) = load::<Capacity>(store, &node_id.to_string()).await?;
        let cpu: u64 = capacity.reservations.values().map(|r| r.cpu_millis).sum();
        let memory: u64 = capacity.reservations.values().map(|r| r.memory_mib).sum();
        if cpu > u64::from(NODE_CORES) * 1000 || memory > NODE_MEMORY_MIB {
            bail!("node {node_id} is over-committed: {cpu} millicores and {memory} MiB reserved of {NODE_CORES} cores and {NODE_MEMORY_MIB} MiB");
        }
        for deployment in capacity.reservations.keys() {
            *holders.entry(*deployment).or_default() += 1;
        }
    }
    if let Some((deployment, n)) = holders.iter().find(|(_, n)| **n > 1) {
        bail!("deployment {deployment} holds room on {n} nodes");
    }
    if holders.len() != scheduled {
        bail!("{scheduled} deployments were scheduled but {} hold room", holders.len());
    }
    Ok(())
}
