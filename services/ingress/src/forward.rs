//! Rewriting a request for the upstream and its response for the client: hop-by-hop headers
//! stay on their hop (RFC 9110 §7.6.1), and the upstream learns who asked and how through
//! X-Forwarded-For, -Proto and -Host.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use hyper::http::request::Parts;
use hyper::Uri;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the request asks to switch protocols (WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && headers.get_all(CONNECTION).iter().any(|v| lists_token(v, "upgrade"))
}

fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Removes the headers meant for this hop only; with `upgrade`, keeps the protocol switch.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_to = if upgrade { headers.get(UPGRADE).cloned() } else { None };
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade_to {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Turns the client's request head into the upstream's: absolute URI to `host:port`, the
/// public Host kept, forwarding headers set.
pub fn upstream_parts(
    mut parts: Parts,
    target: (&str, u16),
    public_host: &HeaderValue,
    client: IpAddr,
    https: bool,
    upgrade: bool,
) -> Result<Parts, hyper::http::Error> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let (host, port) = target;
    parts.uri = Uri::builder().scheme("http").authority(format!("{host}:{port}")).path_and_query(path).build()?;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    headers.insert(HOST, public_host.clone());
    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    headers.insert(X_FORWARDED_FOR, HeaderValue::try_from(forwarded_for)?);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if https { "https" } else { "http" }));
    headers.insert(X_FORWARDED_HOST, public_host.clone());
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    #[test]
    fn hop_by_hop_headers_stay_and_forwarding_headers_are_set() {
        let request = Request::get("/a/b?c=d")
            .header(HOST, "web.pr-1.staging.qa.test:8081")
            .header(CONNECTION, "keep-alive, X-Secret-Hop")
            .header("x-secret-hop", "1")
            .header(KEEP_ALIVE, "timeout=5")
            .header(TE, "trailers")
            .header(X_FORWARDED_FOR, "203.0.113.9")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let public = parts.headers[HOST].clone();
        let up = upstream_parts(parts, ("10.0.0.7", 32768), &public, "127.0.0.1".parse().unwrap(), false, false).unwrap();
        assert_eq!(up.uri, "http://10.0.0.7:32768/a/b?c=d");
        let h = &up.headers;
        for gone in ["connection", "x-secret-hop", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h[HOST], "web.pr-1.staging.qa.test:8081");
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "web.pr-1.staging.qa.test:8081");
    }

    #[test]
    fn an_upgrade_keeps_its_protocol_switch() {
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        assert!(wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!((&headers[UPGRADE], &headers[CONNECTION]), (&HeaderValue::from_static("websocket"), &HeaderValue::from_static("upgrade")));
    }
}
