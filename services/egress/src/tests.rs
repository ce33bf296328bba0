use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn admins_allow_by_name_wildcard_address_or_range() {
    let egress = Egress::new(" registry.internal, *.corp.example ,10.0.0.0/8,fd00::5, 127.0.0.0/8").unwrap();
    assert_eq!(egress.judge("registry.internal", ip("192.168.1.9"), Some(443)), Ok(()));
    assert_eq!(egress.judge("REGISTRY.internal.", ip("192.168.1.9"), Some(443)), Ok(()));
    assert_eq!(egress.judge("git.corp.example", ip("172.20.0.1"), None), Ok(()));
    assert_eq!(egress.judge("x", ip("10.9.9.9"), None), Ok(()));
    assert_eq!(egress.judge("x", ip("fd00::5"), None), Ok(()));
    assert_eq!(egress.judge("x", ip("::ffff:10.1.1.1"), None), Ok(()));
    // What is not named stays refused
    assert_eq!(
        egress.judge("corp.example", ip("172.20.0.1"), None),
        Err(Refusal::Inside { host: "corp.example".into(), ip: ip("172.20.0.1"), reach: Reach::Private })
    );
    assert!(matches!(egress.judge("x", ip("169.254.169.254"), None), Err(Refusal::Inside { reach: Reach::LinkLocal, .. })));
    // Public addresses need no allowance
    assert_eq!(Egress::default().judge("api.github.com", ip("140.82.112.6"), Some(443)), Ok(()));
}

#[test]
fn a_bad_entry_is_named_with_the_syntax() {
    let e = Egress::new("10.0.0.0/8, 10.0.0.0/40").unwrap_err();
    assert_eq!(e, BadAllowEntry { entry: "10.0.0.0/40".into() });
    let e = e.to_string();
    assert!(e.contains("\"10.0.0.0/40\"") && e.contains(ALLOW_VAR) && e.contains("10.0.0.0/8"), "{e}");
    assert!(Egress::new("under_score.example").is_err());
    assert!(Egress::new("*.").is_err());
    assert!(Egress::new("").unwrap().allowed.is_empty());
}

#[test]
fn the_platforms_own_listeners_are_refused_whatever_is_allowed() {
    let egress = Egress::new("127.0.0.0/8, localhost").unwrap();
    egress.listening("127.0.0.1:8080".parse().unwrap());
    assert_eq!(egress.judge("localhost", ip("127.0.0.1"), Some(8080)), Err(Refusal::OwnListener { host: "localhost".into(), port: 8080 }));
    assert_eq!(egress.judge("x", ip("0.0.0.0"), Some(8080)), Err(Refusal::OwnListener { host: "x".into(), port: 8080 }));
    assert_eq!(egress.judge("localhost", ip("127.0.0.1"), Some(8081)), Ok(()));
    // Another machine's port 8080 is not ours
    assert_eq!(Egress::new("10.0.0.0/8").unwrap().judge("x", ip("10.0.0.7"), Some(8080)), Ok(()));
}

#[tokio::test]
async fn urls_are_vetted_on_save_with_their_names_resolved() {
    let strict = Egress::default();
    assert_eq!(strict.vet("ftp://example.com/").await, Err(Refusal::Scheme));
    assert_eq!(strict.vet("not a url").await, Err(Refusal::Scheme));
    assert!(matches!(strict.vet("http://127.0.0.1:9/").await, Err(Refusal::Inside { reach: Reach::Loopback, .. })));
    assert!(matches!(strict.vet("http://[::1]:9/").await, Err(Refusal::Inside { reach: Reach::Loopback, .. })));
    assert!(matches!(strict.vet("http://0x7f000001/").await, Err(Refusal::Inside { reach: Reach::Loopback, .. })));
    assert!(matches!(strict.vet("http://localhost:9/").await, Err(Refusal::Inside { reach: Reach::Loopback, .. })));
    assert!(strict.vet("https://203.0.113.7/hook").await.is_ok());
    let refusal = strict.vet("http://169.254.169.254/latest/meta-data/").await.unwrap_err().to_string();
    assert_eq!(
        refusal,
        "169.254.169.254 is a link-local address: NullOps calls such addresses only where its server allows them by name or range (NULLOPS_ALLOWED_PRIVATE_TARGETS)"
    );
    assert!(Egress::new("localhost").unwrap().vet("http://localhost:9/").await.is_ok());
}

/// A server on loopback answering 200 to everything, and 302 to `/away` with `Location`.
async fn server(location: &'static str) -> SocketAddr {
    let app = axum::Router::new()
        .route("/away", axum::routing::get(move || async move { (axum::http::StatusCode::FOUND, [("location", location)]) }))
        .fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn call(egress: &Arc<Egress>, url: &str) -> Result<u16, Failure> {
    let url = Url::parse(url).unwrap();
    egress.admit(&url).await.map_err(Failure::Refused)?;
    let client = egress.client(reqwest::Client::builder().redirect(egress.redirects(3)));
    client.get(url).send().await.map(|r| r.status().as_u16()).map_err(|e| failure(&e))
}

#[tokio::test]
async fn calls_connect_only_where_the_policy_allows() {
    let addr = server("http://127.0.0.1:9/").await;
    let port = addr.port();
    // Given no allowance, a name resolving to loopback is refused as it resolves
    let strict = Arc::new(Egress::default());
    assert!(matches!(call(&strict, &format!("http://localhost:{port}/")).await, Err(Failure::Refused(Refusal::Inside { reach: Reach::Loopback, .. }))));
    assert!(matches!(call(&strict, &format!("http://127.0.0.1:{port}/")).await, Err(Failure::Refused(Refusal::Inside { .. }))));
    // Given loopback allowed, it is called
    let allowing = Arc::new(Egress::new("127.0.0.0/8").unwrap());
    assert_eq!(call(&allowing, &format!("http://localhost:{port}/")).await, Ok(200));
    // Redirects are judged hop by hop: to an address not allowed, it stops
    let narrow = Arc::new(Egress::new("localhost").unwrap());
    assert_eq!(call(&narrow, &format!("http://localhost:{port}/")).await, Ok(200));
    assert!(matches!(call(&narrow, &format!("http://localhost:{port}/away")).await, Err(Failure::Refused(Refusal::Inside { .. }))));
    // Nothing listening: a class, not the library's text
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(call(&allowing, &format!("http://127.0.0.1:{closed}/")).await, Err(Failure::ConnectionRefused));
    assert_eq!(call(&allowing, "http://no-such-name.invalid/").await, Err(Failure::NoSuchName));
    // Once the server is the platform's own listener, neither its address nor a name for it is called
    allowing.listening(addr);
    let own = Err(Failure::Refused(Refusal::OwnListener { host: "localhost".into(), port }));
    assert_eq!(call(&allowing, &format!("http://localhost:{port}/")).await, own);
    assert!(matches!(call(&allowing, &format!("http://127.0.0.1:{port}/")).await, Err(Failure::Refused(Refusal::OwnListener { .. }))));
}
