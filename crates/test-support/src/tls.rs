//! Self-signed certificates for TLS servers a test starts (HTTPS, Redis,
//! PostgreSQL, a JWK set server): the certificate is its own CA, so a client
//! trusts it by taking the PEM as its CA file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

/// A fresh certificate and key for some host names (and IP addresses).
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl SelfSigned {
    pub fn new(names: &[&str]) -> SelfSigned {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
        SelfSigned {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
            cert_der: cert.cert.der().to_vec(),
            key_der: cert.signing_key.serialize_der(),
        }
    }

    /// The certificate, for a client's root store.
    pub fn cert_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        rustls_pki_types::CertificateDer::from(self.cert_der.clone())
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }

    /// A rustls server acceptor presenting this certificate (ring, TLS 1.2
    /// and 1.3; no process-wide provider installed).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let certs = vec![CertificateDer::from(self.cert_der.clone())];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the certificate and key work together");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
