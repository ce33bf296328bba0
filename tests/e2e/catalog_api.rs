//! The catalog end to end through the real binary, in embedded and in Postgres + NATS mode:
//! the authorization matrix, live tag listing against the real registry, secrets that never
//! appear in clear and die with their data key, master key rotation, pipeline versions.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{code, Backend, Mode, Server};

const REGISTRY: &str = "http://127.0.0.1:5050";

fn push(repository: &str, tags: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push-images.sh");
    let status = std::process::Command::new(script).arg(repository).args(tags).status().expect("run push-images.sh");
    assert!(status.success(), "pushing test images failed");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Admin,
    /// Member of a team with FULL access to project `shop`.
    Full,
    /// Member of a team with READ_ONLY access to `shop`.
    ReadOnly,
    /// Member of a team with FULL access to another project only.
    Unrelated,
    NoTeam,
    /// Was a member of the FULL team, then disabled.
    Disabled,
    Anonymous,
}

use Who::*;
const EVERYONE: [Who; 7] = [Admin, Full, ReadOnly, Unrelated, NoTeam, Disabled, Anonymous];
const ADMINS: &[Who] = &[Admin];
const SHOP_WRITERS: &[Who] = &[Admin, Full];
const SHOP_READERS: &[Who] = &[Admin, Full, ReadOnly];
const SIGNED_IN: &[Who] = &[Admin, Full, ReadOnly, Unrelated, NoTeam];

/// Runs `query` as admin and fails on any error.
async fn admin_ok(server: &Server, admin: &str, query: &str, variables: Value) -> Value {
    server.ok(Some(admin), query, variables).await
}

const SERVICE_INPUT: &str = "mutation($i: ServiceInput!) { createService(input: $i) { name } }";
const PLUGIN_INPUT: &str = "mutation($i: PluginInput!) { createPlugin(input: $i) { name } }";
const ENV_INPUT: &str = "mutation($i: EnvironmentInput!) { createEnvironment(input: $i) { name } }";
const PROJECT_INPUT: &str = "mutation($i: ProjectInput!) { createProject(input: $i) { name } }";
const REGISTRY_INPUT: &str = "mutation($i: RegistryInput!) { createRegistry(input: $i) { name } }";
const SET_SECRET: &str = "mutation($p: String!, $n: String!, $v: String!) { setSecret(project: $p, name: $n, value: $v) { name } }";
const TEAM: &str = "mutation($n: String!) { createTeam(name: $n) { name } }";
const MEMBER: &str = "mutation($t: String!, $u: String!) { addTeamMember(team: $t, username: $u) { name } }";
const GRANT: &str =
    "mutation($t: String!, $k: AccessTargetKind!, $n: String!, $a: Access!) { grantAccess(team: $t, target: {kind: $k, name: $n}, access: $a) { name } }";

fn service(name: &str, image: &str, pattern: Option<&str>) -> Value {
    json!({"i": {"name": name, "registry": "local", "image": image, "tagMode": "SELECTABLE", "tagPattern": pattern, "port": 8080}})
}
fn plugin(name: &str) -> Value {
    json!({"i": {"name": name, "registry": "local", "repository": "catalog-test/plugin", "tag": "1.0",
                 "parametersSchema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}})
}
fn project(name: &str) -> Value {
    json!({"i": {"name": name, "environments": ["staging"], "cpuMillis": 2000, "memoryMib": 2048}})
}

/// Users, teams, grants and catalog entries the matrix works on. Returns each caller's token.
async fn world(server: &Server) -> HashMap<Who, Option<String>> {
    push("catalog-test/app", &["v1.0.0", "v2.0.0"]);
    push("catalog-test/plugin", &["1.0"]);
    let admin = server.admin().await;
    let a = |q: &'static str, v: Value| {
        let admin = admin.clone();
        async move { admin_ok(server, &admin, q, v).await }
    };
    for user in ["full", "readonly", "unrelated", "noteam", "disabled"] {
        a("mutation($u: String!, $p: String!) { createUser(username: $u, password: $p) { username } }", json!({"u": user, "p": format!("{user}-password-1")}))
            .await;
    }
    a(REGISTRY_INPUT, json!({"i": {"name": "local", "url": REGISTRY, "username": "nullops", "password": "nullops"}})).await;
    for name in ["m-reg2", "m-reg3"] {
        a(REGISTRY_INPUT, json!({"i": {"name": name, "url": REGISTRY}})).await;
    }
    a(SERVICE_INPUT, service("app", "catalog-test/app", Some("v*"))).await;
    for name in ["m-svc2", "m-svc3"] {
        a(SERVICE_INPUT, service(name, "catalog-test/app", None)).await;
    }
    for name in ["create-db", "m-plug2", "m-plug3"] {
        a(PLUGIN_INPUT, plugin(name)).await;
    }
    for name in ["staging", "m-env-g", "m-env2", "m-env3"] {
        a(ENV_INPUT, json!({"i": {"name": name, "baseDomain": "qa.example.com"}})).await;
    }
    for name in ["shop", "blog", "m-proj2", "m-proj3"] {
        a(PROJECT_INPUT, project(name)).await;
    }
    for name in ["builders", "viewers", "others", "m-rename", "m-delete", "m-members"] {
        a(TEAM, json!({"n": name})).await;
    }
    for (team, user) in [("builders", "full"), ("builders", "disabled"), ("viewers", "readonly"), ("others", "unrelated"), ("m-members", "full")] {
        a(MEMBER, json!({"t": team, "u": user})).await;
    }
    for (team, kind, target, access) in [
        ("builders", "PROJECT", "shop", "FULL"),
        ("viewers", "PROJECT", "shop", "READ_ONLY"),
        ("others", "PROJECT", "blog", "FULL"),
        ("m-members", "ENVIRONMENT", "m-env-g", "READ_ONLY"),
    ] {
        a(GRANT, json!({"t": team, "k": kind, "n": target, "a": access})).await;
    }
    for name in ["D_ADMIN", "D_FULL"] {
        a(SET_SECRET, json!({"p": "shop", "n": name, "v": "to-be-deleted"})).await;
    }
    let mut tokens = HashMap::new();
    for (who, user) in [(Full, "full"), (ReadOnly, "readonly"), (Unrelated, "unrelated"), (NoTeam, "noteam"), (Disabled, "disabled")] {
        tokens.insert(who, Some(server.login(user, &format!("{user}-password-1")).await));
    }
    a("mutation { disableUser(username: \"disabled\") { disabled } }", json!({})).await;
    tokens.insert(Admin, Some(admin.clone()));
    tokens.insert(Anonymous, None);
    tokens
}

struct Case {
    query: &'static str,
    variables: fn(Who) -> Value,
    allowed: &'static [Who],
    /// Who may see what it names (a project, a team): anyone else is told it does not exist
    /// (NOT_FOUND), exactly as for something missing, rather than FORBIDDEN.
    seen_by: Option<&'static [Who]>,
}

fn mutation_cases() -> Vec<Case> {
    vec![
        Case { query: TEAM, variables: |_| json!({"n": "m-team"}), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation { renameTeam(name: \"m-rename\", newName: \"m-renamed\") { name } }",
            variables: |_| json!({}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deleteTeam(name: \"m-delete\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: MEMBER, variables: |_| json!({"t": "m-members", "u": "readonly"}), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation { removeTeamMember(team: \"m-members\", username: \"full\") { name } }",
            variables: |_| json!({}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: GRANT, variables: |_| json!({"t": "m-members", "k": "ENVIRONMENT", "n": "m-env-g", "a": "FULL"}), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation { revokeAccess(team: \"m-members\", target: {kind: ENVIRONMENT, name: \"m-env-g\"}) { name } }",
            variables: |_| json!({}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case {
            query: REGISTRY_INPUT,
            variables: |_| json!({"i": {"name": "m-reg", "url": REGISTRY, "username": "nullops", "password": "nullops"}}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case {
            query: "mutation($i: RegistryUpdateInput!) { updateRegistry(input: $i) { name } }",
            variables: |_| json!({"i": {"name": "m-reg2", "url": "http://127.0.0.1:5051"}}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deleteRegistry(name: \"m-reg3\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: SERVICE_INPUT, variables: |_| service("m-svc", "catalog-test/app", None), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation($i: ServiceInput!) { updateService(input: $i) { name } }",
            variables: |_| service("m-svc2", "catalog-test/app", Some("v2.*")),
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deleteService(name: \"m-svc3\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: PLUGIN_INPUT, variables: |_| plugin("m-plug"), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation($i: PluginInput!) { updatePlugin(input: $i) { name } }",
            variables: |_| {
                let mut p = plugin("m-plug2");
                p["i"]["timeoutSeconds"] = json!(60);
                p
            },
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deletePlugin(name: \"m-plug3\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: ENV_INPUT, variables: |_| json!({"i": {"name": "m-env", "baseDomain": "qa.example.com"}}), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation($i: EnvironmentInput!) { updateEnvironment(input: $i) { name } }",
            variables: |_| json!({"i": {"name": "m-env2", "baseDomain": "qa2.example.com"}}),
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deleteEnvironment(name: \"m-env3\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: PROJECT_INPUT, variables: |_| project("m-proj"), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation($i: ProjectInput!) { updateProject(input: $i) { name } }",
            variables: |_| {
                let mut p = project("m-proj2");
                p["i"]["memoryMib"] = json!(4096);
                p
            },
            allowed: ADMINS,
            seen_by: None,
        },
        Case { query: "mutation { deleteProject(name: \"m-proj3\") }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case {
            query: "mutation($p: PipelineInput!) { savePipeline(project: \"shop\", pipeline: $p) { version } }",
            // A graph of each caller's own, since saving the latest graph again is no new version.
            variables: |who| {
                json!({"p": {"nodes": [{"id": "db", "plugin": "create-db", "parameters": {"name": format!("{who:?}")}}, {"id": "web", "service": "app"}],
                             "edges": [{"from": "db", "to": "web"}]}})
            },
            allowed: SHOP_WRITERS,
            seen_by: Some(SHOP_READERS),
        },
        Case {
            query: SET_SECRET,
            variables: |who| json!({"p": "shop", "n": format!("S_{who:?}").to_uppercase(), "v": "v"}),
            allowed: SHOP_WRITERS,
            seen_by: Some(SHOP_READERS),
        },
        Case {
            // A dry run appends its audit entry: allowed means something was appended.
            query: "mutation { dryRunPipeline(project: \"shop\", environment: \"staging\") { ok } }",
            variables: |_| json!({}),
            allowed: SHOP_WRITERS,
            seen_by: Some(SHOP_READERS),
        },
        Case {
            query: "mutation($n: String!) { deleteSecret(project: \"shop\", name: $n) }",
            variables: |who| json!({"n": if who == Full { "D_FULL" } else { "D_ADMIN" }}),
            allowed: SHOP_WRITERS,
            seen_by: Some(SHOP_READERS),
        },
    ]
}

fn query_cases() -> Vec<Case> {
    vec![
        Case {
            query: "{ project(name: \"shop\") { name secrets { name } pipelineVersions { version } grants { team } } }",
            variables: |_| json!({}),
            allowed: SHOP_READERS,
            seen_by: Some(SHOP_READERS),
        },
        Case {
            query: "{ team(name: \"builders\") { members grants { target } } }",
            variables: |_| json!({}),
            allowed: &[Admin, Full],
            seen_by: Some(&[Admin, Full]),
        },
        Case { query: "{ auditLog { entries { eventType } } }", variables: |_| json!({}), allowed: ADMINS, seen_by: None },
        Case { query: "{ registries { name hasCredentials } }", variables: |_| json!({}), allowed: SIGNED_IN, seen_by: None },
        Case { query: "{ services { name } plugins { name } }", variables: |_| json!({}), allowed: SIGNED_IN, seen_by: None },
        Case { query: "{ availableTags(service: \"app\") }", variables: |_| json!({}), allowed: SIGNED_IN, seen_by: None },
        Case { query: "{ projects { name } environments { name } teams { name } }", variables: |_| json!({}), allowed: SIGNED_IN, seen_by: None },
    ]
}

fn denial(who: Who, case: &Case) -> &'static str {
    match who {
        Anonymous | Disabled => "UNAUTHENTICATED",
        _ if case.seen_by.is_some_and(|seen| !seen.contains(&who)) => "NOT_FOUND",
        _ => "FORBIDDEN",
    }
}

async fn authorization_matrix(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let tokens = world(&server).await;
    let token = |who: Who| tokens[&who].clone();

    // What each caller sees is filtered by their grants.
    let names = |v: &Value, field: &str| -> Vec<String> { v[field].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect() };
    let seen = |who: Who| {
        let t = token(who);
        let server = &server;
        async move { server.ok(t.as_deref(), "{ projects { name } environments { name } teams { name } }", json!({})).await }
    };
    let full = seen(Full).await;
    // `full` also belongs to m-members, which holds a grant on environment m-env-g.
    assert_eq!((names(&full, "projects"), names(&full, "environments")), (vec!["shop".to_owned()], vec!["m-env-g".to_owned(), "staging".to_owned()]));
    assert_eq!(names(&full, "teams"), ["builders", "m-members"]);
    let ro = seen(ReadOnly).await;
    assert_eq!((names(&ro, "projects"), names(&ro, "teams")), (vec!["shop".to_owned()], vec!["viewers".to_owned()]));
    assert_eq!(names(&seen(Unrelated).await, "projects"), ["blog"]);
    let none = seen(NoTeam).await;
    assert_eq!((names(&none, "projects").len(), names(&none, "environments").len(), names(&none, "teams").len()), (0, 0, 0));
    let shop = server.ok(token(ReadOnly).as_deref(), "{ project(name: \"shop\") { myAccess } }", json!({})).await;
    assert_eq!(shop["project"]["myAccess"], "READ_ONLY");

    for case in query_cases() {
        for who in EVERYONE {
            let r = server.gql(token(who).as_deref(), case.query, (case.variables)(who)).await;
            if case.allowed.contains(&who) {
                assert!(r.get("errors").is_none(), "{who:?} may run {}: {r}", case.query);
            } else {
                assert_eq!(code(&r), denial(who, &case), "{who:?} may not run {}: {r}", case.query);
            }
        }
    }

    for case in mutation_cases() {
        // The refused first, so the allowed call still finds what it changes.
        let order = EVERYONE.iter().filter(|w| !case.allowed.contains(w)).chain(case.allowed.iter());
        for &who in order {
            let before = backend.events_in_log().await;
            let r = server.gql(token(who).as_deref(), case.query, (case.variables)(who)).await;
            if case.allowed.contains(&who) {
                assert!(r.get("errors").is_none(), "{who:?} may run {}: {r}", case.query);
                assert!(backend.events_in_log().await > before, "{who:?}: {} appended nothing", case.query);
            } else {
                assert_eq!(code(&r), denial(who, &case), "{who:?} may not run {}: {r}", case.query);
                assert_eq!(backend.events_in_log().await, before, "{who:?}: a refused {} appended events", case.query);
            }
        }
    }

    // To a caller without a grant, a project that exists reads exactly as one that does not.
    let unseen = server.gql(token(Unrelated).as_deref(), "{ project(name: \"shop\") { name } }", json!({})).await;
    let missing = server.gql(token(Unrelated).as_deref(), "{ project(name: \"nosuch\") { name } }", json!({})).await;
    assert_eq!(unseen["errors"][0]["message"].as_str().unwrap().replace("shop", "X"), missing["errors"][0]["message"].as_str().unwrap().replace("nosuch", "X"));
    assert_eq!((code(&unseen), code(&missing)), ("NOT_FOUND", "NOT_FOUND"));

    // The effects are what the allowed calls asked for.
    let admin = token(Admin);
    let teams = server.ok(admin.as_deref(), "{ teams { name members grants { target access } } }", json!({})).await;
    let team_names = names(&teams, "teams");
    assert!(team_names.contains(&"m-renamed".to_owned()) && !team_names.contains(&"m-delete".to_owned()), "{teams}");
    let members = teams["teams"].as_array().unwrap().iter().find(|t| t["name"] == "m-members").unwrap();
    assert_eq!(members["members"], json!(["readonly"]));
    assert_eq!(members["grants"], json!([]));
    let secrets = server.ok(admin.as_deref(), "{ project(name: \"shop\") { secrets { name } } }", json!({})).await;
    assert_eq!(names(&secrets["project"], "secrets"), ["S_ADMIN", "S_FULL"]);
}

async fn tags_from_the_real_registry(mode: Mode) {
    // A repository of this test's own: it pushes more tags as it goes.
    let repository = format!("catalog-test/tags-{}", uuid::Uuid::now_v7().simple());
    push(&repository, &["v1.0.0", "v1.2.0", "v2.0.0-rc1", "v2.0.0", "v1.10.0", "feature-login", "latest"]);
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    admin_ok(&server, &admin, REGISTRY_INPUT, json!({"i": {"name": "local", "url": REGISTRY, "username": "nullops", "password": "nullops"}})).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("versions", &repository, Some("v*"))).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("minor", &repository, Some("v1.*"))).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("features", &repository, Some("feature-*"))).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("anything", &repository, None)).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("missing", "catalog-test/never-pushed", None)).await;
    let tags = |s: &'static str| {
        let (server, admin) = (&server, admin.clone());
        async move { server.gql(Some(&admin), "query($s: String!) { availableTags(service: $s, refresh: true) }", json!({"s": s})).await }
    };
    assert_eq!(tags("versions").await["data"]["availableTags"], json!(["v2.0.0", "v2.0.0-rc1", "v1.10.0", "v1.2.0", "v1.0.0"]));
    assert_eq!(tags("minor").await["data"]["availableTags"], json!(["v1.10.0", "v1.2.0", "v1.0.0"]));
    assert_eq!(tags("features").await["data"]["availableTags"], json!(["feature-login"]));
    assert_eq!(tags("anything").await["data"]["availableTags"].as_array().unwrap().len(), 7);

    // Answers are cached for 30 s; `refresh` asks the registry again once the answer is over
    // 2 s old (so insisting callers cannot hammer it).
    push(&repository, &["v3.0.0"]);
    let cached = server.ok(Some(&admin), "{ availableTags(service: \"versions\") }", json!({})).await;
    assert_eq!(cached["availableTags"][0], "v2.0.0");
    support::eventually(Duration::from_secs(10), "a refresh shows the new tag", || async { tags("versions").await["data"]["availableTags"][0] == "v3.0.0" })
        .await;
    let missing = tags("missing").await;
    assert_eq!(code(&missing), "NOT_FOUND", "{missing}");

    // Wrong credentials: a clear error naming the registry.
    // Wrong credentials are refused when saved, with the registry's answer beside the password.
    let update = "mutation($i: RegistryUpdateInput!) { updateRegistry(input: $i) { hasCredentials } }";
    let refused = server.gql(Some(&admin), update, json!({"i": {"name": "local", "url": REGISTRY, "username": "nullops", "password": "wrong"}})).await;
    assert_eq!((code(&refused), refused["errors"][0]["extensions"]["field"].as_str()), ("INVALID_INPUT", Some("password")), "{refused}");
    // Saved while the registry could not be asked, then pointed back at it: the tag listing says
    // the registry refused them.
    let unreachable = "http://127.0.0.1:9";
    admin_ok(&server, &admin, update, json!({"i": {"name": "local", "url": unreachable, "username": "nullops", "password": "wrong"}})).await;
    admin_ok(&server, &admin, update, json!({"i": {"name": "local", "url": REGISTRY}})).await;
    let r = tags("versions").await;
    assert_eq!(code(&r), "REGISTRY_AUTH_FAILED", "{r}");
    assert_eq!(r["errors"][0]["message"], "registry local refused access: it rejected the credentials");

    // Down: nothing listens there. The answer comes at once, naming the registry.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    admin_ok(
        &server,
        &admin,
        "mutation($i: RegistryUpdateInput!) { updateRegistry(input: $i) { hasCredentials } }",
        json!({"i": {"name": "local", "url": format!("http://{free}"), "clearCredentials": true}}),
    )
    .await;
    let started = Instant::now();
    let r = tags("versions").await;
    assert_eq!(code(&r), "REGISTRY_UNAVAILABLE", "{r}");
    assert!(r["errors"][0]["message"].as_str().unwrap().starts_with("registry local is unreachable"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());
}

async fn secrets_stay_sealed_and_die_with_their_keys(mode: Mode) {
    push("catalog-test/app", &["v1.0.0", "v2.0.0"]);
    let mut backend = Backend::new(mode).await;
    let server = Server::start_with(&backend, &[("NULLOPS_LOG", "debug,hyper=info,h2=info,rustls=info")]).await;
    let admin = server.admin().await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (registry_password, first, second, kept) =
        (format!("registry-pass-{tag}"), format!("first-value-{tag}"), format!("second-value-{tag}"), format!("kept-value-{tag}"));
    admin_ok(&server, &admin, REGISTRY_INPUT, json!({"i": {"name": "local", "url": REGISTRY, "username": "nullops", "password": "nullops"}})).await;
    // A registry that cannot be asked now (nothing listens there): its credentials are kept unchecked.
    admin_ok(
        &server,
        &admin,
        REGISTRY_INPUT,
        json!({"i": {"name": "decoy", "url": "http://127.0.0.1:9", "username": "someone", "password": registry_password}}),
    )
    .await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("app", "catalog-test/app", Some("v*"))).await;
    admin_ok(&server, &admin, ENV_INPUT, json!({"i": {"name": "staging", "baseDomain": "qa.example.com"}})).await;
    admin_ok(&server, &admin, PROJECT_INPUT, project("shop")).await;
    admin_ok(&server, &admin, SET_SECRET, json!({"p": "shop", "n": "DB_PASSWORD", "v": first})).await;
    admin_ok(&server, &admin, SET_SECRET, json!({"p": "shop", "n": "DB_PASSWORD", "v": second})).await;
    admin_ok(&server, &admin, SET_SECRET, json!({"p": "shop", "n": "KEPT", "v": kept})).await;
    let listed = admin_ok(&server, &admin, "{ registries { name hasCredentials } project(name: \"shop\") { secrets { name } } }", json!({})).await;
    let plaintexts = [&registry_password, &first, &second, &kept];
    for p in plaintexts {
        assert!(!listed.to_string().contains(p.as_str()), "API output holds a secret");
    }
    // The history says what changed, with the names involved, and never a value.
    let history = admin_ok(&server, &admin, "{ auditLog(page: {first: 500}) { entries { eventType summary } } }", json!({})).await;
    let summaries: Vec<&str> = history["auditLog"]["entries"].as_array().unwrap().iter().map(|e| e["summary"].as_str().unwrap()).collect();
    for expected in [
        "secret DB_PASSWORD of project shop set",
        "secret DB_PASSWORD of project shop replaced",
        "registry decoy added at http://127.0.0.1:9, with credentials",
    ] {
        assert!(summaries.contains(&expected), "{expected:?} in {summaries:#?}");
    }
    for p in plaintexts {
        assert!(!history.to_string().contains(p.as_str()), "the history holds a secret");
    }

    // The log holds ciphertext and key ids only; storage and logs hold no plaintext.
    let sealed_values = |events: &[nullops_events::DomainEvent]| -> Vec<(String, nullops_events::catalog::Sealed)> {
        use nullops_events::catalog::{CatalogEvent, SecretEvent};
        use nullops_events::DomainEvent as E;
        events
            .iter()
            .filter_map(|e| match e {
                E::Secret(SecretEvent::Created(s) | SecretEvent::Updated(s)) => Some((s.name.clone(), s.value.clone())),
                E::Catalog(CatalogEvent::RegistryAdded(r)) => r.credentials.clone().map(|c| (r.name.clone(), c)),
                _ => None,
            })
            .collect()
    };
    let sealed = sealed_values(&backend.stored_events().await);
    let names: Vec<&str> = sealed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["local", "decoy", "DB_PASSWORD", "DB_PASSWORD", "KEPT"]);
    let storage = backend.raw_storage().await;
    let logs = server.output.lock().unwrap().join("\n");
    assert!(logs.len() > 1000, "debug logging is on, so the check below means something");
    for p in plaintexts {
        assert!(!storage.windows(p.len()).any(|w| w == p.as_bytes()), "stored in clear: {p}");
        assert!(!logs.contains(p.as_str()), "logged in clear: {p}");
    }

    // With the master key: the current values open; the replaced one never will again.
    let master = backend.current_master_key();
    let project_id = admin_ok(&server, &admin, "{ project(name: \"shop\") { id } }", json!({})).await["project"]["id"].as_str().unwrap().to_owned();
    let purpose = |name: &str| format!("secret:{project_id}:{name}");
    let find = |name: &str, nth: usize| sealed.iter().filter(|(n, _)| n == name).nth(nth).unwrap().1.clone();
    let keyring = backend.keyring(&master).await;
    let opened = |r: Result<zeroize::Zeroizing<Vec<u8>>, nullops_keyring::KeyringError>| r.map(|v| String::from_utf8(v.to_vec()).unwrap());
    assert!(matches!(keyring.unseal(&find("DB_PASSWORD", 0), &purpose("DB_PASSWORD")).await, Err(nullops_keyring::KeyringError::Destroyed(_))));
    assert_eq!(opened(keyring.unseal(&find("DB_PASSWORD", 1), &purpose("DB_PASSWORD")).await).unwrap(), second);
    assert_eq!(opened(keyring.unseal(&find("KEPT", 0), &purpose("KEPT")).await).unwrap(), kept);

    // Deleting a secret destroys its data key: its ciphertext in the log is unreadable for good.
    admin_ok(&server, &admin, "mutation { deleteSecret(project: \"shop\", name: \"DB_PASSWORD\") }", json!({})).await;
    assert!(matches!(keyring.unseal(&find("DB_PASSWORD", 1), &purpose("DB_PASSWORD")).await, Err(nullops_keyring::KeyringError::Destroyed(_))));
    drop(keyring);

    // Rotation refuses to run under a live server, which would go on sealing under the old key.
    let new_key = nullops_keyring::MasterKey::generate().to_hex().to_string();
    let refused = backend.command(&["keys", "rotate"]).env("NULLOPS_NEW_MASTER_KEY", &new_key).output().await.expect("keys rotate");
    assert!(!refused.status.success(), "rotation ran beside a live server");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("server is running") || why.contains("another nullops process"), "{why}");
    server.stop().await;

    // Rotation: every data key moves to the new master key; the old key opens nothing.
    let mut rotate = backend.command(&["keys", "rotate"]);
    if mode == Mode::Production {
        rotate.env("NULLOPS_NEW_MASTER_KEY", &new_key);
    }
    let out = rotate.output().await.expect("keys rotate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "keys rotate failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("re-wrapped 3 data keys"), "local, decoy and KEPT: {stdout}");
    let old = master;
    if mode == Mode::Production {
        backend.master_key = new_key;
    }
    let new = backend.current_master_key();
    assert_ne!(old, new);
    let rotated = backend.keyring(&new).await;
    assert_eq!(opened(rotated.unseal(&find("KEPT", 0), &purpose("KEPT")).await).unwrap(), kept);
    assert_eq!(opened(rotated.unseal(&find("decoy", 0), "registry:decoy").await).unwrap(), format!("someone:{registry_password}"));
    let stale = backend.keyring(&old).await;
    assert!(matches!(stale.unseal(&find("KEPT", 0), &purpose("KEPT")).await, Err(nullops_keyring::KeyringError::WrongMasterKey { .. })));
    let verify = backend.command(&["keys", "verify"]).output().await.expect("keys verify");
    assert!(verify.status.success() && String::from_utf8_lossy(&verify.stdout).starts_with("all 3 data keys unwrap"), "{verify:?}");
    assert!(!stdout.contains(&new), "the new key is never printed");

    // A key no live value uses (as a crash between an event and its key's destruction leaves)
    // is swept; live keys stay.
    let orphan = rotated.seal(b"left behind", "test").await.unwrap();
    let swept = backend.command(&["keys", "sweep", "--grace-secs", "0"]).output().await.expect("keys sweep");
    assert_eq!(String::from_utf8_lossy(&swept.stdout), "destroyed 1 orphaned data keys\n", "{swept:?}");
    assert!(matches!(rotated.unseal(&orphan, "test").await, Err(nullops_keyring::KeyringError::Destroyed(_))));
    assert_eq!(opened(rotated.unseal(&find("KEPT", 0), &purpose("KEPT")).await).unwrap(), kept);
    assert_eq!(opened(rotated.unseal(&find("local", 0), "registry:local").await).unwrap(), "nullops:nullops");

    // The platform, restarted on the new key, still uses the credentials.
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    let tags = admin_ok(&server, &admin, "{ availableTags(service: \"app\", refresh: true) }", json!({})).await;
    assert_eq!(tags["availableTags"], json!(["v2.0.0", "v1.0.0"]));
}

async fn pipelines_are_validated_versioned_and_diffed(mode: Mode) {
    push("catalog-test/plugin", &["1.0"]);
    push("catalog-test/app", &["v1.0.0"]);
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    admin_ok(&server, &admin, REGISTRY_INPUT, json!({"i": {"name": "local", "url": REGISTRY, "username": "nullops", "password": "nullops"}})).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("app", "catalog-test/app", None)).await;
    admin_ok(&server, &admin, PLUGIN_INPUT, plugin("create-db")).await;
    admin_ok(&server, &admin, ENV_INPUT, json!({"i": {"name": "staging", "baseDomain": "qa.example.com"}})).await;
    admin_ok(&server, &admin, PROJECT_INPUT, project("shop")).await;
    admin_ok(&server, &admin, SET_SECRET, json!({"p": "shop", "n": "DB_PASSWORD", "v": "pw"})).await;
    let save = "mutation($p: PipelineInput!) { savePipeline(project: \"shop\", pipeline: $p) { version nodes { id image { tag digest } } } }";
    let db = |params: Value| json!({"id": "db", "plugin": "create-db", "parameters": params});
    let web = json!({"id": "web", "service": "app"});

    let rejected = [
        (
            json!({"nodes": [db(json!({"name": "x"})), web.clone()], "edges": [{"from": "db", "to": "web"}, {"from": "web", "to": "db"}]}),
            "the edges form a cycle",
        ),
        (json!({"nodes": [db(json!({"name": "x"})), {"id": "api", "service": "nope"}]}), "node \"api\": there is no service named nope"),
        (json!({"nodes": [{"id": "seed", "plugin": "nope"}]}), "node \"seed\": there is no plugin named nope"),
        (json!({"nodes": [db(json!({"name": 7}))]}), "node \"db\": parameters do not match plugin create-db's schema at name"),
        (
            json!({"nodes": [db(json!({"name": "x"})), {"id": "seed", "plugin": "create-db", "parameters": {"name": "${{ nodes.db.outputs.url }}"}}]}),
            "node \"seed\": it uses outputs of node \"db\", which does not run before it",
        ),
        (json!({"nodes": [db(json!({"name": "${{ secrets.NOPE }}"}))]}), "node \"db\": there is no secret named NOPE in this project"),
    ];
    for (pipeline, message) in rejected {
        let before = backend.events_in_log().await;
        let r = server.gql(Some(&admin), save, json!({"p": pipeline})).await;
        assert_eq!(code(&r), "INVALID_INPUT", "{r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains(message), "{message}: {r}");
        assert_eq!(backend.events_in_log().await, before);
    }
    // Every problem at once, each on its node and field, with its code.
    let r = server.gql(Some(&admin), save, json!({"p": {"nodes": [db(json!({})), {"id": "api", "service": "nope"}]}})).await;
    let problems = &r["errors"][0]["extensions"]["problems"];
    assert_eq!(
        problems,
        &json!([
            {"node": "db", "field": "parameters.name", "code": "MISSING_PARAMETER", "message": "plugin create-db needs the parameter name"},
            {"node": "api", "field": "service", "code": "UNKNOWN_SERVICE", "message": "there is no service named nope"}
        ]),
        "{r}"
    );

    let v1 = json!({"nodes": [db(json!({"name": "${{ secrets.DB_PASSWORD }}"})), web.clone()], "edges": [{"from": "db", "to": "web"}]});
    let saved = admin_ok(&server, &admin, save, json!({"p": v1})).await;
    assert_eq!(saved["savePipeline"]["version"], 1);
    let image = &saved["savePipeline"]["nodes"][0]["image"];
    assert_eq!(image["tag"], "1.0");
    assert!(image["digest"].as_str().unwrap().starts_with("sha256:"), "pinned by digest: {image}");
    assert_eq!(admin_ok(&server, &admin, save, json!({"p": v1})).await["savePipeline"]["version"], 1, "same graph, same version");
    let v2 = json!({"nodes": [db(json!({"name": "shop"})), web, {"id": "seed", "plugin": "create-db", "parameters": {"name": "${{ nodes.db.outputs.url }}"}}],
                    "edges": [{"from": "db", "to": "web"}, {"from": "db", "to": "seed"}]});
    assert_eq!(admin_ok(&server, &admin, save, json!({"p": v2})).await["savePipeline"]["version"], 2);

    // A dry run of version 2: no problem, the stages, every image found by digest, and no node
    // to run it on (staging has none); one event appended, the audit entry.
    let before = backend.events_in_log().await;
    let dry = "mutation($t: [TagChoice!]) { dryRunPipeline(project: \"shop\", environment: \"staging\", version: 2, tags: $t) {
        ok problems { node field code } order images { node found digest } admission { fits node message } version } }";
    let r = admin_ok(&server, &admin, dry, json!({"t": [{"service": "app", "tag": "v1.0.0"}]})).await["dryRunPipeline"].clone();
    assert_eq!((&r["ok"], &r["problems"], &r["order"], &r["version"]), (&json!(false), &json!([]), &json!([["db"], ["seed", "web"]]), &json!(2)), "{r}");
    assert!(r["images"].as_array().unwrap().iter().all(|i| i["found"] == true && i["digest"].as_str().is_some_and(|d| d.starts_with("sha256:"))), "{r}");
    assert_eq!(r["admission"]["fits"], false);
    assert!(r["admission"]["message"].as_str().unwrap().contains("environment staging has no online node"), "{r}");
    assert_eq!(backend.events_in_log().await, before + 1);
    // Without a tag, and with one the registry does not have: each a MISSING_TAG on its node.
    let r = admin_ok(&server, &admin, dry, json!({"t": []})).await["dryRunPipeline"].clone();
    assert_eq!(r["problems"], json!([{"node": "web", "field": "tags.app", "code": "MISSING_TAG"}]), "{r}");
    let r = admin_ok(&server, &admin, dry, json!({"t": [{"service": "app", "tag": "v9"}]})).await["dryRunPipeline"].clone();
    assert_eq!(r["problems"], json!([{"node": "web", "field": "image", "code": "MISSING_TAG"}]), "{r}");

    // A plugin whose registry does not answer is pinned by tag alone; the save still succeeds.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    admin_ok(&server, &admin, REGISTRY_INPUT, json!({"i": {"name": "gone", "url": format!("http://{free}")}})).await;
    let mut offline = plugin("offline");
    offline["i"]["registry"] = json!("gone");
    admin_ok(&server, &admin, PLUGIN_INPUT, offline).await;
    let v3 = json!({"nodes": [{"id": "x", "plugin": "offline", "parameters": {"name": "x"}}]});
    let saved = admin_ok(&server, &admin, save, json!({"p": v3})).await;
    assert_eq!(saved["savePipeline"]["version"], 3);
    assert_eq!(saved["savePipeline"]["nodes"][0]["image"], json!({"tag": "1.0", "digest": null}));

    let history = admin_ok(&server, &admin, "{ project(name: \"shop\") { pipeline { version } pipelineVersions { version savedBy } pipelineVersion(version: 1) { nodes { id parameters } } pipelineDiff(from: 1, to: 2) { kind subject } } }", json!({})).await;
    let p = &history["project"];
    assert_eq!(p["pipeline"]["version"], 3);
    assert_eq!(
        p["pipelineVersions"],
        json!([{"version": 3, "savedBy": "user:admin"}, {"version": 2, "savedBy": "user:admin"}, {"version": 1, "savedBy": "user:admin"}])
    );
    assert_eq!(p["pipelineVersion"]["nodes"][0]["parameters"], json!({"name": "${{ secrets.DB_PASSWORD }}"}), "old versions stay as saved");
    assert_eq!(
        p["pipelineDiff"],
        json!([{"kind": "CHANGED", "subject": "node db"}, {"kind": "ADDED", "subject": "node seed"}, {"kind": "ADDED", "subject": "edge db -> seed"}])
    );

    // A plugin the latest pipeline runs is not deleted, and says which pipeline; one only older
    // versions ran is.
    let used = admin_ok(&server, &admin, "{ plugin(name: \"offline\") { usedBy { project kind description } } }", json!({})).await;
    assert_eq!(used["plugin"]["usedBy"], json!([{"project": "shop", "kind": "PIPELINE", "description": "the latest pipeline of project shop"}]));
    let r = server.gql(Some(&admin), "mutation { deletePlugin(name: \"offline\") }", json!({})).await;
    assert_eq!(code(&r), "CONFLICT", "{r}");
    assert_eq!(r["errors"][0]["message"], "plugin offline is in use by the latest pipeline of project shop; change or remove those first");
    admin_ok(&server, &admin, "mutation { deletePlugin(name: \"create-db\") }", json!({})).await;
}

/// A project's CPU and memory are split evenly among its services, and Docker will not start a
/// container below 10 millicores or 6 MiB: limits that would go below are refused where they
/// are saved (the project's, or a pipeline with more services), naming the least that would do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_too_small_to_split_among_the_services_are_refused_when_saved() {
    let backend = Backend::new(Mode::Embedded).await;
    let server = Server::start(&backend).await;
    let admin = server.admin().await;
    admin_ok(&server, &admin, ENV_INPUT, json!({"i": {"name": "staging", "baseDomain": "qa.example.com"}})).await;
    let pinned = json!({"i": {"name": "web", "registry": "docker-hub", "image": "library/nginx", "tagMode": "PINNED", "tag": "1", "port": 80}});
    admin_ok(&server, &admin, SERVICE_INPUT, pinned).await;
    let limits = |cpu: u32, memory: u32| json!({"i": {"name": "thin", "environments": ["staging"], "cpuMillis": cpu, "memoryMib": memory}});
    admin_ok(&server, &admin, PROJECT_INPUT, limits(10, 64)).await;
    let save = "mutation($p: PipelineInput!) { savePipeline(project: \"thin\", pipeline: $p) { version } }";
    let two = json!({"p": {"nodes": [{"id": "a", "service": "web"}, {"id": "b", "service": "web"}], "edges": []}});
    let refused = server.gql(Some(&admin), save, two.clone()).await;
    assert_eq!(code(&refused), "INVALID_INPUT", "{refused}");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("at least 20 millicores"), "{refused}");
    let update = "mutation($i: ProjectInput!) { updateProject(input: $i) { name } }";
    admin_ok(&server, &admin, update, limits(20, 64)).await;
    admin_ok(&server, &admin, save, two).await;
    // With two services saved, limits below their share are refused too; nothing was changed.
    for (cpu, memory, needed) in [(10, 64, "at least 20 millicores"), (20, 10, "at least 12 MiB")] {
        let refused = server.gql(Some(&admin), update, limits(cpu, memory)).await;
        assert_eq!(code(&refused), "INVALID_INPUT", "{refused}");
        assert!(refused["errors"][0]["message"].as_str().unwrap().contains(needed), "{refused}");
    }
    let kept = server.ok(Some(&admin), "{ project(name: \"thin\") { cpuMillis memoryMib } }", json!({})).await;
    assert_eq!(kept["project"], json!({"cpuMillis": 20, "memoryMib": 64}));
    server.stop().await;
}

/// Outgoing URLs (registries, webhooks, forges) that point at the platform itself or inside a
/// network no admin allowed are refused where they are saved, on their field, saying what to
/// do; what is allowed by name is called. Loopback stands for every private range here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_urls_reach_neither_the_platform_nor_unallowed_private_addresses() {
    push("egress-test/app", &["v1"]);
    let backend = Backend::new(Mode::Embedded).await;
    // Given an admin who allows the name localhost only
    let server = Server::start_with(&backend, &[("NULLOPS_ALLOWED_PRIVATE_TARGETS", "localhost")]).await;
    let admin = server.admin().await;
    let api = server.addr.port();
    let ingress = server.ingress.expect("an ingress").port();
    let refused_on = |r: &Value, field: &str, says: &str| {
        assert_eq!((code(r), r["errors"][0]["extensions"]["field"].as_str()), ("INVALID_INPUT", Some(field)), "{r}");
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("os error") && !message.contains("tcp"), "our words only: {message}");
    };
    let webhook = "mutation($u: String!) { createWebhook(input: {url: $u, events: [PIPELINE_SAVED]}) { webhook { id } } }";
    // When a webhook points at the platform's own API or ingress, even by an allowed name
    for port in [api, ingress] {
        let r = server.gql(Some(&admin), webhook, json!({"u": format!("http://localhost:{port}/graphql")})).await;
        refused_on(&r, "url", &format!("localhost port {port} is NullOps itself"));
    }
    // Or at an address no admin allowed: the cloud's metadata service, loopback by address
    let r = server.gql(Some(&admin), webhook, json!({"u": "http://169.254.169.254/latest/meta-data/"})).await;
    refused_on(&r, "url", "169.254.169.254 is a link-local address: NullOps calls such addresses only where its server allows them by name or range (NULLOPS_ALLOWED_PRIVATE_TARGETS)");
    let r = server.gql(Some(&admin), REGISTRY_INPUT, json!({"i": {"name": "inside", "url": "http://127.0.0.1:5050"}})).await;
    refused_on(&r, "url", "127.0.0.1 is a loopback address");
    let r = server.gql(Some(&admin), REGISTRY_INPUT, json!({"i": {"name": "inside", "url": "http://[::ffff:127.0.0.1]:5050"}})).await;
    refused_on(&r, "url", "is a loopback address");
    let r = server.gql(Some(&admin), REGISTRY_INPUT, json!({"i": {"name": "inside", "url": "http://10.20.30.40"}})).await;
    refused_on(&r, "url", "10.20.30.40 is a private address");
    // Then nothing was stored
    let stored = admin_ok(&server, &admin, "{ registries { name } webhooks { id } }", json!({})).await;
    assert_eq!(stored, json!({"registries": [{"name": "docker-hub"}], "webhooks": []}));
    // And what is allowed by name is saved and called: the credentials are checked, the tags listed
    let local = json!({"i": {"name": "local", "url": "http://localhost:5050", "username": "nullops", "password": "wrong"}});
    let r = server.gql(Some(&admin), REGISTRY_INPUT, local).await;
    refused_on(&r, "password", "refused these credentials");
    let local = json!({"i": {"name": "local", "url": "http://localhost:5050", "username": "nullops", "password": "nullops"}});
    admin_ok(&server, &admin, REGISTRY_INPUT, local).await;
    admin_ok(&server, &admin, SERVICE_INPUT, service("app", "egress-test/app", None)).await;
    let tags = admin_ok(&server, &admin, "{ availableTags(service: \"app\", refresh: true) }", json!({})).await;
    assert_eq!(tags["availableTags"], json!(["v1"]));
    // A forge's API by an allowed name is linked
    admin_ok(&server, &admin, ENV_INPUT, json!({"i": {"name": "staging", "baseDomain": "qa.example.com"}})).await;
    admin_ok(&server, &admin, PROJECT_INPUT, project("shop")).await;
    let link = "mutation($u: String!) { linkRepository(project: \"shop\", provider: GITLAB, repository: \"team/shop\", apiUrl: $u, \
                webhookSecret: \"a-webhook-secret\", token: \"glpat-token\", service: \"app\") { apiUrl } }";
    let r = server.gql(Some(&admin), link, json!({"u": format!("http://127.0.0.1:{ingress}/api/v4")})).await;
    refused_on(&r, "apiUrl", &format!("127.0.0.1 port {ingress} is NullOps itself"));
    let r = server.gql(Some(&admin), link, json!({"u": "http://10.20.30.40/api/v4"})).await;
    refused_on(&r, "apiUrl", "10.20.30.40 is a private address");
    let linked = admin_ok(&server, &admin, link, json!({"u": "http://localhost:9/api/v4"})).await;
    assert_eq!(linked["linkRepository"]["apiUrl"], "http://localhost:9/api/v4");
    server.stop().await;
}

/// 160 `setSecret`s to one project, 16 at a time, none of them conflicting in what it asks: each
/// succeeds (no CONFLICT), and every secret is there. In production the writes go through two
/// servers, so they race across processes too.
async fn concurrent_writes_to_one_stream_all_succeed(mode: Mode) {
    let backend = Backend::new(mode).await;
    let server = Server::start(&backend).await;
    let second = match mode {
        Mode::Production => Some(Server::start(&backend).await),
        Mode::Embedded => None,
    };
    let admin = server.admin().await;
    admin_ok(&server, &admin, ENV_INPUT, json!({"i": {"name": "staging", "baseDomain": "qa.example.com"}})).await;
    admin_ok(&server, &admin, PROJECT_INPUT, project("shop")).await;
    let servers: Vec<&Server> = std::iter::once(&server).chain(second.as_ref()).collect();
    let writers = (0..16).map(|w| {
        let (target, admin) = (servers[w % servers.len()], admin.clone());
        async move {
            let mut refused = Vec::new();
            for i in 0..10 {
                let r = target.gql(Some(&admin), SET_SECRET, json!({"p": "shop", "n": format!("S_{w}_{i}"), "v": "value"})).await;
                if r.get("errors").is_some() {
                    refused.push(r);
                }
            }
            refused
        }
    });
    let refused: Vec<Value> = futures::future::join_all(writers).await.into_iter().flatten().collect();
    assert!(refused.is_empty(), "{} of 160 concurrent writes refused, e.g. {}", refused.len(), refused[0]);
    let listed = admin_ok(&server, &admin, "{ project(name: \"shop\") { secrets { name } } }", json!({})).await;
    assert_eq!(listed["project"]["secrets"].as_array().unwrap().len(), 160);
    if let Some(second) = second {
        second.stop().await;
    }
    server.stop().await;
}

in_embedded_mode!(tags_from_the_real_registry);
in_both_modes!(
    authorization_matrix,
    secrets_stay_sealed_and_die_with_their_keys,
    pipelines_are_validated_versioned_and_diffed,
    concurrent_writes_to_one_stream_all_succeed
);
