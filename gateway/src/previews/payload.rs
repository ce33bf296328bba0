//! What a forge's hook says about a pull (merge) request, read from its JSON as GitHub's
//! `pull_request` event and GitLab's `Merge Request Hook` document it. Only the fields previews
//! need are read; everything else is ignored.

use serde::Deserialize;

/// What a verified hook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// GitHub's check that the hook works.
    Ping,
    /// Not about previews (another event, or an action such as `labeled`): answered, ignored.
    Ignored(String),
    Request(RequestHook),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Deploy,
    Remove { merged: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHook {
    pub number: u64,
    pub action: String,
    pub ask: Ask,
    pub head_sha: String,
    pub title: String,
    pub url: String,
    pub sender: String,
    /// `owner/name` or GitLab's path with namespace, as the forge names it.
    pub repository: String,
    /// The request's `updated_at`, in microseconds since the epoch; 0 when absent or unreadable.
    pub updated_at: i64,
}

/// A forge's time: GitHub writes RFC 3339 (`2026-11-29T09:14:52Z`), GitLab
/// `2026-11-29 09:14:52 UTC` (and RFC 3339 in newer hooks). Microseconds since the epoch, or 0.
fn forge_time(raw: Option<&str>) -> i64 {
    let Some(raw) = raw.map(str::trim) else { return 0 };
    let parsed = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S UTC").map(|t| t.and_utc()));
    parsed.map_or(0, |t| t.timestamp_micros())
}

#[derive(Deserialize)]
struct GitHubEvent {
    action: String,
    number: u64,
    pull_request: GitHubPull,
    repository: GitHubRepository,
    sender: Option<Login>,
}

#[derive(Deserialize)]
struct GitHubPull {
    title: Option<String>,
    html_url: Option<String>,
    #[serde(default)]
    merged: bool,
    head: GitHubHead,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct GitHubHead {
    sha: String,
}

#[derive(Deserialize)]
struct GitHubRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

/// A hook whose body is not the event its header names: where, and what kind of problem, in
/// our words (never the JSON parser's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not {expected}: {problem} (line {line}, column {column})")]
pub struct NotTheEvent {
    expected: &'static str,
    problem: &'static str,
    line: usize,
    column: usize,
}

impl NotTheEvent {
    fn reading(expected: &'static str) -> impl Fn(serde_json::Error) -> NotTheEvent {
        move |e| {
            let problem = match e.classify() {
                serde_json::error::Category::Syntax => "it is not valid JSON",
                serde_json::error::Category::Eof => "it ends too early",
                serde_json::error::Category::Data => "a field it needs is missing or of the wrong type",
                serde_json::error::Category::Io => "it could not be read",
            };
            NotTheEvent { expected, problem, line: e.line(), column: e.column() }
        }
    }
}

/// A GitHub hook of event `event` (`X-GitHub-Event`).
pub fn github(event: &str, body: &[u8]) -> Result<Hook, NotTheEvent> {
    match event {
        "ping" => return Ok(Hook::Ping),
        "pull_request" => {}
        other => return Ok(Hook::Ignored(format!("event {other:?} does not concern previews"))),
    }
    let e: GitHubEvent = serde_json::from_slice(body).map_err(NotTheEvent::reading("a GitHub pull_request event"))?;
    let ask = match e.action.as_str() {
        "opened" | "reopened" | "synchronize" => Ask::Deploy,
        "closed" => Ask::Remove { merged: e.pull_request.merged },
        other => return Ok(Hook::Ignored(format!("action {other:?} does not change a preview"))),
    };
    Ok(Hook::Request(RequestHook {
        number: e.number,
        action: e.action,
        ask,
        head_sha: e.pull_request.head.sha,
        title: e.pull_request.title.unwrap_or_default(),
        url: e.pull_request.html_url.unwrap_or_default(),
        sender: e.sender.map(|s| s.login).unwrap_or_default(),
        repository: e.repository.full_name,
        updated_at: forge_time(e.pull_request.updated_at.as_deref()),
    }))
}

#[derive(Deserialize)]
struct GitLabEvent {
    object_kind: String,
    user: Option<GitLabUser>,
    project: GitLabProject,
    object_attributes: GitLabRequest,
}

#[derive(Deserialize)]
struct GitLabUser {
    username: String,
}

#[derive(Deserialize)]
struct GitLabProject {
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct GitLabRequest {
    iid: u64,
    action: Option<String>,
    title: Option<String>,
    url: Option<String>,
    last_commit: GitLabCommit,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct GitLabCommit {
    id: String,
}

/// A GitLab hook of event `event` (`X-Gitlab-Event`).
pub fn gitlab(event: &str, body: &[u8]) -> Result<Hook, NotTheEvent> {
    if event != "Merge Request Hook" {
        return Ok(Hook::Ignored(format!("event {event:?} does not concern previews")));
    }
    let e: GitLabEvent = serde_json::from_slice(body).map_err(NotTheEvent::reading("a GitLab merge request event"))?;
    if e.object_kind != "merge_request" {
        return Ok(Hook::Ignored(format!("object kind {:?} does not concern previews", e.object_kind)));
    }
    let action = e.object_attributes.action.unwrap_or_default();
    let ask = match action.as_str() {
        // An update without new commits asks for the commit already deployed: recorded as
        // nothing new.
        "open" | "reopen" | "update" => Ask::Deploy,
        "close" => Ask::Remove { merged: false },
        "merge" => Ask::Remove { merged: true },
        other => return Ok(Hook::Ignored(format!("action {other:?} does not change a preview"))),
    };
    Ok(Hook::Request(RequestHook {
        number: e.object_attributes.iid,
        action,
        ask,
        head_sha: e.object_attributes.last_commit.id,
        title: e.object_attributes.title.unwrap_or_default(),
        url: e.object_attributes.url.unwrap_or_default(),
        sender: e.user.map(|u| u.username).unwrap_or_default(),
        repository: e.project.path_with_namespace,
        updated_at: forge_time(e.object_attributes.updated_at.as_deref()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_payloads_read_as_previews_need() {
        let fixture = |name: &str| std::fs::read(format!("{}/../tests/fixtures/forge/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let Hook::Request(opened) = github("pull_request", &fixture("github-pull_request-opened.json")).unwrap() else { panic!("a request") };
        assert_eq!((opened.number, opened.action.as_str(), &opened.ask), (7, "opened", &Ask::Deploy));
        assert_eq!((opened.repository.as_str(), opened.sender.as_str()), ("acme/shop", "octocat"));
        assert_eq!(opened.head_sha.len(), 40);
        let Hook::Request(closed) = github("pull_request", &fixture("github-pull_request-closed.json")).unwrap() else { panic!("a request") };
        assert_eq!(closed.ask, Ask::Remove { merged: true });
        // The forge's times, in both its formats: later events are later.
        assert_eq!(opened.updated_at, 1_795_943_692_000_000, "2026-11-29T09:14:52Z");
        assert!(closed.updated_at > opened.updated_at);
        let Hook::Request(mr) = gitlab("Merge Request Hook", &fixture("gitlab-merge_request-open.json")).unwrap() else { panic!("a request") };
        assert_eq!((mr.number, mr.ask, mr.repository.as_str()), (7, Ask::Deploy, "acme/web/shop"));
        assert_eq!(mr.updated_at, opened.updated_at, "2026-11-29 09:14:52 UTC");
        assert_eq!(forge_time(Some("yesterday")), 0);
        assert_eq!(forge_time(None), 0);
        assert_eq!(github("ping", b"{}").unwrap(), Hook::Ping);
        assert!(matches!(github("push", b"{}").unwrap(), Hook::Ignored(_)));
        assert!(matches!(github("pull_request", &fixture("github-pull_request-opened.json").replace_action("labeled")).unwrap(), Hook::Ignored(_)));
        let not = github("pull_request", b"[1,2]").unwrap_err();
        assert_eq!(not.to_string(), "the body is not a GitHub pull_request event: a field it needs is missing or of the wrong type (line 1, column 2)");
        let not = gitlab("Merge Request Hook", b"{\"object_kind\": 5}").unwrap_err();
        assert_eq!((not.expected, not.problem), ("a GitLab merge request event", "a field it needs is missing or of the wrong type"));
        assert_eq!(github("pull_request", b"{\"action\": ").unwrap_err().problem, "it ends too early");
    }

    trait ReplaceAction {
        fn replace_action(self, action: &str) -> Vec<u8>;
    }
    impl ReplaceAction for Vec<u8> {
        fn replace_action(self, action: &str) -> Vec<u8> {
            let mut v: serde_json::Value = serde_json::from_slice(&self).unwrap();
            v["action"] = action.into();
            serde_json::to_vec(&v).unwrap()
        }
    }
}
