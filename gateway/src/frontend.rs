//! The web UI: plain HTML, CSS and JavaScript modules from `frontend/`, compiled into the binary
//! (by `build.rs`, gzip-compressed beside the originals) so a single file runs everything. No
//! build step.
//!
//! Every file is served with an ETag (a hash of its content) and `Cache-Control: no-cache`: a
//! browser asks again each time and gets `304 Not Modified` until a new binary changes the file.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
pub(crate) struct Asset {
    path: &'static str,
    raw: &'static [u8],
    gzip: &'static [u8],
    /// Quoted, as the header carries it.
    etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("/index.html", &headers) }))
        .route("/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&format!("/{path}"), &headers) }))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such page\n").into_response();
    };
    let mut headers = HeaderMap::from_iter(crate::http::page_headers());
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let unchanged = request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/") == asset.etag
    });
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let gzip_ok = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.split(';').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("gzip")) && !coding.replace(' ', "").ends_with(";q=0"));
    if gzip_ok && asset.gzip.len() < asset.raw.len() {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return (headers, asset.gzip).into_response();
    }
    (headers, asset.raw).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&'static str, &str)]) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        serve(path, &map)
    }

    #[test]
    fn files_are_served_compressed_when_asked_and_revalidated_by_their_etag() {
        let plain = get("/index.html", &[]);
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");

        let zipped = get("/index.html", &[("accept-encoding", "br, gzip;q=0.9")]);
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::ETAG].to_str().unwrap(), etag);
        assert_eq!(get("/index.html", &[("accept-encoding", "gzip;q=0")]).headers().get(header::CONTENT_ENCODING), None);

        assert_eq!(get("/index.html", &[("if-none-match", &etag)]).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/index.html", &[("if-none-match", "\"other\"")]).status(), StatusCode::OK);
        assert_eq!(get("/no-such-file.js", &[]).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn every_file_has_a_type_and_a_smaller_compressed_twin() {
        for asset in ASSETS {
            assert_ne!(content_type(asset.path), "application/octet-stream", "{}", asset.path);
            assert!(!asset.gzip.is_empty());
        }
    }
}
