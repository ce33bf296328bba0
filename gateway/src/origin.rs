//! Cross-site request protection. A session cookie is sent by the browser with any request to
//! the UI's site, including ones a page of another origin makes it send: a form posted from a
//! deployed QA service under the same site, say. So a request that is not authenticated by a
//! bearer token (the browser's, or a sign-in) is taken only as `application/json` (which no form
//! and no cross-origin `fetch` can send without a preflight NullOps does not answer) and only
//! from the UI's own origin when the browser names one. Bearer-authenticated clients (CI
//! scripts, API clients) never carry the cookie by accident and are not checked.

use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// Why a cookie-borne request is refused; `code` is the API error code.
/// Whether the request authenticates with `Authorization: Bearer`.
pub fn has_bearer(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer "))
}

/// The body must be JSON: `text/plain` and form bodies are what cross-site pages can send.
pub fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("application/graphql-response+json") {
        return Ok(());
    }
    let sent = if media.is_empty() { "none".to_owned() } else { format!("{media:?}") };
    Err(ApiError::UnsupportedMediaType(format!(
        "send the request as Content-Type: application/json (it came as {sent}), or authenticate with Authorization: Bearer"
    )))
}

/// The request comes from the UI's own origin, or from no browser page at all: its `Origin`
/// (when sent) names the host it was sent to (`Host`, or `X-Forwarded-Host` behind a proxy) or
/// one of `allowed`, and `Sec-Fetch-Site` (when sent) says same-origin.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let refuse = |what: String| {
        ApiError::CrossSite(format!("{what}: requests made by another site's page are refused; use the NullOps UI, or authenticate with Authorization: Bearer"))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        let hosts = [header::HOST.as_str(), "x-forwarded-host"];
        let own = hosts.iter().filter_map(|h| headers.get(*h)?.to_str().ok()).any(|host| !authority.is_empty() && authority.eq_ignore_ascii_case(host.trim()));
        let listed = allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
        if !own && !listed {
            return Err(refuse(format!("the request comes from {origin:?}, not from this server's origin")));
        }
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) if !matches!(site, "same-origin" | "none") => Err(refuse(format!("the browser says the request comes from a {site} page"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_json_bodies_are_taken_from_the_cookie_path() {
        assert!(check_json(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(check_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])).is_ok());
        for refused in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(check_json(&headers(&[("content-type", refused)])).unwrap_err().code(), "UNSUPPORTED_MEDIA_TYPE");
        }
        assert!(check_json(&HeaderMap::new()).is_err());
    }

    #[test]
    fn only_the_servers_own_origin_is_taken() {
        let ui = [("host", "nullops.example.com"), ("origin", "https://nullops.example.com")];
        assert!(check_origin(&headers(&ui), &[]).is_ok());
        let deployed = [("host", "nullops.example.com"), ("origin", "http://web.pr-1.staging.example.com")];
        assert_eq!(check_origin(&headers(&deployed), &[]).unwrap_err().code(), "CROSS_SITE_REQUEST");
        assert!(check_origin(&headers(&deployed), &["http://web.pr-1.staging.example.com".into()]).is_ok());
        let proxied = [("host", "10.0.0.5:8080"), ("x-forwarded-host", "nullops.example.com"), ("origin", "https://nullops.example.com")];
        assert!(check_origin(&headers(&proxied), &[]).is_ok());
        assert!(check_origin(&headers(&[("host", "a"), ("origin", "null")]), &[]).is_err());
        // No Origin: a script, or the browser's own navigation; Sec-Fetch-Site still counts.
        assert!(check_origin(&headers(&[("host", "a")]), &[]).is_ok());
        assert!(check_origin(&headers(&[("host", "a"), ("sec-fetch-site", "same-site")]), &[]).is_err());
        assert!(check_origin(&headers(&[("host", "a"), ("sec-fetch-site", "same-origin")]), &[]).is_ok());
    }
}
