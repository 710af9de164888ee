//! The running customer config and what is known about it: where it came from, when it
//! was applied, when a control plane last confirmed it, and what failed since.
//!
//! The proxy reads only the `ArcSwap`; everything else is for operators (`GET /config`,
//! `/metrics`) and for the sync decisions. A new config is always built and validated
//! before it gets here; applying it is one `store()`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::fetch::Validators;
use crate::config::{ConfigSource, Customers};
use crate::metrics::{counter, family, gauge, Collector, Kind};
use prometheus_client::encoding::DescriptorEncoder;

/// The config a node starts with, before its first sync.
pub struct Start {
    pub customers: Arc<Customers>,
    pub source: ConfigSource,
    /// The raw document text, for a config from the control plane or the cache file.
    pub document: Option<Arc<str>>,
    /// When the config was last known to match the control plane (the cache file's
    /// modification time when starting from it).
    pub confirmed_at: Option<SystemTime>,
    /// Control-plane URLs (empty without a control plane).
    pub urls: Vec<String>,
    /// The cache file and the version it holds, if valid.
    pub cache_file: Option<(PathBuf, Option<u64>)>,
}

/// Shared by the proxy (customers), the sync loop and the admin listener.
pub struct ConfigState {
    customers: Arc<ArcSwap<Customers>>,
    /// `tls.default` of the node file, read by the TLS resolver.
    tls_default: Arc<ArcSwapOption<crate::config::Certificate>>,
    status: Mutex<Status>,
}

struct Status {
    source: ConfigSource,
    applied_at: SystemTime,
    last_sync_ok: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    consecutive_failures: u64,
    failures_total: u64,
    applied_total: u64,
    document: Option<Arc<str>>,
    replicas: Vec<Replica>,
    cache_file: Option<CacheFile>,
}

/// What we know of one control-plane URL.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    pub url: String,
    /// Validators of the last document accepted from it, and that document's version:
    /// a 304 means "still that version".
    pub validators: Validators,
    pub version: Option<u64>,
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<String>,
}

struct CacheFile {
    path: PathBuf,
    /// The version the file holds, when it holds a valid document.
    version: Option<u64>,
    write_failures_total: u64,
    last_write_error: Option<String>,
}

/// The running config, as the sync decisions see it.
pub struct Running {
    pub version: u64,
    pub source: ConfigSource,
    pub document: Option<Arc<str>>,
}

impl ConfigState {
    pub fn new(start: Start) -> ConfigState {
        let now = SystemTime::now();
        ConfigState {
            customers: Arc::new(ArcSwap::new(start.customers)),
            tls_default: Arc::new(ArcSwapOption::empty()),
            status: Mutex::new(Status {
                source: start.source,
                applied_at: now,
                last_sync_ok: start.confirmed_at,
                last_error: None,
                consecutive_failures: 0,
                failures_total: 0,
                applied_total: 0,
                document: start.document,
                replicas: start
                    .urls
                    .into_iter()
                    .map(|url| Replica {
                        url,
                        ..Replica::default()
                    })
                    .collect(),
                cache_file: start.cache_file.map(|(path, version)| CacheFile {
                    path,
                    version,
                    write_failures_total: 0,
                    last_write_error: None,
                }),
            }),
        }
    }

    /// The node's `tls.default` certificate, as the TLS resolver reads it.
    pub fn tls_default(&self) -> Arc<ArcSwapOption<crate::config::Certificate>> {
        self.tls_default.clone()
    }

    /// The handle the proxy reads once per request.
    pub fn customers(&self) -> Arc<ArcSwap<Customers>> {
        self.customers.clone()
    }

    pub fn running(&self) -> Running {
        let s = self.status.lock();
        Running {
            version: self.customers.load().version,
            source: s.source,
            document: s.document.clone(),
        }
    }

    pub fn source(&self) -> ConfigSource {
        self.status.lock().source
    }

    /// How long since the running config was last known current: since the last
    /// successful sync (or the cache file's write), else since it was applied.
    pub fn age(&self, now: SystemTime) -> Duration {
        let s = self.status.lock();
        let since = s.last_sync_ok.unwrap_or(s.applied_at);
        now.duration_since(since).unwrap_or_default()
    }

    /// Swap in a fully validated config. In-flight requests keep their snapshot.
    pub fn apply(
        &self,
        customers: Arc<Customers>,
        source: ConfigSource,
        document: Option<Arc<str>>,
        now: SystemTime,
    ) {
        let mut s = self.status.lock();
        self.customers.store(customers);
        s.source = source;
        s.document = document;
        s.applied_at = now;
        s.applied_total += 1;
        s.consecutive_failures = 0;
        if source == ConfigSource::ControlPlane {
            s.last_sync_ok = Some(now);
        }
    }

    /// A control plane confirmed the running config.
    pub fn confirmed(&self, now: SystemTime) {
        let mut s = self.status.lock();
        s.last_sync_ok = Some(now);
        s.consecutive_failures = 0;
        // Same version as the control plane serves: it is the control plane's config now.
        if s.source == ConfigSource::CacheFile {
            s.source = ConfigSource::ControlPlane;
        }
    }

    /// A reload found the running config as it is: earlier failures are over.
    pub fn unchanged(&self) {
        self.status.lock().consecutive_failures = 0;
    }

    /// A sync or reload failed; the running config stays. Returns the failures in a row.
    pub fn failed(&self, reason: &str, now: SystemTime) -> u64 {
        let mut s = self.status.lock();
        s.consecutive_failures += 1;
        s.failures_total += 1;
        s.last_error = Some((now, reason.to_string()));
        s.consecutive_failures
    }

    pub fn replicas(&self) -> Vec<Replica> {
        self.status.lock().replicas.clone()
    }

    pub fn set_replicas(&self, replicas: Vec<Replica>) {
        self.status.lock().replicas = replicas;
    }

    /// The cache file's path, when the running control-plane document is not in it yet.
    pub fn cache_file_lags(&self) -> Option<PathBuf> {
        let s = self.status.lock();
        let version = self.customers.load().version;
        let cf = s.cache_file.as_ref()?;
        (s.source == ConfigSource::ControlPlane && cf.version != Some(version))
            .then(|| cf.path.clone())
    }

    pub fn cache_file_written(&self, version: u64) {
        if let Some(cf) = self.status.lock().cache_file.as_mut() {
            cf.version = Some(version);
            cf.last_write_error = None;
        }
    }

    pub fn cache_file_failed(&self, error: &str) {
        if let Some(cf) = self.status.lock().cache_file.as_mut() {
            cf.write_failures_total += 1;
            cf.last_write_error = Some(error.to_string());
        }
    }

    /// The `GET /config` body.
    pub fn to_json(&self, now: SystemTime) -> Value {
        let customers = self.customers.load();
        let age = self.age(now).as_secs();
        let s = self.status.lock();
        let mut v = json!({
            "version": customers.version,
            "source": s.source.as_str(),
            "applied_at": time(s.applied_at),
            "last_sync_ok": s.last_sync_ok.map(time),
            "age_seconds": age,
            "last_error": s.last_error.as_ref().map(|e| e.1.clone()),
            "last_error_at": s.last_error.as_ref().map(|e| time(e.0)),
            "consecutive_failures": s.consecutive_failures,
            "failures_total": s.failures_total,
            "applied_total": s.applied_total,
            "customers": customers.list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        });
        if !s.replicas.is_empty() {
            v["replicas"] = s
                .replicas
                .iter()
                .map(|r| {
                    json!({
                        "url": r.url,
                        "version": r.version,
                        "etag": r.validators.etag,
                        "last_modified": r.validators.last_modified,
                        "last_ok": r.last_ok.map(time),
                        "last_error": r.last_error,
                    })
                })
                .collect();
        }
        if let Some(cf) = &s.cache_file {
            v["cache_file"] = json!({
                "path": cf.path.display().to_string(),
                "version": cf.version,
                "write_failures_total": cf.write_failures_total,
                "last_write_error": cf.last_write_error,
            });
        }
        v
    }

    /// The config state's families on `/metrics`, at `now`.
    fn encode_metrics(&self, enc: &mut DescriptorEncoder, now: SystemTime) -> fmt::Result {
        let version = self.customers.load().version;
        let age = self.age(now).as_secs();
        let s = self.status.lock();
        gauge(
            enc,
            "holdfast_config_version",
            "Version of the running customer config (0 for inline customers).",
            version,
        )?;
        gauge(
            enc,
            "holdfast_config_age_seconds",
            "Seconds since the running config was last confirmed by a control plane (or applied).",
            age,
        )?;
        counter(
            enc,
            "holdfast_config_applied_total",
            "Customer configs applied since start.",
            s.applied_total,
        )?;
        counter(
            enc,
            "holdfast_config_sync_failures_total",
            "Syncs and reloads that failed and left the running config in place.",
            s.failures_total,
        )?;
        gauge(
            enc,
            "holdfast_config_sync_consecutive_failures",
            "Syncs and reloads failed in a row.",
            s.consecutive_failures,
        )?;
        counter(
            enc,
            "holdfast_config_cache_file_write_failures_total",
            "Failed writes of the last-known-good cache_file.",
            s.cache_file.as_ref().map_or(0, |c| c.write_failures_total),
        )?;
        family(
            enc,
            "holdfast_config_source",
            "Where the running config came from.",
            Kind::Gauge,
            [
                ConfigSource::Inline,
                ConfigSource::CacheFile,
                ConfigSource::ControlPlane,
            ]
            .map(|src| ([("source", src.as_str())], u64::from(src == s.source))),
        )
    }
}

/// The config state's families on `/metrics`.
pub struct ConfigMetrics(pub Arc<ConfigState>);

impl fmt::Debug for ConfigMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigMetrics")
    }
}

impl Collector for ConfigMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.0.encode_metrics(&mut enc, SystemTime::now())
    }
}

/// RFC 3339, UTC.
pub fn time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.round(jiff::Unit::Millisecond).unwrap_or(ts).to_string())
        .unwrap_or_default()
}
