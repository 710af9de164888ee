//! TLS at the edge: certificates loaded and checked with the config, chosen by SNI from
//! the same customer snapshot that routes requests, and the SNI a connection was opened
//! with, kept for the domain-fronting check.
//!
//! Certificates are part of the validated config: a file that does not parse, a key
//! that does not match its certificate, or a certificate that does not cover one of the
//! customer's hosts is a config error, and the running config (certificates included)
//! stays. Nothing here panics on user input.
//!
//! Written here rather than taken from rustls: its stock `ResolvesServerCertUsingSni`
//! knows exact names only (no wildcards), and is a second table to keep in step with
//! the routing one. This resolver asks the routing table itself, so a reload swaps
//! hosts and certificates in one store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::Customers;

/// A certificate chain with its private key, ready for handshakes.
#[derive(Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
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
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "the private key {} does not fit the certificate {} ({e}); give the key the \
             certificate was issued for",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Certificate {
        key: Arc::new(certified),
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        fingerprint: fingerprint(&cert_pem, &key_pem),
    })
}

impl Certificate {
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
    let Some(leaf) = cert.key.cert.first() else {
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

/// Picks the certificate for a handshake: the customer the SNI routes to (exact name,
/// then wildcards, as requests are routed), else `tls.default`, else none (the handshake
/// fails).
pub struct Resolver {
    customers: Arc<ArcSwap<Customers>>,
    default: Arc<ArcSwapOption<Certificate>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// `default` is swapped by reloads of the node file (`tls.default`).
    pub fn new(
        customers: Arc<ArcSwap<Customers>>,
        default: Arc<ArcSwapOption<Certificate>>,
    ) -> Resolver {
        Resolver { customers, default }
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let snapshot = self.customers.load();
            if let Some(cert) = snapshot.route(name).and_then(|c| c.tls.as_ref()) {
                return Some(cert.key.clone());
            }
        }
        self.default.load().as_ref().map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.pick(hello.server_name());
        if cert.is_none() {
            log::debug!(
                "tls: no certificate for SNI {:?} and no tls.default; refusing the handshake",
                hello.server_name()
            );
        }
        cert
    }
}

/// The SNI a TLS connection was opened with, kept in its TLS digest.
#[derive(Debug)]
pub struct Sni(pub Option<String>);

/// Records each handshake's SNI for the requests on that connection.
pub struct RecordSni;

#[async_trait]
impl TlsAccept for RecordSni {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(Arc::new(Sni(tls
            .server_name()
            .map(|s| s.to_ascii_lowercase()))))
    }
}

/// How a request arrived: over TLS (with the SNI its connection named), and in which
/// HTTP version. Logged with every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    pub tls: bool,
    pub h2: bool,
    /// The connection's SNI, lower-cased; `None` without TLS or when the client sent none.
    pub sni: Option<String>,
}

impl Transport {
    /// `h1`, `h2`, `h1+tls` or `h2+tls`: the access log's `proto=`.
    pub fn name(&self) -> &'static str {
        match (self.h2, self.tls) {
            (false, false) => "h1",
            (true, false) => "h2",
            (false, true) => "h1+tls",
            (true, true) => "h2+tls",
        }
    }

    /// The scheme requests on this connection are keyed and forwarded with.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}
