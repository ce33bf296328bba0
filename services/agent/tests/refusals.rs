//! Anyone who can reach an agent's port can make it refuse connections, as fast as they like:
//! each refusal is counted in a metric, and logged at most once a minute per kind, saying how
//! many were kept quiet, so a flood costs the log a line instead of gigabytes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullops_agent::{Agent, AgentConfig};
use nullops_wire::NodeToken;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn refused_total(reason: &str) -> u64 {
    let text = nullops_metrics::metrics().encode();
    let line = format!("nullops_agent_refused_connections_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_connections_is_counted_and_logged_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        token: NodeToken::generate(),
        scope: format!("r{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
        protocol: nullops_wire::PROTOCOL_VERSION,
        reconcile_every: Duration::from_secs(30),
        network_pool: Default::default(),
        prefetch_budget_mib: nullops_agent::prefetch::DEFAULT_BUDGET_MIB,
        reconcile_paused: true,
    };
    let agent = Agent::bind(config).await.unwrap();
    let addr = agent.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(agent.serve(stop.clone()));

    // 300 connections that speak plain HTTP to the TLS port.
    const FLOOD: u64 = 300;
    for _ in 0..FLOOD {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: agent\r\n\r\n").await.unwrap();
        // Each is refused and closed by the agent; reading to the end waits for that.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused_total("tls") < FLOOD {
        assert!(tokio::time::Instant::now() < deadline, "counted {} of {FLOOD} refusals", refused_total("tls"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused_total("tls"), FLOOD);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warned = text.lines().filter(|l| l.contains("WARN") && l.contains("refused a connection")).count();
    assert_eq!(warned, 1, "one warning for the whole flood within a minute:\n{text}");
    stop.cancel();
}
