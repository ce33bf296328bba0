//! A client for the Registry HTTP API v2 (Docker distribution, Docker Hub, GHCR, Harbor...).
//!
//! It lists tags (following `Link` pagination) and reads manifest digests, authenticating the way
//! registries ask to in their `WWW-Authenticate` challenge: HTTP Basic, or the bearer-token flow
//! (fetch a token from the challenge's realm, with Basic credentials when there are any). Every
//! call is bounded in time, and every error names the registry. The local Docker engine serves
//! as a registry too ([`engine`]).

mod challenge;
pub mod engine;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use nullops_egress::Egress;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use zeroize::Zeroizing;

use crate::challenge::Challenge;

/// Where a registry is and how to sign in to it.
#[derive(Clone)]
pub struct Registry {
    /// The name it has in the catalog, for messages.
    pub name: String,
    /// Base URL such as `https://registry-1.docker.io`.
    pub url: String,
    pub credentials: Option<Credentials>,
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} did not answer within {secs} s")]
    TimedOut { registry: String, secs: u64 },
    #[error("registry {registry} refused access: {reason}")]
    Unauthorized { registry: String, reason: String },
    #[error("registry {registry} has no repository {repository}")]
    RepositoryNotFound { registry: String, repository: String },
    #[error("registry {registry} answered unexpectedly: {reason}")]
    Protocol { registry: String, reason: String },
}

/// Tags per page asked of the registry.
pub const PAGE_SIZE: u32 = 100;
/// Redirects followed at most (blob and token hosts).
const MAX_REDIRECTS: usize = 5;
/// Pages followed at most: a registry that keeps linking onward cannot keep us forever.
const MAX_PAGES: usize = 1000;
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Where calls may go: a registry's URL, its redirects and its token realm are judged.
    egress: Arc<Egress>,
    /// Bound on one whole operation, every page and token request included.
    deadline: Duration,
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl RegistryClient {
    pub fn new(deadline: Duration, egress: Arc<Egress>) -> Self {
        let http = egress.client(
            reqwest::Client::builder()
                .connect_timeout(deadline.min(Duration::from_secs(5)))
                .timeout(deadline)
                .redirect(egress.redirects(MAX_REDIRECTS))
                .user_agent(concat!("nullops/", env!("CARGO_PKG_VERSION"))),
        );
        RegistryClient { http, egress, deadline }
    }

    /// Every tag of `repository`, in the registry's order.
    pub async fn list_tags(&self, registry: &Registry, repository: &str) -> Result<Vec<String>, RegistryError> {
        self.list_tags_paged(registry, repository, PAGE_SIZE).await
    }

    pub async fn list_tags_paged(&self, registry: &Registry, repository: &str, page_size: u32) -> Result<Vec<String>, RegistryError> {
        if engine::is_engine(registry) {
            return self.bounded(registry, engine::tags(registry, repository)).await;
        }
        self.bounded(registry, async {
            let mut session = Session::new(self, registry, repository)?;
            let mut url = session.endpoint(&format!("tags/list?n={page_size}"))?;
            let mut tags = Vec::new();
            for _ in 0..MAX_PAGES {
                let response = session.send(Method::GET, url.clone()).await?;
                let next = next_page(&url, response.headers().get(LINK));
                let page: TagList = response.json().await.map_err(|e| session.protocol(format!("tag list is not JSON: {e}")))?;
                tags.extend(page.tags.unwrap_or_default());
                match next {
                    Some(n) => url = n,
                    None => return Ok(tags),
                }
            }
            Err(session.protocol(format!("more than {MAX_PAGES} pages of tags")))
        })
        .await
    }

    /// Whether the registry accepts `registry`'s credentials: the API's base (`GET /v2/`),
    /// through its authentication challenge. `Unauthorized` when it rejects them; the other
    /// errors say it could not be asked.
    pub async fn check_credentials(&self, registry: &Registry) -> Result<(), RegistryError> {
        if engine::is_engine(registry) || registry.credentials.is_none() {
            return Ok(());
        }
        self.bounded(registry, async {
            let mut session = Session::new(self, registry, "")?;
            let url = session.base.join("/v2/").map_err(|e| session.protocol(e.to_string()))?;
            session.send(Method::GET, url).await.map(drop)
        })
        .await
    }

    /// The digest of `repository:tag` (`sha256:…`), when the registry reports one.
    pub async fn manifest_digest(&self, registry: &Registry, repository: &str, tag: &str) -> Result<Option<String>, RegistryError> {
        if engine::is_engine(registry) {
            return Ok(None);
        }
        self.bounded(registry, async {
            let mut session = Session::new(self, registry, repository)?;
            let url = session.endpoint(&format!("manifests/{tag}"))?;
            let response = session.send(Method::HEAD, url).await?;
            Ok(response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned))
        })
        .await
    }

    async fn bounded<T>(&self, registry: &Registry, work: impl std::future::Future<Output = Result<T, RegistryError>>) -> Result<T, RegistryError> {
        tokio::time::timeout(self.deadline, work)
            .await
            .unwrap_or_else(|_| Err(RegistryError::TimedOut { registry: registry.name.clone(), secs: self.deadline.as_secs().max(1) }))
    }
}

/// One operation's conversation with a registry: it remembers the authorization it earned.
struct Session<'a> {
    client: &'a RegistryClient,
    registry: &'a Registry,
    repository: String,
    base: Url,
    authorization: Option<HeaderValue>,
}

impl<'a> Session<'a> {
    fn new(client: &'a RegistryClient, registry: &'a Registry, repository: &str) -> Result<Self, RegistryError> {
        let base = Url::parse(registry.url.trim_end_matches('/'))
            .map_err(|e| RegistryError::Protocol { registry: registry.name.clone(), reason: format!("URL {}: {e}", registry.url) })?;
        // Docker Hub keeps official images under `library/`.
        let official = matches!(base.host_str(), Some("registry-1.docker.io" | "docker.io" | "index.docker.io"));
        let repository = if official && !repository.contains('/') { format!("library/{repository}") } else { repository.to_owned() };
        Ok(Session { client, registry, repository, base, authorization: None })
    }

    fn endpoint(&self, rest: &str) -> Result<Url, RegistryError> {
        self.base.join(&format!("/v2/{}/{rest}", self.repository)).map_err(|e| self.protocol(e.to_string()))
    }

    fn protocol(&self, reason: String) -> RegistryError {
        RegistryError::Protocol { registry: self.registry.name.clone(), reason }
    }

    fn unauthorized(&self, reason: &str) -> RegistryError {
        RegistryError::Unauthorized { registry: self.registry.name.clone(), reason: reason.to_owned() }
    }

    fn transport(&self, e: reqwest::Error) -> RegistryError {
        match nullops_egress::failure(&e) {
            nullops_egress::Failure::TimedOut => RegistryError::TimedOut { registry: self.registry.name.clone(), secs: self.client.deadline.as_secs().max(1) },
            failure => {
                tracing::info!(registry = %self.registry.name, error = %e, "a registry call got no answer");
                RegistryError::Unreachable { registry: self.registry.name.clone(), reason: failure.to_string() }
            }
        }
    }

    /// `url` when this platform may call it; else why not, as a registry error.
    async fn admitted(&self, url: &Url) -> Result<(), RegistryError> {
        self.client.egress.admit(url).await.map_err(|refusal| RegistryError::Unreachable {
            registry: self.registry.name.clone(),
            reason: nullops_egress::Failure::Refused(refusal).to_string(),
        })
    }

    fn basic(&self) -> Option<HeaderValue> {
        self.registry.credentials.as_ref().map(|c| {
            let raw = Zeroizing::new(format!("{}:{}", c.username, c.password.as_str()));
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
            value.set_sensitive(true);
            value
        })
    }

    async fn send_once(&self, method: Method, url: Url) -> Result<reqwest::Response, RegistryError> {
        self.admitted(&url).await?;
        let mut request = self.client.http.request(method, url).header(ACCEPT, MANIFEST_TYPES);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request.send().await.map_err(|e| self.transport(e))
    }

    /// Sends a request, answering at most one authentication challenge.
    async fn send(&mut self, method: Method, url: Url) -> Result<reqwest::Response, RegistryError> {
        let mut response = self.send_once(method.clone(), url.clone()).await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.authorization.is_none() {
            let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(Challenge::parse);
            self.authorization = Some(match challenge {
                Some(Challenge::Basic) => self.basic().ok_or_else(|| self.unauthorized("it needs credentials and none are set"))?,
                Some(Challenge::Bearer { realm, service, scope }) => self.token(&realm, service.as_deref(), scope.as_deref()).await?,
                None => return Err(self.unauthorized("it answered 401 without a usable WWW-Authenticate challenge")),
            });
            response = self.send_once(method, url).await?;
        }
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(self.unauthorized(if self.registry.credentials.is_some() {
                "it rejected the credentials"
            } else {
                "it needs credentials and none are set"
            })),
            StatusCode::NOT_FOUND => Err(RegistryError::RepositoryNotFound { registry: self.registry.name.clone(), repository: self.repository.clone() }),
            s => Err(self.protocol(format!("HTTP status {s}"))),
        }
    }

    /// The bearer-token flow: ask the challenge's realm for a token for this scope.
    async fn token(&self, realm: &str, service: Option<&str>, scope: Option<&str>) -> Result<HeaderValue, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| self.protocol(format!("token realm {realm:?}: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(s) = service {
                query.append_pair("service", s);
            }
            // The API's base (a credentials check) names no repository: no scope is asked.
            match (scope, self.repository.is_empty()) {
                (Some(scope), _) => {
                    query.append_pair("scope", scope);
                }
                (None, false) => {
                    query.append_pair("scope", &format!("repository:{}:pull", self.repository));
                }
                (None, true) => {}
            }
        }
        self.admitted(&url).await?;
        let mut request = self.client.http.get(url);
        if let Some(basic) = self.basic() {
            request = request.header(AUTHORIZATION, basic);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.unauthorized("its token service rejected the credentials")),
            s => return Err(self.protocol(format!("token service answered HTTP status {s}"))),
        }
        let body: TokenResponse = response.json().await.map_err(|e| self.protocol(format!("token response is not JSON: {e}")))?;
        let token = body.token.or(body.access_token).ok_or_else(|| self.protocol("token response holds no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| self.protocol("token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The next page from a `Link: <…>; rel="next"` header, resolved against the current URL.
fn next_page(current: &Url, link: Option<&HeaderValue>) -> Option<Url> {
    let link = link?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params.split(';').any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next").then(|| current.join(target).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_links_resolve_against_the_current_url() {
        let current = Url::parse("http://127.0.0.1:5050/v2/a/tags/list?n=2").unwrap();
        let link = HeaderValue::from_static("</v2/a/tags/list?last=b&n=2>; rel=\"next\"");
        assert_eq!(next_page(&current, Some(&link)).unwrap().as_str(), "http://127.0.0.1:5050/v2/a/tags/list?last=b&n=2");
        assert!(next_page(&current, None).is_none());
        assert!(next_page(&current, Some(&HeaderValue::from_static("<x>; rel=\"prev\""))).is_none());
    }
}
