//! TLS termination: a certificate chain (usually a wildcard for the base domains) and its key,
//! read from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the ingress certificate {path}: {detail}")]
    Certificate { path: String, detail: String },
    #[error("cannot read the ingress key {path}: {detail}")]
    Key { path: String, detail: String },
    #[error("the ingress certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A TLS 1.2/1.3 server configuration (HTTP/1.1 by ALPN) from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_error = |detail: String| TlsError::Certificate { path: cert.display().to_string(), detail };
    let chain =
        CertificateDer::pem_file_iter(cert).map_err(|e| cert_error(e.to_string()))?.collect::<Result<Vec<_>, _>>().map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("it holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.display().to_string(), detail: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
