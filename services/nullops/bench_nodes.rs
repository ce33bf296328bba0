//! `nullops bench nodes`: one connector holding N agent connections, light fake agents over real
//! TLS on loopback. Memory per connection and CPU spent on heartbeats, against a baseline
//! measured in the same run: the same connections made by the same dialler, each with a bare
//! one-second ping loop and nothing else (no store, no supervisor, no events).
//!
//! Each side runs in a process of its own (`bench node-probe`), so neither's memory counts in the
//! other's, and the fake agents run in a third (`bench fake-agents`).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use nullops_connector::dial::{dial, Target};
use nullops_domain::catalog::{Catalog, CatalogAction, CatalogCommand, CATALOG_KEY};
use nullops_domain::node::{token_purpose, Node, NodeAction, NodeCommand, NodeHost};
use nullops_domain::{DnsLabel, Issuer};
use nullops_events::catalog::EnvironmentDefinition;
use nullops_events::EventMetadata;
use nullops_keyring::{Keyring, MasterKey};
use nullops_store::commands::execute;
use nullops_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use nullops_wire::message::{decode_to_agent, encode, NodeFacts};
use nullops_wire::{AuthProof, FromAgent, NodeToken, ToAgent, PROOF_HEADER};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a probe measured.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    connections: usize,
    rss_before_kib: u64,
    rss_connected_kib: u64,
    cpu_seconds: f64,
    window_seconds: f64,
}

impl Probe {
    fn kib_per_connection(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64 / self.connections.max(1) as f64
    }
    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_seconds / self.window_seconds
    }
}

pub async fn nodes(count: usize, seconds: u64) -> anyhow::Result<()> {
    raise_fd_limit(count)?;
    let exe = std::env::current_exe()?;
    let token = NodeToken::generate();
    let mut agents = tokio::process::Command::new(&exe)
        .args(["bench", "fake-agents", "--count", &count.to_string()])
        .env("NULLOPS_AGENT_TOKEN", token.expose())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(agents.stdout.take().expect("piped")).lines();
    let ports = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.context("fake agents did not start")??.context("fake agents exited")?;
    println!("== one connector, {count} agents over TLS on loopback, {seconds} s of heartbeats ==");
    let bare = probe(&exe, "bare", &ports, &token, seconds).await?;
    let ours = probe(&exe, "connector", &ports, &token, seconds).await?;
    for (name, p) in [("bare dial + ping loop", &bare), ("nullops connector", &ours)] {
        println!(
            "{name:<22} connections={} memory/connection={:.1} KiB  heartbeat CPU={:.2}% of a core ({:.2} s in {:.0} s)",
            p.connections,
            p.kib_per_connection(),
            p.cpu_percent(),
            p.cpu_seconds,
            p.window_seconds
        );
    }
    let memory_ratio = ours.kib_per_connection() / bare.kib_per_connection().max(0.1);
    let cpu_ratio = ours.cpu_seconds / bare.cpu_seconds.max(0.01);
    println!("RESULT connector_kib_per_connection={:.1}", ours.kib_per_connection());
    println!("RESULT connector_memory_ratio_vs_bare={memory_ratio:.2}");
    println!("RESULT connector_heartbeat_cpu_percent={:.2}", ours.cpu_percent());
    println!("RESULT connector_cpu_ratio_vs_bare={cpu_ratio:.2}");
    let _ = agents.kill().await;
    Ok(())
}

async fn probe(exe: &std::path::Path, kind: &str, ports: &str, token: &NodeToken, seconds: u64) -> anyhow::Result<Probe> {
    let out = tokio::process::Command::new(exe)
        .args(["bench", "node-probe", "--kind", kind, "--seconds", &seconds.to_string(), "--ports", ports])
        .env("NULLOPS_AGENT_TOKEN", token.expose())
        .env("NULLOPS_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("the {kind} probe failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow!("the {kind} probe printed no figures"))?;
    Ok(serde_json::from_str(line)?)
}

fn bench_token() -> anyhow::Result<NodeToken> {
    std::env::var("NULLOPS_AGENT_TOKEN").ok().and_then(|t| NodeToken::from_configured(&t)).context("NULLOPS_AGENT_TOKEN")
}

/// `bench fake-agents`: `count` light agents on loopback (TLS, the token check, hello, pongs,
/// answers to desired states; no Docker). Prints their ports as one comma-separated line.
pub async fn fake_agents(count: usize) -> anyhow::Result<()> {
    raise_fd_limit(count * 2)?;
    let token_hash = bench_token()?.hash();
    let generated = rcgen::generate_simple_self_signed(vec!["nullops-agent".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port().to_string());
        let (acceptor, token_hash) = (acceptor.clone(), token_hash.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, token_hash) = (acceptor.clone(), token_hash.clone());
                tokio::spawn(async move {
                    let _ = fake_agent_session(tcp, &acceptor, &token_hash).await;
                });
            }
        });
    }
    println!("{}", ports.join(","));
    crate::platform::wait_for_signal().await;
    Ok(())
}

// The refusal's size is tungstenite's: its handshake callback returns `Result<Response, ErrorResponse>`.
#[allow(clippy::result_large_err)]
async fn fake_agent_session(tcp: tokio::net::TcpStream, acceptor: &tokio_rustls::TlsAcceptor, token_hash: &nullops_wire::TokenHash) -> anyhow::Result<()> {
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
    while let Some(frame) = ws.next().await {
        if let Message::Text(text) = frame? {
            if let Ok(ToAgent::DesiredState { request_id, .. }) = decode_to_agent(text.as_bytes()) {
                ws.send(Message::text(encode(&FromAgent::ActualState { request_id, deployments: vec![] }))).await?;
            }
        }
    }
    Ok(())
}

/// `bench node-probe`: holds connections to the fake agents at `ports` and measures.
pub async fn node_probe(kind: &str, ports: &[u16], seconds: u64) -> anyhow::Result<()> {
    raise_fd_limit(ports.len())?;
    let token_hash = bench_token()?.hash();
    let shutdown = CancellationToken::new();
    let (rss_before, connected) = match kind {
        "bare" => {
            let rss_before = rss_kib()?;
            let mut connected = 0;
            for &port in ports {
                let target = Target { host: "127.0.0.1".into(), port, pinned: None, token_hash: token_hash.clone() };
                let mut link = dial(&target).await.map_err(|e| anyhow!("dial {port}: {e}"))?.link;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = every.tick() => if link.send(Message::Ping(Default::default())).await.is_err() { return },
                            frame = link.next() => if !matches!(frame, Some(Ok(_))) { return },
                        }
                    }
                });
                connected += 1;
            }
            (rss_before, connected)
        }
        "connector" => connector_probe(ports, &token_hash, &shutdown).await?,
        other => bail!("unknown probe {other}"),
    };
    // Let connection setup finish before measuring the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib()?;
    let cpu_start = cpu_seconds()?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let probe = Probe {
        connections: connected,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        cpu_seconds: cpu_seconds()? - cpu_start,
        window_seconds: start.elapsed().as_secs_f64(),
    };
    shutdown.cancel();
    println!("{}", serde_json::to_string(&probe)?);
    Ok(())
}

/// The embedded platform's connector, with a node registered for every port.
async fn connector_probe(ports: &[u16], token_hash: &nullops_wire::TokenHash, shutdown: &CancellationToken) -> anyhow::Result<(u64, usize)> {
    let dir = std::env::temp_dir().join(format!("nullops-bench-nodes-{}", Uuid::now_v7().simple()));
    let b = crate::platform::Backends::embedded(&dir).await?;
    let keyring = Arc::new(Keyring::open(&format!("sqlite://{}?mode=rwc", dir.join("keys.db").display()), MasterKey::generate()).await?);
    let store = b.store();
    let environment = EnvironmentDefinition { name: "bench".into(), base_domain: "bench.test".into(), cleanup_after_secs: 3600 };
    let create = CatalogCommand { by: Issuer::System, action: CatalogAction::CreateEnvironment(environment) };
    execute::<Catalog>(&*store, CATALOG_KEY, &create, &EventMetadata::system()).await?;
    for &port in ports {
        let node_id = Uuid::now_v7();
        let sealed = keyring.seal(token_hash.as_bytes(), &token_purpose(node_id)).await?;
        let action = NodeAction::Add {
            node_id,
            environment: DnsLabel::parse("environment", "bench")?,
            environment_exists: true,
            host: NodeHost::parse("127.0.0.1")?,
            port,
            token_hash: sealed,
        };
        execute::<Node>(&*store, &node_id.to_string(), &NodeCommand { by: Issuer::System, action }, &EventMetadata::system()).await?;
    }
    let read_models = b.read_models();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nullops_bus::relay::run(store.clone(), b.bus(), shutdown.clone()));
    let runner = nullops_projections::runner::Runner {
        projection: Arc::new(nullops_projections::nodes::NodesProjection),
        db: read_models.clone(),
        store: store.clone(),
        bus: b.bus(),
    };
    tasks.spawn(runner.run(shutdown.clone()));
    wait_until(&read_models, ports.len(), None).await?;
    let rss_before = rss_kib()?;
    let desired = Arc::new(nullops_connector::desired::FromDeployments::new(store.clone(), read_models.clone(), keyring.clone()));
    let connector = nullops_connector::Connector { store, bus: b.bus(), read_models: read_models.clone(), keyring, desired };
    tasks.spawn(nullops_connector::run(connector, shutdown.clone()));
    wait_until(&read_models, ports.len(), Some(nullops_projections::nodes::LinkState::Online)).await?;
    tasks.detach_all();
    std::mem::forget(b); // the data dir lock lives as long as the probe process
    Ok((rss_before, ports.len()))
}

/// Waits until `count` nodes are in the read model (with link `link`, when given).
async fn wait_until(db: &nullops_projections::ReadModelDb, count: usize, link: Option<nullops_projections::nodes::LinkState>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let rows = nullops_projections::nodes::nodes(db, None).await?;
        let n = rows.iter().filter(|r| link.is_none_or(|l| r.link == l)).count();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} nodes {} after 180 s", link.map_or("registered", |l| l.name()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).context("no VmRSS in /proc/self/status")
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

/// Every connection is a file descriptor: lift the soft limit towards the hard one.
fn raise_fd_limit(connections: usize) -> anyhow::Result<()> {
    let wanted = (connections as u64) * 2 + 256;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed");
        }
        if limit.rlim_cur < wanted {
            if limit.rlim_max < wanted {
                bail!("{connections} connections need {wanted} file descriptors; the hard limit is {}", limit.rlim_max);
            }
            limit.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit failed");
            }
        }
    }
    Ok(())
}
