//! Deployments end to end, through GraphQL, on real Docker and the real registry: `nullops up`'s
//! own agent in embedded mode, an agent container (the `nullops/agent` image) in production mode.
//! A pipeline of two services and plugins deploys and answers on its published ports, isolated
//! from other deployments; failures, timeouts and cancels roll back and leave nothing labelled
//! behind; delete, clone, retry, expiry and extend; admission refuses what does not fit and never
//! overcommits a node; a service over its memory is killed and shown so; secrets reach plugins
//! and no log.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::world::*;
use support::{code, docker, Mode, Server};

async fn a_pipeline_deploys_isolated_and_goes_away_without_leftovers(mode: Mode) {
    let w = World::new(mode).await;
    // web, then a check from inside the deployment's network, then api; a plugin alongside.
    let pipeline = json!({
        "nodes": [
            {"id": "web", "service": "web"},
            {"id": "wait-web", "plugin": "http-check", "parameters": {"url": "http://web:8080/healthz", "timeout_secs": 30}},
            {"id": "api", "service": "api"},
            {"id": "greet", "plugin": "script", "parameters": {"mode": "ok"}}
        ],
        "edges": [{"from": "web", "to": "wait-web"}, {"from": "wait-web", "to": "api"}]
    });
    w.save("shop", pipeline).await;

    // A tag that is not in the registry, or not of the pattern, is refused before anything runs.
    let r = w.server.gql(Some(&w.admin), CREATE, json!({"p": "shop", "e": w.environment, "t": [{"service": "web", "tag": "v9"}]})).await;
    assert_eq!(code(&r), "INVALID_INPUT", "{r}");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("does not exist"), "{r}");

    let one = w.create("shop", json!([{"service": "web", "tag": "v1"}])).await;
    let one_id = one["id"].as_str().unwrap().to_owned();
    let d = w.reaches(&one_id, "RUNNING", MINUTE).await;
    for s in ["web", "wait-web", "api", "greet"] {
        assert_eq!(step(&d, s)["state"], "SUCCEEDED", "{d}");
    }
    for s in ["web", "api"] {
        assert_eq!(service(&d, s)["healthy"], true, "{d}");
    }
    // Its history in words, naming it (the audit's read model may be a moment behind).
    let name = one["name"].as_str().unwrap();
    let running = format!("deployment {name} (shop in {}) running", w.environment);
    support::eventually(MINUTE, "the history to say it runs", || async {
        let d = w.deployment(&one_id).await;
        d["history"].as_array().unwrap().iter().any(|h| h["summary"] == running.as_str())
    })
    .await;
    let d = w.deployment(&one_id).await;
    let said: Vec<&str> = d["history"].as_array().unwrap().iter().map(|h| h["summary"].as_str().unwrap()).collect();
    assert!(said.iter().any(|s| s.starts_with(&format!("deployment {name} of project shop requested in {}", w.environment))), "{said:#?}");
    assert!(said.iter().any(|s| s.ends_with("step wait-web succeeded") && s.contains(name)), "{said:#?}");
    assert!(said.iter().any(|s| *s == format!("deployment {name} (shop in {}) running", w.environment)), "{said:#?}");
    assert_eq!(service(&d, "api")["tag"], "v2", "a pinned service runs its pin");
    let domain = if mode == Mode::Embedded { "localhost" } else { "qa.test" };
    let ingress_port = w.server.ingress.expect("an ingress").port();
    assert_eq!(service(&d, "web")["url"], format!("http://web.{}.{}.{domain}:{ingress_port}/", one["name"].as_str().unwrap(), w.environment));
    // Both answer through their published ports.
    assert_eq!(body_at(service(&d, "web")["nodePort"].as_u64().unwrap()).await.trim(), "nullops demo v1");
    assert_eq!(body_at(service(&d, "api")["nodePort"].as_u64().unwrap()).await.trim(), "nullops demo v2");
    // The pipeline's log: each step's progress, and the plugins' own output.
    let logs = w.ok("query($id: ID!) { deployment(id: $id) { logs(service: \"pipeline\", tail: 500) { source text } } }", json!({"id": one_id})).await;
    let text: Vec<&str> = logs["deployment"]["logs"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    for expected in ["step web started", "step wait-web succeeded", "every step succeeded"] {
        assert!(text.iter().any(|t| t.contains(expected)), "{expected:?} in {text:#?}");
    }
    // A service's own output is its log.
    support::eventually(Duration::from_secs(10), "web's output in its log", || async {
        let logs = w.ok("query($id: ID!) { deployment(id: $id) { logs(service: \"web\") { source text } } }", json!({"id": one_id})).await;
        logs["deployment"]["logs"].as_array().unwrap().iter().any(|l| l["source"] == "web" && l["text"].as_str().unwrap().contains("response:200"))
    })
    .await;
    // The agent measures what each service uses.
    support::eventually(Duration::from_secs(15), "the services' use is measured", || async {
        service(&w.deployment(&one_id).await, "web")["memoryBytes"].as_u64().is_some_and(|m| m > 0)
    })
    .await;
    // A service container removed behind the agent's back is recreated at once (the agent
    // follows the engine's events; its periodic reconcile is 30 s away); its new node port is
    // recorded and answers.
    if mode == Mode::Production {
        let before = service(&d, "web")["nodePort"].as_u64().unwrap();
        support::must(&["rm", "-f", &w.container(&one_id, "web")]);
        let now = support::until(Duration::from_secs(10), "web recreated on a new port", || async {
            match service(&w.deployment(&one_id).await, "web")["nodePort"].as_u64() {
                Some(now) if now != before => Ok(now),
                other => Err(format!("node port {other:?}")),
            }
        })
        .await;
        // Recreated, it answers there once it has started.
        support::eventually(Duration::from_secs(10), "the new port answers", || async {
            match reqwest::get(format!("http://127.0.0.1:{now}/")).await {
                Ok(r) => r.text().await.is_ok_and(|t| t.trim() == "nullops demo v1"),
                Err(_) => false,
            }
        })
        .await;
    }
    // Health is watched while it runs: a failing probe makes the service unhealthy (the
    // deployment stays RUNNING), a passing one healthy again.
    let web = w.container(&one_id, "web");
    support::must(&["exec", &web, "/bin/busybox", "rm", "/www/healthz"]);
    support::eventually(Duration::from_secs(15), "web reported unhealthy", || async {
        let d = w.deployment(&one_id).await;
        service(&d, "web")["healthy"] == false && service(&d, "web")["healthDetail"].as_str().unwrap().contains("404") && d["state"] == "RUNNING"
    })
    .await;
    support::must(&["exec", &web, "/bin/busybox", "sh", "-c", "echo ok > /www/healthz"]);
    support::eventually(Duration::from_secs(15), "web healthy again", || async { service(&w.deployment(&one_id).await, "web")["healthy"] == true }).await;
    // The secret reached the service's environment, and the API shows it nowhere.
    let labels =
        docker(&["inspect", "-f", "{{index .Config.Labels \"nullops.deployment\"}} {{index .Config.Labels \"nullops.node\"}}", &w.container(&one_id, "web")])
            .unwrap();
    assert_eq!(labels, format!("{} {}", one_id.replace('-', ""), w.node_id), "labels name the deployment and the node");
    let env = docker(&["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", &w.container(&one_id, "web")]).unwrap();
    assert!(env.contains(&format!("GREETING={SECRET}")), "{env}");
    assert!(!d.to_string().contains(SECRET));

    // A name is held once in its environment.
    let taken = json!({"p": "shop", "e": w.environment, "n": one["name"], "t": [{"service": "web", "tag": "v1"}]});
    assert_eq!(code(&w.server.gql(Some(&w.admin), CREATE, taken.clone()).await), "CONFLICT");

    // Another deployment: its network cannot reach the first one's services.
    let two = w.create("shop", json!([{"service": "web", "tag": "v2"}])).await;
    let two_id = two["id"].as_str().unwrap().to_owned();
    w.reaches(&two_id, "RUNNING", MINUTE).await;
    let web_one_ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &w.container(&one_id, "web")]).unwrap();
    let web_one_ip = web_one_ip.split_whitespace().next().unwrap().to_owned();
    assert!(answers_from(&w.network(&two_id), "http://web:8080/", 10), "inside its network, a deployment's service answers by name");
    assert!(!answers_from(&w.network(&two_id), &format!("http://{web_one_ip}:8080/"), 2), "another deployment's service is unreachable");

    // Clone: same project and environment, new name, the source's versions.
    let clone = w.ok("mutation($id: ID!) { cloneDeployment(id: $id) { id name } }", json!({"id": two_id})).await["cloneDeployment"].clone();
    assert_ne!(clone["name"], two["name"]);
    let c = w.reaches(clone["id"].as_str().unwrap(), "RUNNING", MINUTE).await;
    assert_eq!(service(&c, "web")["tag"], "v2");

    // Delete: DELETED, and nothing labelled with it is left on the engine.
    for id in [&one_id, &two_id, clone["id"].as_str().unwrap()] {
        w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await;
        w.reaches(id, "DELETED", Duration::from_secs(30)).await;
        assert_eq!(w.leftovers(id), "", "nothing of {id} is left");
        // The history (the audit read model, which may trail the deployments one by a moment).
        support::eventually(MINUTE, "the removal in the history", || async {
            let d = w.deployment(id).await;
            let history: Vec<&str> = d["history"].as_array().unwrap().iter().map(|h| h["eventType"].as_str().unwrap()).collect();
            history.starts_with(&["deployment.requested", "deployment.scheduled", "deployment.run_started"])
                && history.ends_with(&["deployment.deletion_requested", "deployment.removed"])
        })
        .await;
    }
    let ended = w.ok("query($e: String!) { deployments(environment: $e) { id } }", json!({"e": w.environment})).await;
    assert_eq!(ended["deployments"], json!([]), "deleted deployments are not listed");
    // Once deleted, its name (and so its URLs) can be used again.
    let again = w.ok(CREATE, taken).await["createDeployment"].clone();
    assert_eq!(again["name"], one["name"]);
    let again_id = again["id"].as_str().unwrap();
    w.reaches(again_id, "RUNNING", MINUTE).await;
    w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": again_id})).await;
    w.reaches(again_id, "DELETED", Duration::from_secs(30)).await;

    // The read models are disposable: replayed from this history, they hold what the live
    // runners built as it happened, row for row.
    let mut w = w;
    w.server.terminate();
    assert!(w.server.exited(Duration::from_secs(20)).await.success());
    w.backend.assert_rebuilt_read_models_equal_the_live_ones().await;
}

async fn failures_and_cancels_roll_back_and_retry_runs_again(mode: Mode) {
    let w = World::new(mode).await;
    let with_step = |plugin: &str, parameters: Value| {
        json!({
            "nodes": [{"id": "web", "service": "web"}, {"id": "migrate", "plugin": plugin, "parameters": parameters}],
            "edges": [{"from": "web", "to": "migrate"}]
        })
    };
    let tags = json!([{"service": "web", "tag": "v1"}]);
    let cases = [
        (with_step("script", json!({"mode": "fail"})), Some(1), "migration 42 failed"),
        (with_step("script", json!({"mode": "garbage"})), Some(0), "not a result"),
        (with_step("script-short", json!({"mode": "sleep"})), None, "did not finish within 3 s"),
    ];
    let mut failed_id = String::new();
    for (pipeline, exit_code, reason) in cases {
        w.save("shop", pipeline).await;
        let id = w.create("shop", tags.clone()).await["id"].as_str().unwrap().to_owned();
        let d = w.reaches(&id, "FAILED", MINUTE).await;
        let failure = &d["failure"];
        assert_eq!(failure["step"], "migrate", "{d}");
        assert!(failure["reason"].as_str().unwrap().contains(reason), "{reason}: {d}");
        if let Some(exit_code) = exit_code {
            assert_eq!(failure["exitCode"], exit_code, "{d}");
        }
        assert_eq!(step(&d, "migrate")["state"], "FAILED");
        assert_eq!(step(&d, "web")["state"], "ROLLED_BACK", "{d}");
        assert_eq!(w.leftovers(&id), "", "the rollback leaves nothing labelled");
        failed_id = id;
    }

    // Retry after fixing the pipeline: the same deployment runs again, with the latest version.
    let fixed = w.save("shop", with_step("script", json!({"mode": "ok"}))).await;
    let retried = w.ok("mutation($id: ID!) { retryDeployment(id: $id) { attempt } }", json!({"id": failed_id})).await;
    assert_eq!(retried["retryDeployment"]["attempt"], 2);
    let d = w.reaches(&failed_id, "RUNNING", MINUTE).await;
    assert_eq!((d["attempt"].as_u64(), d["pipelineVersion"].as_u64()), (Some(2), Some(fixed)));
    assert_eq!(step(&d, "migrate")["state"], "SUCCEEDED", "{d}");
    let r = w.server.gql(Some(&w.admin), "mutation($id: ID!) { retryDeployment(id: $id) { attempt } }", json!({"id": failed_id})).await;
    assert_eq!(code(&r), "CONFLICT", "only a failed deployment is retried: {r}");

    // Cancel mid-run: deleting it while a step runs rolls back and ends CANCELLED.
    w.save("shop", with_step("script", json!({"mode": "sleep"}))).await;
    let id = w.create("shop", tags.clone()).await["id"].as_str().unwrap().to_owned();
    support::eventually(MINUTE, "the sleeping step runs", || async { step(&w.deployment(&id).await, "migrate")["state"] == "RUNNING" }).await;
    w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await;
    let cancelled = w.reaches(&id, "CANCELLED", Duration::from_secs(30)).await;
    assert_eq!(w.leftovers(&id), "", "a cancel leaves nothing labelled");
    // The steps settle with their run: rolled back, the one it cancelled too (not running for ever).
    assert_eq!(step(&cancelled, "migrate")["state"], "ROLLED_BACK", "{cancelled}");
    assert_eq!(step(&cancelled, "web")["state"], "ROLLED_BACK", "{cancelled}");

    // A secret reaches the plugin's stdin, and no log, event or answer shows it.
    w.save("shop", with_step("script", json!({"mode": "secret", "expect": "${{ secrets.DB_PASSWORD }}"}))).await;
    let id = w.create("shop", tags).await["id"].as_str().unwrap().to_owned();
    let d = w.reaches(&id, "FAILED", MINUTE).await;
    let reason = d["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("received ***") && reason.contains("connecting with password ***"), "the plugin got the secret and it is redacted: {d}");
    assert!(!d.to_string().contains(SECRET));
    let logs = w.ok("query($id: ID!) { deployment(id: $id) { logs(tail: 500) { text } } }", json!({"id": id})).await;
    let logs = logs.to_string();
    assert!(logs.contains("connecting with password ***") && !logs.contains(SECRET), "the plugin's output is logged redacted: {logs}");
    let output = w.server.output.lock().unwrap().join("\n");
    assert!(!output.contains(SECRET), "the platform's output never shows the secret");
    if let Some(lab) = &w.lab {
        assert!(!lab.logs("a").contains(SECRET), "the agent's log never shows the secret");
    }
}

async fn deployments_expire_unless_extended(mode: Mode) {
    let w = World::new(mode).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "brief", "environments": [w.environment], "cpuMillis": 10, "memoryMib": 64, "cleanupAfterSeconds": 5}}),
    )
    .await;
    w.save("brief", json!({"nodes": [{"id": "greet", "plugin": "script", "parameters": {"mode": "ok"}}]})).await;
    let expiring = w.create("brief", json!([])).await["id"].as_str().unwrap().to_owned();
    let expiring_at = w.deployment(&expiring).await["expiresAt"].clone();
    let extended = w.create("brief", json!([])).await["id"].as_str().unwrap().to_owned();
    let before = w.deployment(&extended).await;
    assert!(before["expiresInSeconds"].as_i64().unwrap() <= 5);
    w.reaches(&extended, "RUNNING", MINUTE).await;
    let after = w.ok("mutation($id: ID!) { extendDeployment(id: $id) { expiresAt } }", json!({"id": extended})).await;
    assert!(after["extendDeployment"]["expiresAt"].as_str().unwrap() > before["expiresAt"].as_str().unwrap(), "{after} {before}");

    w.reaches(&expiring, "DELETED", Duration::from_secs(30)).await;
    support::eventually(MINUTE, "the reaper's deletion in the history, as the platform", || async {
        let d = w.deployment(&expiring).await;
        let deletion = d["history"].as_array().unwrap().iter().find(|h| h["eventType"] == "deployment.deletion_requested").cloned();
        deletion.is_some_and(|h| h["actor"] == "system")
    })
    .await;
    // The extended one goes too, but not before its extended expiry (on a busy machine that
    // may come soon after the other's: what is checked is when, not what is seen meanwhile).
    w.reaches(&extended, "DELETED", Duration::from_secs(30)).await;
    let asked = "query($id: ID!) { deployment(id: $id) { history { eventType occurredAt } } }";
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("an RFC 3339 time");
    for (id, not_before) in [(&extended, &after["extendDeployment"]["expiresAt"]), (&expiring, &expiring_at)] {
        let history = w.ok(asked, json!({"id": id})).await;
        let deleted = history["deployment"]["history"].as_array().unwrap().iter().find(|h| h["eventType"] == "deployment.deletion_requested").cloned();
        let at = time(&deleted.expect("a deletion in the history")["occurredAt"]);
        assert!(at >= time(not_before), "deleted at {at}, before its expiry {not_before}");
    }
}

/// A node cut off mid-run: the deployment shows OFFLINE, its run carries on there, and the
/// outcome is taken up when the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_continues_on_a_node_that_goes_offline_and_is_taken_up_on_its_return() {
    let w = World::new(Mode::Production).await;
    let lab = w.lab.as_ref().unwrap();
    w.save(
        "shop",
        json!({"nodes": [{"id": "web", "service": "web"}, {"id": "slow", "plugin": "script", "parameters": {"mode": "slow"}}],
        "edges": [{"from": "web", "to": "slow"}]}),
    )
    .await;
    let id = w.create("shop", json!([{"service": "web", "tag": "v1"}])).await["id"].as_str().unwrap().to_owned();
    support::eventually(MINUTE, "the slow step runs", || async { step(&w.deployment(&id).await, "slow")["state"] == "RUNNING" }).await;
    support::must(&["network", "disconnect", &lab.network, &lab.name("a")]);
    let offline = w.reaches(&id, "OFFLINE", Duration::from_secs(10)).await;
    assert_eq!(step(&offline, "slow")["state"], "RUNNING", "{offline}");
    // The step ends while the node is cut off; reconnected, the outcome is recorded.
    support::must(&["network", "connect", "--ip", &lab.ip(10), &lab.network, &lab.name("a")]);
    let d = w.reaches(&id, "RUNNING", MINUTE).await;
    assert_eq!(step(&d, "slow")["state"], "SUCCEEDED", "{d}");
    assert_eq!(d["attempt"], 1, "the same run, not a new one");
}

in_embedded_mode!(failures_and_cancels_roll_back_and_retry_runs_again);
in_both_modes!(a_pipeline_deploys_isolated_and_goes_away_without_leftovers, deployments_expire_unless_extended);

/// Admission on the embedded node: an oversized project is refused with the figures; eight
/// concurrent requests for a node that fits five give five deployments and three refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_refuses_what_does_not_fit_and_never_overcommits() {
    let w = World::new(Mode::Embedded).await;
    let total_mib =
        w.ok("{ nodes(environment: \"local\") { usage { memoryTotalBytes } } }", json!({})).await["nodes"][0]["usage"]["memoryTotalBytes"].as_u64().unwrap()
            >> 20;
    let project = |name: &str, memory: u64| json!({"i": {"name": name, "environments": ["local"], "cpuMillis": 10, "memoryMib": memory}});
    let step = json!({"nodes": [{"id": "greet", "plugin": "script", "parameters": {"mode": "ok"}}]});
    w.ok("mutation($i: ProjectInput!) { createProject(input: $i) { name } }", project("huge", total_mib * 2)).await;
    w.save("huge", step.clone()).await;
    let r = w.server.gql(Some(&w.admin), CREATE, json!({"p": "huge", "e": "local"})).await;
    assert_eq!(code(&r), "RESOURCES_EXHAUSTED", "{r}");
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{} MiB", total_mib * 2)) && message.contains("free"), "names the figures: {message}");

    w.ok("mutation($i: ProjectInput!) { createProject(input: $i) { name } }", project("fifth", total_mib / 5)).await;
    w.save("fifth", step).await;
    let racers = (0..8).map(|_| {
        let (http, addr, admin) = (w.server.http.clone(), w.server.addr, w.admin.clone());
        tokio::spawn(async move {
            let server = Server::view(http, addr, Default::default());
            server.gql(Some(&admin), CREATE, json!({"p": "fifth", "e": "local"})).await
        })
    });
    let answers: Vec<Value> = futures::future::join_all(racers).await.into_iter().map(|r| r.unwrap()).collect();
    let created = answers.iter().filter(|a| a.get("errors").is_none()).count();
    let refused = answers.iter().filter(|a| a.get("errors").is_some() && code(a) == "RESOURCES_EXHAUSTED").count();
    assert_eq!((created, refused), (5, 3), "{answers:?}");
    for created in answers.iter().filter(|a| a.get("errors").is_none()) {
        w.reaches(created["data"]["createDeployment"]["id"].as_str().unwrap(), "RUNNING", MINUTE).await;
    }
    let allocated = w.ok("{ nodes(environment: \"local\") { allocated { memoryMib deployments } } }", json!({})).await;
    assert_eq!(allocated["nodes"][0]["allocated"]["deployments"], 5, "{allocated}");
}

/// A service that allocates beyond its memory limit is killed by Docker, and the deployment
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_its_memory_is_killed_and_the_deployment_shows_it() {
    let w = World::new(Mode::Embedded).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "greedy", "environments": ["local"], "cpuMillis": 100, "memoryMib": 32}}),
    )
    .await;
    w.save("greedy", json!({"nodes": [{"id": "hungry", "service": "hungry"}]})).await;
    let id = w.create("greedy", json!([])).await["id"].as_str().unwrap().to_owned();
    let d = w.reaches(&id, "FAILED", MINUTE).await;
    assert_eq!(d["failure"]["oomKilled"], true, "{d}");
    assert!(d["failure"]["reason"].as_str().unwrap().contains("out of memory (limit 32 MiB)"), "{d}");
    assert_eq!(w.leftovers(&id), "");
}

/// A health check the image does not serve is visible while the service starts: its step says
/// what the probe got (recorded once per new answer, in the history too), not only how long it
/// has been running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_is_visible_while_the_service_starts() {
    let w = World::new(Mode::Embedded).await;
    let health = json!({"httpPath": "/nope", "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3});
    let input = json!({"name": "broken", "registry": "local", "image": "nullops/demo", "tagMode": "PINNED", "tag": "v1", "port": 8080, "healthCheck": health});
    w.ok("mutation($i: ServiceInput!) { createService(input: $i) { name } }", json!({"i": input})).await;
    w.ok(
        "mutation($i: ProjectInput!) { createProject(input: $i) { name } }",
        json!({"i": {"name": "probing", "environments": [w.environment], "cpuMillis": 20, "memoryMib": 64}}),
    )
    .await;
    w.save("probing", json!({"nodes": [{"id": "broken", "service": "broken"}]})).await;
    let id = w.create("probing", json!([])).await["id"].as_str().unwrap().to_owned();
    let said = "not healthy yet: GET /nope answered 404";
    let d = support::until(MINUTE, "the probe's answer on the step", || async {
        let d = w.deployment(&id).await;
        if step(&d, "broken")["detail"].as_str().unwrap_or("").starts_with(said) {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    assert_eq!(d["state"], "DEPLOYING", "{d}");
    assert_eq!(step(&d, "broken")["state"], "RUNNING", "{d}");
    let told: Vec<String> = d["history"].as_array().unwrap().iter().map(|e| e["summary"].as_str().unwrap().to_owned()).filter(|s| s.contains(said)).collect();
    assert_eq!(told.len(), 1, "the answer is recorded once: {told:?}");
    w.ok("mutation($id: ID!) { deleteDeployment(id: $id) { state } }", json!({"id": id})).await;
    w.reaches(&id, "CANCELLED", MINUTE).await;
}
