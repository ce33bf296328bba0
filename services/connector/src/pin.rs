//! Certificate pinning: the agent is identified by the SHA-256 thumbprint of its self-signed
//! certificate, not by a CA.
//!
//! Comparing the thumbprint is only half: the certificate is public, so anyone can present it. The
//! handshake signature, which only the holder of the certificate's private key can make, is still
//! verified with that (pinned) certificate's key. A verifier that skipped it would accept any
//! impostor that replays the public certificate.

use std::sync::{Arc, Mutex};

use nullops_wire::Thumbprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

#[derive(Debug)]
pub struct PinVerifier {
    /// `None` on first contact: the certificate presented is accepted and becomes the pin.
    pinned: Option<Thumbprint>,
    /// What the agent presented, so the caller can tell a mismatch from other failures.
    presented: Arc<Mutex<Option<Thumbprint>>>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub fn new(pinned: Option<Thumbprint>, provider: Arc<CryptoProvider>) -> (Self, Arc<Mutex<Option<Thumbprint>>>) {
        let presented = Arc::new(Mutex::new(None));
        (PinVerifier { pinned, presented: presented.clone(), provider }, presented)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let thumbprint = Thumbprint::of_certificate(end_entity);
        *self.presented.lock().expect("presented lock") = Some(thumbprint);
        match self.pinned {
            Some(pinned) if pinned != thumbprint => Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    // rustls calls these with the end-entity certificate accepted above: the pinned one.
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
