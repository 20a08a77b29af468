//! TLS termination: certificates loaded and checked before Pingora sees them
//! (its own loader panics on a bad file), served through a resolver so SIGHUP
//! can swap them without dropping a connection.

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct CertError {
    /// The file at fault.
    pub file: String,
    /// What is wrong with it.
    pub problem: String,
}

fn cert_error(file: &Path, problem: impl Into<String>) -> CertError {
    CertError {
        file: file.display().to_string(),
        problem: problem.into(),
    }
}

/// PEM parse errors in words (the crate's own text prints raw bytes).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => {
            format!(
                "broken PEM: a {} section has no END line",
                String::from_utf8_lossy(end_marker)
            )
        }
        E::IllegalSectionStart { line } => {
            format!(
                "broken PEM: bad BEGIN line {:?}",
                String::from_utf8_lossy(line)
            )
        }
        E::Base64Decode(why) => format!("broken PEM: bad base64 ({why})"),
        E::NoItemsFound => "nothing of the expected kind in the file".to_string(),
        other => other.to_string(),
    }
}

/// Reads and checks a PEM chain and key: the chain is not empty, the key parses,
/// and the key belongs to the leaf certificate.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            cert_error(
                cert,
                format!("cannot read certificate: {}", pem_problem(&e)),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(cert, pem_problem(&e)))?;
    if chain.is_empty() {
        return Err(cert_error(
            cert,
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\")",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        cert_error(
            key,
            format!(
                "no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {}",
                pem_problem(&e)
            ),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => cert_error(
            key,
            format!(
                "private key does not match the certificate in {}",
                cert.display()
            ),
        ),
        other => cert_error(key, format!("unusable key or certificate: {other}")),
    })
}

/// The live certificate, swappable at run time.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .finish()
    }
}

impl CertStore {
    /// Loads the pair; an error here stops start-up with a message naming the file.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Self>, CertError> {
        let ck = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(ck),
        }))
    }

    /// Re-reads the files; on any problem the old certificate stays in use.
    pub fn reload(&self) -> Result<(), CertError> {
        let ck = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(ck));
        Ok(())
    }

    /// Pingora listener settings: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
    pub fn settings(self: &Arc<Self>) -> pingora::Result<TlsSettings> {
        let mut s = TlsSettings::intermediate("", "")?;
        s.set_cert_resolver(self.clone());
        s.enable_h2();
        Ok(s)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Reloads the certificate and key, logging the outcome: a broken pair
    /// keeps the old one (what SIGHUP does).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(target: "tls", cert = %self.cert.display(), "certificate reloaded")
            }
            Err(e) => {
                tracing::error!(target: "tls", error = %e, "certificate reload failed; keeping the old one")
            }
        }
    }
}
