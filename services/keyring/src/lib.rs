//! Envelope encryption with crypto-shredding.
//!
//! Every secret value is encrypted (AES-256-GCM) under a data key of its own. Data keys are stored
//! wrapped by the master key (`NULLOPS_MASTER_KEY`) in the `data_keys` table, outside the
//! append-only event log; events carry only ciphertext and the data key's id ([`Sealed`]).
//! Destroying a data key deletes its row, after which the ciphertext left in the log can never be
//! decrypted again, even with the master key. Rotating the master key re-wraps the data keys and
//! leaves events untouched.
//!
//! Each ciphertext is bound to its purpose (`registry:NAME`, `secret:PROJECT:NAME`) as associated
//! data, so a ciphertext copied onto another secret does not decrypt.

mod master;

pub use master::MasterKey;

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use nullops_events::catalog::Sealed;
use rand::RngCore;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use uuid::Uuid;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("data key {0} was destroyed: this value can no longer be read")]
    Destroyed(Uuid),
    #[error(
        "data key {key_id} is wrapped under master key {wrapped_under}, but this process has master key {this_key}; start it with the right NULLOPS_MASTER_KEY"
    )]
    WrongMasterKey { key_id: Uuid, wrapped_under: String, this_key: String },
    #[error("data key {0} or a value sealed under it does not decrypt: it was altered or belongs elsewhere")]
    Corrupt(Uuid),
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error("keyring database: {0}")]
    Database(#[from] sqlx::Error),
}

const NONCE_LEN: usize = 12;

/// The data keys of one installation, and the master key that unwraps them.
pub struct Keyring {
    pool: AnyPool,
    master: MasterKey,
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Encrypts with a fresh random nonce; returns nonce and ciphertext.
fn encrypt(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nonce = random::<NONCE_LEN>();
    let cipher = Aes256Gcm::new(key.into());
    // Encryption fails only for inputs beyond 64 GiB, far above anything we store.
    let ciphertext = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).expect("AES-GCM encrypts");
    (nonce.to_vec(), ciphertext)
}

fn decrypt(key: &[u8; 32], nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad }).ok().map(Zeroizing::new)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn wrap_aad(key_id: Uuid) -> Vec<u8> {
    [b"nullops data key ".as_slice(), key_id.as_bytes()].concat()
}

impl Keyring {
    /// Opens the keyring in the database at `url` (`postgres://…` or `sqlite://…`).
    pub async fn open(url: &str, master: MasterKey) -> Result<Self, KeyringError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Overwrite deleted rows on disk, so a destroyed key does not linger in free pages.
                        sqlx::query("PRAGMA secure_delete=ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let blob = if sqlite { "BLOB" } else { "BYTEA" };
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS data_keys (key_id TEXT PRIMARY KEY, master_key_id TEXT NOT NULL, \
             nonce {blob} NOT NULL, wrapped {blob} NOT NULL, created_at BIGINT NOT NULL)"
        ))
        .execute(&pool)
        .await?;
        Ok(Keyring { pool, master })
    }

    pub fn master_key_id(&self) -> String {
        self.master.id()
    }

    /// Encrypts `plaintext` for `purpose` under a new data key, which it stores wrapped.
    pub async fn seal(&self, plaintext: &[u8], purpose: &str) -> Result<Sealed, KeyringError> {
        let key_id = Uuid::now_v7();
        let data_key = Zeroizing::new(random::<32>());
        let (wrap_nonce, wrapped) = encrypt(self.master.bytes(), data_key.as_slice(), &wrap_aad(key_id));
        let created_at = now_secs();
        sqlx::query("INSERT INTO data_keys (key_id, master_key_id, nonce, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(key_id.to_string())
            .bind(self.master.id())
            .bind(wrap_nonce)
            .bind(wrapped)
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        let (nonce, ciphertext) = encrypt(&data_key, plaintext, purpose.as_bytes());
        Ok(Sealed { key_id, nonce, ciphertext })
    }

    /// Decrypts a value sealed for `purpose`.
    pub async fn unseal(&self, sealed: &Sealed, purpose: &str) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let data_key = self.data_key(sealed.key_id).await?;
        decrypt(&data_key, &sealed.nonce, &sealed.ciphertext, purpose.as_bytes()).ok_or(KeyringError::Corrupt(sealed.key_id))
    }

    async fn data_key(&self, key_id: Uuid) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
        let row = sqlx::query("SELECT master_key_id, nonce, wrapped FROM data_keys WHERE key_id = $1")
            .bind(key_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(KeyringError::Destroyed(key_id))?;
        let wrapped_under: String = row.try_get(0)?;
        if wrapped_under != self.master.id() {
            return Err(KeyringError::WrongMasterKey { key_id, wrapped_under, this_key: self.master.id() });
        }
        self.unwrap(key_id, &row.try_get::<Vec<u8>, _>(1)?, &row.try_get::<Vec<u8>, _>(2)?, &self.master)
    }

    fn unwrap(&self, key_id: Uuid, nonce: &[u8], wrapped: &[u8], master: &MasterKey) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
        let plain = decrypt(master.bytes(), nonce, wrapped, &wrap_aad(key_id)).ok_or(KeyringError::Corrupt(key_id))?;
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| KeyringError::Corrupt(key_id))?;
        Ok(Zeroizing::new(key))
    }

    /// Destroys a data key: whatever was sealed under it can never be read again. Returns
    /// whether it existed (destroying twice is harmless).
    pub async fn destroy(&self, key_id: Uuid) -> Result<bool, KeyringError> {
        let done = sqlx::query("DELETE FROM data_keys WHERE key_id = $1").bind(key_id.to_string()).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Re-wraps every data key under `new`, in one transaction: either all keys move to the new
    /// master key or none do. Fails, changing nothing, if any key does not unwrap under the
    /// current one. Returns the number of keys re-wrapped.
    pub async fn rotate(&self, new: &MasterKey) -> Result<u64, KeyringError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT key_id, master_key_id, nonce, wrapped FROM data_keys").fetch_all(&mut *tx).await?;
        let mut count = 0;
        for row in rows {
            let key_id = Uuid::parse_str(&row.try_get::<String, _>(0)?).map_err(|_| KeyringError::Corrupt(Uuid::nil()))?;
            let wrapped_under: String = row.try_get(1)?;
            if wrapped_under == new.id() {
                continue; // Already moved by an earlier, interrupted rotation.
            }
            if wrapped_under != self.master.id() {
                return Err(KeyringError::WrongMasterKey { key_id, wrapped_under, this_key: self.master.id() });
            }
            let data_key = self.unwrap(key_id, &row.try_get::<Vec<u8>, _>(2)?, &row.try_get::<Vec<u8>, _>(3)?, &self.master)?;
            let (nonce, wrapped) = encrypt(new.bytes(), data_key.as_slice(), &wrap_aad(key_id));
            sqlx::query("UPDATE data_keys SET master_key_id = $1, nonce = $2, wrapped = $3 WHERE key_id = $4")
                .bind(new.id())
                .bind(nonce)
                .bind(wrapped)
                .bind(key_id.to_string())
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Ids of the data keys created at least `age` ago (whole seconds).
    pub async fn keys_older_than(&self, age: Duration) -> Result<Vec<Uuid>, KeyringError> {
        let cutoff = now_secs() - age.as_secs() as i64;
        let ids: Vec<String> = sqlx::query_scalar("SELECT key_id FROM data_keys WHERE created_at <= $1").bind(cutoff).fetch_all(&self.pool).await?;
        ids.iter().map(|id| Uuid::parse_str(id).map_err(|_| KeyringError::Corrupt(Uuid::nil()))).collect()
    }

    /// Unwraps every data key with the current master key; returns how many there are.
    pub async fn verify(&self) -> Result<u64, KeyringError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT key_id FROM data_keys").fetch_all(&self.pool).await?;
        for id in &ids {
            self.data_key(Uuid::parse_str(id).map_err(|_| KeyringError::Corrupt(Uuid::nil()))?).await?;
        }
        Ok(ids.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn keyring(dir: &std::path::Path, master: MasterKey) -> Keyring {
        Keyring::open(&format!("sqlite://{}?mode=rwc", dir.join("keys.db").display()), master).await.unwrap()
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nullops-keyring-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn sealed_values_open_only_for_their_purpose_and_never_after_destruction() {
        let dir = temp_dir();
        let ring = keyring(&dir, MasterKey::generate()).await;
        let sealed = ring.seal(b"hunter2", "secret:shop:DB").await.unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(ring.unseal(&sealed, "secret:shop:DB").await.unwrap().as_slice(), b"hunter2");
        assert!(matches!(ring.unseal(&sealed, "secret:shop:OTHER").await, Err(KeyringError::Corrupt(_))));
        assert!(ring.destroy(sealed.key_id).await.unwrap());
        assert!(matches!(ring.unseal(&sealed, "secret:shop:DB").await, Err(KeyringError::Destroyed(_))));
        assert!(!ring.destroy(sealed.key_id).await.unwrap());
        // The key's bytes are gone from the file too, not only from the table.
        let file = std::fs::read(dir.join("keys.db")).unwrap();
        assert!(!file.windows(16).any(|w| w == &sealed.key_id.to_string().as_bytes()[..16]));
    }

    #[tokio::test]
    async fn rotation_moves_every_key_to_the_new_master_and_the_old_one_stops_working() {
        let dir = temp_dir();
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let ring = keyring(&dir, old.clone()).await;
        let a = ring.seal(b"a", "p").await.unwrap();
        let b = ring.seal(b"b", "p").await.unwrap();
        assert_eq!(ring.rotate(&new).await.unwrap(), 2);
        drop(ring);
        let rotated = keyring(&dir, new).await;
        assert_eq!(rotated.verify().await.unwrap(), 2);
        assert_eq!(rotated.unseal(&a, "p").await.unwrap().as_slice(), b"a");
        assert_eq!(rotated.unseal(&b, "p").await.unwrap().as_slice(), b"b");
        let stale = keyring(&dir, old).await;
        assert!(matches!(stale.unseal(&a, "p").await, Err(KeyringError::WrongMasterKey { .. })));
        assert!(stale.verify().await.is_err());
    }
}
