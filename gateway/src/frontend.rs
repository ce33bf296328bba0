//! The web UI: plain HTML, CSS and JavaScript modules from `frontend/`, compiled into the binary
//! so a single file runs everything. No build step.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        get(|| async {
            let mut headers = crate::http::page_headers().to_vec();
            headers.push((header::CONTENT_TYPE, header::HeaderValue::from_static($mime)));
            (axum::http::HeaderMap::from_iter(headers), include_str!(concat!("../../frontend/", $path))).into_response()
        })
    };
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", asset!("index.html", "text/html; charset=utf-8"))
        .route("/app.js", asset!("app.js", "text/javascript; charset=utf-8"))
        .route("/catalog.js", asset!("catalog.js", "text/javascript; charset=utf-8"))
        .route("/nodes.js", asset!("nodes.js", "text/javascript; charset=utf-8"))
        .route("/deployments.js", asset!("deployments.js", "text/javascript; charset=utf-8"))
        .route("/graphql-client.js", asset!("graphql-client.js", "text/javascript; charset=utf-8"))
        .route("/style.css", asset!("style.css", "text/css; charset=utf-8"))
}
