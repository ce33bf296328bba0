//! The agent's TLS identity: a self-signed certificate generated on first start and kept in the
//! data dir, so its thumbprint stays the one the control plane pinned across restarts.

use std::path::Path;

use nullops_wire::Thumbprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::write_atomically;
use crate::AgentError;

pub const CERT_FILE: &str = "agent.crt";
pub const KEY_FILE: &str = "agent.key";

pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub thumbprint: Thumbprint,
}

/// Loads the certificate and key from `data_dir`, generating both when neither exists. One
/// without the other is an error: regenerating would silently change the thumbprint.
pub fn load_or_generate(data_dir: &Path) -> Result<Identity, AgentError> {
    let (cert_path, key_path) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            let generated = rcgen::generate_simple_self_signed(vec!["nullops-agent".to_owned()])
                .map_err(|e| AgentError::Identity(format!("cannot generate a certificate: {e}")))?;
            // The key first: a certificate on disk without its key would be unusable.
            write_atomically(&key_path, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
            write_atomically(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "generated the agent certificate");
        }
        (true, true) => {}
        _ => {
            return Err(AgentError::Identity(format!(
                "{} holds only one of {CERT_FILE} and {KEY_FILE}; restore the other, or delete both to generate a new identity (the control plane will then need an admin to approve it)",
                data_dir.display()
            )))
        }
    }
    let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| AgentError::Identity(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| AgentError::Identity(format!("{}: {e}", key_path.display())))?;
    let thumbprint = Thumbprint::of_certificate(&cert);
    Ok(Identity { cert, key, thumbprint })
}
