//! The ingress end to end: `http://SERVICE.DEPLOYMENT.ENVIRONMENT.BASE-DOMAIN` through the
//! `nullops` binary's own ingress, on real Docker and the real registry. A deployment's URL
//! answers with its service's own response once it runs, with forwarding headers, pooled
//! upstream connections, WebSockets and bodies streamed both ways; it stops answering after a
//! delete and answers again when recreated under its name; an offline node gives 503 and its
//! return routes again, on every ingress process sharing the backends; hostile hosts and
//! ambiguous framings are refused, not forwarded; TLS terminates with a configured certificate.

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{Backend, Mode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const CREATE: &str = "mutation($p: String!, $e: String!, $n: String) { createDeployment(project: $p, environment: $e, name: $n) { id } }";
const DEPLOYMENT: &str = "query($id: ID!) { deployment(id: $id) { state services { name url nodePort } } }";
const MINUTE: Duration = Duration::from_secs(60);
/// How long a change may take to reach the ingress: generous, for a loaded machine. What it
/// takes is printed, not asserted.
const PATIENCE: Duration = Duration::from_secs(30);

/// A platform with one online node and a catalog: project `shop` runs the example echo service
/// and the demo web service; project `broken` fails after starting web.
struct World {
    server: Server,
    admin: String,
    environment: &'static str,
    scope: String,
    /// Production mode: the node's agent, a process on this host.
    agent: Option<HostAgent>,
    _backend: Backend,
}

impl World {
    async fn new(mode: Mode, env: &[(&str, &str)]) -> World {
        let backend = Backend::new(mode).await;
        let mut env = env.to_vec();
        if mode == Mode::Embedded {
            env.push(("NULLOPS_NO_LOCAL_AGENT", "false"));
        }
        let server = Server::start_with(&backend, &env).await;
        let admin = server.admin().await;
        let environment = if mode == Mode::Embedded { "local" } else { "staging" };
        let mut world = World { server, admin, environment, scope: String::new(), agent: None, _backend: backend };
        if mode == Mode::Production {
            world.ok("mutation { createEnvironment(input: {name: \"staging\", baseDomain: \"qa.test\"}) { name } }", json!({})).await;
            let port = free_port();
            let added = world.ok("mutation($p: Int!) { addNode(environment: \"staging\", host: \"127.0.0.1\", port: $p) { token } }", json!({"p": port})).await;
            let agent = HostAgent::new(port, added["addNode"]["token"].as_str().unwrap());
            world.scope = agent.scope.clone();
            world.agent = Some(agent);
            world.agent.as_mut().unwrap().start().await;
        }
        let node = world.node_online().await;
        if mode == Mode::Embedded {
            world.scope = format!("local-{}", &node["id"].as_str().unwrap().replace('-', "")[..12]);
        }
        world.setup_catalog().await;
        world
    }

    async fn ok(&self, query: &str, variables: Value) -> Value {
        self.server.ok(Some(&self.admin), query, variables).await
    }

    async fn node_online(&self) -> Value {
        let query = "query($e: String!) { nodes(environment: $e) { id status usage { memoryTotalBytes } } }";
        support::until(Duration::from_secs(30), "the node online with its size reported", || async {
            let node = self.ok(query, json!({"e": self.environment})).await["nodes"][0].clone();
            if node["status"] == "ONLINE" && node["usage"]["memoryTotalBytes"].is_u64() {
                Ok(node)
            } else {
                Err(node.to_string())
            }
        })
        .await
    }

    async fn setup_catalog(&self) {
        self.ok(
            "mutation { createRegistry(input: {name: \"local\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"nullops\"}) { name } }",
            json!({}),
        )
        .await;
        let health = json!({"httpPath": "/healthz", "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3});
        for (name, image, tag) in [("echo", "nullops/echo", env!("CARGO_PKG_VERSION")), ("web", "nullops/demo", "v1")] {
            let input = json!({"name": name, "registry": "local", "image": image, "tagMode": "PINNED", "tag": tag, "port": 8080, "healthCheck": health});
            self.ok("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await;
        }
        let script = json!({"name": "script", "registry": "local", "repository": "nullops-test/script-plugin", "tag": "1", "parametersSchema": {"type": "object"},
            "cpuMillis": 100, "memoryMib": 32, "timeoutSeconds": 60});
        self.ok("mutation($i: PluginInput!) { createPlugin(input: $i) { name } }", json!({"i": script})).await;
        let save = "mutation($p: String!, $i: PipelineInput!) { savePipeline(project: $p, pipeline: $i) { version } }";
        for (project, pipeline) in [
            ("shop", json!({"nodes": [{"id": "echo", "service": "echo"}, {"id": "web", "service": "web"}]})),
            (
                "broken",
                json!({"nodes": [{"id": "web", "service": "web"}, {"id": "fail", "plugin": "script", "parameters": {"mode": "fail"}}],
                "edges": [{"from": "web", "to": "fail"}]}),
            ),
        ] {
            let input = json!({"i": {"name": project, "environments": [self.environment], "cpuMillis": 100, "memoryMib": 128}});
            self.ok("mutation($i: ProjectInput!) { createProject(input: $i) { name } }", input).await;
            self.ok(save, json!({"p": project, "i": pipeline})).await;
        }
    }

    async fn create(&self, project: &str, name: &str) -> String {
        let created = self.ok(CREATE, json!({"p": project, "e": self.environment, "n": name})).await;
        created["createDeployment"]["id"].as_str().unwrap().to_owned()
    }

    async fn reaches(&self, id: &str, state: &str) -> Value {
        support::until(MINUTE, &format!("deployment {id} {state}"), || async {
            let d = self.ok(DEPLOYMENT, json!({"id": id})).await["deployment"].clone();
            if d["state"] == state {
                Ok(d)
            } else {
                Err(d.to_string())
            }
        })
        .await
    }

    async fn delete(&self, id: &str) {
        self.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", json!({"id": id})).await;
    }

    fn ingress(&self) -> SocketAddr {
        self.server.ingress.expect("the platform announced its ingress")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.server.kill_now();
        drop(self.agent.take());
        support::remove_scope(&self.scope);
    }
}

/// `nullops agent` as a process on this host, as on a real node: the ports it publishes are on
/// the address the node is registered with.
struct HostAgent {
    port: u16,
    token: String,
    scope: String,
    data_dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl HostAgent {
    fn new(port: u16, token: &str) -> HostAgent {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("nullops-agent-{id}"));
        HostAgent { port, token: token.to_owned(), scope: format!("ingress-{}", &id[20..]), data_dir, child: None }
    }

    async fn start(&mut self) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nullops"))
            .args(["agent", "--listen", &format!("127.0.0.1:{}", self.port), "--scope", &self.scope, "--data-dir"])
            .arg(&self.data_dir)
            .env("NULLOPS_AGENT_TOKEN", &self.token)
            .env("NULLOPS_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the agent");
        let (child, _, _) = support::spawn_until(child, "NullOps agent listening on ").await;
        self.child = Some(child);
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the agent");
        }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A response as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    error: Option<String>,
    body: String,
}

/// GET `url` through the ingress at `ingress` (its host resolved there, as DNS would).
async fn get(ingress: SocketAddr, url: &str) -> Answer {
    let host = reqwest::Url::parse(url).unwrap().host_str().unwrap().to_owned();
    let client = reqwest::Client::builder().resolve(&host, ingress).build().unwrap();
    let response = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let error = response.headers().get("x-nullops-error").map(|v| v.to_str().unwrap().to_owned());
    Answer { status, error, body: response.text().await.unwrap() }
}

/// Waits until `url` gets `status` (with the ingress's `error` code, if any) from `ingress`.
async fn answers(ingress: SocketAddr, url: &str, status: u16, error: Option<&str>, within: Duration) -> Answer {
    support::until(within, &format!("{url} answering {status} {error:?}"), || async {
        let answer = get(ingress, url).await;
        if answer.status == status && answer.error.as_deref() == error {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    })
    .await
}

/// Sends `request` as raw bytes and reads until the ingress closes the connection.
async fn raw(ingress: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.expect("the ingress closes the connection").unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads from `stream` until what was read holds `expected`.
async fn read_until(stream: &mut TcpStream, seen: &mut String, expected: &str) {
    let read = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(expected) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before {expected:?}; read: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.unwrap_or_else(|_| panic!("no {expected:?} within 10 s"));
}

fn url_of(d: &Value, service: &str) -> String {
    let s = d["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap_or_else(|| panic!("no {service} in {d}"));
    s["url"].as_str().unwrap().to_owned()
}

/// The `client:` line of the echo service's answer: the upstream connection it came on.
fn upstream_connection(body: &str) -> String {
    body.lines().find(|l| l.starts_with("client: ")).unwrap_or_else(|| panic!("no client line in {body}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_url_routes_live_streams_and_refuses_what_it_should() {
    let w = World::new(Mode::Embedded, &[]).await;
    let ingress = w.ingress();
    let url = format!("http://echo.pr-1.local.localhost:{}/", ingress.port());

    // Nothing deployed there yet: 404 naming the host, and nothing internal.
    let unknown = answers(ingress, &url, 404, Some("UNKNOWN_HOST"), PATIENCE).await;
    assert!(unknown.body.contains("No service is deployed at echo.pr-1.local.localhost"), "{}", unknown.body);
    assert!(!unknown.body.contains("127.0.0.1"), "{}", unknown.body);

    let id = w.create("shop", "pr-1").await;
    let d = w.reaches(&id, "RUNNING").await;
    let running = Instant::now();
    assert_eq!(url_of(&d, "echo"), url, "the URL depends only on service, deployment and environment");
    let echo = answers(ingress, &url, 200, None, PATIENCE).await;
    println!("routed {:?} after RUNNING showed", running.elapsed());
    for line in [
        "GET / HTTP/1.1",
        &format!("host: echo.pr-1.local.localhost:{}", ingress.port()),
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        &format!("x-forwarded-host: echo.pr-1.local.localhost:{}", ingress.port()),
    ] {
        assert!(echo.body.lines().any(|l| l == line), "{line:?} not in {}", echo.body);
    }
    assert_eq!(get(ingress, &url_of(&d, "web")).await.body.trim(), "nullops demo v1", "each service of the deployment has its own URL");
    // Two requests on two client connections share one idle upstream connection.
    let again = get(ingress, &url).await;
    assert_eq!(upstream_connection(&again.body), upstream_connection(&echo.body), "the upstream connection is pooled");

    // WebSocket through the ingress.
    let tcp = TcpStream::connect(ingress).await.unwrap();
    let ws_url = format!("ws://echo.pr-1.local.localhost:{}/ws", ingress.port());
    let (mut ws, response) = tokio_tungstenite::client_async(ws_url.as_str(), tcp).await.expect("the WebSocket upgrade passes through");
    assert_eq!(response.status(), 101);
    for text in ["hello through the ingress", "and again"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an echo").unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    ws.close(None).await.unwrap();

    // A body streamed both ways: the first chunk comes back before the request ends, and the
    // request stays in flight while the routing table changes under it.
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nHost: echo.pr-1.local.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(format!("{head}5\r\nfirst\r\n").as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "first").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let broken = w.create("broken", "pr-2").await;
    w.reaches(&broken, "FAILED").await;
    let failed_url = format!("http://web.pr-2.local.localhost:{}/", ingress.port());
    // The API says FAILED, so the ingress's refusal says so at once: it never answers from a
    // table older than the read models the API answered from.
    let failed = get(ingress, &failed_url).await;
    assert_eq!((failed.status, failed.error.as_deref()), (503, Some("NOT_RUNNING")), "{failed:?}");
    assert!(failed.body.contains("is FAILED"), "{}", failed.body);
    stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut stream, &mut seen, "second").await;

    // Hostile hosts get a clean refusal.
    let long = format!("{}.local.localhost", vec!["a".repeat(60); 5].join("."));
    for (host, status, code) in
        [(long.as_str(), "400", "BAD_HOST"), ("echo.pr_1.local.localhost", "400", "BAD_HOST"), ("echo.pr-1.local.localhost:99999", "400", "BAD_HOST")]
    {
        let answer = raw(ingress, format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")) && answer.contains(code), "Host {host}: {answer}");
    }
    let missing = raw(ingress, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 400") && missing.contains("BAD_HOST"), "{missing}");
    // An absolute-form target names the host (RFC 9112): here an address, which is no service.
    let node_port = d["services"][0]["nodePort"].as_u64().unwrap();
    let absolute =
        raw(ingress, format!("GET http://127.0.0.1:{node_port}/ HTTP/1.1\r\nHost: echo.pr-1.local.localhost\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(absolute.starts_with("HTTP/1.1 404") && absolute.contains("UNKNOWN_HOST") && !absolute.contains("x-forwarded-for"), "{absolute}");
    let connect = raw(ingress, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n").await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");

    // Request smuggling: ambiguous framings are refused and the connection closed, so the
    // request hidden in the body is never read, let alone forwarded.
    let host = "Host: echo.pr-1.local.localhost\r\n";
    let hidden = format!("GET /smuggled HTTP/1.1\r\n{host}\r\n");
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let answer = raw(ingress, format!("POST /echo HTTP/1.1\r\n{host}{framing}\r\n0\r\n\r\n{hidden}").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("AMBIGUOUS_FRAMING"), "{framing:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer only, the hidden request unread: {answer}");
    }
    // A well-framed request on the same kind of connection is served.
    let fine = raw(ingress, format!("POST /echo HTTP/1.1\r\n{host}Content-Length: 5\r\nConnection: close\r\n\r\nhello").as_bytes()).await;
    assert!(fine.starts_with("HTTP/1.1 200") && fine.contains("\r\nhello\r\n"), "{fine}");
    // A body whose chunks are not chunks is the client's error (400 with its own code), not
    // a failing service's (502).
    let chunked = raw(ingress, format!("POST /count HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n").as_bytes()).await;
    assert!(chunked.starts_with("HTTP/1.1 400") && chunked.contains("x-nullops-error: MALFORMED_BODY"), "{chunked}");
    let counted =
        raw(ingress, format!("POST /count HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes()).await;
    assert!(counted.starts_with("HTTP/1.1 200") && counted.contains("5 bytes"), "{counted}");
    // Heads hyper cannot take are refused by the ingress itself, with a code, and requests
    // before them on the connection are answered first.
    let long_target = format!("GET /{} HTTP/1.1\r\n{host}\r\n", "a".repeat(70_000));
    let large_header = format!("GET / HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n", "b".repeat(70_000));
    let not_http = format!("GET / HTTP/1.1\r\n{host}\r\nGET / HTTP/1.1\r\n{host}a header without a colon\r\n\r\n");
    for (request, status, code) in
        [(long_target.as_str(), "414", "URI_TOO_LONG"), (large_header.as_str(), "431", "HEADERS_TOO_LARGE"), (not_http.as_str(), "400", "MALFORMED_REQUEST")]
    {
        let answer = raw(ingress, request.as_bytes()).await;
        // The last answer: from the last line that is a status line.
        let start = answer.match_indices("HTTP/1.1 ").filter(|(i, _)| *i == 0 || answer[..*i].ends_with('\n')).map(|(i, _)| i).last().unwrap_or(0);
        let last = &answer[start + "HTTP/1.1 ".len()..];
        assert!(last.starts_with(status) && last.contains(&format!("x-nullops-error: {code}")), "{code}: {answer}");
    }
    let both = raw(ingress, not_http.as_bytes()).await;
    assert!(both.starts_with("HTTP/1.1 200"), "the good request first: {both}");

    // Deleted: 404 (how soon is printed). Recreated under its name: the same URL answers again.
    w.delete(&id).await;
    let deleted = Instant::now();
    answers(ingress, &url, 404, Some("UNKNOWN_HOST"), PATIENCE).await;
    println!("404 {:?} after the delete returned", deleted.elapsed());
    w.reaches(&id, "DELETED").await;
    let again = w.create("shop", "pr-1").await;
    let d = w.reaches(&again, "RUNNING").await;
    assert_eq!(url_of(&d, "echo"), url);
    answers(ingress, &url, 200, None, PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingress_follows_a_node_going_offline_and_coming_back() {
    let mut w = World::new(Mode::Production, &[]).await;
    // A second ingress process on the same PostgreSQL and NATS.
    let (backend, server) = (&w._backend, &w.server);
    let mut command = backend.command(&["ingress"]);
    command.env("NULLOPS_NATS_URL", "nats://127.0.0.1:4222").env("NULLOPS_NATS_PREFIX", &backend.nats_prefix).stdout(Stdio::piped()).kill_on_drop(true);
    let (_second, second, _) = support::spawn_until(command.spawn().unwrap(), "NullOps ingress is up: ").await;
    let ingresses = [server.ingress.unwrap(), second];

    let id = w.create("shop", "pr-1").await;
    let d = w.reaches(&id, "RUNNING").await;
    let url = url_of(&d, "echo");
    assert_eq!(url, format!("http://echo.pr-1.staging.qa.test:{}/", ingresses[0].port()));
    let node_port = d["services"][0]["nodePort"].as_u64().unwrap().to_string();
    // The same URL as reached through `ingress` (its port).
    let url_at = |ingress: SocketAddr| url.replace(&format!(":{}/", ingresses[0].port()), &format!(":{}/", ingress.port()));
    for ingress in ingresses {
        assert!(answers(ingress, &url_at(ingress), 200, None, PATIENCE).await.body.starts_with("GET / HTTP/1.1"));
    }

    // The agent stops: once the node is offline, every ingress answers 503 saying so.
    w.agent.as_mut().unwrap().kill().await;
    let stopped = Instant::now();
    for ingress in ingresses {
        let offline = answers(ingress, &url_at(ingress), 503, Some("NODE_OFFLINE"), Duration::from_secs(15)).await;
        assert!(offline.body.contains("is offline") && !offline.body.contains("127.0.0.1") && !offline.body.contains(&node_port), "{}", offline.body);
    }
    println!("503 on both ingresses {:?} after the agent stopped", stopped.elapsed());

    // It comes back: routed again.
    w.agent.as_mut().unwrap().start().await;
    for ingress in ingresses {
        answers(ingress, &url_at(ingress), 200, None, Duration::from_secs(30)).await;
    }

    w.delete(&id).await;
    for ingress in ingresses {
        answers(ingress, &url_at(ingress), 404, Some("UNKNOWN_HOST"), PATIENCE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("nullops-tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["*.tls-1.local.localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), issued.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), issued.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (dir.join("cert.pem").display().to_string(), dir.join("key.pem").display().to_string());
    let w = World::new(Mode::Embedded, &[("NULLOPS_INGRESS_TLS_CERT", &cert), ("NULLOPS_INGRESS_TLS_KEY", &key)]).await;
    let ingress = w.ingress();

    let id = w.create("shop", "tls-1").await;
    let d = w.reaches(&id, "RUNNING").await;
    assert_eq!(url_of(&d, "echo"), format!("https://echo.tls-1.local.localhost:{}/", ingress.port()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(issued.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("echo.tls-1.local.localhost").unwrap();
    let tcp = TcpStream::connect(ingress).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("the handshake verifies the configured certificate");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: echo.tls-1.local.localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("x-forwarded-proto: https"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}
