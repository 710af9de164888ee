//! One sync round against the control plane, and the reload of the node file.
//!
//! Rounds are serialized (the poller, `POST /reload` and SIGHUP may race). A round asks
//! every replica at once, validates every document in full, takes the newest valid
//! version and applies it only when it is newer than the running one. Anything else
//! leaves the running config untouched and is logged with its reason and counted.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{debug, info, warn};
use serde_json::{json, Value};

use super::atomic::write_atomic;
use super::fetch::{Fetched, Fetcher, Validators};
use super::state::ConfigState;
use crate::config::{
    self, ConfigSource, ControlPlaneConfig, CustomerDocument, Customers, NodeConfig,
};

/// How a sync or reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new config is running.
    Applied { version: u64 },
    /// The running config is current.
    Unchanged { version: u64 },
    /// Nothing changed; the reason says why.
    Failed { reason: String },
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Applied { version } => json!({ "result": "applied", "version": version }),
            Outcome::Unchanged { version } => json!({ "result": "unchanged", "version": version }),
            Outcome::Failed { reason } => json!({ "result": "failed", "error": reason }),
        }
    }
}

/// Fetches, validates and applies customer configs for one node.
pub struct Syncer {
    state: Arc<ConfigState>,
    node_file: PathBuf,
    /// The node file's text whose inline customers run (when they do), so that a reload
    /// of the same text says "unchanged".
    inline_text: parking_lot::Mutex<Option<String>>,
    cp: Option<ControlPlane>,
    round: tokio::sync::Mutex<()>,
}

struct ControlPlane {
    config: ControlPlaneConfig,
    fetcher: Fetcher,
}

/// What one replica answered, once validated.
enum Answer {
    /// 304: still the version we accepted from it before.
    Same(u64),
    New {
        doc: CustomerDocument,
        text: Arc<str>,
        validators: Validators,
    },
    /// Taken out of the list to be applied.
    Applied,
    Failed(String),
}

impl Syncer {
    pub fn new(state: Arc<ConfigState>, node: &NodeConfig) -> Syncer {
        let cp = node.control_plane.as_ref().map(|cp| {
            let token = cp
                .token_env
                .as_ref()
                .and_then(|name| match std::env::var(name) {
                    Ok(t) if !t.is_empty() => Some(t),
                    _ => {
                        warn!(
                            "config: control_plane.token_env names {name}, which is not set; \
                         asking the control plane without a token"
                        );
                        None
                    }
                });
            ControlPlane {
                fetcher: Fetcher::new(cp.timeout, cp.max_document, token),
                config: cp.clone(),
            }
        });
        state
            .tls_default()
            .store(node.tls_default.clone().map(Arc::new));
        Syncer {
            state,
            node_file: node.source.clone(),
            inline_text: parking_lot::Mutex::new(std::fs::read_to_string(&node.source).ok()),
            cp,
            round: tokio::sync::Mutex::new(()),
        }
    }

    pub fn state(&self) -> &Arc<ConfigState> {
        &self.state
    }

    /// The poll interval, when there is a control plane.
    pub fn interval(&self) -> Option<Duration> {
        self.cp.as_ref().map(|cp| cp.config.interval)
    }

    /// SIGHUP and `POST /reload`: sync now with a control plane, else re-read the node
    /// file's inline customers.
    /// Certificate files rotated in place are read again either way.
    pub async fn reload(&self) -> Outcome {
        if self.cp.is_some() {
            let outcome = self.sync_now().await;
            match outcome {
                Outcome::Applied { .. } => outcome,
                _ => {
                    self.reload_default_certificate().await;
                    self.reload_document_certificates().await.unwrap_or(outcome)
                }
            }
        } else {
            self.reload_file().await
        }
    }

    /// With a control plane, the node file's `tls.default` is read again on a reload.
    async fn reload_default_certificate(&self) {
        let running = self.state.tls_default().load_full();
        if !running.as_ref().is_some_and(|c| c.changed_on_disk()) {
            return;
        }
        let path = self.node_file.clone();
        match tokio::task::spawn_blocking(move || config::load_node_file(&path)).await {
            Ok(Ok(node)) => {
                info!("config: tls.default changed on disk; serving the new certificate");
                self.state
                    .tls_default()
                    .store(node.tls_default.map(Arc::new));
            }
            Ok(Err(e)) => warn!("config: tls.default changed but cannot be loaded: {e}; the running certificate stays"),
            Err(e) => warn!("config: reading tls.default: {e}"),
        }
    }

    /// The running document again, when a certificate it names changed on disk (a
    /// renewal in place): `None` when none did.
    async fn reload_document_certificates(&self) -> Option<Outcome> {
        let _round = self.round.lock().await;
        let running = self.state.running();
        let document = running.document.clone()?;
        let customers = self.state.customers().load_full();
        let changed = tokio::task::spawn_blocking(move || crate::config::any_changed(&customers))
            .await
            .unwrap_or(false);
        if !changed {
            return None;
        }
        let base = config::base_dir_of(&self.node_file).to_path_buf();
        let text = document.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            config::parse_customer_document("the running document", &text, &base)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let now = SystemTime::now();
        Some(match parsed {
            Ok(doc) => {
                let version = doc.version;
                self.state
                    .apply(Arc::new(doc.customers), running.source, Some(document), now);
                info!("config: certificates changed on disk; version {version} applied again with them");
                Outcome::Applied { version }
            }
            Err(reason) => {
                let reason = format!("a certificate changed on disk but cannot be used: {reason}");
                self.state.failed(&reason, now);
                warn!("config: {reason}; the running certificates stay");
                Outcome::Failed { reason }
            }
        })
    }

    /// One round against every control-plane replica.
    pub async fn sync_now(&self) -> Outcome {
        let Some(cp) = &self.cp else {
            return Outcome::Failed {
                reason: "no control_plane is configured".into(),
            };
        };
        let _round = self.round.lock().await;
        let mut replicas = self.state.replicas();
        let fetches = cp
            .config
            .urls
            .iter()
            .zip(&replicas)
            .map(|(url, r)| cp.fetcher.fetch(url, &r.validators));
        let results = futures::future::join_all(fetches).await;
        let now = SystemTime::now();

        let mut answers: Vec<Answer> = results
            .into_iter()
            .zip(&replicas)
            .map(|(result, r)| match result {
                Ok(Fetched::NotModified) => match r.version {
                    Some(v) => Answer::Same(v),
                    None => Answer::Failed("answered 304 to a request without validators".into()),
                },
                Ok(Fetched::Document { text, validators }) => {
                    match config::parse_customer_document(
                        &r.url,
                        &text,
                        config::base_dir_of(&self.node_file),
                    ) {
                        Ok(doc) => Answer::New {
                            doc,
                            text: text.into(),
                            validators,
                        },
                        Err(e) => Answer::Failed(format!("invalid document: {e}")),
                    }
                }
                Err(e) => Answer::Failed(e.to_string()),
            })
            .collect();

        let running = self.state.running();
        // Inline customers are only the default: any valid document replaces them.
        let running_cp = (running.source != ConfigSource::Inline).then_some(running.version);
        let newest = answers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Answer::New { doc, .. } => Some((i, doc.version)),
                _ => None,
            })
            .fold(None, |best: Option<(usize, u64)>, (i, v)| match best {
                Some((_, bv)) if bv >= v => best,
                _ => Some((i, v)),
            });

        let mut applied = None;
        if let Some((i, version)) = newest.filter(|&(_, v)| running_cp.is_none_or(|r| v > r)) {
            if let Answer::New {
                doc,
                text,
                validators,
            } = std::mem::replace(&mut answers[i], Answer::Applied)
            {
                let url = &replicas[i].url;
                let summary = diff(&self.state.customers().load(), &doc.customers);
                // On disk first, then served: a crash right after the swap restarts on
                // this version. A write that fails is counted and serving goes on.
                self.persist(cp, version, text.clone()).await;
                self.state.apply(
                    Arc::new(doc.customers),
                    ConfigSource::ControlPlane,
                    Some(text.clone()),
                    now,
                );
                info!(
                    "config: applied version {version} from {url} (was version {} from {}); {summary}",
                    running.version,
                    running.source.as_str()
                );
                replicas[i].validators = validators;
                replicas[i].version = Some(version);
                applied = Some((version, text));
            }
        }
        let current = applied.as_ref().map_or(running.version, |a| a.0);
        let current_text = applied
            .as_ref()
            .map(|a| a.1.clone())
            .or(running.document.clone());

        // Per replica: who is current, who is behind, who failed.
        let mut confirmed = applied.is_some();
        let mut behind = Vec::new();
        let mut errors = Vec::new();
        let mut news = Vec::new();
        for (r, answer) in replicas.iter_mut().zip(answers) {
            let problem = match answer {
                Answer::Applied => None,
                Answer::Same(v) if v >= current => None,
                Answer::Same(v) => {
                    behind.push(v);
                    Some(format!("still serves version {v}, older than {current}"))
                }
                Answer::New {
                    doc,
                    text,
                    validators,
                } if doc.version == current => {
                    if current_text.as_ref().is_some_and(|t| **t != *text) {
                        warn!(
                            "config: {} serves version {current} with content that differs from \
                             the running version {current}; ignored (the control plane must raise \
                             version on every change)",
                            r.url
                        );
                    }
                    r.validators = validators;
                    r.version = Some(current);
                    None
                }
                Answer::New { doc, .. } => {
                    behind.push(doc.version);
                    Some(format!(
                        "serves version {}, older than the running version {current}",
                        doc.version
                    ))
                }
                Answer::Failed(reason) => {
                    errors.push(format!("{}: {reason}", r.url));
                    Some(reason)
                }
            };
            match problem {
                None => {
                    confirmed = true;
                    r.last_ok = Some(now);
                    r.last_error = None;
                }
                Some(p) => {
                    if r.last_error.as_deref() != Some(p.as_str()) {
                        news.push(format!("{}: {p}", r.url));
                    }
                    r.last_error = Some(p);
                }
            }
        }
        self.state.set_replicas(replicas);

        if confirmed {
            // Replicas that started failing while another answered (a failed round
            // logs every reason below instead).
            for n in news {
                warn!("config: control plane {n} (another replica answered)");
            }
            self.state.confirmed(now);
            if let Some((version, _)) = applied {
                return Outcome::Applied { version };
            }
            if let (Some(path), Some(text)) = (self.state.cache_file_lags(), current_text) {
                debug!("config: retrying the write of {}", path.display());
                self.persist(cp, current, text).await;
            }
            return Outcome::Unchanged { version: current };
        }
        let reason = match behind.iter().max() {
            Some(v) if errors.is_empty() => format!(
                "the control plane serves version {v}, older than the running version \
                 {current}; rejected (raise version on every change)"
            ),
            _ => {
                let mut all = errors;
                if let Some(v) = behind.iter().max() {
                    all.push(format!("others serve version {v}, older than {current}"));
                }
                all.join("; ")
            }
        };
        let in_a_row = self.state.failed(&reason, now);
        warn!(
            "config: sync failed ({in_a_row} in a row): {reason}; keeping version {current} \
             from {} (last confirmed {}s ago)",
            self.state.source().as_str(),
            self.state.age(now).as_secs()
        );
        Outcome::Failed { reason }
    }

    /// Write the applied document to `cache_file`; a failure is logged and counted.
    async fn persist(&self, cp: &ControlPlane, version: u64, text: Arc<str>) {
        let path = cp.config.cache_file.clone();
        let p = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomic(&p, text.as_bytes()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match written {
            Ok(()) => {
                self.state.cache_file_written(version);
                debug!("config: wrote version {version} to {}", path.display());
            }
            Err(e) => {
                self.state.cache_file_failed(&e.to_string());
                warn!(
                    "config: cannot keep version {version} as last known good: {e}; \
                     serving on (a restart without the control plane would not find it)"
                );
            }
        }
    }

    /// Re-read the node file and apply its inline customers (no control plane).
    async fn reload_file(&self) -> Outcome {
        let _round = self.round.lock().await;
        let path = self.node_file.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{}: cannot read: {e}; check the path and its permissions",
                    path.display()
                )
            })?;
            config::check_node_text(&path, &text)
                .map(|node| (node, text))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let now = SystemTime::now();
        let running_inline = self.state.source() == ConfigSource::Inline;
        if let Ok((node, text)) = &loaded {
            let same_certificates = {
                let running = self.state.customers().load();
                let certs = |c: &Customers| -> Vec<(String, Option<u64>)> {
                    c.list
                        .iter()
                        .map(|c| (c.name.clone(), c.tls.as_ref().map(|t| t.fingerprint)))
                        .collect()
                };
                certs(&running) == certs(&node.customers)
                    && self
                        .state
                        .tls_default()
                        .load()
                        .as_ref()
                        .map(|c| c.fingerprint)
                        == node.tls_default.as_ref().map(|c| c.fingerprint)
            };
            if running_inline
                && same_certificates
                && self.inline_text.lock().as_deref() == Some(text.as_str())
            {
                let version = self.state.running().version;
                info!(
                    "config: {} is unchanged; nothing to apply",
                    self.node_file.display()
                );
                self.state.unchanged();
                return Outcome::Unchanged { version };
            }
        }
        let (node, text) = match loaded {
            Ok((node, text)) => (Ok(node), Some(text)),
            Err(e) => (Err(e), None),
        };
        let node = match node {
            Ok(node) if node.customers.list.is_empty() => Err(format!(
                "{}: has no inline customers; keeping the running ones \
                 (a control_plane takes effect on restart only)",
                self.node_file.display()
            )),
            other => other,
        };
        match node {
            Ok(node) => {
                if node.control_plane.is_some() {
                    warn!(
                        "config: {} now has a control_plane; it takes effect on restart, \
                         applying its inline customers meanwhile",
                        self.node_file.display()
                    );
                }
                let summary = diff(&self.state.customers().load(), &node.customers);
                let version = node.customers.version;
                self.state
                    .apply(node.customers.clone(), ConfigSource::Inline, None, now);
                self.state
                    .tls_default()
                    .store(node.tls_default.clone().map(Arc::new));
                *self.inline_text.lock() = text;
                info!(
                    "config: reloaded the inline customers of {}; {summary} \
                     (listeners, cache and server settings change on restart only)",
                    self.node_file.display()
                );
                Outcome::Applied { version }
            }
            Err(reason) => {
                let in_a_row = self.state.failed(&reason, now);
                warn!(
                    "config: reload failed ({in_a_row} in a row): {reason}; \
                     the running customers stay"
                );
                Outcome::Failed { reason }
            }
        }
    }
}

/// "3 customers; added [a]; removed [b]" for the apply log line.
fn diff(old: &Customers, new: &Customers) -> String {
    let names =
        |c: &Customers| -> HashSet<String> { c.list.iter().map(|c| c.name.clone()).collect() };
    let (old_names, new_names) = (names(old), names(new));
    let mut added: Vec<&String> = new_names.difference(&old_names).collect();
    let mut removed: Vec<&String> = old_names.difference(&new_names).collect();
    added.sort();
    removed.sort();
    let mut out = format!("{} customers", new.list.len());
    if !added.is_empty() {
        out.push_str(&format!("; added {added:?}"));
    }
    if !removed.is_empty() {
        out.push_str(&format!("; removed {removed:?}"));
    }
    out
}
