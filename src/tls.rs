//! TLS at the edge: certificates chosen by SNI from the same customer snapshot that
//! routes requests, and the SNI a connection was opened with, kept for the
//! domain-fronting check.
//!
//! Certificates are part of the validated config ([`crate::config::Certificate`]): a file
//! that does not parse, a key that does not match its certificate, or a certificate that
//! does not cover one of the customer's hosts is a config error, and the running config
//! (certificates included) stays. The handshake keys are made from them here, once per
//! certificate, and kept while a config in force names it.
//!
//! Written here rather than taken from rustls: its stock `ResolvesServerCertUsingSni`
//! knows exact names only (no wildcards), and is a second table to keep in step with
//! the routing one. This resolver asks the routing table itself, so a reload swaps
//! hosts and certificates in one store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{Certificate, Customers};

/// Picks the certificate for a handshake: the customer the SNI routes to (exact name,
/// then wildcards, as requests are routed), else `tls.default`, else none (the handshake
/// fails).
pub struct Resolver {
    customers: Arc<ArcSwap<Customers>>,
    default: Arc<ArcSwapOption<Certificate>>,
    /// Handshake keys by certificate fingerprint, made on a certificate's first
    /// handshake; those no config in force names are dropped when another is made.
    keys: ArcSwap<HashMap<u64, Arc<CertifiedKey>>>,
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
        Resolver {
            customers,
            default,
            keys: ArcSwap::default(),
        }
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let snapshot = self.customers.load();
            if let Some(cert) = snapshot.route(name).and_then(|c| c.tls.as_ref()) {
                return self.key_of(cert);
            }
        }
        let default = self.default.load_full()?;
        self.key_of(&default)
    }

    /// The handshake key of `cert`, made once.
    fn key_of(&self, cert: &Certificate) -> Option<Arc<CertifiedKey>> {
        if let Some(key) = self.keys.load().get(&cert.fingerprint) {
            return Some(key.clone());
        }
        let key = match cert.certified_key() {
            Ok(key) => Arc::new(key),
            Err(e) => {
                // Checked when the config loaded; only a bug gets here.
                log::error!("tls: {e}");
                return None;
            }
        };
        let in_force = self.fingerprints_in_force();
        self.keys.rcu(|keys| {
            let mut keys: HashMap<u64, Arc<CertifiedKey>> = keys
                .iter()
                .filter(|(fp, _)| in_force.contains(fp))
                .map(|(fp, k)| (*fp, k.clone()))
                .collect();
            keys.insert(cert.fingerprint, key.clone());
            keys
        });
        Some(key)
    }

    /// The fingerprints of the certificates the running config names.
    fn fingerprints_in_force(&self) -> Vec<u64> {
        let snapshot = self.customers.load();
        let mut in_force: Vec<u64> = snapshot
            .list
            .iter()
            .filter_map(|c| c.tls.as_ref().map(|t| t.fingerprint))
            .collect();
        in_force.extend(self.default.load().as_ref().map(|c| c.fingerprint));
        in_force
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
