//! How the control plane proves it may command an agent.
//!
//! The admin gives the agent its [`NodeToken`]; the control plane keeps only the token's
//! [`TokenHash`] (sealed under the master key). On each connection the control plane sends an
//! [`AuthProof`]: an HMAC of the TLS session's exported keying material under the token hash.
//! The agent, which hashes its token once at start, recomputes the HMAC and compares in constant
//! time. So the token itself never crosses the network, and a proof is worthless on any other
//! TLS session: an impostor that intercepted one could not replay it to the real agent.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

use nullops_events::thumbprint::{decode_hex, encode_hex};

/// The TLS exporter label (RFC 5705) the proof is bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL-nullops-agent-auth";
/// Length of the exported keying material.
pub const EXPORTER_LEN: usize = 32;

/// A node token as the admin handles it: `nat_` and 43 base64url characters. Zeroed on drop.
pub struct NodeToken(Zeroizing<String>);

impl NodeToken {
    /// A fresh token of 256 random bits, from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SecureRandom::fill(&SystemRandom::new(), &mut bytes[..]).expect("the OS random generator fails");
        NodeToken(Zeroizing::new(format!("nat_{}", URL_SAFE_NO_PAD.encode(&bytes[..]))))
    }

    /// A token as configured on an agent: anything non-blank. Surrounding whitespace (a trailing
    /// newline from a file) is not part of it.
    pub fn from_configured(raw: &str) -> Option<Self> {
        let t = raw.trim();
        (!t.is_empty()).then(|| NodeToken(Zeroizing::new(t.to_owned())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeToken(***)")
    }
}

/// SHA-256 of a node token: what the control plane keeps, and the key of every proof.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(TokenHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The proof for the TLS session whose exported keying material is `exporter`.
    pub fn prove(&self, exporter: &[u8; EXPORTER_LEN]) -> AuthProof {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, exporter);
        AuthProof(tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes"))
    }

    /// Whether `proof` was made with this hash for this session, in constant time.
    pub fn verify(&self, exporter: &[u8; EXPORTER_LEN], proof: &AuthProof) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        hmac::verify(&key, exporter, &proof.0).is_ok()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(***)")
    }
}

/// An HMAC-SHA256 tag, sent as 64 hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthProof([u8; 32]);

impl AuthProof {
    pub fn parse(hex: &str) -> Option<Self> {
        decode_hex(hex).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(AuthProof)
    }
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl fmt::Debug for AuthProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthProof(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_token_and_session() {
        let token = NodeToken::generate();
        assert!(token.expose().starts_with("nat_") && token.expose().len() == 47, "{}", token.expose().len());
        let session = [7u8; EXPORTER_LEN];
        let proof = token.hash().prove(&session);
        let agent = NodeToken::from_configured(&format!("{}\n", token.expose())).unwrap().hash();
        assert!(agent.verify(&session, &AuthProof::parse(&proof.to_hex()).unwrap()));
        assert!(!agent.verify(&[8u8; EXPORTER_LEN], &proof), "replayed on another session");
        assert!(!NodeToken::generate().hash().verify(&session, &proof), "another token");
    }

    #[test]
    fn blank_tokens_are_not_tokens_and_tokens_do_not_print() {
        assert!(NodeToken::from_configured("  \n").is_none());
        assert!(NodeToken::from_configured("").is_none());
        let token = NodeToken::generate();
        assert!(!format!("{token:?} {:?}", token.hash()).contains(&token.expose()[4..]));
        assert!(AuthProof::parse("xyz").is_none());
    }
}
