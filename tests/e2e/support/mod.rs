//! Test harness: runs the real `nullops` binary, embedded (SQLite, in-process bus) or in
//! production mode (PostgreSQL, NATS JetStream), and talks to it over HTTP.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub mod lab;
pub mod world;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Production,
}

/// Where one test's platform keeps its state; shared by restarts and by several servers.
pub struct Backend {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub nats_prefix: String,
    /// Production mode: the master key servers get as NULLOPS_MASTER_KEY. (Embedded mode keeps
    /// its own in the data dir.)
    pub master_key: String,
    /// Production mode: one pool for the tests' own reads of the database (a connection per
    /// read costs a SCRAM handshake each, which a test reading after every call pays in seconds).
    pg: tokio::sync::OnceCell<sqlx::PgPool>,
}

impl Backend {
    pub async fn new(mode: Mode) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("nullops-test-{id}"));
        let database_url = match mode {
            Mode::Embedded => None,
            Mode::Production => Some(nullops_store::conformance::fresh_postgres_database().await),
        };
        let master_key = nullops_keyring::MasterKey::generate().to_hex().to_string();
        Backend { mode, data_dir, database_url, nats_prefix: format!("t{id}"), master_key, pg: Default::default() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nullops"));
        // The platform tests leave the local agent out; the node tests turn it back on.
        // Each platform's ingress on a port of its own.
        // The demo `nullops up` offers is left out too; its own test turns it on.
        cmd.args(args)
            .env("NULLOPS_LOG", "warn")
            .env_remove("NULLOPS_MASTER_KEY")
            .env("NULLOPS_NO_LOCAL_AGENT", "true")
            .env("NULLOPS_NO_DEMO", "true")
            .env("NULLOPS_INGRESS_LISTEN", "127.0.0.1:0")
            // Registries, webhook receivers and forges stand in on loopback here.
            .env("NULLOPS_ALLOWED_PRIVATE_TARGETS", "127.0.0.0/8,::1,localhost");
        match &self.database_url {
            Some(url) => cmd.env("NULLOPS_DATABASE_URL", url).env("NULLOPS_MASTER_KEY", &self.master_key),
            None => cmd.env("NULLOPS_DATA_DIR", &self.data_dir).env_remove("NULLOPS_DATABASE_URL"),
        };
        cmd
    }

    /// The master key the platform uses now.
    pub fn current_master_key(&self) -> String {
        match self.mode {
            Mode::Production => self.master_key.clone(),
            Mode::Embedded => std::fs::read_to_string(self.data_dir.join("master.key")).expect("master.key"),
        }
    }

    /// The keyring, opened with `master_key` (hex).
    pub async fn keyring(&self, master_key: &str) -> nullops_keyring::Keyring {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rw", self.data_dir.join("keys.db").display()),
        };
        nullops_keyring::Keyring::open(&url, nullops_keyring::MasterKey::from_hex(master_key).expect("hex key")).await.expect("keyring")
    }

    /// The event store itself, opened beside the running platform (as another process would).
    pub async fn store(&self) -> std::sync::Arc<dyn nullops_store::EventStore> {
        match &self.database_url {
            Some(url) => std::sync::Arc::new(nullops_store::postgres::PgEventStore::connect(url).await.expect("postgres store")),
            None => std::sync::Arc::new(nullops_store::sqlite::SqliteEventStore::open(&self.data_dir.join("events.db")).await.expect("sqlite store")),
        }
    }

    /// The production database, for the tests' own reads.
    async fn pg(&self, url: &str) -> &sqlx::PgPool {
        self.pg.get_or_init(|| async { sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await.expect("connect") }).await
    }

    /// Every event of the log, decoded, read straight from the store's database.
    pub async fn stored_events(&self) -> Vec<nullops_events::DomainEvent> {
        use sqlx::Connection;
        let sql = "SELECT event_type, CAST(schema_version AS BIGINT), payload FROM events ORDER BY stream_id, stream_version";
        let rows: Vec<(String, i64, Vec<u8>)> = match &self.database_url {
            Some(url) => sqlx::query_as(sql).fetch_all(self.pg(url).await).await.expect("events"),
            None => {
                let url = format!("sqlite://{}?mode=ro", self.data_dir.join("events.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("connect");
                sqlx::query_as(sql).fetch_all(&mut c).await.expect("events")
            }
        };
        rows.into_iter().map(|(t, v, p)| nullops_events::codec::decode(&t, v as u16, &p).expect("decodes")).collect()
    }

    /// Every byte the platform has stored: the data dir's files, or a dump of the database.
    pub async fn raw_storage(&self) -> Vec<u8> {
        match &self.database_url {
            Some(url) => {
                let out = Command::new("pg_dump").arg("--data-only").arg(url).output().await.expect("pg_dump");
                assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
            None => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(&self.data_dir).expect("data dir") {
                    let path = entry.expect("entry").path();
                    if path.is_file() {
                        all.extend(std::fs::read(path).expect("read"));
                    }
                }
                all
            }
        }
    }

    /// The read models, opened beside the platform (as `nullops projections rebuild` does).
    pub async fn read_models(&self) -> nullops_projections::ReadModelDb {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rw", self.data_dir.join("readmodels.db").display()),
        };
        nullops_projections::ReadModelDb::open(&url).await.expect("read models")
    }

    /// Every row of every read model a projection builds, table by table, each row as text
    /// (columns quoted and joined), sorted: two builds from one log compare equal row for row.
    pub async fn read_model_rows(&self) -> std::collections::BTreeMap<&'static str, Vec<String>> {
        use sqlx::Connection;
        let mut all = std::collections::BTreeMap::new();
        for projection in nullops_projections::all() {
            for table in projection.tables() {
                let mut rows: Vec<String> = match &self.database_url {
                    Some(url) => sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t")).fetch_all(self.pg(url).await).await.expect("rows"),
                    None => {
                        let url = format!("sqlite://{}?mode=ro", self.data_dir.join("readmodels.db").display());
                        let mut c = sqlx::SqliteConnection::connect(&url).await.expect("connect");
                        let columns: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
                            .fetch_all(&mut c)
                            .await
                            .expect("columns");
                        let row = columns.iter().map(|c| format!("'{c}=' || quote({c})")).collect::<Vec<_>>().join(" || ',' || ");
                        sqlx::query_scalar(&format!("SELECT {row} FROM {table}")).fetch_all(&mut c).await.expect("rows")
                    }
                };
                rows.sort();
                all.insert(*table, rows);
            }
        }
        all
    }

    /// With the platform stopped: brings the read models its runners built, event by event as
    /// they happened, to the end of the log; empties them and replays the whole log with
    /// `nullops projections rebuild --all`; and asserts that both builds hold the same rows.
    pub async fn assert_rebuilt_read_models_equal_the_live_ones(&self) {
        let (store, db) = (self.store().await, self.read_models().await);
        for projection in nullops_projections::all() {
            let runner = nullops_projections::runner::Runner {
                projection,
                db: db.clone(),
                store: store.clone(),
                bus: std::sync::Arc::new(nullops_bus::InProcessBus::default()),
            };
            runner.catch_up_once().await.expect("the live read models catch up with the log");
        }
        let live = self.read_model_rows().await;
        assert!(live["deployment_steps"].len() + live["audit_log"].len() > 0, "a history to rebuild");
        let out = self.command(&["projections", "rebuild", "--all"]).output().await.expect("nullops projections rebuild");
        assert!(out.status.success(), "rebuild: {}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        for projection in nullops_projections::all() {
            assert!(said.contains(&format!("rebuilt {}: ", projection.name())), "{said}");
        }
        let rebuilt = self.read_model_rows().await;
        for (table, rows) in &live {
            let again = &rebuilt[table];
            let differ = rows.iter().zip(again).find(|(a, b)| a != b);
            assert!(rows == again, "{table}: {} live rows, {} rebuilt; first difference: {differ:#?}", rows.len(), again.len());
        }
    }

    /// Number of events in the event log, read straight from the store's database.
    pub async fn events_in_log(&self) -> i64 {
        use sqlx::Connection;
        let sql = "SELECT COUNT(*) FROM events";
        match &self.database_url {
            Some(url) => sqlx::query_scalar(sql).fetch_one(self.pg(url).await).await.expect("count"),
            None => {
                let url = format!("sqlite://{}?mode=ro", self.data_dir.join("events.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_one(&mut c).await.expect("count")
            }
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where its ingress listens.
    pub ingress: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub async fn start(backend: &Backend) -> Server {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: &Backend, env: &[(&str, &str)]) -> Server {
        let mut cmd = match backend.mode {
            Mode::Embedded => backend.command(&["up", "--listen", "127.0.0.1:0"]),
            Mode::Production => {
                let mut c = backend.command(&["server", "--listen", "127.0.0.1:0"]);
                c.env("NULLOPS_NATS_URL", "nats://127.0.0.1:4222").env("NULLOPS_NATS_PREFIX", &backend.nats_prefix);
                c
            }
        };
        cmd.env("NULLOPS_ADMIN_PASSWORD", ADMIN_PASSWORD).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn nullops");
        let (child, addr, output) = spawn_until(child, "NullOps is up: ").await;
        let ingress = output.lock().unwrap().iter().find_map(|l| announced_addr(l, "NullOps ingress is up: "));
        let http = reqwest::Client::builder().cookie_store(true).build().expect("http client");
        Server { child: Some(child), addr, ingress, http, output }
    }

    /// A handle on a running server's HTTP side only, for use from other tasks.
    pub fn view(http: reqwest::Client, addr: SocketAddr, output: Arc<Mutex<Vec<String>>>) -> Server {
        Server { child: None, addr, ingress: None, http, output }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends one GraphQL request; returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request").json().await.expect("json response")
    }

    /// Like [`gql`], but expects success and returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let r = self.gql(token, query, variables).await;
        assert!(r.get("errors").is_none(), "unexpected errors for {query}: {r}");
        r["data"].clone()
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let d =
            self.ok(None, "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }", json!({"u": username, "p": password})).await;
        d["login"]["token"].as_str().expect("token").to_owned()
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// SIGKILL, and waits (up to 5 s) until the process is gone: for clean-ups in `Drop`, which
    /// runs on a multi-threaded test runtime.
    pub fn kill_now(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        let _ = child.start_kill();
        tokio::task::block_in_place(|| {
            let _ = tokio::runtime::Handle::current().block_on(tokio::time::timeout(Duration::from_secs(5), child.wait()));
        });
    }

    /// Waits (up to `timeout`) for the process to end by itself; its exit status.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("owns its process");
        tokio::time::timeout(timeout, child.wait()).await.unwrap_or_else(|_| panic!("nullops still runs after {timeout:?}")).expect("wait")
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(&mut self) {
        self.child.as_mut().expect("owns its process").kill().await.expect("kill");
    }

    /// Sends SIGTERM, and returns at once.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("owns a running process");
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) {
        let child = self.child.as_mut().expect("owns its process");
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after SIGTERM").expect("wait");
        assert!(status.success(), "nullops exited with {status}");
    }
}

/// A graphql-transport-ws client on `server`, authenticated with `token` in connection_init,
/// subscribed to `query` with `variables`.
pub async fn subscribe(
    server: &Server,
    token: &str,
    query: &str,
    variables: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{}/graphql", server.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}).to_string())).await.unwrap();
    ws
}

pub async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("message within 10 s").expect("open").expect("ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The `extensions.code` of the first error.
/// The address in an announcement line (`PREFIX[scheme://]ADDR/...`).
fn announced_addr(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(prefix)?;
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    rest.split(|c: char| c == '/' || c.is_whitespace()).next()?.parse().ok()
}

/// Follows a spawned process's stdout (kept in the returned lines, and drained for the life of
/// the process so it never blocks on a full pipe) until a line announces `prefix` ADDR.
pub async fn spawn_until(mut child: Child, prefix: &'static str) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let stdout = child.stdout.take().expect("stdout piped");
    let output = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let lines = output.clone();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let announced = announced_addr(&line, prefix);
            lines.lock().unwrap().push(line);
            if let Some(addr) = announced {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
        .await
        .unwrap_or_else(|_| panic!("no \"{prefix}\" line within 60 s"))
        .expect("the process exited before announcing its address");
    (child, addr, output)
}

pub fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {response}"))
}

/// Polls `check` until it returns a value, failing after `timeout` with `what` and what `check`
/// last saw: the one way the tests wait for a state.
pub async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`until`] for a condition.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    until(timeout, what, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await
}

/// Runs an async test function once per mode.
#[macro_export]
/// Tests whose subject the store cannot change (HTTP and the console's files, log lines, a
/// registry's answers, a run's rollback on the node): the embedded mode alone.
macro_rules! in_embedded_mode {
    ($($name:ident),* $(,)?) => {
        mod embedded_only {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Mode::Embedded).await })*
        }
    };
}

macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Mode::Embedded).await })*
        }
        mod postgres_nats {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Mode::Production).await })*
        }
    };
}

/// Removes every container and network an agent made under `scope` (a test's clean-up).
pub fn remove_scope(scope: &str) {
    let label = format!("label=nullops.scope={scope}");
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &label]) {
        for id in ids.lines() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
    if let Ok(ids) = docker(&["network", "ls", "-q", "--filter", &label]) {
        for id in ids.lines() {
            let _ = docker(&["network", "rm", id]);
        }
    }
}

/// Runs the Docker CLI; its trimmed stdout, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// [`docker`] that must succeed.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}
