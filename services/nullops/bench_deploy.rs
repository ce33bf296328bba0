//! `nullops bench deploy`: time from `createDeployment` to RUNNING for a project of three
//! services whose images are already on the node, against `docker-compose up -d` of the same
//! three containers until Docker reports all of them healthy (what compose v2's `--wait` does;
//! this machine has compose v1, so the wait is the same polling done here).
//!
//! Both sides run the same image with the same limits and the same health check (an HTTP GET
//! of /healthz from inside the container), probed every 200 ms while starting. Rounds alternate
//! which side goes first; medians are compared. The platform is a `nullops up` child process
//! with its local agent, driven over GraphQL like any client.
//!
//! Then the same three services from an image the node does not hold (a fresh image per round,
//! a 16 MiB layer of its own): pulled by the run (a selectable tag, chosen at deploy time), or
//! prefetched (a pinned tag the pipeline names, so the node pulls it as soon as the service
//! changes, and the deployment is made once the node says it holds it).

use nullops_domain::deployment::DeploymentStatus;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const IMAGE: &str = "127.0.0.1:5050/nullops/demo:v1";
const PASSWORD: &str = "bench-admin-password";
/// The health check both sides run in the containers.
const PROBE: &str = "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc 127.0.0.1 8080 | /bin/busybox grep -q 200";
/// How often both sides are polled for "all healthy".
const POLL: Duration = Duration::from_millis(20);
const ROUND_LIMIT: Duration = Duration::from_secs(120);

/// A `nullops up` child process with its local agent, driven over GraphQL.
pub(crate) struct Platform {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Where its ingress listens.
    pub ingress: std::net::SocketAddr,
    _child: tokio::process::Child,
}

impl Platform {
    pub async fn start(data_dir: &Path) -> anyhow::Result<Platform> {
        Self::start_with(data_dir, &[]).await
    }

    /// Starts it with more variables in its environment.
    pub async fn start_with(data_dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Platform> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NULLOPS_ADMIN_PASSWORD", PASSWORD)
            .env("NULLOPS_NO_LOCAL_AGENT", "false")
            .env("NULLOPS_LOG", "warn")
            .env("NULLOPS_INGRESS_LISTEN", "127.0.0.1:0")
            // The benchmarks' registry is the machine's own.
            .env("NULLOPS_ALLOWED_PRIVATE_TARGETS", "127.0.0.0/8")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (ingress, addr) = tokio::time::timeout(Duration::from_secs(60), async {
            let mut ingress = None;
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("NullOps ingress is up: http://") {
                    ingress = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                if let Some(rest) = line.strip_prefix("NullOps is up: http://") {
                    let ingress = ingress.context("nullops up announced no ingress")?;
                    return Ok((ingress, rest.split('/').next().unwrap_or_default().to_owned()));
                }
            }
            bail!("nullops up exited before listening")
        })
        .await
        .context("nullops up did not start within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut platform = Platform { http: reqwest::Client::new(), url: format!("http://{addr}/graphql"), token: String::new(), ingress, _child: child };
        let login = platform.gql("mutation($p: String!) { login(username: \"admin\", password: $p) { token } }", json!({"p": PASSWORD})).await?;
        platform.token = login["login"]["token"].as_str().context("no token")?.to_owned();
        Ok(platform)
    }

    /// Its GraphQL endpoint (http://…/graphql).
    pub fn graphql_url(&self) -> &str {
        &self.url
    }

    /// The admin's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }

    /// Kills it and waits until it has exited (its data directory is free again).
    pub async fn stop(mut self) {
        let _ = self._child.kill().await;
    }

    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value =
            self.http.post(&self.url).bearer_auth(&self.token).json(&json!({"query": query, "variables": variables})).send().await?.json().await?;
        if let Some(errors) = response.get("errors") {
            bail!("{query}: {errors}");
        }
        Ok(response["data"].clone())
    }

    pub async fn state(&self, id: &str) -> anyhow::Result<String> {
        let d = self.gql("query($id: ID!) { deployment(id: $id) { state failure { reason } } }", json!({"id": id})).await?;
        if d["deployment"]["state"] == DeploymentStatus::Failed.name() {
            bail!("the deployment failed: {}", d["deployment"]["failure"]["reason"]);
        }
        Ok(d["deployment"]["state"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the local node is online and has reported its size.
    pub async fn node_online(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = self.gql("{ nodes(environment: \"local\") { status usage { cpuCores } } }", json!({})).await?;
            if nodes["nodes"][0]["status"] == "ONLINE" && nodes["nodes"][0]["usage"]["cpuCores"].is_u64() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the local node is not online: {nodes}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn setup(&self) -> anyhow::Result<()> {
        self.node_online().await?;
        self.gql(
            "mutation { createRegistry(input: {name: \"local\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"nullops\"}) { name } }",
            json!({}),
        )
        .await?;
        let health = json!({"command": ["/bin/busybox", "sh", "-c", PROBE], "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3});
        for name in ["one", "two", "three"] {
            let input =
                json!({"name": name, "registry": "local", "image": "nullops/demo", "tagMode": "PINNED", "tag": "v1", "port": 8080, "healthCheck": health});
            self.gql("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await?;
        }
        self.gql("mutation { createProject(input: {name: \"bench\", environments: [\"local\"], cpuMillis: 600, memoryMib: 384}) { name } }", json!({})).await?;
        let pipeline = json!({"nodes": [{"id": "one", "service": "one"}, {"id": "two", "service": "two"}, {"id": "three", "service": "three"}]});
        self.gql("mutation($p: PipelineInput!) { savePipeline(project: \"bench\", pipeline: $p) { version } }", json!({"p": pipeline})).await?;
        Ok(())
    }

    /// One deployment of project `bench`: the time to RUNNING; then deleted and waited for (untimed).
    async fn round(&self) -> anyhow::Result<Duration> {
        self.timed("bench", json!([])).await
    }

    /// Polls deployment `id` until it is in `state` (bounded; an error if it fails).
    pub async fn reaches(&self, id: &str, state: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.state(id).await? != state {
            if start.elapsed() > ROUND_LIMIT {
                bail!("deployment {id} not {state} within {ROUND_LIMIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

/// The compose file of the baseline: the same three containers, limits and health check.
fn compose_file() -> String {
    let mut services = String::new();
    for name in ["one", "two", "three"] {
        services.push_str(&format!(
            "  {name}:\n    image: {IMAGE}\n    ports: [\"8080\"]\n    mem_limit: 128m\n    cpus: 0.2\n    healthcheck:\n      test: [\"CMD\", \"/bin/busybox\", \"sh\", \"-c\", \"{}\"]\n      interval: 200ms\n      timeout: 1s\n      retries: 3\n",
            PROBE.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    format!("version: \"2.4\"\nservices:\n{services}")
}

async fn docker_compose(dir: &Path, project: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("docker-compose")
        .arg("-p")
        .arg(project)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("docker-compose {args:?} failed");
    }
    Ok(())
}

/// `docker-compose up -d`, then until Docker reports every container healthy.
async fn compose_round(dir: &Path, project: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    docker_compose(dir, project, &["up", "-d"]).await?;
    loop {
        let out = tokio::process::Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=com.docker.compose.project={project}"), "--filter", "health=healthy"])
            .output()
            .await?;
        if String::from_utf8_lossy(&out.stdout).lines().count() == 3 {
            break;
        }
        if start.elapsed() > ROUND_LIMIT {
            bail!("compose services not healthy within {ROUND_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let took = start.elapsed();
    docker_compose(dir, project, &["down", "-t", "0"]).await?;
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A fresh image of the demo's with a 16 MiB layer of its own, pushed and then removed from the
/// engine, so a node that wants it must pull that layer. Its tag.
async fn fresh_image(dir: &Path) -> anyhow::Result<String> {
    let tag = format!("b{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    let context = dir.join(format!("image-{tag}"));
    std::fs::create_dir_all(&context)?;
    let blob: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ tag.as_bytes()[i as usize % tag.len()]).collect();
    std::fs::write(context.join("blob"), blob)?;
    std::fs::write(context.join("Dockerfile"), format!("FROM {IMAGE}\nCOPY blob /blob\n"))?;
    let image = format!("{PULL_REPOSITORY}:{tag}");
    for args in [vec!["build", "-q", "-t", &image, context.to_str().unwrap_or_default()], vec!["push", "-q", &image], vec!["rmi", &image]] {
        let out = tokio::process::Command::new("docker").args(&args).output().await?;
        if !out.status.success() {
            bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let _ = std::fs::remove_dir_all(&context);
    Ok(tag)
}

/// Where [`fresh_image`] pushes.
const PULL_REPOSITORY: &str = "127.0.0.1:5050/nullops/bench-pull";

impl Platform {
    /// Projects `cold` (three selectable services, the tag chosen per deployment: pulled by the
    /// run) and `warm` (three pinned services: prefetched once their tag changes).
    async fn setup_pulls(&self) -> anyhow::Result<()> {
        for (project, mode) in [("cold", "SELECTABLE"), ("warm", "PINNED")] {
            for i in 1..=3 {
                let input = pull_service(&format!("{project}{i}"), mode, (mode == "PINNED").then_some("v1"));
                self.gql("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await?;
            }
            self.gql(
                "mutation($p: String!) { createProject(input: {name: $p, environments: [\"local\"], cpuMillis: 600, memoryMib: 384}) { name } }",
                json!({"p": project}),
            )
            .await?;
            let nodes: Vec<Value> = (1..=3).map(|i| json!({"id": format!("s{i}"), "service": format!("{project}{i}")})).collect();
            self.gql(
                "mutation($p: String!, $i: PipelineInput!) { savePipeline(project: $p, pipeline: $i) { version } }",
                json!({"p": project, "i": {"nodes": nodes}}),
            )
            .await?;
        }
        Ok(())
    }

    /// A deployment of `project` with `tags`: the time to RUNNING; then deleted (untimed).
    async fn timed(&self, project: &str, tags: Value) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let created = self
            .gql(
                "mutation($p: String!, $t: [TagChoice!]) { createDeployment(project: $p, environment: \"local\", tags: $t) { id } }",
                json!({"p": project, "t": tags}),
            )
            .await?;
        let id = created["createDeployment"]["id"].as_str().context("no id")?.to_owned();
        self.reaches(&id, DeploymentStatus::Running.name()).await?;
        let took = start.elapsed();
        self.gql("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await?;
        self.reaches(&id, DeploymentStatus::Deleted.name()).await?;
        Ok(took)
    }

    /// Cold: a fresh image, pulled by the run.
    async fn cold_round(&self, dir: &Path) -> anyhow::Result<Duration> {
        let tag = fresh_image(dir).await?;
        let tags: Vec<Value> = (1..=3).map(|i| json!({"service": format!("cold{i}"), "tag": tag})).collect();
        self.timed("cold", json!(tags)).await
    }

    /// Prefetched: a fresh image pinned by the warm services, held by the node before timing.
    async fn warm_round(&self, dir: &Path) -> anyhow::Result<Duration> {
        let tag = fresh_image(dir).await?;
        for i in 1..=3 {
            let input = pull_service(&format!("warm{i}"), "PINNED", Some(&tag));
            self.gql("mutation($i: ServiceInput!) { updateService(input: $i) { name } }", json!({"i": input})).await?;
        }
        let wanted = format!("{PULL_REPOSITORY}:{tag}");
        let deadline = Instant::now() + ROUND_LIMIT;
        loop {
            let nodes = self.gql("{ nodes(environment: \"local\") { images { image present } } }", json!({})).await?;
            let held = nodes["nodes"][0]["images"].as_array().is_some_and(|all| all.iter().any(|i| i["image"] == wanted.as_str() && i["present"] == true));
            if held {
                break;
            }
            if Instant::now() > deadline {
                bail!("the node did not prefetch {wanted}: {nodes}");
            }
            tokio::time::sleep(POLL).await;
        }
        self.timed("warm", json!([])).await
    }
}

fn pull_service(name: &str, mode: &str, tag: Option<&str>) -> Value {
    let health = json!({"command": ["/bin/busybox", "sh", "-c", PROBE], "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3});
    json!({"name": name, "registry": "local", "image": "nullops/bench-pull", "tagMode": mode, "tag": tag, "port": 8080, "healthCheck": health})
}

pub async fn deploy(rounds: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("nullops-bench-deploy-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("docker-compose.yml"), compose_file())?;
    let project = format!("nullopsbench{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let platform = Platform::start(&dir.join("data")).await?;
    platform.setup().await?;
    // The image is on the node before timing starts, on both sides.
    let pulled = tokio::process::Command::new("docker").args(["pull", "-q", IMAGE]).stdout(Stdio::null()).status().await?;
    if !pulled.success() {
        bail!("cannot pull {IMAGE}");
    }
    // One untimed round each: first-use costs (the network driver, page cache) are not the subject.
    platform.round().await?;
    compose_round(&dir, &project).await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            ours.push(platform.round().await?);
            theirs.push(compose_round(&dir, &project).await?);
        } else {
            theirs.push(compose_round(&dir, &project).await?);
            ours.push(platform.round().await?);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("createDeployment to RUNNING, 3 services, images on the node ({rounds} rounds, medians):");
    println!(
        "  docker-compose up -d until healthy: {:8.0} ms  (all: {:?})",
        ms(median(theirs.clone())),
        theirs.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!("  nullops:                            {:8.0} ms  (all: {:?})", ms(median(ours.clone())), ours.iter().map(|d| ms(*d).round()).collect::<Vec<_>>());
    println!("  ratio nullops / compose:            {:8.2}x  (target: at most 1.2x)", ms(median(ours)) / ms(median(theirs)));

    // Pulled by the run, or held before it: alternating, fresh images each round.
    platform.setup_pulls().await?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            cold.push(platform.cold_round(&dir).await?);
            warm.push(platform.warm_round(&dir).await?);
        } else {
            warm.push(platform.warm_round(&dir).await?);
            cold.push(platform.cold_round(&dir).await?);
        }
    }
    println!("createDeployment to RUNNING, 3 services of an image with a 16 MiB layer the node lacked ({rounds} rounds, medians):");
    println!("  pulled by the run:                  {:8.0} ms  (all: {:?})", ms(median(cold.clone())), cold.iter().map(|d| ms(*d).round()).collect::<Vec<_>>());
    println!("  prefetched before:                  {:8.0} ms  (all: {:?})", ms(median(warm.clone())), warm.iter().map(|d| ms(*d).round()).collect::<Vec<_>>());
    println!("  ratio prefetched / pulled:          {:8.2}x", ms(median(warm)) / ms(median(cold)));
    drop(platform);
    let _ = tokio::process::Command::new("sh")
        .args(["-c", &format!("docker images -q {PULL_REPOSITORY} | xargs -r docker rmi -f")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
