//! The GraphQL API end to end, through the real binary, in embedded and in Postgres + NATS mode.

use crate::support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{code, eventually, next_json, subscribe, until, Backend, Mode, Server, ADMIN_PASSWORD};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const CREATE_USER: &str = "mutation($u: String!, $p: String!, $r: Role) { createUser(username: $u, password: $p, role: $r) { username role disabled } }";
const ME: &str = "{ me { username role } }";

async fn events_applied(server: &Server, admin: &str) -> Value {
    server.ok(Some(admin), "{ projections { name position eventsApplied } }", json!({})).await["projections"].clone()
}

async fn identity_lifecycle(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    assert_eq!(server.ok(Some(&admin), ME, json!({})).await["me"], json!({"username": "admin", "role": "ADMIN"}));

    let created = server.ok(Some(&admin), CREATE_USER, json!({"u": "alice", "p": "alice-password-1"})).await;
    assert_eq!(created["createUser"], json!({"username": "alice", "role": "USER", "disabled": false}));
    let dup = server.gql(Some(&admin), CREATE_USER, json!({"u": "alice", "p": "alice-password-1"})).await;
    assert_eq!(code(&dup), "CONFLICT");

    // A user is not an admin.
    let alice = server.login("alice", "alice-password-1").await;
    assert_eq!(server.ok(Some(&alice), ME, json!({})).await["me"]["username"], "alice");
    for q in ["{ users { username } }", "{ auditLog { entries { eventType } } }"] {
        assert_eq!(code(&server.gql(Some(&alice), q, json!({})).await), "FORBIDDEN", "{q}");
    }
    let r = server.gql(Some(&alice), CREATE_USER, json!({"u": "mallory", "p": "mallory-password"})).await;
    assert_eq!(code(&r), "FORBIDDEN");
    // Who asks is checked before what is asked: a user learns nothing about the input.
    let r = server.gql(Some(&alice), "mutation { approveNodeThumbprint(id: \"not-an-id\", thumbprint: \"garbage\") { id } }", json!({})).await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");

    // Disabling ends alice's session at once: the mutation returns only once that is visible.
    server.ok(Some(&admin), "mutation { disableUser(username: \"alice\") { disabled } }", json!({})).await;
    let r = server.gql(Some(&alice), ME, json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("disabled"), "{r}");
    let r = server.gql(None, "mutation { login(username: \"alice\", password: \"alice-password-1\") { token } }", json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED");
    assert_eq!(r["errors"][0]["message"], "invalid username or password");

    // Enable, reset, change.
    server.ok(Some(&admin), "mutation { enableUser(username: \"alice\") { disabled } }", json!({})).await;
    server.ok(Some(&admin), "mutation { resetPassword(username: \"alice\", newPassword: \"alice-password-2\") { username } }", json!({})).await;
    let r = server.gql(None, "mutation { login(username: \"alice\", password: \"alice-password-1\") { token } }", json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "old password no longer works");
    let alice = server.login("alice", "alice-password-2").await;
    let r = server.gql(Some(&alice), "mutation { changePassword(currentPassword: \"wrong-password\", newPassword: \"alice-password-3\") }", json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED");
    server.ok(Some(&alice), "mutation { changePassword(currentPassword: \"alice-password-2\", newPassword: \"alice-password-3\") }", json!({})).await;
    let alice = server.login("alice", "alice-password-3").await;

    // Personal API tokens: shown once, listed without their value, revocable.
    let t = server.ok(Some(&alice), "mutation { createApiToken(name: \"ci\") { token apiToken { id name owner } } }", json!({})).await;
    let pat = t["createApiToken"]["token"].as_str().unwrap().to_owned();
    let id = t["createApiToken"]["apiToken"]["id"].as_str().unwrap().to_owned();
    assert!(pat.starts_with("nop_"));
    assert_eq!(server.ok(Some(&pat), ME, json!({})).await["me"]["username"], "alice");
    let listed = server.ok(Some(&alice), "{ apiTokens { id name revokedAt } }", json!({})).await;
    assert_eq!(listed["apiTokens"], json!([{"id": id, "name": "ci", "revokedAt": null}]));
    assert!(!listed.to_string().contains(&pat), "a listing never holds the token");
    // Another user cannot see or revoke it.
    let r = server.gql(Some(&admin), "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }", json!({"id": id})).await;
    assert!(r.get("errors").is_none(), "admins may revoke any token: {r}");
    let r = server.gql(Some(&pat), ME, json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED");

    // Logout ends the session.
    server.ok(Some(&alice), "mutation { logout }", json!({})).await;
    assert_eq!(code(&server.gql(Some(&alice), ME, json!({})).await), "UNAUTHENTICATED");

    // The audit history tells who did what, filterable and paged.
    let by_admin = server
        .ok(Some(&admin), "{ auditLog(filter: { actor: \"admin\", eventType: \"user.disabled\" }) { entries { actor stream eventType } } }", json!({}))
        .await;
    assert_eq!(by_admin["auditLog"]["entries"], json!([{"actor": "user:admin", "stream": "user-alice", "eventType": "user.disabled"}]));
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = server
            .ok(
                Some(&admin),
                "query($a: String) { auditLog(filter: { stream: \"user-alice\" }, page: { first: 2, after: $a }) { entries { eventType } nextCursor } }",
                json!({"a": after}),
            )
            .await;
        seen.extend(page["auditLog"]["entries"].as_array().unwrap().iter().map(|e| e["eventType"].as_str().unwrap().to_owned()));
        match page["auditLog"]["nextCursor"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["user.password_changed", "user.password_changed", "user.enabled", "user.disabled", "user.registered"], "newest first, across pages");
    assert_eq!(code(&server.gql(Some(&admin), "{ auditLog(page: { after: \"nope\" }) { nextCursor } }", json!({})).await), "INVALID_INPUT");
    server.stop().await;
}

async fn bad_input_gets_a_code_and_appends_nothing(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    server.ok(Some(&admin), CREATE_USER, json!({"u": "bob", "p": "bob-password-1"})).await;
    let pat = server.ok(Some(&admin), "mutation { createApiToken(name: \"x\") { token apiToken { id } } }", json!({})).await;
    let id = pat["createApiToken"]["apiToken"]["id"].as_str().unwrap().to_owned();
    let pat = pat["createApiToken"]["token"].as_str().unwrap().to_owned();
    server.ok(Some(&admin), "mutation($id: ID!) { revokeApiToken(id: $id) { id } }", json!({"id": id})).await;
    let bob = server.login("bob", "bob-password-1").await;
    server.ok(Some(&admin), "mutation { disableUser(username: \"bob\") { disabled } }", json!({})).await;
    let before = backend.events_in_log().await;

    let post = |body: String| server.http.post(server.url("/graphql")).header("content-type", "application/json").body(body).send();
    // Malformed GraphQL, a body that is not JSON, an oversized body.
    let r: Value = post(json!({"query": "mutation { createUser("}).to_string()).await.unwrap().json().await.unwrap();
    assert_eq!(code(&r), "GRAPHQL_PARSE_FAILED");
    let resp = post("{not json".into()).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(code(&resp.json::<Value>().await.unwrap()), "BAD_REQUEST");
    let resp = post(format!("{{\"query\": \"{}\"}}", "a".repeat(300 * 1024))).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(code(&resp.json::<Value>().await.unwrap()), "PAYLOAD_TOO_LARGE");
    // Wrong types, unknown fields.
    let r = server.gql(Some(&admin), "mutation { createUser(username: 7, password: \"pppppppppp\") { username } }", json!({})).await;
    assert_eq!(code(&r), "INVALID_INPUT");
    let r = server.gql(Some(&admin), CREATE_USER, json!({"u": ["x"], "p": "pppppppppp"})).await;
    assert_eq!(code(&r), "INVALID_INPUT");
    let r = server.gql(Some(&admin), "{ me { password_hash } }", json!({})).await;
    assert_eq!(code(&r), "INVALID_INPUT");
    // Out-of-range Int literals and variables, nested in an input: refused in our words.
    let out_of_range = "a number in ProjectInput is out of range: GraphQL Int values are whole numbers from -2147483648 to 2147483647";
    let nested = "mutation { createProject(input: {name: \"big\", environments: [\"local\"], cpuMillis: 99999999999, memoryMib: 128}) { name } }";
    let r = server.gql(Some(&admin), nested, json!({})).await;
    assert_eq!((code(&r), r["errors"][0]["message"].as_str()), ("INVALID_INPUT", Some(out_of_range)), "{r}");
    let nested = "mutation($c: Int!) { createProject(input: {name: \"big\", environments: [\"local\"], cpuMillis: $c, memoryMib: 128}) { name } }";
    let r = server.gql(Some(&admin), nested, json!({"c": 99_999_999_999_i64})).await;
    assert_eq!(code(&r), "INVALID_INPUT", "{r}");
    assert!(!r["errors"][0]["message"].as_str().unwrap().contains("Failed to parse"), "{r}");
    // Domain validation.
    let r = server.gql(Some(&admin), CREATE_USER, json!({"u": "Bad Name", "p": "pppppppppp"})).await;
    assert_eq!(code(&r), "INVALID_INPUT");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("username"), "{r}");
    let r = server.gql(Some(&admin), CREATE_USER, json!({"u": "carol", "p": "short"})).await;
    assert_eq!(code(&r), "INVALID_INPUT");
    let r = server.gql(Some(&admin), "mutation { disableUser(username: \"nobody\") { username } }", json!({})).await;
    assert_eq!(code(&r), "NOT_FOUND");
    let r = server.gql(Some(&admin), "mutation { disableUser(username: \"admin\") { username } }", json!({})).await;
    assert_eq!(code(&r), "CONFLICT");
    // Unknown and disabled users get one generic answer.
    for (u, p) in [("nobody", "whatever-password"), ("bob", "bob-password-1"), ("admin", "wrong-password")] {
        let r = server.gql(None, "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }", json!({"u": u, "p": p})).await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{u}");
        assert_eq!(r["errors"][0]["message"], "invalid username or password", "{u}");
    }
    // Disabled user's session, revoked token, made-up token, no token.
    for (token, why) in [(bob.as_str(), "disabled"), (pat.as_str(), "revoked"), ("nos_madeup", "not valid"), ("garbage", "not valid")] {
        let r = server.gql(Some(token), ME, json!({})).await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{why}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains(why), "{why}: {r}");
    }
    assert_eq!(code(&server.gql(None, ME, json!({})).await), "UNAUTHENTICATED");
    assert_eq!(backend.events_in_log().await, before, "no rejected request appended anything");

    server.stop().await;

    // An expired session, on a server whose sessions last 2 s (only here: a whole test run on
    // such a server would see its own admin's session expire on a busy machine).
    let server = Server::start_with(&backend, &[("NULLOPS_SESSION_TTL_SECS", "2")]).await;
    let short = server.admin().await;
    // A live feed of that session ends once it expires, at the next event it would deliver: no
    // event says a session expired, so the feed watches the time itself.
    let made = server.ok(Some(&short), "mutation { createApiToken(name: \"lasting\") { token } }", json!({})).await;
    let lasting = made["createApiToken"]["token"].as_str().unwrap().to_owned();
    let mut feed = support::subscribe(&server, &short, "subscription { catalogUpdated { kind name } }", json!({})).await;
    assert_eq!(support::next_json(&mut feed).await["payload"]["data"]["catalogUpdated"]["kind"], "LISTENING");
    let after_login = backend.events_in_log().await;
    eventually(Duration::from_secs(30), "the session expires", || async {
        let r = server.gql(Some(&short), ME, json!({})).await;
        r.get("errors").is_some() && code(&r) == "UNAUTHENTICATED" && r.to_string().contains("expired")
    })
    .await;
    assert_eq!(backend.events_in_log().await, after_login);
    server
        .ok(
            Some(&lasting),
            "mutation { createEnvironment(input: {name: \"later\", baseDomain: \"localhost\", cleanupAfterSeconds: 3600}) { name } }",
            json!({}),
        )
        .await;
    let ended = support::next_json(&mut feed).await;
    assert_eq!(ended["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{ended}");
    assert!(ended.to_string().contains("expired"), "{ended}");
    server.stop().await;
}

/// A client whose connections come from `address` (any of 127/8 reaches the server on loopback).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

/// Signs in as admin with `password` through `client`; the whole answer.
async fn login_from(server: &Server, client: &reqwest::Client, password: &str) -> Value {
    let query = "mutation($p: String!) { login(username: \"admin\", password: $p) { token } }";
    client.post(server.url("/graphql")).json(&json!({"query": query, "variables": {"p": password}})).send().await.unwrap().json().await.unwrap()
}

async fn failed_logins_are_throttled(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    // In production a second server shares the store and read models from the start.
    let second = match mode {
        Mode::Production => Some(Server::start(&backend).await),
        Mode::Embedded => None,
    };
    let (attacker, user) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    for _ in 0..5 {
        assert_eq!(code(&login_from(&server, &attacker, "not-the-password").await), "UNAUTHENTICATED");
    }
    let query = "mutation($p: String!) { login(username: \"admin\", password: $p) { token } }";
    let answer = attacker.post(server.url("/graphql")).json(&json!({"query": query, "variables": {"p": "not-the-password"}})).send().await.unwrap();
    // The HTTP header says when to try again, as the error does.
    let header = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let r: Value = answer.json().await.unwrap();
    assert_eq!(code(&r), "RATE_LIMITED");
    let secs = r["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().unwrap();
    assert!(secs >= 1);
    assert_eq!(header, Some(secs), "Retry-After");
    // From that address even the right password waits...
    assert_eq!(code(&login_from(&server, &attacker, ADMIN_PASSWORD).await), "RATE_LIMITED");
    // ...but the user, from their own address, signs in at once.
    let r = login_from(&server, &user, ADMIN_PASSWORD).await;
    let token = r["data"]["login"]["token"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    // The count is kept where every server sees it: another server, or this one restarted.
    let other = match second {
        Some(second) => {
            // A token one server returned is accepted by every other at once.
            assert_eq!(second.ok(Some(&token), ME, json!({})).await["me"]["username"], "admin");
            second
        }
        None => {
            server.stop().await;
            Server::start(&backend).await
        }
    };
    // The attacker's address is past its free failures there too, however long that server took
    // to start: either still waiting, or one more failure puts it back to waiting at once (a
    // server that did not see the count would allow five more).
    let first = code(&login_from(&other, &attacker, "not-the-password").await).to_owned();
    if first != "RATE_LIMITED" {
        assert_eq!(first, "UNAUTHENTICATED");
        assert_eq!(code(&login_from(&other, &attacker, "not-the-password").await), "RATE_LIMITED");
    }
    other.stop().await;
}

/// The line the throttle is held to: after 20 s of wrong passwords for a user from one address,
/// the right password from another address signs in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_seconds_of_wrong_passwords_do_not_lock_out_the_user() {
    let backend = Backend::new(Mode::Embedded).await;
    let server = Server::start(&backend).await;
    let (attacker, user) = (client_from("127.0.0.1"), client_from("127.0.0.3"));
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let r = login_from(&server, &attacker, &format!("guess-{attempts}")).await;
        assert!(matches!(code(&r), "UNAUTHENTICATED" | "RATE_LIMITED"), "{r}");
        attempts += 1;
    }
    let r = login_from(&server, &user, ADMIN_PASSWORD).await;
    assert!(r["data"]["login"]["token"].is_string(), "after {attempts} wrong passwords in 20 s: {r}");
    println!("{attempts} wrong passwords in 20 s from one address; the right one from another signed in");
    server.stop().await;
}

async fn subscriptions_deliver_live_events(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    let mut ws =
        subscribe(&server, &admin, "subscription { auditEvents(filter: { eventType: \"user.registered\" }) { eventType stream actor } }", json!({})).await;
    // The subscription is registered once the server has processed `subscribe`; a mutation made
    // right after could race it, so repeat until the first event arrives (bounded).
    let mut n = 0;
    let event = loop {
        n += 1;
        server.ok(Some(&admin), CREATE_USER, json!({"u": format!("sub{n}"), "p": "sub-password-1"})).await;
        match tokio::time::timeout(Duration::from_millis(500), next_json(&mut ws)).await {
            Ok(v) => break v,
            Err(_) => assert!(n < 20, "no subscription event"),
        }
    };
    assert_eq!(event["type"], "next");
    let entry = &event["payload"]["data"]["auditEvents"];
    assert_eq!(entry["eventType"], "user.registered");
    assert_eq!(entry["actor"], "user:admin");
    assert!(entry["stream"].as_str().unwrap().starts_with("user-sub"));

    // A non-admin is refused; a bad token is refused at connection_init.
    server.ok(Some(&admin), CREATE_USER, json!({"u": "viewer", "p": "viewer-password"})).await;
    let viewer = server.login("viewer", "viewer-password").await;
    let mut ws2 = subscribe(&server, &viewer, "subscription { auditEvents { eventType } }", json!({})).await;
    let refused = next_json(&mut ws2).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(refused["payload"]["data"], Value::Null);
    server.stop().await;
}

async fn two_servers_share_one_platform(mode: Mode) {
    if mode == Mode::Embedded {
        // One data dir is one process: a second `up` on it must refuse to start.
        let backend = Backend::new(mode).await;
        let first = Server::start(&backend).await;
        let out = backend.command(&["up", "--listen", "127.0.0.1:0"]).output().await.unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("another nullops process"), "{out:?}");
        first.stop().await;
        return;
    }
    let backend = Backend::new(mode).await;
    let a = Server::start(&backend).await;
    let b = Server::start(&backend).await;
    let admin_a = a.admin().await;
    let admin_b = b.admin().await;
    let mut ws_b = subscribe(&b, &admin_b, "subscription { auditEvents(filter: { eventType: \"user.registered\" }) { stream } }", json!({})).await;
    let mut ws_a = subscribe(&a, &admin_a, "subscription { auditEvents(filter: { eventType: \"user.registered\" }) { stream } }", json!({})).await;
    let mut n = 0;
    loop {
        n += 1;
        // Written through A, read at once through B.
        let name = format!("shared{n}");
        a.ok(Some(&admin_a), CREATE_USER, json!({"u": name, "p": "shared-password"})).await;
        let seen = b.ok(Some(&admin_b), "query($u: String!) { user(username: $u) { username } }", json!({"u": name})).await;
        assert_eq!(seen["user"]["username"], name, "read-your-writes across servers");
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(500), next_json(&mut ws_b)).await {
            assert!(v["payload"]["data"]["auditEvents"]["stream"].as_str().unwrap().starts_with("user-shared"));
            let v = next_json(&mut ws_a).await;
            assert!(v["payload"]["data"]["auditEvents"]["stream"].as_str().unwrap().starts_with("user-shared"));
            break;
        }
        assert!(n < 20, "server B never delivered the subscription event");
    }
    a.stop().await;
    b.stop().await;
}

async fn projections_rebuild_from_the_log(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    for i in 0..5 {
        server.ok(Some(&admin), CREATE_USER, json!({"u": format!("r{i}"), "p": "rebuild-password"})).await;
    }
    let before = events_applied(&server, &admin).await;
    // Embedded: the data dir belongs to one process, so rebuild offline. Production: rebuild
    // while the server runs; the server replays the reset read model.
    let server = if mode == Mode::Embedded {
        server.stop().await;
        None
    } else {
        Some(server)
    };
    let out = backend.command(&["projections", "rebuild", "nope"]).output().await.unwrap();
    assert!(!out.status.success());
    // The refusal names every read model there is, from the list the server runs.
    let said = String::from_utf8_lossy(&out.stderr);
    for projection in nullops_projections::all() {
        assert!(said.contains(projection.name()), "{said}");
    }
    let out = backend.command(&["projections", "rebuild", "audit"]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let server = match server {
        Some(s) => s,
        None => Server::start(&backend).await,
    };
    let admin = server.admin().await;
    let expected_total = backend.events_in_log().await;
    // Whole again once it has replayed to the end of the log (until then its queries answer
    // UNAVAILABLE).
    eventually(Duration::from_secs(10), "audit replayed", || async {
        let p = events_applied(&server, &admin).await;
        let health = server.ok(Some(&admin), "{ platformHealth { projections { name rebuilding { eventsApplied } } } }", json!({})).await;
        let whole = health["platformHealth"]["projections"].as_array().unwrap().iter().all(|p| p["rebuilding"].is_null());
        whole && p.as_array().unwrap().iter().any(|p| p["name"] == "audit" && p["eventsApplied"] == json!(expected_total))
    })
    .await;
    let users = server.ok(Some(&admin), "{ auditLog(filter: { eventType: \"user.registered\" }) { entries { stream } } }", json!({})).await;
    assert_eq!(users["auditLog"]["entries"].as_array().unwrap().len(), 6, "admin and five users, after the rebuild");
    assert!(before.as_array().unwrap().iter().any(|p| p["name"] == "identity"));
    server.stop().await;
}

async fn health_ui_and_graphiql(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    // Ready once every read model of the new install has caught up with the log (its first
    // events: the admin, the catalog); until then it says which are still being built.
    until(Duration::from_secs(60), "/readyz to say ready", || async {
        let r = server.http.get(server.url("/readyz")).send().await.map_err(|e| e.to_string())?;
        let (status, said) = (r.status(), r.text().await.unwrap_or_default());
        match status.as_u16() {
            200 => Ok(()),
            503 if said.starts_with("not ready: read models are being rebuilt from the event log: ") => Err(said),
            _ => panic!("/readyz answered {status}: {said}"),
        }
    })
    .await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/", "<title>NullOps</title>"),
        ("/app.js", "import { gql"),
        ("/lib/api.js", "graphql-transport-ws"),
        ("/graphiql", "graphiql"),
    ] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await.unwrap().to_lowercase().contains(&needle.to_lowercase()), "{path}");
    }
    // Login through the cookie, as the web UI does.
    let r = server
        .http
        .post(server.url("/graphql"))
        .json(&json!({"query": "mutation { login(username: \"admin\", password: \"admin-password-for-tests\") { user { username } } }"}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let me: Value = server.http.post(server.url("/graphql")).json(&json!({"query": ME})).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["data"]["me"]["username"], "admin", "the cookie jar authenticates: {me}");

    // The web UI's subscriptions authenticate with the same cookie and an empty connection_init.
    let session = cookie.split(';').next().unwrap().to_owned();
    let query = "subscription { auditEvents(filter: { eventType: \"user.registered\" }) { stream } }";
    let mut ws = subscribe_as_browser(&server, &session, None, query).await;
    let admin = server.admin().await;
    let mut n = 0;
    loop {
        n += 1;
        server.ok(Some(&admin), CREATE_USER, json!({"u": format!("web{n}"), "p": "web-password-1"})).await;
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(500), next_json(&mut ws)).await {
            assert!(v["payload"]["data"]["auditEvents"]["stream"].as_str().unwrap().starts_with("user-web"), "{v}");
            break;
        }
        assert!(n < 20, "no event over the cookie-authenticated subscription");
    }

    // The audit history filters by time range.
    let all = server.ok(Some(&admin), "{ auditLog(page: { first: 500 }) { entries { occurredAt } } }", json!({})).await;
    let times: Vec<&str> = all["auditLog"]["entries"].as_array().unwrap().iter().map(|e| e["occurredAt"].as_str().unwrap()).collect();
    let (newest, oldest) = (times[0], times[times.len() - 1]);
    let q = "query($f: DateTime, $t: DateTime) { auditLog(filter: { from: $f, to: $t }, page: { first: 500 }) { entries { occurredAt } } }";
    let from_newest = server.ok(Some(&admin), q, json!({"f": newest, "t": null})).await;
    assert_eq!(from_newest["auditLog"]["entries"].as_array().unwrap().len(), times.iter().filter(|t| **t == newest).count());
    let before_newest = server.ok(Some(&admin), q, json!({"f": oldest, "t": newest})).await;
    assert_eq!(before_newest["auditLog"]["entries"].as_array().unwrap().len(), times.iter().filter(|t| **t != newest).count());

    if mode == Mode::Embedded {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(backend.data_dir.join("master.key")).expect("master key generated");
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
    server.stop().await;
}

async fn logs_are_json_on_request(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start_with(&backend, &[("NULLOPS_LOG_FORMAT", "json"), ("NULLOPS_LOG", "info")]).await;
    let admin = server.admin().await;
    server.ok(Some(&admin), "{ me { username } }", json!({})).await;
    server.ok(Some(&admin), CREATE_USER, json!({"u": "logged", "p": "logged-password"})).await;
    let lines = server.output.lock().unwrap().clone();
    let json_lines: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(json_lines.iter().any(|l| l["level"] == "INFO" && l["fields"]["message"].is_string()), "{lines:?}");
    let all = lines.join("\n");
    for secret in [support::ADMIN_PASSWORD, "logged-password", admin.as_str()] {
        assert!(!all.contains(secret), "a secret appeared in the logs");
    }
    server.stop().await;
}

/// A graphql-transport-ws client as the web UI opens it: authenticated by the session `cookie`
/// (an empty connection_init), from page `origin` when given, subscribed to `query`.
async fn subscribe_as_browser(
    server: &Server,
    cookie: &str,
    origin: Option<&str>,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{}/graphql", server.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    request.headers_mut().insert("Cookie", cookie.parse().unwrap());
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", origin.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    ws.send(Message::text(json!({"type": "connection_init", "payload": {}}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": query}}).to_string())).await.unwrap();
    ws
}

/// `nullops up`'s data is its owner's alone: the data dir and its directories 0700, every file
/// 0600 (SQLite's WAL files and the local agent's among them), and a data dir an earlier
/// version left readable is tightened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let backend = Backend::new(Mode::Embedded).await;
    std::fs::create_dir_all(&backend.data_dir).unwrap();
    std::fs::set_permissions(&backend.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let left = backend.data_dir.join("notes.txt");
    std::fs::write(&left, "left by an earlier version").unwrap();
    std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start_with(&backend, &[("NULLOPS_NO_LOCAL_AGENT", "false")]).await;
    let admin = server.admin().await;
    server.ok(Some(&admin), CREATE_USER, json!({"u": "private", "p": "private-password"})).await;
    let mut seen = 0;
    let mut dirs = vec![backend.data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 8, "the log, read models, keys, their WAL files and the agent's files: {seen}");
    server.stop().await;
}

/// A page of another origin can make a signed-in admin's browser send a request with the session
/// cookie, as a form (`text/plain`, form-encoded) or a `fetch`: none of it is executed. The UI's
/// own requests (JSON, its own origin) and bearer-token clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_with_the_session_cookie_are_refused() {
    let backend = Backend::new(Mode::Embedded).await;
    let server = Server::start(&backend).await;
    let login = "mutation { login(username: \"admin\", password: \"admin-password-for-tests\") { token } }";
    let signed_in = server.http.post(server.url("/graphql")).json(&json!({"query": login})).send().await.unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let token: Value = signed_in.json().await.unwrap();
    let token = token["data"]["login"]["token"].as_str().unwrap().to_owned();
    let mutation =
        |n: u32| json!({"query": format!("mutation {{ createUser(username: \"csrf{n}\", password: \"csrf-password-1\") {{ username }} }}")}).to_string();
    let plain = reqwest::Client::new();
    let post = |body: String, headers: &[(&str, &str)]| {
        let mut request = plain.post(server.url("/graphql")).header("cookie", &cookie).body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let deployed_service = "http://web.pr-1.local.localhost:8081";
    let refused = [
        (post(mutation(1), &[("content-type", "text/plain")]).await, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (post(format!("query={}", mutation(2)), &[("content-type", "application/x-www-form-urlencoded")]).await, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (post(mutation(3), &[("content-type", "application/json"), ("origin", deployed_service)]).await, 403, "CROSS_SITE_REQUEST"),
        (post(mutation(4), &[("content-type", "application/json"), ("sec-fetch-site", "same-site")]).await, 403, "CROSS_SITE_REQUEST"),
    ];
    for ((status, body), want_status, want_code) in refused {
        assert_eq!((status, code(&body)), (want_status, want_code), "{body}");
    }
    let users = server.ok(Some(&token), "{ users { username } }", json!({})).await;
    assert!(!users.to_string().contains("csrf"), "no refused request ran: {users}");

    // The UI itself (JSON from its own origin), a script with the cookie (no Origin), and a
    // bearer client sending text/plain are all served.
    let own = format!("http://{}", server.addr);
    let (status, body) = post(mutation(5), &[("content-type", "application/json"), ("origin", &own)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let (_, body) = post(mutation(6), &[("content-type", "application/json")]).await;
    assert!(body.get("errors").is_none(), "{body}");
    let bearer = plain.post(server.url("/graphql")).bearer_auth(&token).header("content-type", "text/plain").body(mutation(7)).send().await.unwrap();
    let bearer: Value = bearer.json().await.unwrap();
    assert!(bearer.get("errors").is_none(), "bearer clients are unaffected: {bearer}");

    // A WebSocket opened from another origin does not ride on the cookie.
    let mut ws = subscribe_as_browser(&server, &cookie, Some(deployed_service), "subscription { auditEvents { eventType } }").await;
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{answer}");
    server.stop().await;
}

/// SIGTERM with subscriptions open (a browser's, by cookie, and API clients'): each gets a
/// close frame saying 1001 (going away), and the process exits cleanly (a watchdog would end it
/// with status 1 at 5 s, so a clean exit is one within 5 s).
async fn a_stop_closes_every_subscription_and_exits(mode: Mode) {
    let backend = Backend::new(mode).await;
    let mut server = Server::start(&backend).await;
    let admin = server.admin().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(subscribe(&server, &admin, "subscription { auditEvents { eventType } }", json!({})).await);
    }
    let signed_in = server
        .http
        .post(server.url("/graphql"))
        .json(&json!({"query": format!("mutation {{ login(username: \"admin\", password: \"{ADMIN_PASSWORD}\") {{ token }} }}")}))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    sockets.push(subscribe_as_browser(&server, &cookie, None, "subscription { auditEvents { eventType } }").await);
    // Each subscription is live before the stop.
    server.ok(Some(&admin), CREATE_USER, json!({"u": "before-stop", "p": "before-stop-1"})).await;
    for ws in sockets.iter_mut() {
        assert_eq!(next_json(ws).await["type"], "next");
    }

    let started = tokio::time::Instant::now();
    server.terminate();
    for ws in sockets.iter_mut() {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a close frame within 10 s") {
                Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), 1001, "going away: {close:?}");
    }
    let status = server.exited(Duration::from_secs(20)).await;
    assert!(status.success(), "a clean exit, before the 5 s watchdog: {status}");
    println!("stopped {:?} after SIGTERM with 4 subscriptions open", started.elapsed());
}

in_both_modes!(
    a_stop_closes_every_subscription_and_exits,
    identity_lifecycle,
    bad_input_gets_a_code_and_appends_nothing,
    failed_logins_are_throttled,
    subscriptions_deliver_live_events,
    two_servers_share_one_platform,
    projections_rebuild_from_the_log,
);
in_embedded_mode!(health_ui_and_graphiql, logs_are_json_on_request);
