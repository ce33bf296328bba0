//! The identity of an agent: the SHA-256 thumbprint of its certificate.

use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of a certificate's DER bytes. Written as 64 lower-case hex characters; parsing also
/// takes the `AA:BB:…` form `openssl x509 -fingerprint -sha256` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    pub fn of_certificate(der: &[u8]) -> Self {
        Thumbprint(Sha256::digest(der).into())
    }

    pub fn parse(raw: &str) -> Result<Self, ThumbprintError> {
        let hex: String = raw.trim().chars().filter(|c| *c != ':').collect();
        let bytes = decode_hex(&hex).filter(|b| b.len() == 32).ok_or(ThumbprintError)?;
        let mut out = [0; 32];
        out.copy_from_slice(&bytes);
        Ok(Thumbprint(out))
    }
}

/// Why a text is not a thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a thumbprint is the certificate's SHA-256: 64 hex characters, optionally in colon-separated pairs")]
pub struct ThumbprintError;

/// Bytes from lower- or upper-case hex (thumbprints, the agent's proofs).
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// Bytes as lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_form_and_openssls() {
        let t = Thumbprint::of_certificate(b"certificate");
        assert_eq!(Thumbprint::parse(&t.to_string()), Ok(t));
        let openssl: Vec<String> = t.to_string().as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
        assert_eq!(Thumbprint::parse(&openssl.join(":")), Ok(t));
        assert!(Thumbprint::parse("abc").is_err());
        assert!(Thumbprint::parse(&"zz".repeat(32)).is_err());
        assert!(Thumbprint::parse("é").is_err());
    }
}
