//! NullOps's Prometheus metrics: the one home of every metric's name, unit, help and labels.
//! Every process keeps one registry ([`metrics`]); the code that does the work records into it
//! (commands, appends, the ingress, the agent's plugins and pulls), and what is a count of the
//! platform's state (agents, nodes, deployments, projection lag) is set from the read models
//! just before a scrape by whoever serves `/metrics` ([`Metrics::set_state`]).
//!
//! Names follow Prometheus's conventions: all start `nullops_`, counters end `_total`, units are
//! `_seconds` and `_bytes`. Label values are bounded: aggregate kinds, outcomes, states and
//! status classes are closed sets; nodes, environments, deployments and projections are things
//! an admin made, never a request's own text.

mod ingress;

pub use ingress::IngressCounts;

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// What `/metrics` answers with (the OpenMetrics text format, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a command ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Prometheus shows them
pub enum Outcome {
    /// Decided and appended.
    ok,
    /// Decided, and nothing needed appending.
    unchanged,
    /// The aggregate refused it (bad input, not allowed, conflicting with its state).
    refused,
    /// Other writers kept winning the race for its stream.
    contended,
    /// The store failed.
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The aggregate's stream kind (`deployment`, `catalog`, …).
    pub aggregate: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabel {
    pub aggregate: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// What a node's resource figure is.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Measure {
    /// What its containers use now (the agent's last sample).
    used,
    /// What its deployments have reserved.
    reserved,
    /// What it has.
    total,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// `host:port` of its agent.
    pub node: String,
    pub environment: String,
    pub measure: Measure,
}

/// An HTTP status's class.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        })
    }
}

impl StatusClass {
    pub fn of(status: u16) -> Self {
        match status {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressLabels {
    /// The environment and deployment the request's host named, or `""` when it named none
    /// that exists (never the host as sent).
    pub environment: String,
    pub deployment: String,
    pub class: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub outcome: PluginOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PluginOutcome {
    succeeded,
    failed,
    timed_out,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    pub outcome: PullOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PullOutcome {
    pulled,
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: Refusal,
}

/// Why an agent refused an incoming connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// Not TLS, or a TLS handshake that failed.
    tls,
    /// A path other than the agent's, or a request that is not a WebSocket upgrade.
    request,
    /// Another protocol version.
    protocol,
    /// No proof of the node token, or a wrong one.
    token,
    /// The handshake took too long, or newer ones crowded it out.
    slow,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn fast() -> Histogram {
    // 0.25 ms … 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

fn slow() -> Histogram {
    // 0.25 s … about 68 min.
    Histogram::new(exponential_buckets(0.25, 2.0, 15))
}

/// Every metric of the platform.
pub struct Metrics {
    registry: Registry,
    pub commands: Family<CommandLabels, Counter>,
    pub command_seconds: Histograms<AggregateLabel>,
    pub append_seconds: Histogram,
    pub subscriptions: Gauge,
    pub projection_lag_events: Family<NameLabel, Gauge>,
    pub projection_lag_seconds: Family<NameLabel, Gauge<f64, AtomicU64>>,
    pub agents: Family<StateLabel, Gauge>,
    pub node_cpu_millicores: Family<NodeLabels, Gauge>,
    pub node_memory_bytes: Family<NodeLabels, Gauge>,
    pub deployments: Family<StateLabel, Gauge>,
    pub time_to_running_seconds: Histogram,
    /// The ingress's answers and their durations, counted without a lock its connections share.
    pub ingress: &'static IngressCounts,
    pub plugin_runs: Family<PluginLabels, Counter>,
    pub plugin_seconds: Histograms<NameLabel>,
    pub image_pulls: Family<PullLabels, Counter>,
    pub image_pull_seconds: Histogram,
    pub agent_refused_connections: Family<RefusalLabels, Counter>,
    /// Commands decided and appended (or unchanged), and refused or failed, since the start:
    /// what the console's command-rate chart samples.
    pub commands_done: AtomicU64,
    pub commands_not_done: AtomicU64,
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("nullops");
        let m = Metrics {
            commands: Family::default(),
            command_seconds: Family::new_with_constructor(fast),
            append_seconds: fast(),
            subscriptions: Gauge::default(),
            projection_lag_events: Family::default(),
            projection_lag_seconds: Family::default(),
            agents: Family::default(),
            node_cpu_millicores: Family::default(),
            node_memory_bytes: Family::default(),
            deployments: Family::default(),
            time_to_running_seconds: slow(),
            ingress: &INGRESS,
            plugin_runs: Family::default(),
            plugin_seconds: Family::new_with_constructor(slow),
            image_pulls: Family::default(),
            image_pull_seconds: slow(),
            agent_refused_connections: Family::default(),
            commands_done: AtomicU64::new(0),
            commands_not_done: AtomicU64::new(0),
            registry: Registry::default(),
        };
        r.register("commands", "Commands decided, by aggregate and outcome", m.commands.clone());
        r.register_with_unit(
            "command_duration",
            "Time from a command's arrival to its events appended (or its refusal)",
            Unit::Seconds,
            m.command_seconds.clone(),
        );
        r.register_with_unit("store_append_duration", "Time the event store took to append one command's events", Unit::Seconds, m.append_seconds.clone());
        r.register("live_subscriptions", "GraphQL subscriptions open now", m.subscriptions.clone());
        r.register("projection_lag_events", "Events in the log a projection has not applied yet (counted up to 10000)", m.projection_lag_events.clone());
        r.register_with_unit("projection_lag", "Age of the oldest event a projection has not applied yet", Unit::Seconds, m.projection_lag_seconds.clone());
        r.register("agents", "Nodes by the state of their agent's connection", m.agents.clone());
        r.register("node_cpu_millicores", "A node's CPU: used by its containers, reserved by its deployments, and in all", m.node_cpu_millicores.clone());
        r.register_with_unit(
            "node_memory",
            "A node's memory: used by its containers, reserved by its deployments, and in all",
            Unit::Bytes,
            m.node_memory_bytes.clone(),
        );
        r.register("deployments", "Deployments by state (ended ones not counted)", m.deployments.clone());
        r.register_with_unit("deployment_time_to_running", "Time from a deployment's request to RUNNING", Unit::Seconds, m.time_to_running_seconds.clone());
        r.register_collector(Box::new(ingress::IngressCollector(m.ingress)));
        r.register("plugin_runs", "Plugin runs on this node's agent, by plugin and outcome", m.plugin_runs.clone());
        r.register_with_unit("plugin_run_duration", "How long a plugin ran", Unit::Seconds, m.plugin_seconds.clone());
        r.register("image_pulls", "Images this node's agent pulled, by outcome", m.image_pulls.clone());
        r.register_with_unit("image_pull_duration", "How long an image pull took", Unit::Seconds, m.image_pull_seconds.clone());
        r.register(
            "agent_refused_connections",
            "Incoming connections this node's agent refused, by reason (logged at most once a minute per reason)",
            m.agent_refused_connections.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Records a command decided for an aggregate of kind `aggregate`.
    pub fn command(&self, aggregate: &'static str, outcome: Outcome, took: Duration) {
        self.commands.get_or_create(&CommandLabels { aggregate, outcome }).inc();
        let total = if matches!(outcome, Outcome::ok | Outcome::unchanged) { &self.commands_done } else { &self.commands_not_done };
        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.command_seconds.get_or_create(&AggregateLabel { aggregate }).observe(took.as_secs_f64());
    }

    /// Replaces the counts of the platform's state with `state`: nodes, agents, deployments and
    /// projections that are gone disappear from the next scrape.
    pub fn set_state(&self, state: &State) {
        self.agents.clear();
        for (status, n) in &state.agents {
            self.agents.get_or_create(&StateLabel { state: status }).set(*n);
        }
        self.deployments.clear();
        for (phase, n) in &state.deployments {
            self.deployments.get_or_create(&StateLabel { state: phase }).set(*n);
        }
        self.node_cpu_millicores.clear();
        self.node_memory_bytes.clear();
        for n in &state.nodes {
            for (measure, cpu, memory) in [
                (Measure::used, n.cpu_used, n.memory_used_bytes),
                (Measure::reserved, n.cpu_reserved, n.memory_reserved_bytes),
                (Measure::total, n.cpu_total, n.memory_total_bytes),
            ] {
                let labels = NodeLabels { node: n.node.clone(), environment: n.environment.clone(), measure };
                if let Some(cpu) = cpu {
                    self.node_cpu_millicores.get_or_create(&labels).set(cpu);
                }
                if let Some(memory) = memory {
                    self.node_memory_bytes.get_or_create(&labels).set(memory);
                }
            }
        }
        self.projection_lag_events.clear();
        self.projection_lag_seconds.clear();
        for p in &state.projections {
            self.projection_lag_events.get_or_create(&NameLabel { name: p.name.clone() }).set(p.events);
            self.projection_lag_seconds.get_or_create(&NameLabel { name: p.name.clone() }).set(p.seconds);
        }
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The platform's state as the read models tell it, for a scrape.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub agents: Vec<(&'static str, i64)>,
    pub deployments: Vec<(&'static str, i64)>,
    pub nodes: Vec<NodeFigures>,
    pub projections: Vec<ProjectionLag>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    pub node: String,
    pub environment: String,
    pub cpu_used: Option<i64>,
    pub cpu_reserved: Option<i64>,
    pub cpu_total: Option<i64>,
    pub memory_used_bytes: Option<i64>,
    pub memory_reserved_bytes: Option<i64>,
    pub memory_total_bytes: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectionLag {
    pub name: String,
    pub events: i64,
    pub seconds: f64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
static INGRESS: LazyLock<IngressCounts> = LazyLock::new(IngressCounts::default);

/// Whether the work records metrics: yes unless `NULLOPS_METRICS=off` (what the benchmark of
/// their cost compares against).
static RECORDING: LazyLock<bool> = LazyLock::new(|| std::env::var("NULLOPS_METRICS").map_or(true, |v| v != "off"));

/// This process's metrics, to serve and to set the platform's state into.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// This process's metrics, to record the work into; none when they are turned off.
pub fn recording() -> Option<&'static Metrics> {
    RECORDING.then_some(&*METRICS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.command("deployment", Outcome::ok, Duration::from_millis(3));
        m.ingress.count("qa", "pr-7", StatusClass::of(503), Some(Duration::from_millis(2)));
        m.set_state(&State {
            agents: vec![("online", 2)],
            deployments: vec![("running", 3)],
            nodes: vec![NodeFigures {
                node: "10.0.0.5:5000".into(),
                environment: "qa".into(),
                cpu_total: Some(4000),
                memory_total_bytes: Some(1 << 30),
                ..Default::default()
            }],
            projections: vec![ProjectionLag { name: "deployments".into(), events: 0, seconds: 0.0 }],
        });
        let text = m.encode();
        for line in [
            "nullops_commands_total{aggregate=\"deployment\",outcome=\"ok\"} 1",
            "nullops_command_duration_seconds_count{aggregate=\"deployment\"} 1",
            "nullops_ingress_requests_total{environment=\"qa\",deployment=\"pr-7\",class=\"5xx\"} 1",
            "nullops_ingress_request_duration_seconds_bucket{le=\"0.004\"} 1",
            "nullops_agents{state=\"online\"} 2",
            "nullops_deployments{state=\"running\"} 3",
            "nullops_node_cpu_millicores{node=\"10.0.0.5:5000\",environment=\"qa\",measure=\"total\"} 4000",
            "nullops_node_memory_bytes{node=\"10.0.0.5:5000\",environment=\"qa\",measure=\"total\"} 1073741824",
            "nullops_projection_lag_events{name=\"deployments\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(text.contains("# TYPE nullops_deployment_time_to_running_seconds histogram") && text.ends_with("# EOF\n"));
        // State that is gone goes from the next scrape.
        m.set_state(&State::default());
        assert!(!m.encode().contains("nullops_agents{"));
    }
}
