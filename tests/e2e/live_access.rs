//! Live feeds obey access as it is now, not as it was when they were opened: a deployment's
//! `deploymentUpdated` and `deploymentLogs` end with UNAUTHENTICATED once the caller's user is
//! disabled or its session ends, and with FORBIDDEN once its team's grant is revoked, as
//! `auditEvents` already did.

use crate::support;

use serde_json::{json, Value};
use support::world::*;
use support::{next_json, subscribe, Mode};

const UPDATED: &str = "subscription($id: ID!) { deploymentUpdated(id: $id) { state } }";
const LOGS: &str = "subscription($id: ID!) { deploymentLogs(id: $id) { text } }";
const GRANT: &str = "mutation { grantAccess(team: \"qa\", target: {kind: PROJECT, name: \"serving\"}, access: READ_ONLY) { name } }";
const REVOKE: &str = "mutation { revokeAccess(team: \"qa\", target: {kind: PROJECT, name: \"serving\"}) { name } }";

/// Reads the feed until it ends with an error; the error's code.
async fn ends_with<S>(ws: &mut S) -> String
where
    S: futures::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message: Value = next_json(ws).await;
        if let Some(code) = message["payload"]["errors"][0]["extensions"]["code"].as_str() {
            return code.to_owned();
        }
        assert_eq!(message["type"], "next", "the feed delivers until it ends with an error: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feeds_end_when_access_ends() {
    let w = World::new(Mode::Embedded).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "serving", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    w.save("serving", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    let id = w.create("serving", json!([])).await["id"].as_str().unwrap().to_owned();
    w.reaches(&id, "RUNNING", MINUTE).await;
    w.ok("mutation { createUser(username: \"bob\", password: \"bob-password-1\") { username } }", json!({})).await;
    w.ok("mutation { createTeam(name: \"qa\") { name } }", json!({})).await;
    w.ok("mutation { addTeamMember(team: \"qa\", username: \"bob\") { name } }", json!({})).await;
    w.ok(GRANT, json!({})).await;

    // Disabled: the feed ends UNAUTHENTICATED, with no event of the deployment needed.
    let token = w.server.login("bob", "bob-password-1").await;
    let mut ws = subscribe(&w.server, &token, UPDATED, json!({"id": id})).await;
    assert_eq!(next_json(&mut ws).await["payload"]["data"]["deploymentUpdated"]["state"], "RUNNING");
    w.ok("mutation { disableUser(username: \"bob\") { username } }", json!({})).await;
    assert_eq!(ends_with(&mut ws).await, "UNAUTHENTICATED");
    w.ok("mutation { enableUser(username: \"bob\") { username } }", json!({})).await;

    // The team's grant revoked: FORBIDDEN.
    let token = w.server.login("bob", "bob-password-1").await;
    let mut ws = subscribe(&w.server, &token, UPDATED, json!({"id": id})).await;
    assert_eq!(next_json(&mut ws).await["payload"]["data"]["deploymentUpdated"]["state"], "RUNNING");
    w.ok(REVOKE, json!({})).await;
    assert_eq!(ends_with(&mut ws).await, "FORBIDDEN");
    w.ok(GRANT, json!({})).await;

    // The log feed, and the session ended (signed out elsewhere): UNAUTHENTICATED.
    let token = w.server.login("bob", "bob-password-1").await;
    let mut ws = subscribe(&w.server, &token, LOGS, json!({"id": id})).await;
    assert_eq!(next_json(&mut ws).await["type"], "next", "the log's last lines first");
    w.server.ok(Some(&token), "mutation { logout }", json!({})).await;
    assert_eq!(ends_with(&mut ws).await, "UNAUTHENTICATED");
    // And a revoked grant ends the log feed too.
    let token = w.server.login("bob", "bob-password-1").await;
    let mut ws = subscribe(&w.server, &token, LOGS, json!({"id": id})).await;
    assert_eq!(next_json(&mut ws).await["type"], "next");
    w.ok(REVOKE, json!({})).await;
    assert_eq!(ends_with(&mut ws).await, "FORBIDDEN");

    // Without a grant, the deployment reads as one that does not exist: the same code and
    // words, and never its name.
    let missing = uuid::Uuid::now_v7().to_string();
    for mutation in ["deleteDeployment", "extendDeployment", "retryDeployment", "cloneDeployment"] {
        let query = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ id }} }}");
        let unseen = w.server.gql(Some(&token), &query, json!({"id": id})).await;
        let absent = w.server.gql(Some(&token), &query, json!({"id": missing})).await;
        let words = |r: &Value, id: &str| r["errors"][0]["message"].as_str().unwrap().replace(id, "ID");
        assert_eq!((support::code(&unseen), words(&unseen, &id)), (support::code(&absent), words(&absent, &missing)), "{mutation}: {unseen} vs {absent}");
        assert_eq!(support::code(&unseen), "NOT_FOUND");
        let name = w.deployment(&id).await["name"].as_str().unwrap().to_owned();
        assert!(!unseen.to_string().contains(&name), "{mutation} names the deployment: {unseen}");
    }
}

/// `nodesUpdated` tells a caller only of the nodes they may see: a node of an environment they
/// have no grant for is never named (not even as gone), and filtering by a hidden environment's
/// name answers as for one that does not exist. A node shown and then put out of sight is sent
/// as gone, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_feed_names_only_nodes_the_caller_may_see() {
    let backend = support::Backend::new(Mode::Embedded).await;
    let server = support::Server::start(&backend).await;
    let admin = server.admin().await;
    let ok = |query: &'static str, variables: Value| {
        let (server, admin) = (&server, admin.clone());
        async move { server.ok(Some(&admin), query, variables).await }
    };
    for name in ["hidden", "seen"] {
        ok("mutation($n: String!) { createEnvironment(input: {name: $n, baseDomain: \"qa.example.com\"}) { name } }", json!({"n": name})).await;
    }
    let add = "mutation($e: String!, $p: Int!) { addNode(environment: $e, host: \"127.0.0.9\", port: $p) { node { id } } }";
    let hidden = ok(add, json!({"e": "hidden", "p": 5101})).await["addNode"]["node"]["id"].as_str().unwrap().to_owned();
    let seen = ok(add, json!({"e": "seen", "p": 5102})).await["addNode"]["node"]["id"].as_str().unwrap().to_owned();
    ok("mutation { createUser(username: \"bob\", password: \"bob-password-1\") { username } }", json!({})).await;
    ok("mutation { createTeam(name: \"qa\") { name } }", json!({})).await;
    ok("mutation { addTeamMember(team: \"qa\", username: \"bob\") { name } }", json!({})).await;
    ok("mutation { grantAccess(team: \"qa\", target: {kind: ENVIRONMENT, name: \"seen\"}, access: READ_ONLY) { name } }", json!({})).await;
    let bob = server.login("bob", "bob-password-1").await;
    const FEED: &str = "subscription($e: String) { nodesUpdated(environment: $e) { id node { id enabled } } }";
    let mut all = subscribe(&server, &bob, FEED, json!({"e": null})).await;
    let mut filtered = subscribe(&server, &bob, FEED, json!({"e": "hidden"})).await;

    // The hidden node changes first, then the seen one: bob hears of the seen one only.
    let disable = "mutation($id: ID!) { disableNode(id: $id) { id } }";
    ok(disable, json!({"id": hidden})).await;
    ok(disable, json!({"id": seen})).await;
    // (The connector's dial attempts change the seen node too: bob may hear of those first.)
    loop {
        let change = next_json(&mut all).await["payload"]["data"]["nodesUpdated"].clone();
        assert_eq!(change["id"], json!(seen), "a node bob may not see was named: {change}");
        if change["node"]["enabled"] == json!(false) {
            break;
        }
    }

    // Once bob may see the hidden environment, its node's next change is the filtered feed's
    // first message: the change before the grant was never sent there.
    ok("mutation { grantAccess(team: \"qa\", target: {kind: ENVIRONMENT, name: \"hidden\"}, access: READ_ONLY) { name } }", json!({})).await;
    ok("mutation($id: ID!) { enableNode(id: $id) { id } }", json!({"id": hidden})).await;
    // Had the feed named the hidden node before the grant, it would have come as gone (null).
    loop {
        let change = next_json(&mut filtered).await["payload"]["data"]["nodesUpdated"].clone();
        assert_eq!(change["id"], json!(hidden));
        assert!(change["node"].is_object(), "the hidden node was named before bob could see it: {change}");
        if change["node"]["enabled"] == json!(true) {
            break;
        }
    }

    // Shown, then out of sight: sent as gone, once.
    ok("mutation { revokeAccess(team: \"qa\", target: {kind: ENVIRONMENT, name: \"hidden\"}) { name } }", json!({})).await;
    ok(disable, json!({"id": hidden})).await;
    loop {
        let change = next_json(&mut filtered).await["payload"]["data"]["nodesUpdated"].clone();
        if change == json!({"id": hidden, "node": null}) {
            break;
        }
        assert_eq!(change["node"]["enabled"], json!(true), "only earlier changes before the revocation: {change}");
    }
    server.stop().await;
}
