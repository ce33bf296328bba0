//! The master key: 32 bytes given as 64 hex characters. It only wraps data keys.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::KeyringError;

#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn from_hex(raw: &str) -> Result<Self, KeyringError> {
        let raw = raw.trim();
        let bad = || KeyringError::InvalidMasterKey("use 64 hex characters (32 random bytes, e.g. from `openssl rand -hex 32`)".into());
        if raw.len() != 64 || !raw.is_ascii() {
            return Err(bad());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(MasterKey(key))
    }

    pub fn generate() -> Self {
        MasterKey(Zeroizing::new(crate::random::<32>()))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A public fingerprint that tells master keys apart without revealing them.
    pub fn id(&self) -> String {
        let digest = Sha256::new().chain_update(b"nullops master key id").chain_update(self.0.as_slice()).finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_keys_are_refused_without_echoing_them() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&key.to_hex()).unwrap().id(), key.id());
        let err = MasterKey::from_hex("zz".repeat(32).as_str()).unwrap_err().to_string();
        assert!(!err.contains("zz"), "{err}");
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(!format!("{key:?}").contains(&*key.to_hex()));
    }
}
