//! `POST /hooks/github/<project>` and `POST /hooks/gitlab/<project>`: a forge's pull-request
//! hooks, verified with the project's link (GitHub: `X-Hub-Signature-256`, the HMAC-SHA256 of
//! the body under the hook's secret; GitLab: `X-Gitlab-Token`, the secret itself), recorded as
//! `preview.requested` once per delivery. An unknown or unlinked project answers as a bad
//! signature does (401), after the same work (`decoy_check`), so neither the answer nor its
//! timing tells which projects exist or are linked. The `previews` process does the rest.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use nullops_domain::preview::{preview_key, preview_name, Preview, PreviewCommand};
use nullops_events::catalog::Forge;
use nullops_events::preview::{PreviewRequested, PreviewWish};
use nullops_events::{Actor, CorrelationId, EventMetadata};
use ring::hmac;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::payload::{self, Ask, Hook};
use crate::catalog::catalog_state;
use crate::error::ApiError;
use crate::{dispatch, App};

/// Largest hook accepted: a pull request's event with a long description is well under it.
pub const MAX_HOOK_BYTES: usize = 2 * 1024 * 1024;

/// What every request that cannot be verified is told, whatever the reason.
const NOT_VERIFIED: &str = "this request is not signed for a repository linked to this project: check the hook's URL and secret";

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/hooks/{forge}/{project}", post(receive)).layer(DefaultBodyLimit::max(MAX_HOOK_BYTES))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The platform cannot check a hook now; the forge sends it again (503).
fn unavailable(why: &str) -> Response {
    tracing::warn!("{why}");
    ApiError::Unavailable.into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Whether `headers` prove that `body` comes from the forge that holds `secret`.
fn verified(forge: Forge, headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    match forge {
        Forge::GitHub => {
            let Some(given) = header(headers, "x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")) else { return false };
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let expected: String = hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
            bool::from(expected.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes()))
        }
        Forge::GitLab => header(headers, "x-gitlab-token").is_some_and(|given| bool::from(given.as_bytes().ct_eq(secret.as_bytes()))),
    }
}

/// The forge's id of this delivery: the same when it sends it again.
fn delivery(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let id = match forge {
        Forge::GitHub => header(headers, "x-github-delivery"),
        // `Idempotency-Key` stays the same on retries (GitLab 17.4+); older versions send only
        // the event's UUID.
        Forge::GitLab => header(headers, "idempotency-key").or_else(|| header(headers, "x-gitlab-event-uuid")),
    };
    id.filter(|id| id.len() <= 200).map(str::to_owned)
}

fn cut(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

async fn receive(
    State(app): State<Arc<App>>,
    Path((forge, project)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(forge) = Forge::ALL.into_iter().find(|f| f.slug() == forge) else {
        return ApiError::NotFound(format!("no hook for forge {forge:?}: use /hooks/github/<project> or /hooks/gitlab/<project>")).into_response();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge(format!("a hook's body may be at most {MAX_HOOK_BYTES} bytes")).into_response()
        }
        Err(rejection) => {
            tracing::debug!(error = %rejection.body_text(), "a hook's body could not be read");
            return ApiError::BadRequest("the hook's body could not be read to its end: the forge will send it again".into()).into_response();
        }
    };
    let catalog = match catalog_state(&app).await {
        Ok(catalog) => catalog,
        Err(e) => {
            tracing::warn!(error = %e.message(), "a forge hook cannot be checked: the catalog cannot be read");
            return unavailable("the platform cannot check hooks right now: the forge will send it again");
        }
    };
    let Some(link) = catalog.links.get(&project).filter(|l| l.forge == forge).cloned() else {
        decoy_check(&app, forge, &headers, &body).await;
        tracing::info!(project = %cut(&project, 100), forge = forge.slug(), "a forge hook was refused: no repository of this forge is linked to this project");
        return ApiError::Unauthenticated(NOT_VERIFIED.into()).into_response();
    };
    let credentials = match nullops_saga::previews::unseal(&app.core, &catalog, &link).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(project = %link.project, error = %e, "a forge hook cannot be checked");
            return unavailable("the link's secret cannot be read now: the forge will send it again");
        }
    };
    if !verified(forge, &headers, &body, &credentials.webhook_secret) {
        tracing::info!(project = %link.project, forge = forge.slug(), "a forge hook was refused: its signature does not verify");
        return ApiError::Unauthenticated(NOT_VERIFIED.into()).into_response();
    }
    let event = match forge {
        Forge::GitHub => header(&headers, "x-github-event"),
        Forge::GitLab => header(&headers, "x-gitlab-event"),
    }
    .unwrap_or_default();
    let hook = match forge {
        Forge::GitHub => payload::github(event, &body),
        Forge::GitLab => payload::gitlab(event, &body),
    };
    let request = match hook {
        Err(not) => return ApiError::InvalidInput(not.to_string()).into_response(),
        Ok(Hook::Ping) => return answer(StatusCode::OK, json!({"ok": true, "project": link.project})),
        Ok(Hook::Ignored(why)) => return answer(StatusCode::OK, json!({"ignored": why})),
        Ok(Hook::Request(request)) => request,
    };
    if !request.repository.eq_ignore_ascii_case(&link.repository) {
        return ApiError::WrongRepository(format!(
            "this hook is about repository {}, but project {} is linked to {}",
            request.repository, link.project, link.repository
        ))
        .into_response();
    }
    let Some(delivery) = delivery(forge, &headers) else {
        return ApiError::InvalidInput("the hook has no delivery id (X-GitHub-Delivery, or GitLab's Idempotency-Key or X-Gitlab-Event-UUID)".into())
            .into_response();
    };
    let Some(project_id) = catalog.projects.get(&link.project).map(|p| p.project_id) else {
        return ApiError::Unauthenticated(NOT_VERIFIED.into()).into_response();
    };
    if !(1..=40).contains(&request.head_sha.len()) || !request.head_sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return ApiError::InvalidInput(format!("the head commit {:?} is not a hex commit id", cut(&request.head_sha, 80))).into_response();
    }
    let wish = match request.ask {
        Ask::Deploy => PreviewWish::Deploy { deployment_id: uuid::Uuid::now_v7() },
        Ask::Remove { merged } => PreviewWish::Remove { merged },
    };
    let requested = PreviewRequested {
        project_id,
        project: link.project.clone(),
        number: request.number,
        forge,
        delivery,
        action: cut(&request.action, 40),
        wish,
        tag: link.tag_rule.tag(request.number, &request.head_sha),
        head_sha: request.head_sha,
        title: cut(&request.title, 200),
        url: cut(&request.url, 500),
        sender: cut(&request.sender, 100),
        updated_at: request.updated_at,
    };
    let metadata =
        EventMetadata { actor: Actor::System, correlation_id: CorrelationId::new(), causation_id: None, trace_context: crate::http::traceparent(&headers) };
    let name = preview_name(requested.number);
    match dispatch::<Preview>(&app, metadata, &preview_key(project_id, requested.number), PreviewCommand { request: requested }).await {
        Ok(executed) if executed.events.is_empty() => {
            answer(StatusCode::OK, json!({"preview": name, "recorded": false, "why": "this delivery, or what it asks for, is already recorded"}))
        }
        Ok(_) => answer(StatusCode::ACCEPTED, json!({"preview": name, "recorded": true})),
        Err(e) => e.into_response(),
    }
}

/// The link's secret and token, in clear.
/// What checking a linked project's hook costs, done for a project that is unknown or not
/// linked: a data key looked up (one that never existed) and the signature computed, so the
/// answer's timing does not tell which projects exist or are linked.
async fn decoy_check(app: &App, forge: Forge, headers: &HeaderMap, body: &[u8]) -> bool {
    let decoy = nullops_events::catalog::Sealed { key_id: uuid::Uuid::now_v7(), nonce: vec![0; 12], ciphertext: vec![0; 64] };
    let _ = app.keyring.unseal(&decoy, "hook-decoy").await;
    verified(forge, headers, body, "a secret no link has: the decoy of a hook check")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn github_signatures_and_gitlab_tokens_are_checked_exactly() {
        let body = br#"{"action":"opened"}"#;
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"It's a Secret to Everybody");
        let hex: String = hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let with = |name: &'static str, value: String| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(&value).unwrap());
            h
        };
        assert!(verified(Forge::GitHub, &with("x-hub-signature-256", format!("sha256={hex}")), body, "It's a Secret to Everybody"));
        assert!(!verified(Forge::GitHub, &with("x-hub-signature-256", format!("sha256={hex}")), b"{}", "It's a Secret to Everybody"));
        assert!(!verified(Forge::GitHub, &with("x-hub-signature-256", hex.clone()), body, "It's a Secret to Everybody"));
        assert!(!verified(Forge::GitHub, &HeaderMap::new(), body, "It's a Secret to Everybody"));
        assert!(verified(Forge::GitLab, &with("x-gitlab-token", "s3cret".into()), body, "s3cret"));
        assert!(!verified(Forge::GitLab, &with("x-gitlab-token", "s3cre".into()), body, "s3cret"));
    }

    /// GitHub's documented example ("Validating webhook deliveries"): the secret "It's a Secret
    /// to Everybody" signs "Hello, World!" as below.
    #[test]
    fn signs_as_githubs_documented_example() {
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", HeaderValue::from_static("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"));
        assert!(verified(Forge::GitHub, &h, b"Hello, World!", "It's a Secret to Everybody"));
    }
}
