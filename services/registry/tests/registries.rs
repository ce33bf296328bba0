//! The client against the real docker-registry of infra/setup.sh (htpasswd: nullops/nullops),
//! and against a stand-in for Docker Hub's token service, which cannot run here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullops_egress::Egress;
use nullops_registry::{Credentials, Registry, RegistryClient, RegistryError};
use zeroize::Zeroizing;

const LOCAL: &str = "http://127.0.0.1:5050";

fn local(password: Option<&str>) -> Registry {
    Registry {
        name: "local".into(),
        url: LOCAL.into(),
        credentials: password.map(|p| Credentials { username: "nullops".into(), password: Zeroizing::new(p.into()) }),
    }
}

fn push(repository: &str, tags: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/push-images.sh");
    let status = std::process::Command::new(script).arg(repository).args(tags).status().expect("run push-images.sh");
    assert!(status.success(), "pushing test images failed");
}

/// Every registry here is on loopback: the admin allows it.
fn loopback() -> Arc<Egress> {
    Arc::new(Egress::new("127.0.0.0/8").unwrap())
}

fn client() -> RegistryClient {
    RegistryClient::new(Duration::from_secs(5), loopback())
}

#[tokio::test]
async fn lists_every_tag_across_pages_with_basic_auth() {
    let tags: Vec<String> = (0..11).map(|i| format!("v1.{i}.0")).collect();
    push("registry-test/paged", &tags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut listed = client().list_tags_paged(&local(Some("nullops")), "registry-test/paged", 3).await.unwrap();
    listed.sort();
    let mut expected = tags.clone();
    expected.sort();
    assert_eq!(listed, expected, "4 pages of at most 3 tags, followed to the end");
    let digest = client().manifest_digest(&local(Some("nullops")), "registry-test/paged", "v1.3.0").await.unwrap();
    assert!(digest.is_some_and(|d| d.starts_with("sha256:")));
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_naming_the_registry() {
    push("registry-test/auth", &["v1"]);
    let wrong = client().list_tags(&local(Some("wrong-password")), "registry-test/auth").await.unwrap_err();
    assert_eq!(wrong, RegistryError::Unauthorized { registry: "local".into(), reason: "it rejected the credentials".into() });
    assert_eq!(wrong.to_string(), "registry local refused access: it rejected the credentials");
    let missing = client().list_tags(&local(None), "registry-test/auth").await.unwrap_err();
    assert!(missing.to_string().contains("needs credentials"), "{missing}");
    let unknown = client().list_tags(&local(Some("nullops")), "registry-test/never-pushed").await.unwrap_err();
    assert!(matches!(unknown, RegistryError::RepositoryNotFound { .. }), "{unknown}");
}

#[tokio::test]
async fn a_registry_that_is_down_or_silent_fails_fast_and_says_which() {
    // Down: nothing listens on the port.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = Registry { name: "gone".into(), url: format!("http://{free}"), credentials: None };
    let err = client().list_tags(&down, "a/b").await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Unreachable { registry: "gone".into(), reason: "connection refused: nothing listens at its address".into() },
        "a class of failure in our words"
    );

    // Silent: accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let slow = Registry { name: "slow".into(), url: format!("http://{addr}"), credentials: None };
    let started = Instant::now();
    let err = RegistryClient::new(Duration::from_secs(1), loopback()).list_tags(&slow, "a/b").await.unwrap_err();
    assert_eq!(err, RegistryError::TimedOut { registry: "slow".into(), secs: 1 });
    // The server never answers: returning at all shows the deadline (with room for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the deadline: {:?}", started.elapsed());
}

/// Docker Hub's flow: 401 with a Bearer challenge, a token from the realm for Basic credentials,
/// then the request again with the token.
async fn token_server() -> SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = |h: &HeaderMap| h.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let app = axum::Router::new()
        .route(
            "/v2/library/app/tags/list",
            get(move |h: HeaderMap| async move {
                if auth(&h).as_deref() == Some("Bearer granted") {
                    axum::Json(serde_json::json!({"name": "library/app", "tags": ["1.0", "2.0"]})).into_response()
                } else {
                    let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"fake-hub\",scope=\"repository:library/app:pull\"");
                    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
                }
            }),
        )
        .route(
            "/token",
            get(move |h: HeaderMap, q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                // user:secret
                let right = auth(&h).as_deref() == Some("Basic dXNlcjpzZWNyZXQ=");
                if right
                    && q.get("scope").map(String::as_str) == Some("repository:library/app:pull")
                    && q.get("service").map(String::as_str) == Some("fake-hub")
                {
                    axum::Json(serde_json::json!({"token": "granted"})).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn the_bearer_token_challenge_flow_is_followed() {
    let addr = token_server().await;
    let hub = |password: &str| Registry {
        name: "hub".into(),
        url: format!("http://{addr}"),
        credentials: Some(Credentials { username: "user".into(), password: Zeroizing::new(password.into()) }),
    };
    assert_eq!(client().list_tags(&hub("secret"), "library/app").await.unwrap(), ["1.0", "2.0"]);
    let err = client().list_tags(&hub("wrong"), "library/app").await.unwrap_err();
    assert_eq!(err.to_string(), "registry hub refused access: its token service rejected the credentials");
}

#[tokio::test]
async fn a_token_realm_is_called_only_where_the_platform_may_call() {
    // Given a registry the admin allows by name, whose challenge sends the credentials to a
    // realm at an address no admin allowed
    let addr = token_server().await;
    let by_name = RegistryClient::new(Duration::from_secs(5), Arc::new(Egress::new("localhost").unwrap()));
    let hub = Registry {
        name: "hub".into(),
        url: format!("http://localhost:{}", addr.port()),
        credentials: Some(Credentials { username: "user".into(), password: Zeroizing::new("secret".into()) }),
    };
    // When its tags are listed, the realm is not called, and the error says why
    let err = by_name.list_tags(&hub, "library/app").await.unwrap_err();
    assert_eq!(
        err,
        RegistryError::Unreachable {
            registry: "hub".into(),
            reason: "not called: 127.0.0.1 is a loopback address: NullOps calls such addresses only where its server allows them by \
                     name or range (NULLOPS_ALLOWED_PRIVATE_TARGETS)"
                .into()
        }
    );
    // And with no allowance the registry itself is not called either
    let strict = RegistryClient::new(Duration::from_secs(5), Arc::new(Egress::default()));
    let err = strict.list_tags(&hub, "library/app").await.unwrap_err();
    assert!(err.to_string().contains("not called: localhost ("), "{err}");
}
