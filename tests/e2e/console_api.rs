//! What the web console asks of the API beyond the queries: list feeds that follow changes for
//! those who may see them (`deploymentsUpdated`, `nodesUpdated`, `catalogUpdated`), the actions a
//! deployment offers its caller, trying a registry (`registryTags`), each environment's DNS
//! record, the audit history searched by name, and INVALID_INPUT naming its field.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::world::*;
use support::{code, next_json, subscribe, Mode};

const DEPLOYMENTS: &str = "subscription { deploymentsUpdated { id name project state actions myAccess } }";
const CATALOG: &str = "subscription { catalogUpdated { kind name removed } }";
const NODES: &str = "subscription($e: String) { nodesUpdated(environment: $e) { id node { status usage { sampledAt } } } }";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The data of the feed's next item; fails on an error or the feed's end.
async fn next_item(ws: &mut Ws, field: &str) -> Value {
    let message = next_json(ws).await;
    assert_eq!(message["type"], "next", "{message}");
    assert!(message["payload"]["errors"].is_null(), "{message}");
    message["payload"]["data"][field].clone()
}

/// Reads the feed until an item satisfies `wanted` (or a generous bound passes); the items
/// before it are returned too, for checks of what came first.
async fn read_until(ws: &mut Ws, field: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no {what} in the feed; saw {seen:?}");
        let item = next_item(ws, field).await;
        let done = wanted(&item);
        seen.push(item);
        if done {
            return seen;
        }
    }
}

async fn user(w: &World, name: &str, team: &str) -> String {
    w.ok("mutation($u: String!) { createUser(username: $u, password: \"a-long-password-1\") { username } }", json!({"u": name})).await;
    w.ok("mutation($t: String!) { createTeam(name: $t) { name } }", json!({"t": team})).await;
    w.ok("mutation($t: String!, $u: String!) { addTeamMember(team: $t, username: $u) { name } }", json!({"t": team, "u": name})).await;
    w.server.login(name, "a-long-password-1").await
}

async fn grant(w: &World, team: &str, project: &str, access: &str) {
    let query = "mutation($t: String!, $p: String!, $a: Access!) { grantAccess(team: $t, target: {kind: PROJECT, name: $p}, access: $a) { name } }";
    w.ok(query, json!({"t": team, "p": project, "a": access})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_feeds_follow_changes_for_those_who_may_see_them() {
    let w = World::new(Mode::Embedded).await;
    w.save("shop", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "eve-proj", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    w.save("eve-proj", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    let bob = user(&w, "bob", "qa").await;
    grant(&w, "qa", "shop", "READ_ONLY").await;
    let eve = user(&w, "eve", "eves").await;
    grant(&w, "eves", "eve-proj", "FULL").await;

    let mut bob_deployments = subscribe(&w.server, &bob, DEPLOYMENTS, json!({})).await;
    let mut bob_catalog = subscribe(&w.server, &bob, CATALOG, json!({})).await;
    let mut eve_deployments = subscribe(&w.server, &eve, DEPLOYMENTS, json!({})).await;
    let mut eve_catalog = subscribe(&w.server, &eve, CATALOG, json!({})).await;
    // A catalog feed first says it listens: what was read before may have changed meanwhile.
    for feed in [&mut bob_catalog, &mut eve_catalog] {
        assert_eq!(next_item(feed, "catalogUpdated").await, json!({"kind": "LISTENING", "name": null, "removed": false}));
    }
    let mut admin_deployments = subscribe(&w.server, &w.admin, DEPLOYMENTS, json!({})).await;

    // A deployment of shop: the admin and bob follow it up; bob, READ_ONLY, is offered nothing.
    let shop = w.create("shop", json!([])).await["id"].as_str().unwrap().to_owned();
    let running = |d: &Value| d["id"] == shop.as_str() && d["state"] == "RUNNING";
    let seen = read_until(&mut admin_deployments, "deploymentsUpdated", "shop running", running).await;
    assert_eq!(seen.last().unwrap()["actions"], json!(["DELETE", "EXTEND", "CLONE"]), "{seen:?}");
    assert!(seen.iter().any(|d| d["actions"].as_array().unwrap().contains(&json!("CANCEL"))), "cancel is offered while it is created: {seen:?}");
    let seen = read_until(&mut bob_deployments, "deploymentsUpdated", "shop running", running).await;
    assert!(seen.iter().all(|d| d["actions"] == json!([]) && d["myAccess"] == "READ_ONLY" && d["project"] == "shop"), "{seen:?}");

    // Its own feed sends it again as its node reports usage, with no event to say so.
    let usage = "subscription($id: ID!) { deploymentUpdated(id: $id) { services { memoryBytes } } }";
    let mut own = subscribe(&w.server, &bob, usage, json!({"id": shop})).await;
    next_item(&mut own, "deploymentUpdated").await;
    let again = next_item(&mut own, "deploymentUpdated").await;
    assert!(again["services"][0]["memoryBytes"].is_u64(), "{again}");
    let projects = w.server.ok(Some(&bob), "{ projects { name myAccess deployableEnvironments } }", json!({})).await;
    assert_eq!(projects["projects"], json!([{"name": "shop", "myAccess": "READ_ONLY", "deployableEnvironments": []}]));

    // A new pipeline version of shop: bob hears of it (he sees shop), eve does not; eve's
    // first news is of a service, which everyone sees.
    w.save("shop", json!({"nodes": [{"id": "web", "service": "api"}]})).await;
    let seen = read_until(&mut bob_catalog, "catalogUpdated", "shop's pipeline", |c| c["kind"] == "PIPELINE").await;
    assert_eq!(seen.last().unwrap()["name"], "shop");
    let service = json!({"i": {"name": "cache", "registry": "local", "image": "nullops/demo", "tagMode": "PINNED", "tag": "v1", "port": 8080}});
    w.ok("mutation($i: ServiceInput!) { createService(input: $i) { name } }", service).await;
    let first = next_item(&mut eve_catalog, "catalogUpdated").await;
    assert_eq!(first, json!({"kind": "SERVICE", "name": "cache", "removed": false}), "eve hears only of what she may see");

    // Eve's own deployment is her feed's first item: shop's changes never reached her.
    let mine = w.server.ok(Some(&eve), CREATE, json!({"p": "eve-proj", "e": w.environment})).await["createDeployment"]["id"].as_str().unwrap().to_owned();
    let first = next_item(&mut eve_deployments, "deploymentsUpdated").await;
    assert_eq!(first["id"], mine.as_str(), "{first}");
    assert!(first["actions"].as_array().unwrap().contains(&json!("CANCEL")) || first["state"] == "RUNNING", "{first}");

    // Eve is given shop: her catalog feed says her access changed, and shop's next change reaches her.
    grant(&w, "eves", "shop", "READ_ONLY").await;
    read_until(&mut eve_catalog, "catalogUpdated", "ACCESS", |c| c["kind"] == "ACCESS").await;
    w.ok("mutation($id: ID!) { extendDeployment(id: $id) { id } }", json!({"id": shop})).await;
    read_until(&mut eve_deployments, "deploymentsUpdated", "shop extended", |d| d["id"] == shop.as_str()).await;

    // Deleted: the feed says so, and the list can drop it.
    w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", json!({"id": shop})).await;
    read_until(&mut bob_deployments, "deploymentsUpdated", "shop deleted", |d| d["id"] == shop.as_str() && d["state"] == "DELETED").await;

    // Bob disabled: his feeds end UNAUTHENTICATED.
    w.ok("mutation { disableUser(username: \"bob\") { username } }", json!({})).await;
    loop {
        let message = next_json(&mut bob_catalog).await;
        if let Some(code) = message["payload"]["errors"][0]["extensions"]["code"].as_str() {
            assert_eq!(code, "UNAUTHENTICATED");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_feed_follows_status_and_usage() {
    let w = World::new(Mode::Embedded).await;
    let mut feed = subscribe(&w.server, &w.admin, NODES, json!({"e": w.environment})).await;
    // The agent reports its usage every few seconds: each report comes as a change.
    let first = read_until(&mut feed, "nodesUpdated", "a usage report", |c| c["node"]["usage"]["sampledAt"].is_string()).await;
    let sampled = first.last().unwrap()["node"]["usage"]["sampledAt"].clone();
    read_until(&mut feed, "nodesUpdated", "a newer usage report", |c| {
        c["node"]["usage"]["sampledAt"].is_string() && c["node"]["usage"]["sampledAt"] != sampled
    })
    .await;

    w.ok("mutation($id: ID!) { disableNode(id: $id) { id } }", json!({"id": w.node_id})).await;
    read_until(&mut feed, "nodesUpdated", "the node disabled", |c| c["id"] == w.node_id.as_str() && c["node"]["status"] == "DISABLED").await;
    w.ok("mutation($id: ID!) { enableNode(id: $id) { id } }", json!({"id": w.node_id})).await;
    read_until(&mut feed, "nodesUpdated", "the node back online", |c| c["node"]["status"] == "ONLINE").await;

    // A node added, then removed: it comes, then goes as `node: null`.
    let added = w.ok("mutation { addNode(environment: \"local\", host: \"10.9.9.9\", port: 5999) { node { id } } }", json!({})).await;
    let id = added["addNode"]["node"]["id"].as_str().unwrap().to_owned();
    read_until(&mut feed, "nodesUpdated", "the new node", |c| c["id"] == id.as_str() && c["node"].is_object()).await;
    w.ok("mutation($id: ID!) { removeNode(id: $id) }", json!({"id": id})).await;
    read_until(&mut feed, "nodesUpdated", "the node gone", |c| c["id"] == id.as_str() && c["node"].is_null()).await;

    // Only admins and those with access to an environment see its nodes.
    let nobody = user(&w, "nobody", "nobodies").await;
    let nodes = w.server.ok(Some(&nobody), "{ nodes { id } }", json!({})).await;
    assert_eq!(nodes["nodes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_is_tried_before_it_is_relied_on() {
    let w = World::new(Mode::Embedded).await;
    let tags = |repository: &str, pattern: Option<&str>| {
        let query = "query($r: String!, $p: String) { registryTags(registry: \"local\", repository: $r, pattern: $p) }";
        w.server.gql(Some(&w.admin), query, json!({"r": repository, "p": pattern}))
    };
    let all = tags("nullops/demo", None).await;
    let all: Vec<&str> = all["data"]["registryTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(all.contains(&"v1") && all.contains(&"v2"), "{all:?}");
    assert_eq!(tags("nullops/demo", Some("v2*")).await["data"]["registryTags"], json!(["v2"]));
    assert_eq!(code(&tags("nullops/no-such-image", None).await), "NOT_FOUND");
    let bad = tags("nullops/demo", Some("v 1")).await;
    assert_eq!((code(&bad), bad["errors"][0]["extensions"]["field"].as_str()), ("INVALID_INPUT", Some("tagPattern")), "{bad}");

    // Wrong credentials are refused when saved, beside the password, with the registry's answer;
    // nothing is stored.
    let refused = w
        .server
        .gql(
            Some(&w.admin),
            "mutation { createRegistry(input: {name: \"wrong\", url: \"http://127.0.0.1:5050\", username: \"nullops\", password: \"wrong\"}) { name } }",
            json!({}),
        )
        .await;
    assert_eq!((code(&refused), refused["errors"][0]["extensions"]["field"].as_str()), ("INVALID_INPUT", Some("password")), "{refused}");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("refused these credentials"), "{refused}");
    let names = w.ok("{ registries { name } }", json!({})).await;
    assert!(!names.to_string().contains("\"wrong\""), "{names}");
    // A registry that cannot be asked now is saved all the same (it may be reachable only later).
    w.ok(
        "mutation { createRegistry(input: {name: \"later\", url: \"http://127.0.0.1:9\", username: \"nullops\", password: \"unknown\"}) { name } }",
        json!({}),
    )
    .await;

    // For admins only: it uses the registry's credentials.
    let bob = user(&w, "bob", "qa").await;
    assert_eq!(code(&w.server.gql(Some(&bob), "{ registryTags(registry: \"local\", repository: \"nullops/demo\") }", json!({})).await), "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_say_their_dns_record_and_bad_input_names_its_field() {
    let w = World::new(Mode::Embedded).await;
    let created = w
        .ok("mutation { createEnvironment(input: {name: \"staging\", baseDomain: \"qa.example.com\"}) { dnsRecord { name type value zoneLine } } }", json!({}))
        .await;
    let record = &created["createEnvironment"]["dnsRecord"];
    assert_eq!(record["name"], "*.staging.qa.example.com.");
    assert_eq!(record["type"], "A");
    // The test server's ingress listens on loopback: that is where the record points.
    assert_eq!(record["zoneLine"], "*.staging.qa.example.com. 300 IN A 127.0.0.1", "{record}");
    let local = w.ok("{ environments { name dnsRecord { name } } }", json!({})).await;
    let local = local["environments"].as_array().unwrap().iter().find(|e| e["name"] == "local").unwrap().clone();
    assert!(local["dnsRecord"].is_null(), "names under localhost need no record: {local}");

    let bad = w.server.gql(Some(&w.admin), "mutation { createEnvironment(input: {name: \"x\", baseDomain: \"not a domain\"}) { name } }", json!({})).await;
    assert_eq!((code(&bad), bad["errors"][0]["extensions"]["field"].as_str()), ("INVALID_INPUT", Some("baseDomain")), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_history_is_searched_by_the_names_it_mentions() {
    let w = World::new(Mode::Embedded).await;
    w.save("shop", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    let query = "query($m: String) { auditLog(filter: {mentions: $m}, page: {first: 500}) { entries { summary eventType } } }";
    let found = w.ok(query, json!({"m": "SHOP"})).await["auditLog"]["entries"].as_array().unwrap().clone();
    assert!(found.iter().any(|e| e["eventType"] == "pipeline.version_saved"), "{found:?}");
    assert!(found.iter().all(|e| e["summary"].as_str().unwrap().to_lowercase().contains("shop")), "{found:?}");
    // LIKE's wildcards are matched as written.
    assert_eq!(w.ok(query, json!({"m": "%"})).await["auditLog"]["entries"], json!([]));

    let types = w.ok("{ auditEventTypes }", json!({})).await["auditEventTypes"].as_array().unwrap().clone();
    assert!(types.contains(&json!("deployment.requested")) && types.contains(&json!("user.disabled")), "{types:?}");

    // Live, with the same search.
    let mut feed = subscribe(&w.server, &w.admin, "subscription { auditEvents(filter: {mentions: \"cart\"}) { summary } }", json!({})).await;
    w.ok("mutation { createTeam(name: \"ops\") { name } }", json!({})).await;
    w.ok("mutation { createTeam(name: \"cart\") { name } }", json!({})).await;
    let first = next_item(&mut feed, "auditEvents").await;
    assert!(first["summary"].as_str().unwrap().contains("cart"), "{first}");
}
