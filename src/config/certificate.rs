//! TLS certificates as the config holds them: read and checked with the config (the PEM
//! parses, the key fits the certificate, its names cover the customer's hosts), kept as
//! plain data. A file that fails is a config error and the running config stays; nothing
//! here panics on user input. The TLS listeners' resolver (`crate::tls`) makes the
//! handshake keys from these.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::Customers;

/// A certificate chain and its private key as the config holds them: the files'
/// paths, their contents in DER, and a digest of both files. Checked when loaded; the
/// key handshakes sign with is made from it by [`Certificate::certified_key`].
#[derive(Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The chain, the leaf first.
    pub chain: Arc<[CertificateDer<'static>]>,
    key: Arc<PrivateKeyDer<'static>>,
    /// A digest of both files' bytes: a reload with the same files changes nothing.
    pub fingerprint: u64,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Certificate {}

/// Read a PEM certificate chain (leaf first) and its PEM private key, and check that
/// they belong together. The error says which file and what to do.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificate, String> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?;
    let key_pem = std::fs::read(key_path)
        .map_err(|e| format!("cannot read the private key {}: {e}", key_path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the certificate {} is not valid PEM ({e}); give a PEM file with \
                 -----BEGIN CERTIFICATE----- blocks, the leaf first",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate {} holds no certificate; give a PEM file with \
             -----BEGIN CERTIFICATE----- blocks, the leaf first",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "the private key {} holds no usable private key ({e}); give a PEM file with a \
             PKCS#8, RSA or EC private key",
            key_path.display()
        )
    })?;
    let cert = Certificate {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        chain: chain.into(),
        key: Arc::new(key),
        fingerprint: fingerprint(&cert_pem, &key_pem),
    };
    // Checked now, so that a key that does not fit is a config error, not a failed
    // handshake later.
    cert.certified_key()?;
    Ok(cert)
}

impl Certificate {
    /// The chain with its signing key, as rustls takes it for a handshake.
    pub fn certified_key(&self) -> Result<CertifiedKey, String> {
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(self.chain.to_vec(), self.key.clone_key(), &provider).map_err(|e| {
            format!(
                "the private key {} does not fit the certificate {} ({e}); give the key \
                     the certificate was issued for",
                self.key_path.display(),
                self.cert_path.display()
            )
        })
    }

    /// Whether the files now hold something else than what was loaded (or cannot be
    /// read): a reload then loads them again.
    pub fn changed_on_disk(&self) -> bool {
        match (
            std::fs::read(&self.cert_path),
            std::fs::read(&self.key_path),
        ) {
            (Ok(cert), Ok(key)) => fingerprint(&cert, &key) != self.fingerprint,
            _ => true,
        }
    }
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> u64 {
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(cert_pem);
    digest.update(key_pem);
    digest.digest()
}

/// Whether any certificate of `customers` changed on disk since it was loaded.
pub fn any_changed(customers: &Customers) -> bool {
    customers
        .list
        .iter()
        .filter_map(|c| c.tls.as_ref())
        .any(Certificate::changed_on_disk)
}

/// Whether the leaf certificate is valid for `host` (a customer host; `*.shop.example.com`
/// asks for a name one label under `shop.example.com`, which a wildcard certificate
/// covers). Only the names are checked here, not the dates or the issuer: an expired
/// certificate is the operator's to replace, and the client's to refuse.
pub fn covers(cert: &Certificate, host: &str) -> bool {
    let Some(leaf) = cert.chain.first() else {
        return false;
    };
    let Ok(parsed) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let probe = match host.strip_prefix("*.") {
        Some(parent) => format!("holdfast-probe.{parent}"),
        None => host.to_string(),
    };
    let Ok(name) = ServerName::try_from(probe) else {
        return false;
    };
    parsed.verify_is_valid_for_subject_name(&name).is_ok()
}
