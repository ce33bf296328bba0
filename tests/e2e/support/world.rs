//! A platform with one online node and a catalog to deploy from, for the deployment tests:
//! `nullops up`'s own agent in embedded mode, an agent container (the `nullops/agent` image) in
//! production mode.

use std::time::Duration;

use serde_json::{json, Value};

use super::lab::Lab;
use super::{docker, Backend, Mode, Server};

pub const REGISTRY: &str = "127.0.0.1:5050";
pub const SECRET: &str = "pw-Zx81-never-shown";

pub const CREATE: &str =
    "mutation($p: String!, $e: String!, $n: String, $t: [TagChoice!]) { createDeployment(project: $p, environment: $e, name: $n, tags: $t) { id name state } }";
pub const DEPLOYMENT: &str = "query($id: ID!) { deployment(id: $id) { id name state attempt pipelineVersion steps { id state detail } \
    services { name tag healthy healthDetail nodePort url cpuMillicores memoryBytes } failure { step reason exitCode oomKilled } expiresAt expiresInSeconds \
    history { eventType actor summary } } }";
pub const SAVE: &str = "mutation($p: String!, $i: PipelineInput!) { savePipeline(project: $p, pipeline: $i) { version } }";

/// A platform with one online node, and a catalog to deploy from.
pub struct World {
    pub server: Server,
    pub admin: String,
    pub environment: &'static str,
    /// The node agent's scope: every container and network it makes carries it.
    pub scope: String,
    /// Production mode's agent container and its network.
    pub lab: Option<Lab>,
    pub node_id: String,
    pub backend: Backend,
}

impl World {
    pub async fn new(mode: Mode) -> World {
        Self::with_env(mode, &[]).await
    }

    /// A world whose platform runs with `env` set.
    pub async fn with_env(mode: Mode, env: &[(&str, &str)]) -> World {
        let backend = Backend::new(mode).await;
        let server = Self::start(&backend, env).await;
        let (environment, lab) = match mode {
            Mode::Embedded => ("local", None),
            Mode::Production => ("staging", Some(Lab::new())),
        };
        let admin = server.admin().await;
        let mut world = World { server, admin, environment, scope: String::new(), lab, node_id: String::new(), backend };
        world.setup_node().await;
        world.setup_catalog().await;
        world
    }

    /// Embedded mode runs its local agent, production mode an agent container of the lab.
    async fn start(backend: &Backend, env: &[(&str, &str)]) -> Server {
        let mut all = env.to_vec();
        if backend.mode == Mode::Embedded {
            all.push(("NULLOPS_NO_LOCAL_AGENT", "false"));
        }
        Server::start_with(backend, &all).await
    }

    /// Starts the platform again on the same backend (after it died or was killed), with
    /// `env`, and signs in again.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        self.server.kill_now();
        self.server = Self::start(&self.backend, env).await;
        self.admin = self.server.admin().await;
    }

    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        self.server.ok(Some(&self.admin), query, variables).await
    }

    pub async fn setup_node(&mut self) {
        if let Some(lab) = self.lab.as_mut() {
            self.server.ok(Some(&self.admin), "mutation { createEnvironment(input: {name: \"staging\", baseDomain: \"qa.test\"}) { name } }", json!({})).await;
            let added = self
                .server
                .ok(Some(&self.admin), "mutation($h: String!) { addNode(environment: \"staging\", host: $h) { token } }", json!({"h": lab.ip(10)}))
                .await;
            lab.run_agent("a", 10, added["addNode"]["token"].as_str().unwrap(), &[]);
            self.scope = lab.scope("a");
        }
        let (server, admin, env) = (&self.server, &self.admin, self.environment);
        let query = "query($e: String!) { nodes(environment: $e) { id status usage { memoryTotalBytes } } }";
        let node = super::until(Duration::from_secs(30), "the node online with its size reported", || async {
            let node = server.ok(Some(admin), query, json!({"e": env})).await["nodes"][0].clone();
            if node["status"] == "ONLINE" && node["usage"]["memoryTotalBytes"].is_u64() {
                Ok(node)
            } else {
                Err(node.to_string())
            }
        })
        .await;
        self.node_id = node["id"].as_str().unwrap().to_owned();
        if self.lab.is_none() {
            // `nullops up`'s agent: scope `local-` and the node id's first 12 hex digits.
            self.scope = format!("local-{}", &node["id"].as_str().unwrap().replace('-', "")[..12]);
        }
    }

    pub async fn setup_catalog(&self) {
        let version = env!("CARGO_PKG_VERSION");
        self.ok(
            "mutation { createRegistry(input: {name: \"local\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"nullops\"}) { name } }",
            json!({}),
        )
        .await;
        let health = json!({"httpPath": "/healthz", "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3});
        for (name, image, mode, tag) in
            [("web", "nullops/demo", "SELECTABLE", None), ("api", "nullops/demo", "PINNED", Some("v2")), ("hungry", "nullops-test/hungry", "PINNED", Some("1"))]
        {
            let input = json!({"name": name, "registry": "local", "image": image, "tagMode": mode, "tag": tag, "tagPattern": if tag.is_none() { Some("v*") } else { None },
                "port": 8080, "healthCheck": health, "env": if name == "web" { json!([{"name": "GREETING", "value": "${{ secrets.DB_PASSWORD }}"}]) } else { json!([]) }});
            self.ok("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await;
        }
        let plugins = [
            ("http-check", "nullops/http-check", version, json!({"type": "object"}), 60, true),
            (
                "script",
                "nullops-test/script-plugin",
                "1",
                json!({"type": "object", "properties": {"mode": {"type": "string"}, "expect": {"type": "string"}}}),
                300,
                false,
            ),
            ("script-short", "nullops-test/script-plugin", "1", json!({"type": "object"}), 3, false),
        ];
        for (name, repository, tag, schema, timeout, joins) in plugins {
            let input = json!({"name": name, "registry": "local", "repository": repository, "tag": tag, "parametersSchema": schema,
                "cpuMillis": 200, "memoryMib": 64, "timeoutSeconds": timeout, "joinsDeploymentNetwork": joins});
            self.ok("mutation($i: PluginInput!) { createPlugin(input: $i) { name } }", json!({"i": input})).await;
        }
        let project =
            |name: &str, cpu: u64, memory: u64| json!({"i": {"name": name, "environments": [self.environment], "cpuMillis": cpu, "memoryMib": memory}});
        self.ok("mutation($i: ProjectInput!) { createProject(input: $i) { name } }", project("shop", 20, 256)).await;
        self.ok("mutation { setSecret(project: \"shop\", name: \"DB_PASSWORD\", value: \"pw-Zx81-never-shown\") { name } }", json!({})).await;
    }

    pub async fn save(&self, project: &str, pipeline: Value) -> u64 {
        self.ok(SAVE, json!({"p": project, "i": pipeline})).await["savePipeline"]["version"].as_u64().unwrap()
    }

    pub async fn create(&self, project: &str, tags: Value) -> Value {
        let r = self.ok(CREATE, json!({"p": project, "e": self.environment, "t": tags})).await;
        r["createDeployment"].clone()
    }

    pub async fn deployment(&self, id: &str) -> Value {
        self.ok(DEPLOYMENT, json!({"id": id})).await["deployment"].clone()
    }

    /// Waits until the deployment is in `state`; returns it then. Fails at once if it ends in
    /// another final state.
    pub async fn reaches(&self, id: &str, state: &str, within: Duration) -> Value {
        super::until(within, &format!("deployment {id} {state}"), || async {
            let d = self.deployment(id).await;
            if d["state"] == state {
                return Ok(d);
            }
            let ended = ["FAILED", "CANCELLED", "DELETED"];
            assert!(!ended.contains(&d["state"].as_str().unwrap()), "expected {state}, but it ended {}: {d}", d["state"]);
            Err(d.to_string())
        })
        .await
    }

    /// Containers and networks on the engine that carry the deployment's label.
    pub fn leftovers(&self, id: &str) -> String {
        let label = format!("label=nullops.deployment={}", id.replace('-', ""));
        let containers = docker(&["ps", "-aq", "--filter", &label]).unwrap();
        let networks = docker(&["network", "ls", "-q", "--filter", &label]).unwrap();
        format!("{containers}{networks}")
    }

    pub fn container(&self, id: &str, service: &str) -> String {
        format!("nullops-{}-{}-{service}", self.scope, id.replace('-', ""))
    }

    pub fn network(&self, id: &str) -> String {
        format!("nullops-{}-{}", self.scope, id.replace('-', ""))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The platform and agent first, so nothing new starts behind the clean-up.
        self.server.kill_now();
        if let Some(lab) = &self.lab {
            let _ = docker(&["rm", "-f", &lab.name("a")]);
        }
        super::remove_scope(&self.scope);
    }
}

/// Whether `url` answers from inside Docker network `network` within `seconds` (asked with the
/// http-check example plugin).
pub fn answers_from(network: &str, url: &str, seconds: u64) -> bool {
    use std::io::Write;
    let image = format!("{REGISTRY}/nullops/http-check:{}", env!("CARGO_PKG_VERSION"));
    let mut child = std::process::Command::new("docker")
        .args(["run", "-i", "--rm", "--network", network, &image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let input = format!(r#"{{"parameters": {{"url": "{url}", "timeout_secs": {seconds}, "interval_ms": 200}}}}"#);
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap().status.success()
}

/// GET `http://127.0.0.1:port/` from the test: the service through its published port.
pub async fn body_at(port: u64) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/")).await.expect("the published port answers");
    response.text().await.unwrap()
}

pub fn step<'a>(d: &'a Value, id: &str) -> &'a Value {
    d["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id} in {d}"))
}

pub fn service<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no service {name} in {d}"))
}

pub const MINUTE: Duration = Duration::from_secs(60);
