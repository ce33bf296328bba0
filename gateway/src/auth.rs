//! Credentials: password hashing, bearer tokens, resolving a request's principal, throttling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use nullops_domain::{Principal, Username};
use nullops_events::identity::Role;
use nullops_events::Timestamp;
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
}

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
        return Err(ApiError::Unauthenticated("this token has expired; sign in again".into()));
    }
    if c.user_disabled {
        return Err(ApiError::Unauthenticated("this account is disabled".into()));
    }
    let username = Username::parse(&c.username).map_err(ApiError::internal)?;
    let role = if c.role == Role::Admin.as_str() { Role::Admin } else { Role::User };
    Ok(Caller { principal: Principal { username, role }, session_id: c.session_id, credential })
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

/// Failed-login throttling per username and per client address, in this process.
///
/// Five failures are free; each further one doubles the wait, up to 5 minutes. A success clears
/// the username's record. The table is bounded: past `MAX_KEYS` entries, expired ones go first,
/// then everything (a flood of distinct keys must not grow memory).
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    last: Instant,
}

const FREE_FAILURES: u32 = 5;
const MAX_WAIT: Duration = Duration::from_secs(300);
const FORGET_AFTER: Duration = Duration::from_secs(900);
const MAX_KEYS: usize = 100_000;

fn wait_for(f: &Failures) -> Duration {
    if f.count < FREE_FAILURES {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (f.count - FREE_FAILURES).min(16)).min(MAX_WAIT)
}

impl LoginThrottle {
    fn keys(username: &str, addr: IpAddr) -> [String; 2] {
        [format!("user:{username}"), format!("addr:{addr}")]
    }

    /// Refuses the attempt while either key is in its waiting period.
    pub fn check(&self, username: &str, addr: IpAddr) -> ApiResult<()> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(username, addr) {
            if let Some(f) = map.get(&key) {
                let wait = wait_for(f);
                let elapsed = f.last.elapsed();
                if elapsed < wait {
                    return Err(ApiError::RateLimited { retry_after_secs: (wait - elapsed).as_secs().max(1) });
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, username: &str, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, f| f.last.elapsed() < FORGET_AFTER);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for key in Self::keys(username, addr) {
            let f = map.entry(key).or_insert(Failures { count: 0, last: Instant::now() });
            if f.last.elapsed() > FORGET_AFTER {
                f.count = 0;
            }
            f.count += 1;
            f.last = Instant::now();
        }
    }

    pub fn succeeded(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{username}"));
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
    fn throttle_allows_five_failures_then_waits_per_user_and_address() {
        let t = LoginThrottle::default();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(t.check("alice", addr).is_ok());
            t.failed("alice", addr);
        }
        assert!(matches!(t.check("alice", addr), Err(ApiError::RateLimited { .. })));
        // Another user from the same address is throttled too (address key)...
        assert!(t.check("bob", addr).is_err());
        // ...but not from another address.
        assert!(t.check("bob", "10.0.0.1".parse().unwrap()).is_ok());
        // The same user from elsewhere is still throttled (user key).
        assert!(t.check("alice", "10.0.0.1".parse().unwrap()).is_err());
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
