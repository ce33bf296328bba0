//! Credentials: password hashing, bearer tokens, resolving a request's principal, throttling.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use nullops_domain::{Principal, Username};
use nullops_events::identity::Role;
use nullops_events::Timestamp;
use nullops_projections::logins;
use nullops_projections::{identity, ReadModelDb};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Prefixes make a leaked token recognisable (and greppable by secret scanners).
pub const SESSION_PREFIX: &str = "nos_";
pub const API_TOKEN_PREFIX: &str = "nop_";
pub const SESSION_COOKIE: &str = "nullops_session";

/// A fresh bearer token: prefix + 32 random bytes, URL-safe base64.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// argon2id hashing and verification, off the async runtime and bounded in concurrency so a
/// burst of logins cannot take every core.
#[derive(Clone)]
pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so timing does not reveal that.
    decoy_hash: Arc<String>,
}

impl PasswordHasherPool {
    /// Computes the decoy hash off the async runtime: argon2 takes tens of milliseconds.
    pub async fn new() -> Self {
        let decoy = tokio::task::spawn_blocking(|| hash_blocking("nullops decoy password")).await.ok().and_then(Result::ok).unwrap_or_default();
        PasswordHasherPool { permits: Arc::new(Semaphore::new(2)), decoy_hash: Arc::new(decoy) }
    }

    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let _permit = self.permits.acquire().await.map_err(|_| ApiError::Unavailable)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
    }

    /// Verifies `password` against `hash`, or against a decoy when there is no user.
    pub async fn verify(&self, password: String, hash: Option<String>) -> ApiResult<bool> {
        let _permit = self.permits.acquire().await.map_err(|_| ApiError::Unavailable)?;
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy_hash.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(ok && exists)
    }
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Set when the caller used a login session (so `logout` knows what to end).
    pub session_id: Option<String>,
    /// Which credential it was, to re-check it during long-lived subscriptions.
    pub credential: CredentialRef,
    /// When that credential expires (the identity read model's seconds), if it does.
    pub expires_at: Option<i64>,
}

/// Why an expired credential is refused, wherever it is noticed.
pub(crate) const EXPIRED: &str = "this token has expired; sign in again";

/// A credential by kind and hash: enough to look it up again, useless to an eavesdropper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    pub session: bool,
    pub hash_hex: String,
}

/// Resolves a bearer token to its caller. Every failure is UNAUTHENTICATED with a reason the
/// holder of the token may know (expired, revoked, disabled) and nothing about other accounts.
pub async fn resolve(db: &ReadModelDb, token: &str) -> ApiResult<Caller> {
    let session = token.starts_with(SESSION_PREFIX);
    if !session && !token.starts_with(API_TOKEN_PREFIX) {
        return Err(ApiError::Unauthenticated("this token is not valid".into()));
    }
    resolve_credential(db, CredentialRef { session, hash_hex: identity::hex(&token_hash(token)) }).await
}

/// Looks a credential up again: it may have been revoked, expired or its user disabled since.
pub async fn resolve_credential(db: &ReadModelDb, credential: CredentialRef) -> ApiResult<Caller> {
    let found = if credential.session {
        identity::session_by_token_hash(db, &credential.hash_hex).await?
    } else {
        identity::api_token_by_hash(db, &credential.hash_hex).await?
    };
    let c = found.ok_or_else(|| ApiError::Unauthenticated("this token is not valid".into()))?;
    if c.revoked {
        return Err(ApiError::Unauthenticated("this token was revoked or its session ended; sign in again".into()));
    }
    if c.expires_at.is_some_and(|t| t <= Timestamp::now().0) {
        return Err(ApiError::Unauthenticated(EXPIRED.into()));
    }
    if c.user_disabled {
        return Err(ApiError::Unauthenticated("this account is disabled".into()));
    }
    let username = Username::parse(&c.username).map_err(ApiError::internal)?;
    let role = if c.role == Role::Admin.as_str() { Role::Admin } else { Role::User };
    Ok(Caller { principal: Principal { username, role }, session_id: c.session_id, credential, expires_at: c.expires_at })
}

/// The token a request carries: the `Authorization: Bearer` value, else the session cookie.
pub fn token_from_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Failed sign-in throttling, by source address and by user and source together, never by user
/// alone: an attacker's failures slow the attacker's address down but cannot lock the real user
/// out, who signs in at once from their own address. The counts are kept in the read-model
/// database (`nullops_projections::logins`), so every server sees the same counts and a restart
/// keeps them.
///
/// Past its free failures a key waits 1 s, then twice as long after each further failure, up to
/// 5 minutes; a success clears the user-and-source key; counts older than 15 minutes start again.
#[derive(Clone)]
pub struct LoginThrottle {
    db: ReadModelDb,
}

/// Failures allowed before waiting: a user mistyping from one place, and a whole address (a
/// shared office address holds many users).
const FREE_PAIR_FAILURES: u32 = 5;
const FREE_ADDRESS_FAILURES: u32 = 20;
const MAX_WAIT: Duration = Duration::from_secs(300);
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Longest username kept in a key: longer ones cannot exist, and keys stay small.
const MAX_KEY_USERNAME: usize = 64;

/// How long a key with `count` failures, `free` of them free, waits after its last failure.
fn wait_for(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (count - free).min(16)).min(MAX_WAIT)
}

/// Where a request comes from, as the throttle counts it: an IPv6 client holds its whole /64.
fn source(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl LoginThrottle {
    pub fn new(db: ReadModelDb) -> Self {
        LoginThrottle { db }
    }

    /// The keys of an attempt, each with its free failures. The user name is kept only as a
    /// hash: people type their password into it, and a failure is kept for 15 minutes.
    fn keys(username: &str, addr: IpAddr) -> [(String, u32); 2] {
        let source = source(addr);
        let username: String = username.chars().take(MAX_KEY_USERNAME).collect();
        let user = identity::hex(&token_hash(&format!("login-throttle:{username}")));
        [(format!("addr:{source}"), FREE_ADDRESS_FAILURES), (format!("pair:{}|{source}", &user[..32]), FREE_PAIR_FAILURES)]
    }

    /// Refuses the attempt while either key is in its waiting period.
    pub async fn check(&self, username: &str, addr: IpAddr) -> ApiResult<()> {
        let keys = Self::keys(username, addr);
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let now = Timestamp::now().0;
        for (key, failures) in logins::failures(&self.db, &names).await? {
            let free = keys.iter().find(|(k, _)| *k == key).map_or(FREE_PAIR_FAILURES, |(_, free)| *free);
            let elapsed = Duration::from_micros(u64::try_from(now.saturating_sub(failures.last_at)).unwrap_or(0));
            if elapsed >= FORGET_AFTER {
                continue;
            }
            let wait = wait_for(failures.count, free);
            if elapsed < wait {
                return Err(ApiError::RateLimited { retry_after_secs: (wait - elapsed).as_secs().max(1) });
            }
        }
        Ok(())
    }

    /// Counts a failed attempt. Counting may fail (the database): logged, never the caller's error.
    pub async fn failed(&self, username: &str, addr: IpAddr) {
        let keys: Vec<String> = Self::keys(username, addr).into_iter().map(|(k, _)| k).collect();
        let now = Timestamp::now().0;
        let forget_before = now - i64::try_from(FORGET_AFTER.as_micros()).unwrap_or(i64::MAX);
        if let Err(e) = logins::record_failure(&self.db, &keys, now, forget_before).await {
            tracing::warn!(error = %e, "cannot count a failed sign-in");
        }
    }

    /// A success clears the user's failures from that source (not the address's).
    pub async fn succeeded(&self, username: &str, addr: IpAddr) {
        let [_, (pair, _)] = Self::keys(username, addr);
        if let Err(e) = logins::clear(&self.db, &pair).await {
            tracing::warn!(error = %e, "cannot clear the failed sign-ins of a user");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hash_stably() {
        let a = new_token(SESSION_PREFIX);
        let b = new_token(SESSION_PREFIX);
        assert!(a.starts_with("nos_") && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn a_throttle_key_never_holds_what_was_typed_as_the_user_name() {
        let typed = "my-Secret-passw0rd";
        let [(addr, _), (pair, _)] = LoginThrottle::keys(typed, "10.0.0.7".parse().unwrap());
        assert_eq!(addr, "addr:10.0.0.7");
        assert!(pair.starts_with("pair:") && pair.ends_with("|10.0.0.7") && !pair.contains(typed), "{pair}");
        // The same name from the same place is the same key; another name is another.
        assert_eq!(LoginThrottle::keys(typed, "10.0.0.7".parse().unwrap())[1].0, pair);
        assert_ne!(LoginThrottle::keys("alice", "10.0.0.7".parse().unwrap())[1].0, pair);
    }

    #[test]
    fn waits_grow_past_the_free_failures_and_are_capped() {
        assert_eq!(wait_for(4, FREE_PAIR_FAILURES), Duration::ZERO);
        assert_eq!(wait_for(5, FREE_PAIR_FAILURES), Duration::from_secs(1));
        assert_eq!(wait_for(8, FREE_PAIR_FAILURES), Duration::from_secs(8));
        assert_eq!(wait_for(40, FREE_PAIR_FAILURES), MAX_WAIT);
        assert_eq!(wait_for(19, FREE_ADDRESS_FAILURES), Duration::ZERO);
    }

    #[test]
    fn sources_are_addresses_and_ipv6_counts_by_64() {
        assert_eq!(source("10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(source("2001:db8:1:2:aaaa::1".parse().unwrap()), source("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(source("2001:db8:1:2::1".parse().unwrap()), source("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(source("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
        let [(addr, _), (pair, _)] = LoginThrottle::keys(&"x".repeat(500), "10.0.0.1".parse().unwrap());
        assert_eq!(addr, "addr:10.0.0.1");
        assert!(pair.len() < 100, "{pair}");
    }

    #[test]
    fn cookie_and_bearer_are_both_read() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=b; nullops_session=nos_xyz; c=d".parse().unwrap());
        assert_eq!(token_from_headers(&h).as_deref(), Some("nos_xyz"));
        h.insert("authorization", "Bearer nop_abc".parse().unwrap());
        assert_eq!(token_from_headers(&h).as_deref(), Some("nop_abc"));
    }
}
