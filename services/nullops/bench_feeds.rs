//! `nullops bench feeds`: one event to many live subscribers. A `nullops up` child serves N
//! `catalogUpdated` subscriptions over GraphQL WebSockets, opened by this process as browsers
//! would (graphql-transport-ws, a bearer token in `connection_init`); a catalog change is made
//! through the API and every subscriber's receipt is timed from the mutation's request. The
//! baseline, measured in the same run the same way, is a bare WebSocket hub in a child process
//! (`bench feed-hub`): a channel and a writer task per connection and the gateway's socket
//! buffers, one message fanned out to all, no access checks, no GraphQL. The server's memory per idle subscription is its resident
//! set's growth while the subscriptions are opened, divided by their number.
//!
//! Targets (issue 24, 3): p99 at most 100 ms with 1,000 subscribers; an idle subscription at
//! most 20 KB; 10,000 subscribers all served. The run fails if any subscriber misses an event.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::bench_deploy::Platform;

/// Subscriptions opened at once while setting up (a browser's page opens one at a time).
const OPENING_AT_ONCE: usize = 64;
/// How long every subscriber has to receive one event before the run fails.
const RECEIPT_LIMIT: Duration = Duration::from_secs(60);
/// What the hub's subscribers get, about the size of a `catalogUpdated` item.
const HUB_ITEM: &str = r#"{"id":"1","type":"next","payload":{"data":{"catalogUpdated":{"kind":"ENVIRONMENT","name":"bench-0","removed":false}}}}"#;

pub async fn feeds(subscribers: usize, rounds: usize) -> anyhow::Result<()> {
    let subscribers = subscribers.max(1);
    let dir = std::env::temp_dir().join(format!("nullops-bench-feeds-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let hub = measure(Side::Hub(Hub::start().await?), subscribers, rounds).await?;
        let platform = Platform::start(&dir.join("data")).await?;
        let ours = measure(Side::Ours(platform), subscribers, rounds).await?;
        anyhow::Ok((hub, ours))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (hub, ours) = result?;
    println!("One event to {subscribers} live subscribers ({rounds} rounds; latency from the request that made it):");
    println!("  {:<28} {:>10} {:>10} {:>12} {:>22}", "", "p50 ms", "p99 ms", "worst ms", "memory per idle sub");
    for (name, m) in [("bare WebSocket hub", &hub), ("nullops catalogUpdated", &ours)] {
        println!("  {name:<28} {:>10.1} {:>10.1} {:>12.1} {:>19.1} KB", m.p50_ms, m.p99_ms, m.worst_ms, m.kb_per_subscriber);
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  ratio to the hub: p99 {:.2}x, memory {:.2}x   (targets: p99 at most 100 ms with 1,000, at most 20 KB a subscription)",
        ratio(ours.p99_ms, hub.p99_ms),
        ratio(ours.kb_per_subscriber, hub.kb_per_subscriber)
    );
    println!("RESULT feeds_{subscribers}_p99_ms={:.1}", ours.p99_ms);
    println!("RESULT feeds_{subscribers}_hub_p99_ms={:.1}", hub.p99_ms);
    println!("RESULT feeds_{subscribers}_kb_per_subscription={:.1}", ours.kb_per_subscriber);
    println!("RESULT feeds_{subscribers}_hub_kb_per_connection={:.1}", hub.kb_per_subscriber);
    Ok(())
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    worst_ms: f64,
    kb_per_subscriber: f64,
}

enum Side {
    Hub(Hub),
    Ours(Platform),
}

impl Side {
    fn pid(&self) -> Option<u32> {
        match self {
            Side::Hub(h) => h.child.id(),
            Side::Ours(p) => p.pid(),
        }
    }

    fn url(&self) -> String {
        match self {
            Side::Hub(h) => format!("ws://{}/", h.addr),
            Side::Ours(p) => p.graphql_url().replacen("http://", "ws://", 1),
        }
    }

    /// Opens one subscription and waits until it is listening.
    async fn open(&self, url: &str) -> anyhow::Result<Subscriber> {
        let mut request = url.into_client_request()?;
        if matches!(self, Side::Ours(_)) {
            request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
        }
        let tcp = TcpStream::connect(request.uri().authority().context("no address")?.as_str()).await?;
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
        match self {
            Side::Hub(_) => {
                ws.send(Message::text("hello")).await?;
                expect(&mut ws, |m| m == "ready").await?;
            }
            Side::Ours(p) => {
                ws.send(Message::text(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", p.token())}}).to_string())).await?;
                expect(&mut ws, |m| m.contains("connection_ack")).await?;
                let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { catalogUpdated { kind name removed } }"}});
                ws.send(Message::text(subscribe.to_string())).await?;
                expect(&mut ws, |m| m.contains("LISTENING")).await?;
            }
        }
        Ok(ws)
    }

    /// Makes the event of round `round`.
    async fn fire(&self, round: usize, control: &mut Subscriber) -> anyhow::Result<()> {
        match self {
            Side::Hub(_) => control.send(Message::text("fire")).await?,
            Side::Ours(p) => {
                let name = format!("bench-{round}");
                let create = "mutation($n: String!) { createEnvironment(input: {name: $n, baseDomain: \"localhost\", cleanupAfterSeconds: 86400}) { name } }";
                p.gql(create, json!({"n": name})).await?;
            }
        }
        Ok(())
    }

    /// Whether `text` is the event the subscribers wait for.
    fn is_event(&self, text: &str) -> bool {
        match self {
            Side::Hub(_) => text == HUB_ITEM,
            Side::Ours(_) => text.contains("\"ENVIRONMENT\""),
        }
    }
}

type Subscriber = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn expect(ws: &mut Subscriber, wanted: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(RECEIPT_LIMIT, async {
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message? {
                if wanted(&text) {
                    return Ok(());
                }
            }
        }
        bail!("the connection closed")
    })
    .await
    .context("no answer within 60 s")?
}

async fn measure(side: Side, subscribers: usize, rounds: usize) -> anyhow::Result<Figures> {
    let side = Arc::new(side);
    let url = side.url();
    let pid = side.pid().context("the server has exited")?;
    let mut control = side.open(&url).await?;
    let before = crate::bench::resident_kib(&pid.to_string())?;
    let (receipts, mut received) = mpsc::channel::<Instant>(subscribers);
    let opened = Arc::new(Mutex::new(Vec::with_capacity(subscribers)));
    futures::stream::iter(0..subscribers)
        .map(|_| {
            let (side, url, opened) = (side.clone(), url.clone(), opened.clone());
            async move {
                let ws = side.open(&url).await?;
                opened.lock().unwrap_or_else(|p| p.into_inner()).push(ws);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Settled: what the server holds for them idle.
    let after = crate::bench::resident_kib(&pid.to_string())?;
    let kb_per_subscriber = after.saturating_sub(before) as f64 / subscribers as f64;
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in std::mem::take(&mut *opened.lock().unwrap_or_else(|p| p.into_inner())) {
        let (side, receipts) = (side.clone(), receipts.clone());
        readers.spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    if side.is_event(&text) && receipts.send(Instant::now()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(subscribers * rounds);
    for round in 0..rounds.max(1) {
        let started = Instant::now();
        side.fire(round, &mut control).await?;
        for got in 0..subscribers {
            match tokio::time::timeout_at((started + RECEIPT_LIMIT).into(), received.recv()).await {
                Ok(Some(at)) => latencies.push(at.saturating_duration_since(started)),
                _ => bail!("round {round}: only {got} of {subscribers} subscribers received the event within 60 s"),
            }
        }
    }
    readers.shutdown().await;
    if let Side::Hub(hub) = Arc::into_inner(side).context("a subscriber outlived the run")? {
        hub.stop().await;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1].as_secs_f64() * 1e3;
    Ok(Figures { p50_ms: at(0.5), p99_ms: at(0.99), worst_ms: at(1.0), kb_per_subscriber })
}

/// The baseline's child process.
struct Hub {
    addr: String,
    child: tokio::process::Child,
}

impl Hub {
    async fn start() -> anyhow::Result<Hub> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?).args(["bench", "feed-hub"]).stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.context("the hub did not start")??.context("the hub exited")?;
        Ok(Hub { addr, child })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `bench feed-hub`: the baseline. Prints its address, then relays: "hello" is answered "ready"
/// (the connection is registered); "fire" sends [`HUB_ITEM`] to every connection.
pub async fn feed_hub() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let outlets: Arc<Mutex<Vec<mpsc::Sender<Message>>>> = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        let outlets = outlets.clone();
        tokio::spawn(async move {
            // The buffers the gateway's subscription sockets have, so only the rest differs.
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(4 * 1024);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
            let (mut out, mut incoming) = ws.split();
            let (to_client, mut outgoing) = mpsc::channel::<Message>(32);
            tokio::spawn(async move {
                while let Some(message) = outgoing.recv().await {
                    if out.send(message).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(Message::Text(text))) = incoming.next().await {
                match text.as_str() {
                    "hello" => {
                        outlets.lock().unwrap_or_else(|p| p.into_inner()).push(to_client.clone());
                        let _ = to_client.send(Message::text("ready")).await;
                    }
                    "fire" => {
                        let all = outlets.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let item = Message::text(HUB_ITEM);
                        for outlet in all {
                            let _ = outlet.try_send(item.clone());
                        }
                    }
                    _ => {}
                }
            }
        });
    }
}
