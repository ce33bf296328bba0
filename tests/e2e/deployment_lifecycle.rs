//! What a deployment holds and how it ends, whatever happens around it: deletes always finish
//! and free the name and the node's room; a crash of the platform at any step of placing a
//! deployment (the deployment saga) or during its run leaves nothing held and settles the
//! deployment as any failure would. On real Docker and the real registry.

use crate::support;

use serde_json::{json, Value};
use support::world::*;
use support::{code, Mode};

const NODE_ALLOCATED: &str = "query($e: String!) { nodes(environment: $e) { allocated { cpuMillicores memoryMib deployments } } }";

/// What the world's node has reserved for deployments.
async fn allocated(w: &World) -> Value {
    w.ok(NODE_ALLOCATED, json!({"e": w.environment})).await["nodes"][0]["allocated"].clone()
}

async fn create_named(w: &World, project: &str, name: &str) -> Value {
    w.server.gql(Some(&w.admin), CREATE, json!({"p": project, "e": w.environment, "n": name})).await
}

/// A failing pipeline (its plugin exits 1) and one that runs a service.
async fn pipelines(w: &World) {
    let project = |name: &str| json!({"i": {"name": name, "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}});
    for name in ["failing", "serving"] {
        w.ok("mutation($i: ProjectInput!) { createProject(input: $i) { name } }", project(name)).await;
    }
    w.save("failing", json!({"nodes": [{"id": "migrate", "plugin": "script", "parameters": {"mode": "fail"}}]})).await;
    w.save("serving", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
}

/// Sixteen failed deployments deleted at once, and two running ones with them: every one
/// reaches DELETED, none holds room on the node any more, and every name can be used again.
async fn deletes_always_finish_and_free_name_and_room(mode: Mode) {
    let w = World::new(mode).await;
    pipelines(&w).await;
    let names: Vec<String> = (0..16).map(|i| format!("failed-{i}")).chain((0..2).map(|i| format!("running-{i}"))).collect();
    let created = futures::future::join_all(names.iter().map(|name| {
        let project = if name.starts_with("failed") { "failing" } else { "serving" };
        create_named(&w, project, name)
    }))
    .await;
    let ids: Vec<String> = created.iter().map(|r| r["data"]["createDeployment"]["id"].as_str().unwrap_or_else(|| panic!("created: {r}")).to_owned()).collect();
    for (id, name) in ids.iter().zip(&names) {
        w.reaches(id, if name.starts_with("failed") { "FAILED" } else { "RUNNING" }, MINUTE).await;
    }
    // A failed deployment holds no room: only the two running ones do.
    support::eventually(MINUTE, "only the running deployments hold room", || async { allocated(&w).await["deployments"] == 2 }).await;
    // What is wanted is kept apart from what is seen; the state is derived from the pair.
    let pairs = |state: &'static str| {
        let w = &w;
        async move {
            let all = w.ok("{ deployments(includeEnded: true) { name state desired observed } }", json!({})).await;
            let mut pairs: Vec<(String, String, String)> = all["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["state"] == state)
                .map(|d| (d["name"].as_str().unwrap_or_default().to_owned(), d["desired"].to_string(), d["observed"].to_string()))
                .collect();
            pairs.sort();
            pairs
        }
    };
    let seen = |names: &[&String], desired: &str, observed: &str| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = names.iter().map(|n| ((*n).clone(), format!("\"{desired}\""), format!("\"{observed}\""))).collect();
        v.sort();
        v
    };
    let failed: Vec<&String> = names.iter().filter(|n| n.starts_with("failed")).collect();
    let running: Vec<&String> = names.iter().filter(|n| n.starts_with("running")).collect();
    assert_eq!(pairs("FAILED").await, seen(&failed, "RUN", "FAILED"));
    assert_eq!(pairs("RUNNING").await, seen(&running, "RUN", "RUNNING"));

    let deleted = futures::future::join_all(
        ids.iter().map(|id| w.server.gql(Some(&w.admin), "mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id}))),
    )
    .await;
    for d in &deleted {
        assert!(d.get("errors").is_none(), "{d}");
    }
    let started = tokio::time::Instant::now();
    for id in &ids {
        w.reaches(id, "DELETED", MINUTE).await;
    }
    println!("18 concurrent deletes (16 failed, 2 running) all DELETED {} ms after the last mutation answered", started.elapsed().as_millis());
    support::eventually(MINUTE, "no room held on the node", || async { allocated(&w).await["deployments"] == 0 }).await;
    let all: Vec<&String> = names.iter().collect();
    assert_eq!(pairs("DELETED").await, seen(&all, "REMOVE", "GONE"));
    assert_eq!(allocated(&w).await, json!({"cpuMillicores": 0, "memoryMib": 0, "deployments": 0}));
    // Every name is free again.
    let again = create_named(&w, "failing", "failed-0").await;
    assert!(again.get("errors").is_none(), "the name of a deleted deployment is free: {again}");
    let again = create_named(&w, "serving", "running-1").await;
    assert!(again.get("errors").is_none(), "the name of a deleted deployment is free: {again}");
}

in_both_modes!(deletes_always_finish_and_free_name_and_room);

/// A request whose name is taken, or for which no node has room, is refused with the reason
/// and holds nothing; the room a request was refused for goes to the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_hold_nothing() {
    let w = World::new(Mode::Embedded).await;
    pipelines(&w).await;
    let first = create_named(&w, "serving", "taken").await;
    assert!(first.get("errors").is_none(), "{first}");
    let second = create_named(&w, "serving", "taken").await;
    assert_eq!(code(&second), "CONFLICT", "{second}");
    assert!(second["errors"][0]["message"].as_str().unwrap().contains("already has a deployment named taken"), "{second}");
    // Far more memory than the node has.
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "huge", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 4_194_304}}),
    )
    .await;
    w.save("huge", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    let huge = create_named(&w, "huge", "huge").await;
    assert_eq!(code(&huge), "RESOURCES_EXHAUSTED", "{huge}");
    assert!(huge["errors"][0]["message"].as_str().unwrap().contains("4194304 MiB"), "{huge}");
    // The refused request shows as REJECTED with the reason among ended deployments, and its
    // name is free (no node had room, so it never ran).
    let ended = w.ok("{ deployments(includeEnded: true) { name state failure { reason } } }", json!({})).await;
    let rejected = ended["deployments"].as_array().unwrap().iter().find(|d| d["name"] == "huge").unwrap_or_else(|| panic!("{ended}")).clone();
    assert_eq!(rejected["state"], "REJECTED", "{rejected}");
    support::eventually(MINUTE, "only the first request holds room", || async { allocated(&w).await["deployments"] == 1 }).await;
    w.ok(
        "mutation($i: ProjectInput!) { updateProject(input: $i) { name } }",
        json!({"i": {"name": "huge", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    let retried = create_named(&w, "huge", "huge").await;
    assert!(retried.get("errors").is_none(), "the name of a rejected request is free: {retried}");
}

/// The points of the deployment saga at which the tests kill the platform (see
/// `nullops_saga::fault`), in the order it passes them.
const SAGA_STEPS: [&str; 4] = ["deployment-saga:placing", "deployment-saga:name-claimed", "deployment-saga:capacity-reserved", "deployment-saga:scheduled"];

/// The platform is killed at each step of placing a deployment (after the request is stored,
/// after its name is claimed, after room is reserved, after it is scheduled but before the
/// saga's checkpoint moves). Started again, the saga takes the request up where it was: the
/// deployment runs, holds one reservation, its events on all three streams share the request's
/// correlation id, and once deleted it holds neither room nor its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_placing_a_deployment_leaks_nothing() {
    let mut w = World::new(Mode::Embedded).await;
    pipelines(&w).await;
    for (i, step) in SAGA_STEPS.iter().enumerate() {
        let name = format!("crash-{i}");
        w.restart(&[("NULLOPS_FAULT", step)]).await;
        // The platform dies while answering: the request is stored, the rest is not done.
        let _ = w
            .server
            .http
            .post(w.server.url("/graphql"))
            .bearer_auth(&w.admin)
            .json(&json!({"query": CREATE, "variables": {"p": "serving", "e": w.environment, "n": name}}))
            .send()
            .await;
        let status = w.server.exited(MINUTE).await;
        assert!(!status.success(), "the platform should have died at {step}: {status}");

        w.restart(&[]).await;
        let id = support::until(MINUTE, &format!("deployment {name} after a crash at {step}"), || async {
            let all = w.ok("{ deployments(includeEnded: true) { id name state } }", json!({})).await;
            all["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == name.as_str())
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .ok_or(all.to_string())
        })
        .await;
        w.reaches(&id, "RUNNING", MINUTE).await;
        assert_eq!(allocated(&w).await["deployments"], 1, "one reservation after a crash at {step}");

        // One correlation id: the request's, on the deployment, its name and the node's room.
        let history = w
            .ok(
                "query($s: String!) { auditLog(filter: {stream: $s}, page: {first: 500}) { entries { eventType correlationId } } }",
                json!({"s": format!("deployment-{id}")}),
            )
            .await;
        let entries = history["auditLog"]["entries"].as_array().unwrap();
        let requested = entries.iter().find(|e| e["eventType"] == "deployment.requested").unwrap_or_else(|| panic!("{history}"));
        let correlation = requested["correlationId"].as_str().unwrap();
        let related = w
            .ok("query($c: String!) { auditLog(filter: {correlationId: $c}, page: {first: 500}) { entries { stream eventType } } }", json!({"c": correlation}))
            .await;
        let streams: Vec<&str> = related["auditLog"]["entries"].as_array().unwrap().iter().map(|e| e["stream"].as_str().unwrap()).collect();
        for kind in [format!("deployment-{id}"), format!("deploymentname-{}.{name}", w.environment), format!("capacity-{}", w.node_id)] {
            assert!(streams.contains(&kind.as_str()), "{kind} under correlation id {correlation} after a crash at {step}: {related}");
        }

        w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", json!({"id": id})).await;
        w.reaches(&id, "DELETED", MINUTE).await;
        support::eventually(MINUTE, "no room held", || async { allocated(&w).await["deployments"] == 0 }).await;
        let again = create_named(&w, "failing", &name).await;
        assert!(again.get("errors").is_none(), "{name} is free again after a crash at {step}: {again}");
        // Ended before the next crash, so that it holds nothing then.
        let again = again["data"]["createDeployment"]["id"].as_str().unwrap().to_owned();
        w.reaches(&again, "FAILED", MINUTE).await;
        w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", json!({"id": again})).await;
        support::eventually(MINUTE, "no room held", || async { allocated(&w).await["deployments"] == 0 }).await;
    }
}

/// `nullops up` is killed (its agent with it) while a plugin step runs. Started again, the run
/// settles as any failed run does: the interrupted step FAILED saying so, the step that had
/// succeeded ROLLED_BACK, the failure naming the step, nothing of it left on the engine and no
/// room held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_a_crash_settles_like_any_failed_run() {
    let mut w = World::new(Mode::Embedded).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "slow", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    w.save(
        "slow",
        json!({"nodes": [{"id": "api", "service": "api"}, {"id": "seed", "plugin": "script", "parameters": {"mode": "sleep"}}], "edges": [{"from": "api", "to": "seed"}]}),
    )
    .await;
    let id = w.create("slow", json!([])).await["id"].as_str().unwrap().to_owned();
    support::until(MINUTE, "the plugin step running", || async {
        let d = w.deployment(&id).await;
        if step(&d, "seed")["state"] == "RUNNING" {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .await;

    w.server.kill().await;
    w.restart(&[]).await;
    let d = w.reaches(&id, "FAILED", MINUTE).await;
    assert_eq!(step(&d, "api")["state"], "ROLLED_BACK", "{d}");
    assert_eq!(step(&d, "seed")["state"], "FAILED", "{d}");
    assert!(step(&d, "seed")["detail"].as_str().unwrap().contains("interrupted"), "{d}");
    assert_eq!(d["failure"]["step"], "seed", "{d}");
    assert!(d["failure"]["reason"].as_str().unwrap().contains("step seed was interrupted"), "{d}");
    support::eventually(MINUTE, "nothing of it left on the engine", || async { w.leftovers(&id).is_empty() }).await;
    support::eventually(MINUTE, "no room held", || async { allocated(&w).await["deployments"] == 0 }).await;
}

/// A project may hold at most 256 secrets, and 1 MiB of names and values together: `setSecret`
/// beyond either answers INVALID_INPUT naming the limit, and what was stored is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_beyond_the_limits_are_refused_where_they_are_set() {
    let w = World::new(Mode::Embedded).await;
    pipelines(&w).await;
    let set = |project: &'static str, name: String, value: String| {
        let (server, admin) = (&w.server, &w.admin);
        async move {
            server
                .gql(
                    Some(admin),
                    "mutation($p: String!, $n: String!, $v: String!) { setSecret(project: $p, name: $n, value: $v) { name } }",
                    json!({"p": project, "n": name, "v": value}),
                )
                .await
        }
    };
    for i in 0..256 {
        let r = set("serving", format!("S{i}"), "v".into()).await;
        assert!(r.get("errors").is_none(), "secret {i}: {r}");
    }
    let refused = set("serving", "ONE_MORE".into(), "v".into()).await;
    assert_eq!(code(&refused), "INVALID_INPUT", "{refused}");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("256"), "{refused}");
    // Replacing one is not one more.
    assert!(set("serving", "S7".into(), "w".into()).await.get("errors").is_none());
    let held = w.ok("{ project(name: \"serving\") { secrets { name } } }", json!({})).await;
    assert_eq!(held["project"]["secrets"].as_array().unwrap().len(), 256, "nothing stored was lost");

    // 1 MiB: sixteen values of 64 KiB less their names fill it.
    for i in 0..16 {
        let name = format!("B{i:02}");
        let r = set("failing", name.clone(), "x".repeat(65536 - name.len())).await;
        assert!(r.get("errors").is_none(), "value {i}: {r}");
    }
    let over = set("failing", "X".into(), "y".into()).await;
    assert_eq!(code(&over), "INVALID_INPUT", "{over}");
    assert!(over["errors"][0]["message"].as_str().unwrap().contains("1 MiB"), "{over}");
}

/// A project with more secrets than a node can be given (stored before the limits existed) does
/// not take its node down: its deployment ends FAILED saying why, while the node stays ONLINE
/// (its link never drops) and its other deployment keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_its_node_cannot_be_given_fails_alone() {
    let w = World::new(Mode::Production).await;
    pipelines(&w).await;
    let running = create_named(&w, "serving", "steady").await["data"]["createDeployment"]["id"].as_str().unwrap().to_owned();
    w.reaches(&running, "RUNNING", MINUTE).await;

    // 300 secrets written to the project's stream as an older release would have let them be.
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "crowded", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    w.save("crowded", json!({"nodes": [{"id": "api", "service": "api"}]})).await;
    let project_id: uuid::Uuid = w.ok("{ project(name: \"crowded\") { id } }", json!({})).await["project"]["id"].as_str().unwrap().parse().unwrap();
    let keyring = w.backend.keyring(&w.backend.current_master_key()).await;
    let store = w.backend.store().await;
    let mut events = Vec::new();
    for i in 0..300 {
        let name = format!("S{i}");
        let value = keyring.seal(b"v", &nullops_domain::secrets::secret_purpose(project_id, &name)).await.unwrap();
        let event = nullops_events::catalog::SecretEvent::Created(nullops_events::catalog::SecretSet { name, value, retired_key: None });
        events.push(nullops_events::NewEvent::new(&event.into(), nullops_events::EventMetadata::system()));
    }
    store.append(&nullops_events::StreamId::new("secrets", &project_id.to_string()), 0, &events).await.expect("the secrets appended");

    // Read from the log itself (the audit's read model may be a moment behind the connector),
    // with why each drop happened.
    let disconnections = || async {
        let stream = nullops_events::StreamId::new("node", &w.node_id);
        let events = store.read_stream(&stream, 0).await.expect("the node's stream");
        events
            .iter()
            .filter_map(|e| match e.decode().ok()?.event {
                nullops_events::DomainEvent::Node(nullops_events::node::NodeEvent::Disconnected(d)) => Some(d.reason),
                _ => None,
            })
            .collect::<Vec<String>>()
    };
    let before = disconnections().await;
    let crowded = create_named(&w, "crowded", "crowded").await;
    let id = crowded["data"]["createDeployment"]["id"].as_str().unwrap_or_else(|| panic!("{crowded}")).to_owned();
    let d = w.reaches(&id, "FAILED", MINUTE).await;
    let reason = d["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("300 secrets") && reason.contains("256"), "{d}");
    // Its room is given back; the node and its other deployment carry on.
    support::eventually(MINUTE, "only the running deployment holds room", || async { allocated(&w).await["deployments"] == 1 }).await;
    assert_eq!(w.deployment(&running).await["state"], "RUNNING");
    let node = w.ok("query($e: String!) { nodes(environment: $e) { status } }", json!({"e": w.environment})).await;
    assert_eq!(node["nodes"][0]["status"], "ONLINE", "{node}");
    assert_eq!(disconnections().await, before, "the node's link never dropped");
    // A deployment of it after the fact can still be deleted.
    w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", json!({"id": id})).await;
    w.reaches(&id, "DELETED", MINUTE).await;
}

/// 200 deployments asked for at once in an environment of 10 nodes with room for 160, placed by
/// the deployment saga side by side (and, as the baseline, one at a time) on PostgreSQL: every
/// one is decided, 160 placed and 40 refused for want of room, no node is over-committed and
/// none holds room twice (the benchmark checks each node's capacity stream and fails
/// otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_deployments_asked_at_once_never_over_commit_a_node() {
    let database_url = nullops_store::conformance::fresh_postgres_database().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nullops"))
        .args(["bench", "placement", "--database-url", &database_url, "--requests", "200", "--nodes", "10", "--rounds", "1"])
        .env("NULLOPS_LOG", "warn")
        .output()
        .await
        .expect("nullops bench placement");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    for at_once in [1, nullops_saga::deployment::PLACEMENTS_AT_ONCE] {
        let round = format!("{at_once:>2} at once:");
        let line = said.lines().find(|l| l.starts_with(&round)).unwrap_or_else(|| panic!("no {round} round in {said}"));
        assert!(line.ends_with("160 placed, 40 refused for want of room"), "{line}");
    }
}
