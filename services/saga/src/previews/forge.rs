//! What the `previews` process tells a forge: a commit status on the request's head commit and
//! one comment on the request, kept up to date. GitHub's REST API (statuses, issue comments)
//! and GitLab's v4 API (commit statuses, merge request notes), at the link's `apiUrl`.

use std::sync::Arc;
use std::time::Duration;

use nullops_egress::{Egress, Failure};
use nullops_events::catalog::{Forge, RepositoryLink};
use serde_json::{json, Value};

/// Bound on one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The status's name on the commit (GitHub `context`, GitLab `name`).
pub const STATUS_CONTEXT: &str = "nullops/preview";
/// GitHub cuts a status's description at 140 characters.
const DESCRIPTION_CHARS: usize = 140;

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
}

impl StatusState {
    fn name(self, forge: Forge) -> &'static str {
        match (self, forge) {
            (StatusState::Pending, _) => "pending",
            (StatusState::Success, _) => "success",
            (StatusState::Failure, Forge::GitHub) => "failure",
            (StatusState::Failure, Forge::GitLab) => "failed",
        }
    }
}

/// The HTTP client every forge call goes through: bounded, no redirects followed (the token
/// must not be sent on to another host), names resolved as `egress` allows.
pub fn client(egress: &Arc<Egress>) -> reqwest::Client {
    egress.client(
        reqwest::Client::builder().timeout(CALL_TIMEOUT).redirect(reqwest::redirect::Policy::none()).user_agent(concat!("nullops/", env!("CARGO_PKG_VERSION"))),
    )
}

/// One linked repository's API, with its token.
pub struct ForgeApi<'a> {
    pub http: &'a reqwest::Client,
    pub egress: &'a Egress,
    pub link: &'a RepositoryLink,
    pub token: &'a str,
}

impl ForgeApi<'_> {
    fn root(&self) -> String {
        let api = self.link.api_url.trim_end_matches('/');
        match self.link.forge {
            Forge::GitHub => format!("{api}/repos/{}", self.link.repository),
            // A project's path is one URL segment, its slashes encoded (the path's other
            // characters need none: see the catalog's check).
            Forge::GitLab => format!("{api}/projects/{}", self.link.repository.replace('/', "%2F")),
        }
    }

    fn request(&self, method: reqwest::Method, url: String, body: Value) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url).json(&body);
        match self.link.forge {
            Forge::GitHub => request.bearer_auth(self.token).header("accept", "application/vnd.github+json").header("x-github-api-version", "2022-11-28"),
            Forge::GitLab => request.header("private-token", self.token),
        }
    }

    /// Sends `request`; the answer's JSON when it is a success. The error names the call, never
    /// the token.
    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let unanswered = |failure: Failure| CallError {
            status: None,
            message: match failure {
                Failure::TimedOut => format!("{what}: no answer within {} s", CALL_TIMEOUT.as_secs()),
                f => format!("{what}: {f}"),
            },
        };
        let request = request.build().map_err(|_| unanswered(Failure::Failed))?;
        self.egress.admit(request.url()).await.map_err(|refusal| unanswered(Failure::Refused(refusal)))?;
        let answer = self.http.execute(request).await.map_err(|e| {
            tracing::info!(forge = ?self.link.forge, error = %e, "a forge call got no answer");
            unanswered(nullops_egress::failure(&e))
        })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(CallError { status: Some(status.as_u16()), message: format!("{what}: the forge answered {status}") });
        }
        // Bounded: an answer is a small JSON object.
        let bytes = answer.bytes().await.map_err(|e| unanswered(nullops_egress::failure(&e)))?;
        Ok(serde_json::from_slice(&bytes[..bytes.len().min(1 << 20)]).unwrap_or(Value::Null))
    }

    /// Sets the status of commit `sha`.
    pub async fn status(&self, sha: &str, state: StatusState, description: &str, target_url: Option<&str>) -> Result<(), CallError> {
        let description: String = description.chars().take(DESCRIPTION_CHARS).collect();
        let state_name = state.name(self.link.forge);
        let body = match self.link.forge {
            Forge::GitHub => json!({"state": state_name, "context": STATUS_CONTEXT, "description": description, "target_url": target_url}),
            Forge::GitLab => json!({"state": state_name, "name": STATUS_CONTEXT, "description": description, "target_url": target_url}),
        };
        let url = format!("{}/statuses/{sha}", self.root());
        self.send("posting the commit status", self.request(reqwest::Method::POST, url, body)).await.map(drop)
    }

    /// Writes `body` into the request's comment: a new one when `existing` is '' (or was
    /// deleted), else that one. The comment's id.
    pub async fn comment(&self, number: u64, existing: &str, body: &str) -> Result<String, CallError> {
        let root = self.root();
        if !existing.is_empty() {
            let (method, url) = match self.link.forge {
                Forge::GitHub => (reqwest::Method::PATCH, format!("{root}/issues/comments/{existing}")),
                Forge::GitLab => (reqwest::Method::PUT, format!("{root}/merge_requests/{number}/notes/{existing}")),
            };
            match self.send("updating the comment", self.request(method, url, json!({"body": body}))).await {
                Ok(_) => return Ok(existing.to_owned()),
                // Deleted on the forge: a new one is made.
                Err(CallError { status: Some(404), .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let url = match self.link.forge {
            Forge::GitHub => format!("{root}/issues/{number}/comments"),
            Forge::GitLab => format!("{root}/merge_requests/{number}/notes"),
        };
        let made = self.send("posting the comment", self.request(reqwest::Method::POST, url, json!({"body": body}))).await?;
        match &made["id"] {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) if !s.is_empty() && s.len() <= 64 => Ok(s.clone()),
            _ => Err(CallError { status: None, message: "posting the comment: the forge's answer has no comment id".into() }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub status: Option<u16>,
    pub message: String,
}
