//! `nullops bench idle`: what an idle platform costs its machine. A `nullops up` child with its
//! local agent, no client connected, first with no deployment and then with many running: the
//! CPU the platform and the Docker engine use, and the agent's calls to the engine, counted by a
//! proxy on the engine's socket. The baseline is the same platform with the agent's reconcile
//! loop stopped (it serves its session and leaves its engine as it is), measured in the same
//! run with the same deployments in the engine.
//!
//! Targets (issue 22): at most 1% of a core and at most 1 engine call a second, with 0 and with
//! 20 running deployments.

use nullops_domain::deployment::DeploymentStatus;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::bench_deploy::Platform;

/// Set to `1` in `nullops up`'s environment: its local agent runs without its reconcile loop.
pub const PAUSE_RECONCILE: &str = "NULLOPS_BENCH_PAUSE_RECONCILE";
const ENGINE_SOCKET: &str = "/var/run/docker.sock";
/// Clock ticks a second of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

pub async fn idle(deployments: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("nullops-bench-idle-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let proxy = CountingProxy::start(&dir.join("docker.sock")).await?;
    let window = Duration::from_secs(seconds.max(1));
    let data = dir.join("data");
    let run = async {
        // No deployment: stopped first, so that setting up happens in the measured platform's life.
        let stopped = Platform::start_with(&data, &proxy.env(true)).await?;
        let none_stopped = measure(&stopped, &proxy, window).await?;
        stopped.stop().await;
        let platform = Platform::start_with(&data, &proxy.env(false)).await?;
        let none = measure(&platform, &proxy, window).await?;
        let ids = deploy(&platform, deployments).await?;
        let many = measure(&platform, &proxy, window).await?;
        platform.stop().await;
        let stopped = Platform::start_with(&data, &proxy.env(true)).await?;
        let many_stopped = measure(&stopped, &proxy, window).await?;
        stopped.stop().await;
        // Clean up through the platform, as a user would.
        let platform = Platform::start_with(&data, &proxy.env(false)).await?;
        platform.node_online().await?;
        for id in &ids {
            platform.gql("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await?;
        }
        for id in &ids {
            platform.reaches(id, DeploymentStatus::Deleted.name()).await?;
        }
        platform.stop().await;
        anyhow::Ok([(0, none, none_stopped), (deployments, many, many_stopped)])
    };
    let rows = run.await;
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows?;
    println!("An idle `nullops up` ({}-second windows, no client connected):", window.as_secs());
    println!("  {:<36} {:>14} {:>14} {:>16}", "", "platform CPU", "dockerd CPU", "engine calls/s");
    for (count, running, stopped) in &rows {
        for (name, m) in [(format!("{count} deployments"), running), (format!("{count} deployments, loop stopped"), stopped)] {
            println!("  {name:<36} {:>12.2} % {:>12.2} % {:>16.2}", m.platform_cpu, m.engine_cpu, m.calls_per_second);
        }
        let ratio = if stopped.platform_cpu > 0.0 { format!("{:.2}x", running.platform_cpu / stopped.platform_cpu) } else { "n/a (baseline 0)".into() };
        println!(
            "  {count} deployments: platform CPU {ratio} the stopped loop's; engine calls {:+.2}/s over it",
            running.calls_per_second - stopped.calls_per_second
        );
        println!("RESULT idle_{count}_deployments_cpu_percent={:.2}", running.platform_cpu);
        println!("RESULT idle_{count}_deployments_cpu_ratio_to_stopped_loop={ratio}");
        println!("RESULT idle_{count}_deployments_engine_calls_per_second={:.2}", running.calls_per_second);
    }
    let worst = rows.iter().fold((0.0f64, 0.0f64), |w, (_, m, _)| (w.0.max(m.platform_cpu), w.1.max(m.calls_per_second)));
    println!("  worst with the loop running: {:.2} % of a core (target at most 1 %), {:.2} engine calls/s (target at most 1)", worst.0, worst.1);
    Ok(())
}

struct Measured {
    /// Percent of one core.
    platform_cpu: f64,
    engine_cpu: f64,
    calls_per_second: f64,
}

/// How long the platform settles before a window: its start-up work, and the first look of each
/// running deployment's health watcher (one probe interval), are not idleness.
const SETTLE: Duration = Duration::from_secs(12);

/// Lets the platform settle, then measures one window.
async fn measure(platform: &Platform, proxy: &CountingProxy, window: Duration) -> anyhow::Result<Measured> {
    platform.node_online().await?;
    tokio::time::sleep(SETTLE).await;
    let pid = platform.pid().context("the platform has exited")?;
    let engine = engine_pid();
    let (cpu0, engine0, calls0, t0) = (cpu_ticks(pid)?, engine.and_then(|p| cpu_ticks(p).ok()), proxy.requests(), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, engine1, calls1, elapsed) = (cpu_ticks(pid)?, engine.and_then(|p| cpu_ticks(p).ok()), proxy.requests(), t0.elapsed().as_secs_f64());
    let percent = |ticks: u64| ticks as f64 / TICKS / elapsed * 100.0;
    Ok(Measured {
        platform_cpu: percent(cpu1 - cpu0),
        engine_cpu: match (engine0, engine1) {
            (Some(a), Some(b)) => percent(b.saturating_sub(a)),
            _ => 0.0,
        },
        calls_per_second: (calls1 - calls0) as f64 / elapsed,
    })
}

/// `count` deployments of one small service with an HTTP health check, all RUNNING.
async fn deploy(platform: &Platform, count: usize) -> anyhow::Result<Vec<String>> {
    platform
        .gql(
            "mutation { createRegistry(input: {name: \"local\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"nullops\"}) { name } }",
            json!({}),
        )
        .await?;
    let input = json!({"name": "idle", "registry": "local", "image": "nullops/demo", "tagMode": "PINNED", "tag": "v1", "port": 8080,
        "healthCheck": {"httpPath": "/healthz", "intervalSeconds": 10}});
    platform.gql("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await?;
    platform.gql("mutation { createProject(input: {name: \"idle\", environments: [\"local\"], cpuMillis: 50, memoryMib: 16}) { name } }", json!({})).await?;
    let pipeline = json!({"nodes": [{"id": "idle", "service": "idle"}]});
    platform.gql("mutation($p: PipelineInput!) { savePipeline(project: \"idle\", pipeline: $p) { version } }", json!({"p": pipeline})).await?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let created = platform.gql("mutation { createDeployment(project: \"idle\", environment: \"local\") { id } }", json!({})).await?;
        ids.push(created["createDeployment"]["id"].as_str().context("no id")?.to_owned());
    }
    for id in &ids {
        platform.reaches(id, DeploymentStatus::Running.name()).await?;
    }
    Ok(ids)
}

/// User and system time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').context("an unreadable /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("an unreadable /proc stat");
    // After the name: state(0) ... utime(11) stime(12).
    Ok(field(11)? + field(12)?)
}

/// The Docker engine's process, when this machine runs it.
fn engine_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        (std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim() == "dockerd").then_some(pid)
    })
}

/// A Unix socket in front of the engine's that counts the HTTP requests passing through.
struct CountingProxy {
    path: PathBuf,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(path: &Path) -> anyhow::Result<CountingProxy> {
        let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    if let Ok(engine) = UnixStream::connect(ENGINE_SOCKET).await {
                        let _ = relay(client, engine, counted).await;
                    }
                });
            }
        });
        Ok(CountingProxy { path: path.to_owned(), requests })
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn env(&self, paused: bool) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", format!("unix://{}", self.path.display())),
            (PAUSE_RECONCILE, if paused { "1" } else { "0" }.to_owned()),
            ("NULLOPS_NO_DEMO", "true".to_owned()),
        ]
    }
}

/// Copies both ways; counts each request head the client sends.
async fn relay(client: UnixStream, engine: UnixStream, requests: Arc<AtomicU64>) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut engine_read, mut engine_write) = engine.into_split();
    let up = async move {
        let mut heads = HeadCounter::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return engine_write.shutdown().await;
            }
            requests.fetch_add(heads.feed(&buf[..n]), Ordering::Relaxed);
            engine_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async move { tokio::io::copy(&mut engine_read, &mut client_write).await.map(drop) };
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// Follows HTTP/1.1 requests on one connection: heads, and bodies by Content-Length. A chunked
/// body or an upgraded connection (attach, exec) is passed through uncounted from there on.
#[derive(Default)]
struct HeadCounter {
    head: Vec<u8>,
    body_left: u64,
    opaque: bool,
}

impl HeadCounter {
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut counted = 0;
        while !bytes.is_empty() && !self.opaque {
            if self.body_left > 0 {
                let skip = (self.body_left as usize).min(bytes.len());
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            if self.head.ends_with(b"\r\n\r\n") {
                counted += 1;
                let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                self.head.clear();
                let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
                self.body_left = header("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
                self.opaque = header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) || header("upgrade:").is_some();
            } else if self.head.len() > 64 * 1024 {
                self.opaque = true;
            }
        }
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_request_heads_across_reads_and_skips_bodies() {
        let mut c = HeadCounter::default();
        let two = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 22\r\n\r\n";
        assert_eq!(c.feed(two), 2);
        // A body that looks like a request is not one.
        assert_eq!(c.feed(b"GET / HTTP/1.1\r\n\r\n1234"), 0);
        assert_eq!(c.feed(b"GET /a HTTP/1.1\r\n"), 0);
        assert_eq!(c.feed(b"\r\n"), 1);
        let mut attach = HeadCounter::default();
        assert_eq!(attach.feed(b"POST /attach HTTP/1.1\r\nUpgrade: tcp\r\n\r\nGET / HTTP/1.1\r\n\r\n"), 1);
    }
}
