//! The connector's dialing against a real agent over real TLS on loopback: pinning, the impostor
//! that replays the public certificate, token and version refusals, bad frames, replacement, and
//! reconciliation on the real Docker engine.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nullops_agent::{Agent, AgentConfig};
use nullops_connector::dial::{dial, AgentLink, DialError, Target};
use nullops_wire::message::{decode_from_agent, encode, ContainerSpec, ContainerState, DesiredDeployment, RegistryAuth, RunPhase, Secrets, Step, MAX_SECRETS};
use nullops_wire::{FromAgent, NodeToken, RequestId, Thumbprint, ToAgent, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

struct Running {
    addr: std::net::SocketAddr,
    thumbprint: Thumbprint,
    token: NodeToken,
    dir: tempfile::TempDir,
    scope: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn agent_speaking(protocol: u32) -> Running {
    agent_with(protocol, nullops_agent::prefetch::DEFAULT_BUDGET_MIB).await
}

async fn agent_with(protocol: u32, prefetch_budget_mib: u64) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let token = NodeToken::generate();
    let scope = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        token: NodeToken::from_configured(token.expose()).unwrap(),
        scope: scope.clone(),
        protocol,
        reconcile_every: Duration::from_millis(500),
        network_pool: Default::default(),
        prefetch_budget_mib,
        reconcile_paused: false,
    };
    let agent = Agent::bind(config).await.expect("agent binds");
    let (addr, thumbprint) = (agent.local_addr(), agent.thumbprint());
    let stop = CancellationToken::new();
    tokio::spawn(agent.serve(stop.clone()));
    Running { addr, thumbprint, token, dir, scope, stop }
}

fn target(agent: &Running, pinned: Option<Thumbprint>) -> Target {
    Target { host: agent.addr.ip().to_string(), port: agent.addr.port(), pinned, token_hash: agent.token.hash() }
}

/// The next protocol message, skipping usage reports.
async fn next_report(link: &mut AgentLink) -> FromAgent {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), link.next()).await.expect("a frame within 30 s");
        match frame.expect("open").expect("frame") {
            Message::Text(t) => match decode_from_agent(t.as_bytes()).expect("valid") {
                FromAgent::Usage(_) => continue,
                other => return other,
            },
            _ => continue,
        }
    }
}

/// The first state report in which no run is still going: every deployment's run is running
/// or has failed (and was rolled back).
async fn settled(link: &mut AgentLink) -> FromAgent {
    loop {
        let report = next_report(link).await;
        if let FromAgent::ActualState { deployments, .. } = &report {
            if deployments.iter().all(|d| d.run.phase != RunPhase::Deploying) {
                return report;
            }
        }
    }
}

/// Waits for the agent to close the connection; returns the close reason.
async fn closed(link: &mut AgentLink) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), link.next()).await.expect("closed within 10 s") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return e.to_string(),
            None => return String::new(),
        }
    }
}

#[tokio::test]
async fn first_contact_pins_and_the_pin_is_then_enforced() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let first = dial(&target(&agent, None)).await.expect("first contact");
    assert_eq!(first.thumbprint, agent.thumbprint);
    dial(&target(&agent, Some(agent.thumbprint))).await.expect("pinned");
    let other = Thumbprint::of_certificate(b"another certificate");
    match dial(&target(&agent, Some(other))).await {
        Err(DialError::Mismatch { presented }) => assert_eq!(presented, agent.thumbprint),
        other => panic!("expected a mismatch, got {:?}", other.err()),
    }
}

/// Presents the real agent's certificate, signing the handshake with a key of its own.
#[derive(Debug)]
struct Impostor(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Impostor {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn an_impostor_replaying_the_public_certificate_is_refused() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let public = CertificateDer::from_pem_file(agent.dir.path().join("agent.crt")).unwrap();
    assert_eq!(Thumbprint::of_certificate(&public), agent.thumbprint);
    let own_key = rcgen::KeyPair::generate().unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(own_key.serialize_der()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![public], signer));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Impostor(certified)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let impostor = Target { host: "127.0.0.1".into(), port: addr.port(), pinned: Some(agent.thumbprint), token_hash: agent.token.hash() };
    match dial(&impostor).await {
        Err(DialError::Unreachable(reason)) => assert!(reason.contains("TLS handshake failed"), "{reason}"),
        other => panic!("the impostor must fail the handshake, got {:?}", other.as_ref().err()),
    }
    assert!(accepted.await.unwrap().is_err(), "the handshake did not complete on the impostor's side either");
}

#[tokio::test]
async fn wrong_tokens_and_other_protocol_versions_are_refused() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let mut wrong = target(&agent, None);
    wrong.token_hash = NodeToken::generate().hash();
    assert!(matches!(dial(&wrong).await, Err(DialError::TokenRefused)));
    let newer = agent_speaking(PROTOCOL_VERSION + 1).await;
    match dial(&target(&newer, None)).await {
        Err(DialError::Incompatible { agent_protocol }) => assert_eq!(agent_protocol, PROTOCOL_VERSION + 1),
        other => panic!("expected incompatible, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_change_nothing() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let state_file = agent.dir.path().join("state.json");
    let bad_frames = [
        Message::text("{\"type\":\"desired_state\",\"request_id\":\"x\"}"),
        Message::text("not json at all"),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(" ".repeat(MAX_FRAME_BYTES + 1)),
    ];
    for frame in bad_frames {
        let mut link = dial(&target(&agent, None)).await.expect("connects").link;
        let _ = link.send(frame).await;
        let reason = closed(&mut link).await;
        assert!(reason.starts_with("refused a frame"), "closed saying why: {reason}");
        assert!(!state_file.exists(), "a bad frame changed the agent's state");
    }
    dial(&target(&agent, None)).await.expect("the agent still serves");
}

/// A deployment the agent cannot take (an unsafe name, too many secrets) is refused on its
/// own: reported failed with the reason, while the connection stays and the rest of the
/// desired state, sent in two parts, runs.
#[tokio::test]
async fn a_deployment_the_agent_cannot_take_is_refused_alone() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let web = ContainerSpec { name: "web".into(), image: "nullops-test/busybox:1".into(), command: vec!["sleep".into(), "3600".into()], ..Default::default() };
    let good = DesiredDeployment::new("pr-1", vec![Step::service(web)]);
    let mut crowded = DesiredDeployment::new("pr-2", vec![]);
    crowded.secrets = Secrets((0..MAX_SECRETS + 1).map(|i| (format!("S{i}"), "v".to_owned())).collect());
    let unsafe_name = DesiredDeployment::new("../../etc", vec![]);
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;
    let request_id = RequestId::new();
    for part in [
        ToAgent::DesiredState { request_id, deployments: vec![crowded], more: true },
        ToAgent::DesiredState { request_id, deployments: vec![good, unsafe_name], more: false },
    ] {
        link.send(Message::text(encode(&part))).await.unwrap();
    }
    let FromAgent::ActualState { request_id: answered, deployments } = settled(&mut link).await else { panic!("no state") };
    assert_eq!(answered, request_id);
    let of = |id: &str| deployments.iter().find(|d| d.id == id).unwrap_or_else(|| panic!("{id} reported in {deployments:?}"));
    assert!(matches!(&of("pr-1").run.phase, RunPhase::Running), "{deployments:?}");
    assert!(matches!(&of("pr-2").run.phase, RunPhase::Failed { reason, .. } if reason.contains("256")), "{deployments:?}");
    assert!(matches!(&of("../../etc").run.phase, RunPhase::Failed { reason, .. } if reason.contains("not a DNS label")), "{deployments:?}");
    assert_eq!(containers_of(&agent.scope).len(), 1, "only the good one runs");
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let mut old = dial(&target(&agent, None)).await.expect("first").link;
    let _new = dial(&target(&agent, None)).await.expect("second");
    assert_eq!(closed(&mut old).await, "replaced by a newer connection");
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn containers_of(scope: &str) -> Vec<String> {
    let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label=nullops.scope={scope}")]);
    out.lines().map(str::to_owned).collect()
}

fn running_state(report: &FromAgent) -> Vec<ContainerState> {
    match report {
        FromAgent::ActualState { deployments, .. } => deployments.iter().flat_map(|d| d.containers.iter().map(|c| c.state.clone())).collect(),
        other => panic!("expected an actual state, got {other:?}"),
    }
}

#[tokio::test]
async fn the_agent_applies_a_request_once_and_restores_what_should_run_on_reconnect() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let web = ContainerSpec { name: "web".into(), image: "nullops-test/busybox:1".into(), command: vec!["sleep".into(), "3600".into()], ..Default::default() };
    let desired = vec![DesiredDeployment::new("pr-1", vec![Step::service(web)])];
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;
    let request_id = RequestId::new();
    let send = ToAgent::DesiredState { request_id, deployments: desired.clone(), more: false };
    link.send(Message::text(encode(&send))).await.unwrap();
    let report = settled(&mut link).await;
    assert_eq!(running_state(&report), vec![ContainerState::Running]);
    let first = containers_of(&agent.scope);
    assert_eq!(first.len(), 1);

    // The same request again: answered, not applied again.
    link.send(Message::text(encode(&send))).await.unwrap();
    assert!(matches!(next_report(&mut link).await, FromAgent::ActualState { request_id: r, .. } if r == request_id));
    assert_eq!(containers_of(&agent.scope), first);
    assert!(Path::new(&agent.dir.path().join("state.json")).exists());

    // Lost while disconnected; the reconnect's full state brings it back.
    drop(link);
    docker(&["rm", "-f", &first[0]]);
    let mut link = dial(&target(&agent, None)).await.expect("reconnects").link;
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: desired, more: false }))).await.unwrap();
    assert_eq!(running_state(&settled(&mut link).await), vec![ContainerState::Running]);
    let second = containers_of(&agent.scope);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);

    // A container of the agent's scope appears behind its back: the periodic reconcile removes
    // it without any new request.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (since, until) = ((now - 1).to_string(), (now + 10).to_string());
    let stray = docker(&[
        "run",
        "-d",
        "--label",
        &format!("nullops.scope={}", agent.scope),
        "--label",
        "nullops.deployment=ghost",
        "--label",
        "nullops.container=web",
        "nullops-test/busybox:1",
        "sleep",
        "3600",
    ]);
    // The engine's own event of its removal, within 10 s.
    let removed = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        // `--until` ends the stream by itself if the event never comes.
        let mut events = Command::new("docker")
            .args([
                "events",
                "--since",
                &since,
                "--until",
                &until,
                "--filter",
                &format!("container={stray}"),
                "--filter",
                "event=destroy",
                "--format",
                "{{.Action}}",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(events.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let _ = events.kill();
        let _ = events.wait();
        line
    });
    assert_eq!(removed.await.unwrap().trim(), "destroy", "the stray container was not swept within 10 s");
    assert_eq!(containers_of(&agent.scope), second, "what should run is untouched");

    // Nothing desired: what ran is removed.
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: vec![], more: false }))).await.unwrap();
    assert!(running_state(&settled(&mut link).await).is_empty());
    assert!(containers_of(&agent.scope).is_empty());
}

/// Removes a test's containers even when it fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        for network in networks_of(&self.0) {
            let _ = Command::new("docker").args(["network", "rm", &network]).output();
        }
    }
}

fn networks_of(scope: &str) -> Vec<String> {
    let out = docker(&["network", "ls", "-q", "--filter", &format!("label=nullops.scope={scope}"), "--format", "{{.Name}}"]);
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    names
}

/// Whether `url` answers 200 from inside `network`, within `seconds` (asked with the http-check
/// example plugin, which resolves names as services will).
fn answers_from(network: &str, url: &str, seconds: u64) -> bool {
    use std::io::Write;
    let image = format!("127.0.0.1:5050/nullops/http-check:{}", env!("CARGO_PKG_VERSION"));
    let mut child = Command::new("docker")
        .args(["run", "-i", "--rm", "--network", network, &image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let input = format!(r#"{{"parameters": {{"url": "{url}", "timeout_secs": {seconds}, "interval_ms": 200}}}}"#);
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap().status.success()
}

#[tokio::test]
async fn each_deployment_has_a_network_of_its_own() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let web = |body: &str| ContainerSpec {
        name: "web".into(),
        image: "nullops-test/busybox:1".into(),
        command: vec!["sh".into(), "-c".into(), format!("mkdir /w && echo {body} > /w/index.html && exec httpd -f -p 8080 -h /w")],
        ..Default::default()
    };
    let desired = vec![DesiredDeployment::new("pr-1", vec![Step::service(web("one"))]), DesiredDeployment::new("pr-2", vec![Step::service(web("two"))])];
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: desired, more: false }))).await.unwrap();
    assert_eq!(running_state(&settled(&mut link).await), vec![ContainerState::Running, ContainerState::Running]);
    let (one, two) = (format!("nullops-{}-pr-1", agent.scope), format!("nullops-{}-pr-2", agent.scope));
    assert_eq!(networks_of(&agent.scope), vec![one.clone(), two.clone()]);

    // Inside its network a deployment's service answers by its name; another deployment's
    // container cannot be reached from there at all, not even by address.
    assert!(answers_from(&two, "http://web:8080/", 10), "pr-2's web answers inside pr-2's network");
    assert!(answers_from(&one, "http://web:8080/", 10), "pr-1's web answers inside pr-1's network");
    let pr1_ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &format!("nullops-{}-pr-1-web", agent.scope)]);
    assert!(
        !answers_from(&two, &format!("http://{pr1_ip}:8080/"), 2),
        "pr-1 ({pr1_ip}) is isolated from pr-2; the scope's containers and their networks: {}",
        docker(&["ps", "-a", "--filter", &format!("label=nullops.scope={}", agent.scope), "--format", "{{.Names}} {{.Networks}} {{.Status}}"])
    );

    // Gone from the desired state: containers and networks are removed.
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: vec![], more: false }))).await.unwrap();
    assert!(running_state(&settled(&mut link).await).is_empty());
    assert!(containers_of(&agent.scope).is_empty());
    assert!(networks_of(&agent.scope).is_empty(), "no network is left behind");
}

#[tokio::test]
async fn images_are_pulled_with_the_credentials_sent_and_never_saved() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    // A tag of the demo image that only the (password-protected) registry has.
    let image = format!("127.0.0.1:5050/nullops/demo:{}", agent.scope);
    docker(&["tag", "127.0.0.1:5050/nullops/demo:v1", &image]);
    docker(&["push", "-q", &image]);
    docker(&["rmi", &image]);
    let _untag = Untag(image.clone());
    let web = ContainerSpec { name: "web".into(), image: image.clone(), ..Default::default() };
    let desired = |auth: Vec<RegistryAuth>| vec![DesiredDeployment { registry_auth: auth, ..DesiredDeployment::new("pr-1", vec![Step::service(web.clone())]) }];
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;

    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: desired(vec![]), more: false }))).await.unwrap();
    match &settled(&mut link).await {
        FromAgent::ActualState { deployments, .. } => match &deployments[0].run.phase {
            RunPhase::Failed { step, reason, .. } => assert!(step.as_deref() == Some("web") && reason.contains("cannot pull"), "{reason}"),
            other => panic!("without credentials the pull must fail: {other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(containers_of(&agent.scope).is_empty() && networks_of(&agent.scope).is_empty(), "the failed run is rolled back");

    // A retry is a new attempt, with credentials this time.
    let auth = RegistryAuth { registry: "127.0.0.1:5050".into(), username: "nullops".into(), password: "nullops".into() };
    let mut retry = desired(vec![auth]);
    retry[0].attempt = 2;
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: retry, more: false }))).await.unwrap();
    assert_eq!(running_state(&settled(&mut link).await), vec![ContainerState::Running]);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(agent.dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["desired"][0]["registry_auth"], serde_json::json!([]), "credentials never reach the agent's disk: {saved}");
}

/// A tag of the demo image that only the password-protected registry has, pushed and removed
/// from the engine (so a run must pull it), untagged again on drop.
fn only_in_registry(scope: &str, suffix: &str) -> (String, Untag) {
    let image = format!("127.0.0.1:5050/nullops/demo:{scope}-{suffix}");
    docker(&["tag", "127.0.0.1:5050/nullops/demo:v1", &image]);
    docker(&["push", "-q", &image]);
    docker(&["rmi", &image]);
    (image.clone(), Untag(image))
}

fn registry_auth() -> RegistryAuth {
    RegistryAuth { registry: "127.0.0.1:5050".into(), username: "nullops".into(), password: "nullops".into() }
}

/// Reports until `done` says so of one; the log lines seen meanwhile.
async fn until_report(link: &mut AgentLink, done: impl Fn(&FromAgent) -> bool) -> (FromAgent, Vec<String>) {
    let mut lines = Vec::new();
    loop {
        let report = next_report(link).await;
        if let FromAgent::Logs { lines: more } = &report {
            lines.extend(more.iter().map(|l| l.text.clone()));
        }
        if done(&report) {
            return (report, lines);
        }
    }
}

fn is_settled(report: &FromAgent) -> bool {
    matches!(report, FromAgent::ActualState { deployments, .. } if deployments.iter().all(|d| d.run.phase != RunPhase::Deploying))
}

#[tokio::test]
async fn prefetched_images_are_held_before_a_deployment_needs_them_so_its_run_pulls_nothing() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let (held, _untag_held) = only_in_registry(&agent.scope, "held");
    let (cold, _untag_cold) = only_in_registry(&agent.scope, "cold");
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;

    // Asked to hold an image, the node pulls it and says so, with its digest.
    link.send(Message::text(encode(&ToAgent::Prefetch { images: vec![held.clone()], registry_auth: vec![registry_auth()] }))).await.unwrap();
    let (report, _) = until_report(&mut link, |r| matches!(r, FromAgent::Images { images } if !images.is_empty() && images.iter().all(|i| i.present))).await;
    let FromAgent::Images { images } = report else { unreachable!() };
    assert_eq!(images[0].image, held);
    assert!(images[0].digest.as_deref().is_some_and(|d| d.starts_with("sha256:")), "{images:?}");

    // A deployment of the held image starts without a pull; one of another image pulls it.
    let run = |id: &str, image: &str| DesiredDeployment {
        registry_auth: vec![registry_auth()],
        ..DesiredDeployment::new(id, vec![Step::service(ContainerSpec { name: "web".into(), image: image.into(), ..Default::default() })])
    };
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: vec![run("pr-1", &held)], more: false })))
        .await
        .unwrap();
    let (report, lines) = until_report(&mut link, is_settled).await;
    assert_eq!(running_state(&report), vec![ContainerState::Running]);
    assert!(!lines.iter().any(|l| l.starts_with("pulled image")), "{lines:?}");
    let both = vec![run("pr-1", &held), run("pr-2", &cold)];
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: both, more: false }))).await.unwrap();
    let (_, lines) = until_report(&mut link, |r| is_settled(r) && matches!(r, FromAgent::ActualState { deployments, .. } if deployments.len() == 2)).await;
    assert!(lines.iter().any(|l| l.starts_with(&format!("pulled image {cold}"))), "{lines:?}");
}

#[tokio::test]
async fn prefetching_stays_within_its_disk_budget() {
    let agent = agent_with(PROTOCOL_VERSION, 0).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let (image, _untag) = only_in_registry(&agent.scope, "budget");
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;
    link.send(Message::text(encode(&ToAgent::Prefetch { images: vec![image.clone()], registry_auth: vec![registry_auth()] }))).await.unwrap();
    let (report, _) = until_report(&mut link, |r| matches!(r, FromAgent::Images { images } if images.iter().any(|i| i.detail.contains("budget")))).await;
    let FromAgent::Images { images } = report else { unreachable!() };
    assert!(!images[0].present, "{images:?}");
    let inspected = Command::new("docker").args(["image", "inspect", &image]).output().expect("docker runs");
    assert!(!inspected.status.success(), "nothing was pulled");
}

/// Removes a local image tag on drop.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn a_service_over_its_memory_limit_is_killed_and_reported_not_restarted() {
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let _cleanup = Cleanup(agent.scope.clone());
    let hungry = ContainerSpec {
        name: "hungry".into(),
        image: "nullops-test/busybox:1".into(),
        command: vec!["sh".into(), "-c".into(), "x=$(head -c 200000000 /dev/zero | tr '\\0' a); sleep 3600".into()],
        memory_mib: 16,
        cpu_millis: 500,
        ..Default::default()
    };
    let desired = vec![DesiredDeployment::new("pr-1", vec![Step::service(hungry)])];
    let mut link = dial(&target(&agent, None)).await.expect("connects").link;
    link.send(Message::text(encode(&ToAgent::DesiredState { request_id: RequestId::new(), deployments: desired, more: false }))).await.unwrap();
    assert_eq!(running_state(&settled(&mut link).await), vec![ContainerState::Running]);
    let limits = docker(&["inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", &format!("nullops-{}-pr-1-hungry", agent.scope)]);
    assert_eq!(limits, format!("{} 500000000", 16 << 20), "Docker enforces the limits");
    // The periodic reconcile finds it killed and says so (instead of starting it again), and
    // the service is reported unhealthy.
    let report = next_report(&mut link).await;
    match &running_state(&report)[..] {
        [ContainerState::Failed { reason }] => assert!(reason.contains("out of memory") && reason.contains("16 MiB"), "{reason}"),
        other => panic!("expected the OOM kill to be reported: {other:?}"),
    }
    let FromAgent::ActualState { deployments, .. } = report else { unreachable!() };
    assert!(matches!(&deployments[0].run.health[..], [h] if !h.healthy && h.detail.contains("out of memory")), "{:?}", deployments[0].run);
}

/// A crowd of 300 silent connections, kept up against the agent (each one it drops is opened
/// again at once), does not keep the control plane out: every dial gets through within the
/// connector's own dial timeout. (Before, 32 silent sockets held every handshake slot for 10 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_crowd_does_not_keep_the_control_plane_out() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    const CROWD: usize = 300;
    let agent = agent_speaking(PROTOCOL_VERSION).await;
    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicUsize::new(0));
    for _ in 0..CROWD {
        let (addr, stop, connected) = (agent.addr, stop.clone(), connected.clone());
        tokio::spawn(async move {
            let mut counted = false;
            while !stop.is_cancelled() {
                let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else { continue };
                if !counted {
                    connected.fetch_add(1, Ordering::Relaxed);
                    counted = true;
                }
                // Silent until the agent drops it, then straight back.
                let mut buf = [0u8; 1];
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = socket.read(&mut buf) => {}
                }
            }
        });
    }
    while connected.load(Ordering::Relaxed) < CROWD {
        tokio::task::yield_now().await;
    }
    for attempt in 1..=5 {
        let started = tokio::time::Instant::now();
        dial(&target(&agent, None)).await.unwrap_or_else(|e| panic!("dial {attempt} through a crowd of {CROWD} silent sockets: {e}"));
        println!("dial {attempt} through {CROWD} silent sockets: {:?}", started.elapsed());
    }
    stop.cancel();
}
