//! `nullops`: the one binary. `up` runs everything embedded (SQLite, in-process bus); `server`
//! runs the same components on PostgreSQL and NATS JetStream.

mod bench;
mod bench_deploy;
mod bench_feeds;
mod bench_idle;
mod bench_ingress;
mod bench_nodes;
mod bench_placement;
mod cli;
mod demo;
mod echo;
mod local_agent;
mod platform;
mod plugins;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nullops", version, about = "Self-hosted on-demand QA environments")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, env = "NULLOPS_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    /// Also serve Prometheus metrics at http://ADDRESS/metrics, without authentication (the
    /// API's own /metrics needs an admin's token). Choose the address with care: 127.0.0.1:9464
    /// keeps them on this machine.
    #[arg(long, env = "NULLOPS_METRICS_LISTEN", global = true)]
    metrics_listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: TopCommand,
}

/// Plugins apart from the rest: their stdout is their result, so nothing else may print.
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum TopCommand {
    #[command(flatten)]
    Platform(Command),
    /// The client commands (`login`, `deploy`, `deployments`, `logs`, …): their output is for
    /// people and scripts, and their exit code says how it went.
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Run an example plugin (reads its input on stdin, writes its result on stdout).
    Plugin {
        #[command(subcommand)]
        plugin: PluginCommand,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process on SQLite and an in-process bus.
    Up {
        /// Where the event log, read models and keys live.
        #[arg(long, env = "NULLOPS_DATA_DIR", default_value = ".nullops")]
        data_dir: PathBuf,
        /// Where the local agent listens (port 0: any free port).
        #[arg(long, env = "NULLOPS_LOCAL_AGENT_LISTEN", default_value = "127.0.0.1:0")]
        local_agent_listen: SocketAddr,
        /// Run without the local agent (deployments then need other nodes).
        #[arg(long, env = "NULLOPS_NO_LOCAL_AGENT")]
        no_local_agent: bool,
        /// Do not offer the demo (on a first start: project `demo`, built into the local Docker
        /// engine from this binary's examples).
        #[arg(long, env = "NULLOPS_NO_DEMO")]
        no_demo: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Run the platform against PostgreSQL and NATS JetStream (production).
    Server {
        #[command(flatten)]
        backends: ProductionArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Run the node agent: a TLS WebSocket server the control plane connects to. Takes its token
    /// from NULLOPS_AGENT_TOKEN and refuses to start without one.
    Agent {
        #[arg(long, env = "NULLOPS_AGENT_LISTEN", default_value = "0.0.0.0:5000")]
        listen: SocketAddr,
        /// Where the certificate and state live.
        #[arg(long, env = "NULLOPS_AGENT_DATA_DIR", default_value = "/data")]
        data_dir: PathBuf,
        /// Labels this agent's containers; agents that share a Docker engine need distinct scopes.
        #[arg(long, env = "NULLOPS_AGENT_SCOPE", default_value = "default")]
        scope: String,
        /// Seconds between reconciliations of the Docker engine with the last desired state.
        #[arg(long, env = "NULLOPS_AGENT_RECONCILE_SECS", default_value_t = nullops_agent::RECONCILE_EVERY.as_secs())]
        reconcile_secs: u64,
        /// The IPv4 range deployment networks take their /24s from (one per deployment).
        #[arg(long, env = "NULLOPS_AGENT_NETWORK_POOL", default_value = nullops_agent::subnets::DEFAULT_POOL, value_parser = nullops_agent::subnets::Pool::parse)]
        network_pool: nullops_agent::subnets::Pool,
        /// What images pulled ahead of deployments (the plugins and pinned services of the
        /// environment's pipelines) may take on the Docker engine's disk, in MiB.
        #[arg(long, env = "NULLOPS_AGENT_PREFETCH_BUDGET_MIB", default_value_t = nullops_agent::prefetch::DEFAULT_BUDGET_MIB)]
        prefetch_budget_mib: u64,
        /// Speak another protocol version (compatibility tests only).
        #[arg(long, hide = true)]
        speak_protocol: Option<u32>,
    },
    /// Run only the connector (and the relay), against PostgreSQL and NATS JetStream.
    Connector {
        #[command(flatten)]
        backends: ProductionArgs,
    },
    /// Run only the ingress, against PostgreSQL and NATS JetStream: any number of these route
    /// the same, from the read models the servers keep.
    Ingress {
        #[command(flatten)]
        backends: ProductionArgs,
        #[command(flatten)]
        ingress: IngressArgs,
    },
    /// Example services to deploy.
    Example {
        #[command(subcommand)]
        example: ExampleCommand,
    },
    /// Manage read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Manage the secrets master key and the data keys it wraps.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Benchmarks against real backends.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// PostgreSQL and NATS JetStream.
#[derive(Args)]
struct ProductionArgs {
    #[arg(long, env = "NULLOPS_DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "NULLOPS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// NATS subject prefix of this installation (several may share one NATS).
    #[arg(long, env = "NULLOPS_NATS_PREFIX", default_value = "nullops")]
    nats_prefix: String,
}

impl ProductionArgs {
    async fn open(&self) -> anyhow::Result<platform::Backends> {
        platform::Backends::production(&self.database_url, &self.nats_url, &self.nats_prefix).await
    }
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address of the API and web UI.
    #[arg(long, env = "NULLOPS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Password of the bootstrap `admin` on first start; generated and printed once when unset.
    #[arg(long, env = "NULLOPS_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Lifetime of a login session, in seconds.
    #[arg(long, env = "NULLOPS_SESSION_TTL_SECS", default_value_t = 12 * 3600)]
    session_ttl_secs: u64,
    /// Run without the ingress (when `nullops ingress` processes serve it; give the same
    /// --ingress-* options here so that service URLs name their port and scheme).
    #[arg(long, env = "NULLOPS_NO_INGRESS")]
    no_ingress: bool,
    /// Origins besides the server's own whose pages may sign in and act with the session
    /// cookie, comma-separated (e.g. https://nullops.example.com when a proxy rewrites Host).
    #[arg(long, env = "NULLOPS_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Names and ranges inside private networks that webhooks, forges and registries may be
    /// at, comma-separated: host names, *.domain wildcards, addresses and ranges such as
    /// 10.0.0.0/8. Loopback, link-local, private and this machine's own addresses are refused
    /// otherwise; NullOps's own listeners always.
    #[arg(long, env = "NULLOPS_ALLOWED_PRIVATE_TARGETS", default_value = "")]
    allowed_private_targets: String,
    /// Changes to the background processes' pauses, as name=duration pairs, comma-separated
    /// (e.g. webhook_max_pause=10s,node_grace=30s); a name it does not know is refused with
    /// the list of names (`nullops_saga::pacing` documents each).
    #[arg(long, env = "NULLOPS_PACING", default_value = "", value_parser = parse_pacing)]
    pacing: nullops_saga::Pacing,
    #[command(flatten)]
    ingress: IngressArgs,
}

/// The ingress, which serves http://SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN.
#[derive(Args, Clone)]
pub struct IngressArgs {
    /// Address of the ingress (port 0: any free port).
    #[arg(long, env = "NULLOPS_INGRESS_LISTEN", default_value = "127.0.0.1:8081")]
    ingress_listen: SocketAddr,
    /// PEM certificate chain (a wildcard for the base domains, say): the ingress then serves HTTPS.
    #[arg(long, env = "NULLOPS_INGRESS_TLS_CERT", requires = "ingress_tls_key")]
    ingress_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "NULLOPS_INGRESS_TLS_KEY", requires = "ingress_tls_cert")]
    ingress_tls_key: Option<PathBuf>,
    /// The port users reach the ingress on, when it is not the one it listens on (behind a load
    /// balancer or a port forward); service URLs name it.
    #[arg(long, env = "NULLOPS_INGRESS_PUBLIC_PORT")]
    ingress_public_port: Option<u16>,
    /// The address users reach the ingress at (an IP address or a host name): the UI shows each
    /// environment's DNS record pointing there. Default: the listen address, unless it is 0.0.0.0.
    #[arg(long, env = "NULLOPS_INGRESS_PUBLIC_ADDRESS")]
    ingress_public_address: Option<String>,
}

#[derive(Subcommand)]
enum ExampleCommand {
    /// Answer with the request received; echo POST /echo bodies and WebSocket messages at /ws.
    Echo {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Wait until a URL answers the expected status (parameters: url, timeout_secs, interval_ms, expect_status).
    HttpCheck,
    /// Fill {{name}} placeholders of a template (parameters: template, values; {{secrets.NAME}} too).
    RenderConfig,
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Empty read models and replay the whole event log into them.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all"])))]
    Rebuild {
        /// Read model names (see the `projections` query): identity, catalog, audit, nodes, deployments.
        names: Vec<String>,
        /// Every read model.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every data key under a new master key (NULLOPS_NEW_MASTER_KEY; generated when the
    /// current key is the data dir's master.key). Stop the servers first, restart them with the new key.
    Rotate {
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Destroy data keys no live value uses (left by a crash between an event and its key's
    /// destruction). Servers also do this hourly.
    Sweep {
        /// Only keys older than this many seconds: younger ones may belong to a command in flight.
        #[arg(long, default_value_t = nullops_saga::Pacing::default().key_sweep_grace.as_secs())]
        grace_secs: u64,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Check that every data key unwraps under the current master key.
    Verify {
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Args)]
struct BackendArgs {
    /// PostgreSQL URL; when unset, the embedded data dir is used.
    #[arg(long, env = "NULLOPS_DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, env = "NULLOPS_DATA_DIR", default_value = ".nullops")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Event append throughput and command-to-projection latency, against pgbench.
    Events {
        #[arg(long, env = "NULLOPS_DATABASE_URL")]
        database_url: String,
        /// Seconds per throughput round.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Throughput rounds each of pgbench and nullops, per writer count (the median is kept).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Commands timed for the latency figures.
        #[arg(long, default_value_t = 2000)]
        commands: usize,
    },
    /// Every read model replayed from the log, against a COPY of the same events (on SQLite, a
    /// read of every event row).
    Replay {
        #[arg(long, env = "NULLOPS_DATABASE_URL", required_unless_present = "sqlite_dir")]
        database_url: Option<String>,
        /// The embedded store instead: the log and read models in this directory, laid out as
        /// `nullops up` lays them out (made when missing).
        #[arg(long, conflicts_with = "database_url")]
        sqlite_dir: Option<std::path::PathBuf>,
        /// Events in the log replayed (made first when it holds fewer).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Alternating rounds of COPY and replay (the median ratio is kept).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Deployments asked for at once, placed by the deployment saga one at a time and side by
    /// side, on simulated nodes: decisions per second, request-to-decision p99, no node over-committed.
    Placement {
        #[arg(long, env = "NULLOPS_DATABASE_URL")]
        database_url: String,
        /// Deployments asked for at once.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Simulated nodes in the environment.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Alternating rounds of each (the median is kept).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One connector holding many agent connections: memory per connection and heartbeat CPU,
    /// against bare connections with a ping loop.
    Nodes {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Seconds of heartbeats measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What an idle `nullops up` costs (its CPU, the engine's, the agent's engine calls), with
    /// no deployment and with many, against the same platform with the reconcile loop stopped.
    Idle {
        /// Running deployments in the second half.
        #[arg(long, default_value_t = 20)]
        deployments: usize,
        /// Seconds per measured window.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Time from createDeployment to RUNNING of three services, against docker-compose up of
    /// the same containers until healthy.
    Deploy {
        /// Timed rounds per side.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Requests/s and p99 latency through the ingress, against nginx as the same reverse proxy
    /// and the upstream hit directly (wrk on loopback).
    Ingress {
        /// Timed rounds per target.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// wrk's open connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// One event to many live subscribers (catalogUpdated over WebSockets), against a bare
    /// WebSocket hub: latency from the mutation's request and memory per idle subscription.
    Feeds {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The baseline of `bench feeds`: a bare WebSocket hub (prints its address).
    #[command(hide = true)]
    FeedHub,
    /// Light fake agents for `bench nodes` (prints their ports).
    #[command(hide = true)]
    FakeAgents {
        #[arg(long)]
        count: usize,
    },
    /// One side of `bench nodes`.
    #[command(hide = true)]
    NodeProbe {
        #[arg(long)]
        kind: String,
        /// The fake agents' port.
        #[arg(long)]
        port: u16,
        /// How many fake agents there are.
        #[arg(long)]
        agents: usize,
        #[arg(long)]
        seconds: u64,
    },
    /// Catalog command latency as the catalog grows, against an identity command.
    Catalog {
        #[arg(long, env = "NULLOPS_DATABASE_URL")]
        database_url: String,
        /// Catalog sizes (entries) to measure at, ascending.
        #[arg(long, value_delimiter = ',', default_value = "10,1000,5000")]
        sizes: Vec<usize>,
        /// Commands of each kind timed per size.
        #[arg(long, default_value_t = 300)]
        commands: usize,
    },
}

impl BackendArgs {
    async fn open(&self) -> anyhow::Result<platform::Backends> {
        match &self.database_url {
            Some(url) => platform::Backends::postgres_only(url).await,
            None => platform::Backends::embedded(&self.data_dir).await,
        }
    }
}

/// `--pacing`, refused with its stable code and what to write instead.
fn parse_pacing(spec: &str) -> Result<nullops_saga::Pacing, CodedPacingError> {
    nullops_saga::Pacing::parse(spec).map_err(CodedPacingError)
}

/// A refused `--pacing`, said with its stable code first.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {0}", code = nullops_saga::PacingError::CODE)]
struct CodedPacingError(nullops_saga::PacingError);

fn init_logging(format: &str) -> nullops_telemetry::Telemetry {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NULLOPS_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let format = if format == "json" { nullops_telemetry::LogFormat::Json } else { nullops_telemetry::LogFormat::Text };
    nullops_telemetry::init(format, filter)
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        TopCommand::Plugin { plugin: PluginCommand::HttpCheck } => Ok(plugins::http_check()),
        TopCommand::Plugin { plugin: PluginCommand::RenderConfig } => Ok(plugins::render_config()),
        // Logs only on request: stdout and stderr are the command's.
        TopCommand::Client(client) => Ok(std::process::ExitCode::from(u8::try_from(cli::run(client).await).unwrap_or(2))),
        TopCommand::Platform(platform) => {
            // Held to the end: dropping it sends the spans not sent yet.
            let _telemetry = init_logging(&cli.log_format);
            command(platform, cli.metrics_listen).await.map(|()| std::process::ExitCode::SUCCESS)
        }
    }
}

async fn command(command: Command, metrics_listen: Option<SocketAddr>) -> anyhow::Result<()> {
    match command {
        Command::Up { data_dir, local_agent_listen, no_local_agent, no_demo, serve } => {
            platform::private_files();
            let backends = platform::Backends::embedded(&data_dir).await?;
            let local = (!no_local_agent).then_some(platform::LocalNode { listen: local_agent_listen, demo: !no_demo });
            platform::serve(backends, serve, local, metrics_listen).await
        }
        Command::Server { backends, serve } => platform::serve(backends.open().await?, serve, None, metrics_listen).await,
        Command::Agent { listen, data_dir, scope, reconcile_secs, network_pool, prefetch_budget_mib, speak_protocol } => {
            platform::private_files();
            platform::serve_metrics(metrics_listen, None).await?;
            let reconcile_every = Duration::from_secs(reconcile_secs.max(1));
            run_agent(listen, data_dir, scope, reconcile_every, network_pool, prefetch_budget_mib, speak_protocol).await
        }
        Command::Connector { backends } => {
            platform::serve_metrics(metrics_listen, None).await?;
            platform::run_connector(backends.open().await?).await
        }
        Command::Example { example: ExampleCommand::Echo { listen } } => echo::serve(listen).await,
        Command::Ingress { backends, ingress } => {
            platform::serve_metrics(metrics_listen, None).await?;
            platform::run_ingress(backends.open().await?, &ingress).await
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { names, all, backend } } => {
            platform::rebuild(backend.open().await?, if all { None } else { Some(&names) }).await
        }
        Command::Keys { command: KeysCommand::Rotate { backend } } => platform::rotate_keys(backend.open().await?).await,
        Command::Keys { command: KeysCommand::Sweep { grace_secs, backend } } => {
            platform::sweep_keys(backend.open().await?, Duration::from_secs(grace_secs)).await
        }
        Command::Keys { command: KeysCommand::Verify { backend } } => platform::verify_keys(backend.open().await?).await,
        Command::Bench { command: BenchCommand::Events { database_url, seconds, rounds, commands } } => {
            bench::events(&database_url, Duration::from_secs(seconds), rounds, commands).await.context("benchmark failed")
        }
        Command::Bench { command: BenchCommand::Replay { database_url, sqlite_dir, events, rounds } } => {
            let backend = match (database_url, sqlite_dir) {
                (_, Some(dir)) => bench::ReplayStore::Sqlite(dir),
                (Some(url), None) => bench::ReplayStore::Postgres(url),
                (None, None) => anyhow::bail!("give --database-url or --sqlite-dir"),
            };
            bench::replay(backend, events, rounds).await.context("benchmark failed")
        }
        Command::Bench { command: BenchCommand::Placement { database_url, requests, nodes, rounds } } => {
            bench_placement::placement(&database_url, requests, nodes, rounds).await.context("benchmark failed")
        }
        Command::Bench { command: BenchCommand::Nodes { agents, seconds } } => bench_nodes::nodes(agents, seconds).await.context("benchmark failed"),
        Command::Bench { command: BenchCommand::Idle { deployments, seconds } } => bench_idle::idle(deployments, seconds).await.context("benchmark failed"),
        Command::Bench { command: BenchCommand::Deploy { rounds } } => bench_deploy::deploy(rounds).await.context("benchmark failed"),
        Command::Bench { command: BenchCommand::Ingress { rounds, seconds, connections } } => {
            bench_ingress::ingress(rounds, seconds, connections).await.context("benchmark failed")
        }
        Command::Bench { command: BenchCommand::Feeds { subscribers, rounds } } => bench_feeds::feeds(subscribers, rounds).await.context("benchmark failed"),
        Command::Bench { command: BenchCommand::FeedHub } => bench_feeds::feed_hub().await,
        Command::Bench { command: BenchCommand::FakeAgents { count } } => bench_nodes::fake_agents(count).await,
        Command::Bench { command: BenchCommand::NodeProbe { kind, port, agents, seconds } } => bench_nodes::node_probe(&kind, port, agents, seconds).await,
        Command::Bench { command: BenchCommand::Catalog { database_url, sizes, commands } } => {
            bench::catalog(&database_url, &sizes, commands).await.context("benchmark failed")
        }
    }
}

async fn run_agent(
    listen: SocketAddr,
    data_dir: PathBuf,
    scope: String,
    reconcile_every: Duration,
    network_pool: nullops_agent::subnets::Pool,
    prefetch_budget_mib: u64,
    speak_protocol: Option<u32>,
) -> anyhow::Result<()> {
    // Never fail open: no token, no agent.
    let token = std::env::var("NULLOPS_AGENT_TOKEN").ok().and_then(|t| nullops_wire::NodeToken::from_configured(&t));
    let token = token.context("NULLOPS_AGENT_TOKEN is not set or empty: set it to the token addNode returned")?;
    let protocol = speak_protocol.unwrap_or(nullops_wire::PROTOCOL_VERSION);
    let config =
        nullops_agent::AgentConfig { listen, data_dir, token, scope, protocol, reconcile_every, network_pool, prefetch_budget_mib, reconcile_paused: false };
    let agent = nullops_agent::Agent::bind(config).await?;
    // The thumbprint is what an admin compares before approving a new certificate.
    println!("NullOps agent listening on {} (protocol {protocol}); certificate thumbprint {}", agent.local_addr(), agent.thumbprint());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        platform::wait_for_signal().await;
        stop.cancel();
    });
    agent.serve(shutdown).await;
    Ok(())
}
