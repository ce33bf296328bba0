//! `nullops bench ingress`: wrk on loopback against one upstream (the example echo service,
//! deployed by a `nullops up` child process and published on its node port) three ways: hit
//! directly (the limit), through nginx configured as the same reverse proxy (keep-alive upstream
//! pool, Host and X-Forwarded-* headers), and through the NullOps ingress. Rounds rotate the
//! order; medians of requests/s and p99 latency are compared.

use nullops_domain::deployment::DeploymentStatus;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::bench_deploy::Platform;

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Load {
    requests_per_sec: f64,
    p99_ms: f64,
}

/// The wrk command's figures from its `--latency` output.
fn parse_wrk(output: &str) -> anyhow::Result<Load> {
    let requests_per_sec =
        output.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok()).context("wrk printed no Requests/sec")?;
    let p99 = output.lines().find_map(|l| l.trim().strip_prefix("99%")).map(str::trim).context("wrk printed no 99th percentile")?;
    let (number, scale) = if let Some(v) = p99.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = p99.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = p99.strip_suffix('s') {
        (v, 1000.0)
    } else {
        bail!("wrk's 99th percentile has no unit: {p99}")
    };
    let p99_ms = number.parse::<f64>().context("wrk's 99th percentile is not a number")? * scale;
    if output.contains("Non-2xx or 3xx responses") || output.contains("Socket errors") {
        bail!("wrk saw errors:\n{output}");
    }
    Ok(Load { requests_per_sec, p99_ms })
}

async fn wrk(url: &str, host: &str, connections: usize, seconds: u64) -> anyhow::Result<Load> {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-H", &format!("Host: {host}"), url])
        .output()
        .await
        .context("cannot run wrk (infra/setup.sh installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// nginx as the same reverse proxy: two workers (as the ingress has two runtime threads), no
/// access log, an idle upstream pool, the same forwarding headers.
fn nginx_conf(dir: &Path, listen: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  \
         upstream service {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      \
         proxy_pass http://service;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n      \
         proxy_set_header X-Forwarded-Host $http_host;\n    }}\n  }}\n}}\n"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `url` answers 200 with `host` (bounded).
async fn answers(url: &str, host: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(url).header("Host", host).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} (Host {host}) does not answer 200");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn ingress(rounds: usize, seconds: u64, connections: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("nullops-bench-ingress-{}", uuid::Uuid::now_v7().simple()));
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let platform = Platform::start(&dir.join("data")).await?;
    platform.node_online().await?;
    platform
        .gql(
            "mutation { createRegistry(input: {name: \"local\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"nullops\"}) { name } }",
            json!({}),
        )
        .await?;
    let echo = json!({"name": "echo", "registry": "local", "image": "nullops/echo", "tagMode": "PINNED", "tag": env!("CARGO_PKG_VERSION"), "port": 8080,
        "healthCheck": {"httpPath": "/healthz", "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3}});
    platform.gql("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": echo})).await?;
    platform
        .gql("mutation { createProject(input: {name: \"bench\", environments: [\"local\"], cpuMillis: 1000, memoryMib: 256}) { name } }", json!({}))
        .await?;
    platform.gql("mutation { savePipeline(project: \"bench\", pipeline: {nodes: [{id: \"echo\", service: \"echo\"}]}) { version } }", json!({})).await?;
    let created = platform.gql("mutation { createDeployment(project: \"bench\", environment: \"local\", name: \"bench\") { id } }", json!({})).await?;
    let id = created["createDeployment"]["id"].as_str().context("no id")?.to_owned();
    platform.reaches(&id, DeploymentStatus::Running.name()).await?;
    let d = platform.gql("query($id: ID!) { deployment(id: $id) { services { nodePort } } }", json!({"id": id})).await?;
    let node_port = d["deployment"]["services"][0]["nodePort"].as_u64().and_then(|p| u16::try_from(p).ok()).context("no node port")?;

    let nginx_port = free_port()?;
    std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir, nginx_port, node_port))?;
    let mut nginx = tokio::process::Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run nginx (infra/setup.sh installs it)")?;

    let host = "echo.bench.local.localhost";
    let targets = [
        ("upstream, direct", format!("http://127.0.0.1:{node_port}/healthz")),
        ("nginx", format!("http://127.0.0.1:{nginx_port}/healthz")),
        ("nullops ingress", format!("http://{}/healthz", platform.ingress)),
    ];
    for (_, url) in &targets {
        answers(url, host).await?;
        // Warm-up: connections, pools, caches.
        wrk(url, host, connections, 1).await?;
    }
    let mut loads: Vec<Vec<Load>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            loads[i].push(wrk(&targets[i].1, host, connections, seconds).await?);
        }
    }
    let _ = nginx.kill().await;
    platform.gql("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await?;
    platform.reaches(&id, DeploymentStatus::Deleted.name()).await?;

    let figures: Vec<(f64, f64)> =
        loads.iter().map(|l| (median(l.iter().map(|x| x.requests_per_sec).collect()), median(l.iter().map(|x| x.p99_ms).collect()))).collect();
    println!("wrk -t2 -c{connections} -d{seconds}s, GET /healthz of the echo service, {rounds} rounds, medians:");
    for ((name, _), (rps, p99)) in targets.iter().zip(&figures) {
        println!("  {name:18} {rps:10.0} requests/s   p99 {p99:7.2} ms");
    }
    let ((up_rps, up_p99), (nginx_rps, nginx_p99), (ours_rps, ours_p99)) = (figures[0], figures[1], figures[2]);
    println!("  ingress / nginx:    requests/s {:.2}x (target: at least 0.9x)   p99 {:.2}x (target: at most 1.2x)", ours_rps / nginx_rps, ours_p99 / nginx_p99);
    println!("  nginx / upstream:   requests/s {:.2}x   p99 {:.2}x", nginx_rps / up_rps, nginx_p99 / up_p99);
    println!("  ingress / upstream: requests/s {:.2}x   p99 {:.2}x", ours_rps / up_rps, ours_p99 / up_p99);
    drop(platform);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_figures_are_read_in_their_units() {
        let out = "  Latency Distribution\n     50%  180.00us\n     75%  250.00us\n     90%    1.20ms\n     99%    3.50ms\n  100 requests in 1.00s, 10.00KB read\nRequests/sec:  12345.67\nTransfer/sec:      1.00MB\n";
        let load = super::parse_wrk(out).unwrap();
        assert_eq!((load.requests_per_sec, load.p99_ms), (12345.67, 3.5));
        assert_eq!(super::parse_wrk(&out.replace("3.50ms", "812.00us")).unwrap().p99_ms, 0.812);
        assert!(super::parse_wrk(&format!("{out}  Non-2xx or 3xx responses: 4\n")).is_err());
    }
}
