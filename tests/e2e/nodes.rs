//! Nodes end to end: the platform's connector against real agents running as containers (the
//! `nullops/agent` image) on a Docker network of the test's own, driven through the GraphQL API
//! and Docker: stop and start, a network partition, a regenerated certificate, token rotation and
//! revocation, a wrong token, another protocol version, a disabled node.

use crate::support;

use std::time::{Duration, Instant};

use nullops_domain::capacity::{Capacity, CapacityCommand, Resources};
use nullops_events::EventMetadata;
use nullops_store::commands::execute;
use serde_json::{json, Value};
use support::lab::Lab;
use support::{code, docker, must, Backend, Mode, Server};

/// How long a node's change may take to show: generous, for a loaded machine. The product aims
/// at OFFLINE within 5 s of a failure and ONLINE within 5 s of recovery; what it takes is
/// printed (and measured by `nullops bench nodes`), not asserted.
const WITHIN: Duration = Duration::from_secs(30);

const NODE: &str =
    "query($id: ID!) { node(id: $id) { status statusDetail thumbprint pendingThumbprint agentVersion usage { cpuCores memoryTotalBytes memoryUsedBytes } } }";
const ADD: &str = "mutation($h: String!) { addNode(environment: \"staging\", host: $h) { node { id status } token runCommand } }";

async fn node(server: &Server, admin: &str, id: &str) -> Value {
    server.ok(Some(admin), NODE, json!({ "id": id })).await["node"].clone()
}

/// Waits until node `id` shows `status`; fails after `within`. Returns how long it took.
async fn reaches(server: &Server, admin: &str, id: &str, status: &str, within: Duration) -> Duration {
    let start = Instant::now();
    support::until(within, &format!("node {status}"), || async {
        let n = node(server, admin, id).await;
        if n["status"] == status {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    start.elapsed()
}

async fn add_node(server: &Server, admin: &str, host: &str) -> (String, String) {
    let added = server.ok(Some(admin), ADD, json!({ "h": host })).await["addNode"].clone();
    let token = added["token"].as_str().unwrap().to_owned();
    let command = added["runCommand"].as_str().unwrap();
    assert!(command.contains(&token) && command.contains("nullops/agent:") && command.contains("/var/run/docker.sock"), "{command}");
    (added["node"]["id"].as_str().unwrap().to_owned(), token)
}

async fn nodes_connect_fail_over_and_are_trusted_only_as_pinned(mode: Mode) {
    let backend = Backend::new(mode).await;
    // Verbose, so that the check that no token is logged means something.
    let server = Server::start_with(&backend, &[("NULLOPS_LOG", "info,nullops_connector=debug,nullops_gateway=debug")]).await;
    let admin = server.admin().await;
    server.ok(Some(&admin), "mutation { createEnvironment(input: {name: \"staging\", baseDomain: \"qa.example.com\"}) { name } }", json!({})).await;
    let mut lab = Lab::new();

    // Registered, then started: ONLINE, pinned, reporting usage, and a container of its scope
    // that nothing asks for is removed (the empty desired state is applied).
    let (id, token) = add_node(&server, &admin, &lab.ip(10)).await;
    assert_eq!(node(&server, &admin, &id).await["status"], "PENDING");
    // Dialled before its agent runs: still PENDING (never reached), saying why.
    let waiting = support::until(WITHIN, "the first failed dial recorded", || async {
        let n = node(&server, &admin, &id).await;
        if n["statusDetail"].as_str().unwrap_or("").starts_with("not reached yet") {
            Ok(n)
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    let stray = must(&[
        "run",
        "-d",
        "--label",
        &format!("nullops.scope={}", lab.scope("a")),
        "--label",
        "nullops.deployment=ghost",
        "--label",
        "nullops.container=web",
        "nullops-test/busybox:1",
        "sleep",
        "3600",
    ]);
    lab.run_agent("a", 10, &token, &[]);
    reaches(&server, &admin, &id, "ONLINE", Duration::from_secs(20)).await;
    let n = node(&server, &admin, &id).await;
    let logged = lab.logs("a");
    let thumbprint = n["thumbprint"].as_str().expect("pinned").to_owned();
    assert!(logged.contains(&thumbprint), "the agent logs the thumbprint the control plane pinned");
    assert!(!logged.contains(&token), "the token never reaches the agent's log");
    support::eventually(Duration::from_secs(10), "the stray container is removed", || async { docker(&["inspect", &stray]).is_err() }).await;
    support::eventually(Duration::from_secs(15), "usage reported", || async {
        node(&server, &admin, &id).await["usage"]["memoryTotalBytes"].as_u64().unwrap_or(0) > 0
    })
    .await;

    // Each change is timed from the moment it is made: OFFLINE after the agent stops (or is
    // killed, or cut off), ONLINE after it comes back.
    let name = lab.name("a");
    let after = |change: &[&str]| {
        let started = Instant::now();
        must(change);
        WITHIN.saturating_sub(started.elapsed())
    };
    for (stop, start) in [(vec!["stop", name.as_str()], vec!["start", name.as_str()]), (vec!["kill", name.as_str()], vec!["start", name.as_str()])] {
        let offline = reaches(&server, &admin, &id, "OFFLINE", after(&stop)).await;
        let online = reaches(&server, &admin, &id, "ONLINE", after(&start)).await;
        println!("docker {}: OFFLINE after {offline:?}; docker start: ONLINE after {online:?}", stop[0]);
    }

    // A partition: the network is cut, then restored.
    let offline = reaches(&server, &admin, &id, "OFFLINE", after(&["network", "disconnect", &lab.network, &name])).await;
    let ip = lab.ip(10);
    let online = reaches(&server, &admin, &id, "ONLINE", after(&["network", "connect", "--ip", &ip, &lab.network, &name])).await;
    println!("partition: OFFLINE after {offline:?}; healed: ONLINE after {online:?}");

    // A new certificate (the agent's data lost): UNTRUSTED, nothing sent, until an admin approves
    // exactly the thumbprint presented.
    lab.remove_agent("a");
    must(&[
        "run",
        "--rm",
        "-v",
        &format!("{name}:/data"),
        "--entrypoint",
        "/bin/busybox",
        "nullops-test/busybox:1",
        "rm",
        "/data/agent.crt",
        "/data/agent.key",
    ]);
    lab.run_agent("a", 10, &token, &[]);
    reaches(&server, &admin, &id, "UNTRUSTED", Duration::from_secs(20)).await;
    let untrusted = node(&server, &admin, &id).await;
    let pending = untrusted["pendingThumbprint"].as_str().expect("pending").to_owned();
    assert_ne!(pending, thumbprint);
    // Its detail says what happened, not what the connection last did.
    let detail = untrusted["statusDetail"].as_str().unwrap();
    assert!(detail.contains(&pending) && detail.contains("approve"), "{untrusted}");
    assert!(!lab.logs("a").contains("control plane connected"), "an untrusted agent is sent nothing");
    let approve = "mutation($id: ID!, $t: String!) { approveNodeThumbprint(id: $id, thumbprint: $t) { status } }";
    let wrong = server.gql(Some(&admin), approve, json!({ "id": id, "t": thumbprint })).await;
    assert_eq!(code(&wrong), "CONFLICT", "{wrong}");
    server.ok(Some(&admin), approve, json!({ "id": id, "t": pending })).await;
    reaches(&server, &admin, &id, "ONLINE", WITHIN).await;

    // Rotation: the live connection is closed at once and the old token no longer works.
    let rotated = server.ok(Some(&admin), "mutation($id: ID!) { rotateNodeToken(id: $id) { token } }", json!({ "id": id })).await;
    let new_token = rotated["rotateNodeToken"]["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    reaches(&server, &admin, &id, "TOKEN_REFUSED", WITHIN).await;
    lab.remove_agent("a");
    lab.run_agent("a", 10, &new_token, &[]);
    reaches(&server, &admin, &id, "ONLINE", Duration::from_secs(20)).await;

    // Revocation disconnects at once.
    let before = lab.logs("a").matches("control plane connection closed").count();
    let revoked = server.ok(Some(&admin), "mutation($id: ID!) { revokeNodeToken(id: $id) { status } }", json!({ "id": id })).await;
    assert_eq!(revoked["revokeNodeToken"]["status"], "REVOKED");
    support::eventually(WITHIN, "the agent sees the connection closed", || async { lab.logs("a").matches("control plane connection closed").count() > before })
        .await;

    // A wrong token: refused, and redialled (with backoff) for as long as the node is enabled.
    let (wrong_id, _) = add_node(&server, &admin, &lab.ip(11)).await;
    lab.run_agent("b", 11, "nat_not-the-token", &[]);
    reaches(&server, &admin, &wrong_id, "TOKEN_REFUSED", Duration::from_secs(20)).await;

    // Disabled nodes are not dialled.
    let rotated = server.ok(Some(&admin), "mutation($id: ID!) { rotateNodeToken(id: $id) { token } }", json!({ "id": id })).await;
    lab.remove_agent("a");
    lab.run_agent("a", 10, rotated["rotateNodeToken"]["token"].as_str().unwrap(), &[]);
    reaches(&server, &admin, &id, "ONLINE", Duration::from_secs(20)).await;
    let before = lab.logs("a").matches("control plane connection closed").count();
    let disabled = server.ok(Some(&admin), "mutation($id: ID!) { disableNode(id: $id) { status } }", json!({ "id": id })).await;
    assert_eq!(disabled["disableNode"]["status"], "DISABLED");
    support::eventually(WITHIN, "the disabled node is disconnected", || async { lab.logs("a").matches("control plane connection closed").count() > before })
        .await;
    // Meanwhile the connector redials the refusing node "b" twice (each redial waits at most the
    // 2 s cap): had it been dialling "a", "a" would have been connected again by then.
    let connections = lab.logs("a").matches("control plane connected").count();
    let refusals = lab.logs("b").matches("refused a connection").count();
    support::eventually(Duration::from_secs(15), "two more redials of the refusing node", || async {
        lab.logs("b").matches("refused a connection").count() >= refusals + 2
    })
    .await;
    assert_eq!(lab.logs("a").matches("control plane connected").count(), connections, "a disabled node is not dialled");
    server.ok(Some(&admin), "mutation($id: ID!) { enableNode(id: $id) { status } }", json!({ "id": id })).await;
    reaches(&server, &admin, &id, "ONLINE", WITHIN).await;

    // An agent of another protocol version.
    let (old_id, old_token) = add_node(&server, &admin, &lab.ip(12)).await;
    lab.run_agent("c", 12, &old_token, &["--speak-protocol", "99"]);
    reaches(&server, &admin, &old_id, "INCOMPATIBLE", Duration::from_secs(20)).await;
    assert!(node(&server, &admin, &old_id).await["statusDetail"].as_str().unwrap().contains("99"));

    // Every transition is in the audit history.
    let audit = server
        .ok(
            Some(&admin),
            "query($s: String!) { auditLog(filter: { stream: $s }, page: { first: 200 }) { entries { eventType } } }",
            json!({ "s": format!("node-{id}") }),
        )
        .await;
    let types: Vec<&str> = audit["auditLog"]["entries"].as_array().unwrap().iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    let logged = server.output.lock().unwrap().join("\n");
    assert!(!logged.contains(&token) && !logged.contains(&new_token), "no node token in the control plane's log");
    for t in [
        "node.added",
        "node.thumbprint_pinned",
        "node.connected",
        "node.disconnected",
        "node.thumbprint_rejected",
        "node.thumbprint_approved",
        "node.token_rotated",
        "node.refused",
        "node.token_revoked",
        "node.disabled",
        "node.enabled",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    server.stop().await;
}

/// Node administration is for admins, and bad input is refused with a stable code.
async fn node_commands_are_checked(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    // The connector dials what is added: only loopback here (and the lab's own network above).
    let missing = server.gql(Some(&admin), ADD, json!({ "h": "127.0.0.1" })).await;
    assert_eq!(code(&missing), "NOT_FOUND", "no environment staging yet: {missing}");
    server.ok(Some(&admin), "mutation { createEnvironment(input: {name: \"staging\", baseDomain: \"qa.example.com\"}) { name } }", json!({})).await;
    for bad in ["not a host", "http://x", ""] {
        let r = server.gql(Some(&admin), ADD, json!({ "h": bad })).await;
        assert_eq!(code(&r), "INVALID_INPUT", "{bad}: {r}");
    }
    let (id, _) = add_node(&server, &admin, "127.0.0.1").await;
    assert_eq!(code(&server.gql(Some(&admin), ADD, json!({ "h": "127.0.0.1" })).await), "CONFLICT");
    server.ok(Some(&admin), "mutation { createUser(username: \"bob\", password: \"bob-password-1\") { username } }", json!({})).await;
    let bob = server.login("bob", "bob-password-1").await;
    assert_eq!(code(&server.gql(Some(&bob), "mutation($id: ID!) { disableNode(id: $id) { status } }", json!({ "id": id })).await), "FORBIDDEN");
    assert_eq!(server.ok(Some(&bob), "{ nodes { id } }", json!({})).await["nodes"], json!([]), "bob has no access to staging");
    let bad = server.gql(Some(&admin), "mutation($id: ID!) { approveNodeThumbprint(id: $id, thumbprint: \"abc\") { status } }", json!({ "id": id })).await;
    assert_eq!(code(&bad), "INVALID_INPUT");
    let approve = "mutation($id: ID!, $t: String!) { approveNodeThumbprint(id: $id, thumbprint: $t) { status } }";
    let none = server.gql(Some(&admin), approve, json!({ "id": id, "t": "ab".repeat(32) })).await;
    assert_eq!(code(&none), "CONFLICT", "nothing is pending: {none}");
    // What is reserved on a node shows as its allocation (reservations come from admission;
    // here one is made straight on the node's capacity stream).
    let store = backend.store().await;
    let deployment_id = uuid::Uuid::now_v7();
    let reserve = CapacityCommand::Reserve {
        deployment_id,
        request: Resources { cpu_millis: 250, memory_mib: 128 },
        total: Resources { cpu_millis: 1000, memory_mib: 1024 },
        used: Resources::default(),
    };
    execute::<Capacity>(&*store, &id, &reserve, &EventMetadata::system()).await.expect("reserved");
    support::eventually(Duration::from_secs(10), "the allocation shows", || async {
        let n = server.ok(Some(&admin), "query($id: ID!) { node(id: $id) { allocated { cpuMillicores memoryMib deployments } } }", json!({ "id": id })).await;
        n["node"]["allocated"] == json!({ "cpuMillicores": 250, "memoryMib": 128, "deployments": 1 })
    })
    .await;
    let delete_environment = "mutation { deleteEnvironment(name: \"staging\") }";
    assert_eq!(code(&server.gql(Some(&admin), delete_environment, json!({})).await), "CONFLICT", "staging has a node");
    let remove = "mutation($id: ID!) { removeNode(id: $id) }";
    let busy = server.gql(Some(&admin), remove, json!({ "id": id })).await;
    assert_eq!(code(&busy), "CONFLICT", "the node holds a deployment's reservation: {busy}");
    execute::<Capacity>(&*store, &id, &CapacityCommand::Release { deployment_id }, &EventMetadata::system()).await.expect("released");
    assert!(server.ok(Some(&admin), remove, json!({ "id": id })).await["removeNode"].as_bool().unwrap());
    assert_eq!(code(&server.gql(Some(&admin), NODE, json!({ "id": id })).await), "NOT_FOUND");
    server.ok(Some(&admin), delete_environment, json!({})).await;
    server.stop().await;
}

/// `nullops up` registers and trusts its own agent, which comes ONLINE by itself.
async fn the_embedded_platform_runs_a_local_agent(_mode: Mode) {
    let backend = Backend::new(Mode::Embedded).await;
    let server = Server::start_with(&backend, &[("NULLOPS_NO_LOCAL_AGENT", "false")]).await;
    let admin = server.admin().await;
    support::eventually(Duration::from_secs(20), "the local node is online", || async {
        let n = server.ok(Some(&admin), "{ nodes(environment: \"local\") { status thumbprint } }", json!({})).await;
        n["nodes"][0]["status"] == "ONLINE" && n["nodes"][0]["thumbprint"].is_string()
    })
    .await;
    server.stop().await;
    // After a restart (a new port) it is the same node, online again.
    let server = Server::start_with(&backend, &[("NULLOPS_NO_LOCAL_AGENT", "false")]).await;
    let admin = server.admin().await;
    support::eventually(Duration::from_secs(20), "the local node is online again", || async {
        let n = server.ok(Some(&admin), "{ nodes { status } }", json!({})).await;
        n["nodes"].as_array().unwrap().len() == 1 && n["nodes"][0]["status"] == "ONLINE"
    })
    .await;
    server.stop().await;
}

in_both_modes!(nodes_connect_fail_over_and_are_trusted_only_as_pinned, node_commands_are_checked);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_platform_runs_a_local_agent_test() {
    the_embedded_platform_runs_a_local_agent(Mode::Embedded).await
}
