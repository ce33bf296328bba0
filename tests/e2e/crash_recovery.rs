//! 1,000 mutations with a SIGKILL in the middle: every acknowledged mutation is there exactly once
//! after restart, the projections converge, and no projection applied any event twice.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, Backend, Mode, Server};

const TOTAL: usize = 1000;
const KILL_AFTER_ACKS: usize = 300;
const WORKERS: usize = 8;
const CREATE: &str = "mutation($n: String!) { createApiToken(name: $n) { apiToken { name } } }";

#[derive(Default)]
struct Outcomes {
    acked: Mutex<Vec<String>>,
    unacked: Mutex<Vec<String>>,
}

/// Sends mutations `t<i>` from the shared counter until all are sent or the server dies.
async fn send_until_done_or_dead(server: &Server, token: &str, next: Arc<AtomicUsize>, outcomes: Arc<Outcomes>, dead: Arc<AtomicBool>) {
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (http, url, token) = (server.http.clone(), server.url("/graphql"), token.to_owned());
        let (next, outcomes, dead) = (next.clone(), outcomes.clone(), dead.clone());
        workers.push(tokio::spawn(async move {
            while !dead.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return;
                }
                let name = format!("t{i}");
                let sent =
                    http.post(&url).bearer_auth(&token).timeout(Duration::from_secs(20)).json(&json!({"query": CREATE, "variables": {"n": name}})).send().await;
                let ok = match sent {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["data"]["createApiToken"]["apiToken"]["name"] == json!(name)),
                    Err(_) => false,
                };
                if ok {
                    outcomes.acked.lock().unwrap().push(name);
                } else {
                    outcomes.unacked.lock().unwrap().push(name);
                    dead.store(true, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

async fn acknowledged_mutations_survive_sigkill(mode: Mode) {
    let backend = Backend::new(mode).await;
    let mut server = Server::start(&backend).await;
    let token = server.admin().await;
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Outcomes::default());
    let dead = Arc::new(AtomicBool::new(false));

    let sending = {
        let (next, outcomes, dead) = (next.clone(), outcomes.clone(), dead.clone());
        let (http, addr) = (server.http.clone(), server.addr);
        let output = server.output.clone();
        let view = Server::view(http, addr, output);
        let token = token.clone();
        tokio::spawn(async move { send_until_done_or_dead(&view, &token, next, outcomes, dead).await })
    };
    eventually(Duration::from_secs(120), "300 acknowledged mutations", || async { outcomes.acked.lock().unwrap().len() >= KILL_AFTER_ACKS }).await;
    server.kill().await;
    sending.await.unwrap();
    let killed_at = next.load(Ordering::SeqCst).min(TOTAL);
    assert!(killed_at < TOTAL, "the kill came in the middle");

    // Restart on the same data and send the rest. The session survives: it is in the log.
    let server = Server::start(&backend).await;
    dead.store(false, Ordering::SeqCst);
    send_until_done_or_dead(&server, &token, next.clone(), outcomes.clone(), dead.clone()).await;
    assert!(!dead.load(Ordering::SeqCst), "no failures after the restart");

    let tokens = server.ok(Some(&token), "{ apiTokens { name } }", json!({})).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tokens["apiTokens"].as_array().unwrap() {
        *counts.entry(t["name"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let acked = outcomes.acked.lock().unwrap().clone();
    let unacked = outcomes.unacked.lock().unwrap().clone();
    for name in &acked {
        assert_eq!(counts.get(name), Some(&1), "acknowledged {name} is there exactly once");
    }
    assert!(counts.values().all(|&n| n == 1), "no mutation took effect twice");
    assert!(counts.keys().all(|n| acked.contains(n) || unacked.contains(n)), "nothing that was not sent");
    assert_eq!(acked.len() + unacked.len(), TOTAL);

    // Projections converge on the whole log and applied each event once: the audit applied every
    // event in the store, and identity and catalog between them applied each exactly once (every
    // event here is an identity event, but for the catalog's bootstrap registry).
    let in_log = backend.events_in_log().await;
    eventually(Duration::from_secs(30), "projections converged", || async {
        let p = server.ok(Some(&token), "{ projections { name eventsApplied } }", json!({})).await;
        let applied = |name: &str| p["projections"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["eventsApplied"].as_i64().unwrap();
        applied("audit") == in_log && applied("identity") + applied("catalog") == in_log && applied("catalog") == 1
    })
    .await;
    let audit = server
        .ok(Some(&token), "{ auditLog(filter: { eventType: \"api_token.created\" }, page: { first: 500 }) { entries { eventId } nextCursor } }", json!({}))
        .await;
    assert_eq!(audit["auditLog"]["entries"].as_array().unwrap().len(), 500);
    println!("{mode:?}: {} acknowledged, {} unacknowledged at the kill (sent {killed_at} before it), {in_log} events", acked.len(), unacked.len());
    server.stop().await;
}

in_both_modes!(acknowledged_mutations_survive_sigkill);
