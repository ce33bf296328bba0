//! The whole connector (supervisor, links, the event log, the read model) against an agent that
//! misbehaves: it reports on a deployment not assigned to its node, then sends garbage. The
//! report is rejected, the garbage closes the connection, and both show in the node's record;
//! the link redials such an agent after a growing pause, never in a tight loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nullops_bus::InProcessBus;
use nullops_connector::NodeDesired;
use nullops_connector::{Connector, DesiredStates};
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::node::{token_purpose, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{DnsLabel, Issuer};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_events::EventMetadata;
use nullops_keyring::{Keyring, MasterKey};
use nullops_projections::nodes::{nodes, usage, NodesProjection};
use nullops_projections::runner::Runner;
use nullops_projections::ReadModelDb;
use nullops_store::commands::execute;
use nullops_store::sqlite::SqliteEventStore;
use nullops_store::EventStore;
use nullops_wire::message::{encode, ContainerUsage, DesiredDeployment, NodeFacts, Usage};
use nullops_wire::{FromAgent, NodeToken};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Deployment `pr-1` is assigned to every node.
struct OneDeployment;

impl DesiredStates for OneDeployment {
    fn for_node(
        &self,
        _: Uuid,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<NodeDesired, nullops_connector::desired::DesiredError>> + Send + '_>> {
        Box::pin(async { Ok(NodeDesired { run: vec![DesiredDeployment::new("pr-1", vec![])], ..Default::default() }) })
    }
}

fn container(deployment: &str) -> ContainerUsage {
    ContainerUsage { deployment: deployment.into(), name: "web".into(), cpu_millicores: 5, memory_bytes: 1 << 20 }
}

/// Accepts one connection at a time (no token check: it is not the agent under test), says hello,
/// reports usage of `pr-1` and of `ghost`, then sends a frame that is not JSON. Counts the
/// connections it accepts in `accepted`.
async fn misbehaving_agent(listener: tokio::net::TcpListener, accepted: Arc<AtomicUsize>) {
    let key = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    while let Ok((tcp, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(tls) = acceptor.accept(tcp).await else { continue };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { continue };
        let hello = FromAgent::Hello {
            agent_version: "bad".into(),
            protocol: nullops_wire::PROTOCOL_VERSION,
            node: NodeFacts { hostname: "bad".into(), docker_version: String::new() },
        };
        let usage = FromAgent::Usage(Usage {
            cpu_cores: 2,
            cpu_used_millicores: 100,
            memory_total_bytes: 1 << 30,
            memory_used_bytes: 1 << 29,
            containers: vec![container("pr-1"), container("ghost")],
        });
        // The connector reads frames in order: the usage is handled before the garbage.
        let _ = ws.send(Message::text(encode(&hello))).await;
        let _ = ws.send(Message::text(encode(&usage))).await;
        let _ = ws.send(Message::text("{\"type\": \"launch\"")).await;
        // Held open until the connector closes it for the garbage.
        while let Some(Ok(_)) = ws.next().await {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_about_other_deployments_are_rejected_and_garbage_closes_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir.path().join("events.db")).await.unwrap());
    let bus = Arc::new(InProcessBus::default());
    let read_models = ReadModelDb::open(&format!("sqlite://{}?mode=rwc", dir.path().join("rm.db").display())).await.unwrap();
    let keyring = Arc::new(Keyring::open(&format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display()), MasterKey::generate()).await.unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(nullops_bus::relay::run(store.clone(), bus.clone(), shutdown.clone()));
    let runner = Runner { projection: Arc::new(NodesProjection), db: read_models.clone(), store: store.clone(), bus: bus.clone() };
    tokio::spawn(runner.run(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(misbehaving_agent(listener, accepted.clone()));

    let environment = EnvironmentDefinition { name: "staging".into(), base_domain: "qa.test".into(), cleanup_after_secs: 60 };
    let create = CatalogCommand { by: Issuer::System, action: CatalogAction::CreateEnvironment(environment) };
    execute::<Catalog>(&*store, CATALOG_KEY, &create, &EventMetadata::system()).await.unwrap();
    let node_id = Uuid::now_v7();
    let sealed = keyring.seal(NodeToken::generate().hash().as_bytes(), &token_purpose(node_id)).await.unwrap();
    let add = NodeAction::Add {
        node_id,
        environment: DnsLabel::parse("environment", "staging").unwrap(),
        environment_exists: true,
        host: NodeHost::parse("127.0.0.1").unwrap(),
        port,
        token_hash: sealed,
    };
    execute::<Node>(&*store, &node_id.to_string(), &NodeCommand { by: Issuer::System, action: add }, &EventMetadata::system()).await.unwrap();

    let connector = Connector { store, bus, read_models: read_models.clone(), keyring, desired: Arc::new(OneDeployment) };
    tokio::spawn(nullops_connector::run(connector, shutdown.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = nodes(&read_models, None).await.unwrap().pop();
        let sample = usage(&read_models, node_id).await.unwrap();
        if let (true, Some(sample)) = (row.as_ref().is_some_and(|r| r.link_detail.contains("broke the protocol")), sample) {
            let containers: Vec<ContainerUsage> = serde_json::from_str(&sample.containers).unwrap();
            assert_eq!(containers, vec![container("pr-1")], "usage of an unassigned deployment is rejected");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no protocol violation recorded; node is {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each connection ends at once: the link waits longer and longer before the next (a busy
    // machine only dials less), where it used to redial at once, dozens of times a second.
    let before = accepted.load(Ordering::Relaxed);
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let dials = accepted.load(Ordering::Relaxed) - before;
    println!("{dials} dials in {window:?} of an agent that breaks the protocol at once");
    assert!(dials <= 10, "{dials} dials in {window:?}: a tight loop");
    shutdown.cancel();
}
