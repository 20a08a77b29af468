//! Test-only PKI, generated at test time: a root, an intermediate and a leaf.
//! Nothing here is a real secret and nothing is written to the repository.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// PEMs for one server identity.
pub struct Pki {
    /// What a client trusts.
    pub root_pem: String,
    /// Leaf then intermediate: what the server sends.
    pub chain_pem: String,
    pub key_pem: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A fresh root → intermediate → leaf for `dns_name`.
pub fn pki(dns_name: &str) -> Pki {
    let root = CertifiedIssuer::self_signed(
        ca_params("esprit-edge TEST-ONLY root"),
        KeyPair::generate().expect("key"),
    )
    .expect("root");
    let inter = CertifiedIssuer::signed_by(
        ca_params("esprit-edge TEST-ONLY intermediate"),
        KeyPair::generate().expect("key"),
        &root,
    )
    .expect("intermediate");
    let leaf_key = KeyPair::generate().expect("key");
    let mut lp = CertificateParams::new(vec![dns_name.to_string()]).expect("params");
    lp.distinguished_name.push(DnType::CommonName, dns_name);
    let leaf = lp.signed_by(&leaf_key, &inter).expect("leaf");
    Pki {
        root_pem: root.pem(),
        chain_pem: format!("{}{}", leaf.pem(), inter.pem()),
        key_pem: leaf_key.serialize_pem(),
    }
}

impl Pki {
    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.chain_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// An HTTPS client that trusts only this PKI's root and resolves `host` to the edge.
    pub fn client(&self, host: &str, addr: std::net::SocketAddr) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.root_pem.as_bytes()).expect("root"),
            )
            .tls_built_in_root_certs(false)
            .resolve(host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
    }
}
