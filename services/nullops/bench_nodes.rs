//! `nullops bench nodes`: one connector holding N agent connections, light fake agents over real
//! TLS on loopback. Memory per connection and CPU spent on heartbeats, against a baseline
//! measured in the same run: the same connections made by the same dialler, each with a bare
//! ping loop at the connector's pace (`PING_EVERY`) and nothing else (no store, no supervisor, no events).
//!
//! Then two figures of the connector alone, with all N connected:
//! - **offline detection**: one agent among N goes silent (its connection stays open; it stops
//!   reading and answering), and the time until the node's `node.disconnected` event is on the
//!   bus;
//! - **resend after a restart**: the connector is stopped and a new one started, as when another
//!   server takes its lease, and the time until every agent holds its desired state again.
//!
//! Each side runs in a process of its own (`bench node-probe`), so neither's memory counts in the
//! other's, and the fake agents run in a third (`bench fake-agents`). The parent drives the
//! connector probe and the fake agents by one-line commands on their stdin and reads their
//! one-line answers on their stdout.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use nullops_bus::Delivery;
use nullops_connector::dial::{dial, Target};
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::node::{token_purpose, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{Decider, DnsLabel, Issuer};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_events::codec::types;
use nullops_events::EventMetadata;
use nullops_keyring::{Keyring, MasterKey};
use nullops_store::commands::execute;
use nullops_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use nullops_wire::message::{decode_to_agent, encode, NodeFacts};
use nullops_wire::{AuthProof, FromAgent, NodeToken, ToAgent, PROOF_HEADER};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long one step of the run (all N connected, one answer) may take before the run fails.
const STEP_BOUND: Duration = Duration::from_secs(300);

/// What a probe measured.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    connections: usize,
    rss_before_kib: u64,
    rss_connected_kib: u64,
    /// The same, each measured after handing the allocator's free pages back (`malloc_trim`):
    /// what is live, without what the allocator keeps from the start's transient work.
    live_before_kib: u64,
    live_connected_kib: u64,
    cpu_seconds: f64,
    window_seconds: f64,
}

impl Probe {
    fn kib_per_connection(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64 / self.connections.max(1) as f64
    }
    fn live_kib_per_connection(&self) -> f64 {
        self.live_connected_kib.saturating_sub(self.live_before_kib) as f64 / self.connections.max(1) as f64
    }
    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_seconds / self.window_seconds
    }
}

pub async fn nodes(count: usize, seconds: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let token = NodeToken::generate();
    let mut agents = Driven::spawn(
        tokio::process::Command::new(&exe).args(["bench", "fake-agents", "--count", &count.to_string()]).env("NULLOPS_AGENT_TOKEN", token.expose()),
    )?;
    let port = agents.answer("port ").await.context("the fake agents did not start")?;
    println!("== one connector, {count} agents over TLS on loopback, {seconds} s of heartbeats ==");
    let mut figures = Vec::new();
    for kind in ["bare", "connector"] {
        let mut probe = Driven::spawn(
            tokio::process::Command::new(&exe)
                .args(["bench", "node-probe", "--kind", kind, "--seconds", &seconds.to_string(), "--port", &port, "--agents", &count.to_string()])
                .env("NULLOPS_AGENT_TOKEN", token.expose())
                // Quiet unless asked: `NULLOPS_PROBE_LOG=sqlx=debug` shows what a probe asks its store.
                .env("NULLOPS_LOG", std::env::var("NULLOPS_PROBE_LOG").unwrap_or_else(|_| "warn".into())),
        )?;
        let line = probe.answer("{").await.with_context(|| format!("the {kind} probe printed no figures"))?;
        figures.push(serde_json::from_str::<Probe>(&format!("{{{line}"))?);
        if kind == "bare" {
            probe.finish().await?;
            continue;
        }
        for (name, p) in [("bare dial + ping loop", &figures[0]), ("nullops connector", &figures[1])] {
            println!(
                "{name:<22} connections={} memory/connection={:.1} KiB (live {:.1} KiB)  heartbeat CPU={:.2}% of a core ({:.2} s in {:.0} s)",
                p.connections,
                p.kib_per_connection(),
                p.live_kib_per_connection(),
                p.cpu_percent(),
                p.cpu_seconds,
                p.window_seconds
            );
        }
        let detection = offline_detection(&mut probe, &mut agents, count).await?;
        println!("offline detection of one silent agent among {count}: {:.2} s", detection.as_secs_f64());
        let (stop, resend) = restart(&mut probe, &mut agents, count).await?;
        println!(
            "connector restart: the old one stopped in {:.2} s; the new one sent all {count} desired states in {:.2} s",
            stop.as_secs_f64(),
            resend.as_secs_f64()
        );
        probe.finish().await?;
        let (bare, ours) = (&figures[0], &figures[1]);
        println!("RESULT connector_kib_per_connection={:.1}", ours.kib_per_connection());
        println!("RESULT connector_memory_ratio_vs_bare={:.2}", ours.kib_per_connection() / bare.kib_per_connection().max(0.1));
        println!("RESULT connector_live_kib_per_connection={:.1}", ours.live_kib_per_connection());
        println!("RESULT connector_live_memory_ratio_vs_bare={:.2}", ours.live_kib_per_connection() / bare.live_kib_per_connection().max(0.1));
        println!("RESULT connector_heartbeat_cpu_percent={:.2}", ours.cpu_percent());
        println!("RESULT connector_cpu_ratio_vs_bare={:.2}", ours.cpu_seconds / bare.cpu_seconds.max(0.01));
        println!("RESULT connector_offline_detection_seconds={:.2}", detection.as_secs_f64());
        println!("RESULT connector_restart_resend_seconds={:.2}", resend.as_secs_f64());
    }
    agents.finish().await
}

/// Silences the agent in the middle of the list; the time from its silence to its node's
/// disconnection on the bus.
async fn offline_detection(probe: &mut Driven, agents: &mut Driven, count: usize) -> anyhow::Result<Duration> {
    let agent = count / 2;
    probe.say(&format!("watch {agent}")).await?;
    probe.answer("watching").await?;
    agents.say(&format!("silence {agent}")).await?;
    let silenced: u64 = agents.answer("silenced ").await?.parse()?;
    let offline: u64 = probe.answer("offline ").await?.parse()?;
    Ok(Duration::from_micros(offline.saturating_sub(silenced)))
}

/// Stops the connector and starts another; how long the stop took, and the time from the new
/// one's start until every agent has received a desired state from it.
async fn restart(probe: &mut Driven, agents: &mut Driven, count: usize) -> anyhow::Result<(Duration, Duration)> {
    probe.say("stop").await?;
    let stopped: u64 = probe.answer("stopped ").await?.parse()?;
    agents.say("mark").await?;
    agents.answer("marked").await?;
    probe.say("start").await?;
    let started: u64 = probe.answer("started ").await?.parse()?;
    agents.say(&format!("await {count}")).await?;
    let reached: u64 = agents.answer("reached ").await?.parse()?;
    Ok((Duration::from_millis(stopped), Duration::from_micros(reached.saturating_sub(started))))
}

/// A child process driven by lines on its stdin, answering by lines on its stdout.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    /// The child's answers; its log lines are passed to stderr as they come, so a child that
    /// logs much never blocks on a full pipe while the parent waits on another child.
    answers: tokio::sync::mpsc::Receiver<String>,
}

/// The words the children's answers start with (any other line is a log line).
const ANSWERS: [&str; 9] = ["port ", "{", "watching", "offline ", "silenced ", "stopped ", "marked", "started ", "reached "];

impl Driven {
    fn spawn(command: &mut tokio::process::Command) -> anyhow::Result<Driven> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        // Few answers are ever outstanding: one per command said.
        let (send, answers) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if ANSWERS.iter().any(|a| line.starts_with(a)) {
                    if send.send(line).await.is_err() {
                        return;
                    }
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Ok(Driven { child, stdin, answers })
    }

    async fn say(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// The rest of the next answer, which must start with `prefix`.
    async fn answer(&mut self, prefix: &str) -> anyhow::Result<String> {
        let line = tokio::time::timeout(STEP_BOUND, self.answers.recv())
            .await
            .map_err(|_| anyhow!("no answer starting {prefix:?} within {} s", STEP_BOUND.as_secs()))?
            .ok_or_else(|| anyhow!("the child exited before answering {prefix:?}"))?;
        line.strip_prefix(prefix).map(str::to_owned).ok_or_else(|| anyhow!("answered {line:?}, not {prefix:?}"))
    }

    /// Closes its stdin (its signal to end) and waits for it.
    async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin);
        match tokio::time::timeout(STEP_BOUND, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("a benchmark child failed: {status}");
                }
            }
            Err(_) => {
                let _ = self.child.kill().await;
            }
        }
        Ok(())
    }
}

/// Microseconds since the epoch: the processes compare instants by the machine's clock.
fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn bench_token() -> anyhow::Result<NodeToken> {
    std::env::var("NULLOPS_AGENT_TOKEN").ok().and_then(|t| NodeToken::from_configured(&t)).context("NULLOPS_AGENT_TOKEN")
}

/// What the fake agents count: which agents received a desired state since the last `mark`.
#[derive(Default)]
struct Received {
    /// Bumped by `mark`; an agent counts once per epoch.
    epoch: AtomicU64,
    agents: AtomicU64,
    last_micros: AtomicU64,
    arrived: Notify,
}

impl Received {
    fn desired_state(&self, agent_epoch: &AtomicU64) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if agent_epoch.swap(epoch, Ordering::SeqCst) != epoch {
            self.last_micros.fetch_max(unix_micros(), Ordering::SeqCst);
            self.agents.fetch_add(1, Ordering::SeqCst);
            self.arrived.notify_waiters();
        }
    }

    fn mark(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.agents.store(0, Ordering::SeqCst);
    }

    /// The time the `count`th agent received its desired state.
    async fn reached(&self, count: u64) -> u64 {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.agents.load(Ordering::SeqCst) >= count {
                return self.last_micros.load(Ordering::SeqCst);
            }
            arrived.await;
        }
    }
}

/// One fake agent: what it counts, and the signal that silences its current connection.
#[derive(Default)]
struct FakeAgent {
    /// The epoch of `Received` in which this agent last counted.
    epoch: AtomicU64,
    silence: Notify,
}

/// The loopback address of fake agent `index`: every agent has an address of its own on one
/// port, so N agents take one listening socket, not N (the file descriptors of a 10,000-agent
/// run would not fit under a 20,000 limit otherwise).
fn agent_address(index: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 1, 1 + (index / 250) as u8, 1 + (index % 250) as u8)
}

/// The most agents `agent_address` can tell apart.
const MAX_AGENTS: usize = 250 * 254;

/// `bench fake-agents`: `count` light agents on loopback (TLS, the token check, hello, pongs,
/// answers to desired states; no Docker), agent i at `agent_address(i)` on one port. Prints
/// `port PORT`, then obeys its stdin until it closes: `silence I` (agent I's connection goes
/// quiet: answers `silenced MICROS`), `mark` (answers `marked`), `await N` (answers
/// `reached MICROS` once N agents have received a desired state since the mark).
pub async fn fake_agents(count: usize) -> anyhow::Result<()> {
    if count > MAX_AGENTS {
        bail!("at most {MAX_AGENTS} fake agents");
    }
    raise_fd_limit(count)?;
    let token_hash = bench_token()?.hash();
    let generated = rcgen::generate_simple_self_signed(vec!["nullops-agent".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let received = Arc::new(Received::default());
    let agents: Arc<HashMap<std::net::IpAddr, Arc<FakeAgent>>> =
        Arc::new((0..count).map(|i| (std::net::IpAddr::V4(agent_address(i)), Arc::new(FakeAgent::default()))).collect());
    // Every 127.x.y.z address is the loopback's; the unspecified address takes them all.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    println!("port {}", listener.local_addr()?.port());
    let serving = agents.clone();
    let counting = received.clone();
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("fake agents: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(agent) = tcp.local_addr().ok().and_then(|a| serving.get(&a.ip())).cloned() else { continue };
            let (acceptor, token_hash, received) = (acceptor.clone(), token_hash.clone(), counting.clone());
            tokio::spawn(async move {
                let _ = fake_agent_session(tcp, &acceptor, &token_hash, &received, &agent).await;
            });
        }
    });
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = commands.next_line().await? {
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb {
            "silence" => {
                let index: usize = arg.parse()?;
                let agent = agents.get(&std::net::IpAddr::V4(agent_address(index))).context("silence: no such agent")?;
                println!("silenced {}", unix_micros());
                agent.silence.notify_waiters();
            }
            "mark" => {
                received.mark();
                println!("marked");
            }
            "await" => println!("reached {}", received.reached(arg.parse()?).await),
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

// The refusal's size is tungstenite's: its handshake callback returns `Result<Response, ErrorResponse>`.
#[allow(clippy::result_large_err)]
async fn fake_agent_session(
    tcp: tokio::net::TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    token_hash: &nullops_wire::TokenHash,
    received: &Received,
    agent: &FakeAgent,
) -> anyhow::Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let mut exporter = [0u8; EXPORTER_LEN];
    tls.get_ref().1.export_keying_material(&mut exporter, EXPORTER_LABEL, None)?;
    let check = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
        let proof = request.headers().get(PROOF_HEADER).and_then(|v| v.to_str().ok()).and_then(AuthProof::parse);
        match proof {
            Some(p) if token_hash.verify(&exporter, &p) => Ok(response),
            _ => Err(tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(Some("token".into()))),
        }
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(tls, check, Some(nullops_wire::websocket_config())).await?;
    let hello = FromAgent::Hello {
        agent_version: "fake".into(),
        protocol: nullops_wire::PROTOCOL_VERSION,
        node: NodeFacts { hostname: "fake".into(), docker_version: String::new() },
    };
    ws.send(Message::text(encode(&hello))).await?;
    loop {
        let frame = tokio::select! {
            // A silent agent holds its connection open and never reads or answers again, as a
            // frozen host or a cut path would.
            () = agent.silence.notified() => {
                let _held = ws;
                return std::future::pending().await;
            }
            frame = ws.next() => frame,
        };
        let Some(frame) = frame else { return Ok(()) };
        if let Message::Text(text) = frame? {
            if let Ok(ToAgent::DesiredState { request_id, .. }) = decode_to_agent(text.as_bytes()) {
                received.desired_state(&agent.epoch);
                ws.send(Message::text(encode(&FromAgent::ActualState { request_id, deployments: vec![] }))).await?;
            }
        }
    }
}

/// `bench node-probe`: holds connections to the `agents` fake agents on `port` and measures,
/// then prints the figures as one JSON line. The bare probe ends there; the connector probe then
/// obeys its stdin until it closes: `watch I` (answers `watching`, then `offline MICROS` when that
/// node's disconnection is on the bus), `stop` (stops the connector: answers `stopped MILLIS`),
/// `start` (starts a new one: answers `started MICROS`).
pub async fn node_probe(kind: &str, port: u16, agents: usize, seconds: u64) -> anyhow::Result<()> {
    raise_fd_limit(agents)?;
    let token_hash = bench_token()?.hash();
    let shutdown = CancellationToken::new();
    let (rss_before, mut connector) = match kind {
        "bare" => {
            let rss_before = (crate::bench::resident_kib("self")?, live_kib()?);
            // Dialled a few at a time, as the connector's links do at its start.
            let mut dials = futures::stream::iter(0..agents)
                .map(|index| {
                    let target = Target { host: agent_address(index).to_string(), port, pinned: None, token_hash: token_hash.clone() };
                    async move { dial(&target).await.map_err(|e| anyhow!("dial {}: {e}", target.host)) }
                })
                .buffer_unordered(64);
            while let Some(dialled) = dials.next().await {
                let mut link = dialled?.link;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(nullops_connector::PING_EVERY);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = every.tick() => if link.send(Message::Ping(Default::default())).await.is_err() { return },
                            frame = link.next() => if !matches!(frame, Some(Ok(_))) { return },
                        }
                    }
                });
            }
            (rss_before, None)
        }
        "connector" => {
            let (rss_before, probe) = ConnectorProbe::start(port, agents, &token_hash).await?;
            (rss_before, Some(probe))
        }
        other => bail!("unknown probe {other}"),
    };
    // Let connection setup finish before measuring the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = crate::bench::resident_kib("self")?;
    let live_connected = live_kib()?;
    let cpu_start = cpu_seconds()?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let probe = Probe {
        connections: agents,
        rss_before_kib: rss_before.0,
        rss_connected_kib: rss_connected,
        live_before_kib: rss_before.1,
        live_connected_kib: live_connected,
        cpu_seconds: cpu_seconds()? - cpu_start,
        window_seconds: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&probe)?);
    if let Some(connector) = connector.as_mut() {
        connector.obey().await?;
    }
    shutdown.cancel();
    Ok(())
}

/// The embedded platform's connector, with a node registered for every port.
struct ConnectorProbe {
    /// Held for the data directory's lock and the background tasks' backends.
    backends: crate::platform::Backends,
    connector: nullops_connector::Connector,
    /// The node registered for each agent.
    nodes: Vec<Uuid>,
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The relay and the nodes projection.
    background: CancellationToken,
}

impl ConnectorProbe {
    /// Registers the nodes, starts the connector, and waits until every node is online; returns
    /// the resident set measured before the connector started.
    async fn start(port: u16, agents: usize, token_hash: &nullops_wire::TokenHash) -> anyhow::Result<((u64, u64), ConnectorProbe)> {
        let dir = std::env::temp_dir().join(format!("nullops-bench-nodes-{}", Uuid::now_v7().simple()));
        let backends = crate::platform::Backends::embedded(&dir).await?;
        let keyring = Arc::new(Keyring::open(&format!("sqlite://{}?mode=rwc", dir.join("keys.db").display()), MasterKey::generate()).await?);
        let store = backends.store();
        let environment = EnvironmentDefinition { name: "bench".into(), base_domain: "bench.test".into(), cleanup_after_secs: 3600 };
        let create = CatalogCommand { by: Issuer::System, action: CatalogAction::CreateEnvironment(environment) };
        execute::<Catalog>(&*store, CATALOG_KEY, &create, &EventMetadata::system()).await?;
        let mut nodes = Vec::with_capacity(agents);
        for index in 0..agents {
            let node_id = Uuid::now_v7();
            let sealed = keyring.seal(token_hash.as_bytes(), &token_purpose(node_id)).await?;
            let action = NodeAction::Add {
                node_id,
                environment: DnsLabel::parse("environment", "bench")?,
                environment_exists: true,
                host: NodeHost::parse(&agent_address(index).to_string())?,
                port,
                token_hash: sealed,
            };
            execute::<Node>(&*store, &node_id.to_string(), &NodeCommand { by: Issuer::System, action }, &EventMetadata::system()).await?;
            nodes.push(node_id);
        }
        let read_models = backends.read_models();
        let background = CancellationToken::new();
        tokio::spawn(nullops_bus::relay::run(store.clone(), backends.bus(), background.clone()));
        let runner = nullops_projections::runner::Runner {
            projection: Arc::new(nullops_projections::nodes::NodesProjection),
            db: read_models.clone(),
            store: store.clone(),
            bus: backends.bus(),
        };
        tokio::spawn(runner.run(background.clone()));
        wait_until(&read_models, agents, None).await?;
        let rss_before = (crate::bench::resident_kib("self")?, live_kib()?);
        let desired = Arc::new(nullops_connector::desired::FromDeployments::new(store.clone(), read_models.clone(), keyring.clone()));
        let connector = nullops_connector::Connector { store, bus: backends.bus(), read_models: read_models.clone(), keyring, desired };
        let mut probe = ConnectorProbe { backends, connector, nodes, running: None, background };
        probe.run_connector();
        wait_until(&read_models, agents, Some(nullops_projections::nodes::LinkState::Online)).await?;
        Ok((rss_before, probe))
    }

    fn run_connector(&mut self) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(nullops_connector::run(self.connector.clone(), cancel.clone()));
        self.running = Some((cancel, task));
    }

    async fn obey(&mut self) -> anyhow::Result<()> {
        let mut commands = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = commands.next_line().await? {
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match verb {
                "watch" => {
                    let node_id = *arg.parse().ok().and_then(|i: usize| self.nodes.get(i)).context("watch: no such agent")?;
                    let mut deliveries = self.backends.bus().subscribe().await?;
                    println!("watching");
                    tokio::spawn(async move {
                        while let Some(delivery) = deliveries.next().await {
                            let Delivery::Event(message) = delivery else { continue };
                            let event = &message.event;
                            if event.stream_id.kind() == Node::KIND
                                && event.stream_id.key() == node_id.to_string()
                                && event.event_type == types::NODE_DISCONNECTED.0
                            {
                                println!("offline {}", unix_micros());
                                return;
                            }
                        }
                    });
                }
                "stop" => {
                    let started = Instant::now();
                    if let Some((cancel, task)) = self.running.take() {
                        cancel.cancel();
                        task.await?;
                    }
                    println!("stopped {}", started.elapsed().as_millis());
                }
                "start" => {
                    println!("started {}", unix_micros());
                    self.run_connector();
                }
                other => bail!("unknown command {other:?}"),
            }
        }
        if let Some((cancel, _)) = self.running.take() {
            cancel.cancel();
        }
        self.background.cancel();
        Ok(())
    }
}

/// Waits until `count` nodes are in the read model (with link `link`, when given).
async fn wait_until(db: &nullops_projections::ReadModelDb, count: usize, link: Option<nullops_projections::nodes::LinkState>) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_BOUND;
    loop {
        let rows = nullops_projections::nodes::nodes(db, None).await?;
        let n = rows.iter().filter(|r| link.is_none_or(|l| r.link == l)).count();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} nodes {} after {} s", link.map_or("registered", |l| l.name()), STEP_BOUND.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The resident set after the allocator hands its free pages back.
fn live_kib() -> anyhow::Result<u64> {
    // SAFETY: malloc_trim only releases free memory of the allocator's own.
    unsafe { libc::malloc_trim(0) };
    crate::bench::resident_kib("self")
}

/// User plus system CPU time of this process.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("malformed /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Every connection is a file descriptor: lift the soft limit, and the hard one where this
/// process may (with CAP_SYS_RESOURCE, up to the kernel's `nr_open`).
fn raise_fd_limit(connections: usize) -> anyhow::Result<()> {
    // The store, the read models, the runtime and a restart's overlap.
    let wanted = connections as u64 + 1024;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed");
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max.max(wanted) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                bail!("{connections} connections need {wanted} file descriptors; the hard limit is {} and this process may not raise it", limit.rlim_max);
            }
        }
    }
    Ok(())
}
