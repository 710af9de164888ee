//! Which customers a node starts with: the control plane if it answers within
//! `timeout`, else the last-known-good `cache_file`, else the node file's inline
//! customers. With none of them valid the node refuses to start.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use log::{info, warn};
use thiserror::Error;

use super::state::{ConfigState, Start};
use super::syncer::{Outcome, Syncer};
use crate::config::{self, ConfigSource, Customers, NodeConfig};

#[derive(Debug, Error)]
pub enum StartError {
    #[error(
        "nothing to serve: the control plane did not answer ({control_plane}), \
         cache_file {cache_file} is not usable ({cache_reason}), and {node_file} has no \
         inline customers; make a control_plane.urls entry reachable, restore cache_file \
         (e.g. from another PoP), or add customers: to {node_file}"
    )]
    NothingToServe {
        control_plane: String,
        cache_file: String,
        cache_reason: String,
        node_file: String,
    },
    #[error("cannot start the runtime for the first sync: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot set up the TLS listener {0}")]
    Listener(String),
}

/// Decide the starting config (running the first sync, bounded by `timeout`) and
/// return the syncer that keeps it current.
pub fn bootstrap(node: &NodeConfig) -> Result<Arc<Syncer>, StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Some(cp) = &node.control_plane else {
        rt.block_on(ignore_sighup_until_ready());
        let state = ConfigState::new(Start {
            customers: node.customers.clone(),
            source: ConfigSource::Inline,
            document: None,
            confirmed_at: None,
            urls: Vec::new(),
            cache_file: None,
        });
        return Ok(Arc::new(Syncer::new(Arc::new(state), node)));
    };

    // The last-known-good copy needs its directory, as the disk tier does; a node that
    // cannot make it still serves, and says so (GET /config shows each failed write).
    let dir = config::base_dir_of(&cp.cache_file);
    if let Err(e) = std::fs::create_dir_all(dir) {
        log::error!(
            "config: cannot create {}, the directory of control_plane.cache_file ({e}); \
             the last good customer document will not be kept",
            dir.display()
        );
    }
    let cached = read_cache_file(&cp.cache_file, node.base_dir());
    let start = match &cached {
        Ok(c) => Start {
            customers: c.customers.clone(),
            source: ConfigSource::CacheFile,
            document: Some(c.text.clone()),
            confirmed_at: Some(c.mtime),
            urls: cp.urls.clone(),
            cache_file: Some((cp.cache_file.clone(), Some(c.customers.version))),
        },
        Err(_) => Start {
            customers: node.customers.clone(),
            source: ConfigSource::Inline,
            document: None,
            confirmed_at: None,
            urls: cp.urls.clone(),
            cache_file: Some((cp.cache_file.clone(), None)),
        },
    };
    let syncer = Arc::new(Syncer::new(Arc::new(ConfigState::new(start)), node));
    let outcome = rt.block_on(async {
        ignore_sighup_until_ready().await;
        syncer.sync_now().await
    });
    drop(rt);

    let Outcome::Failed { reason } = outcome else {
        return Ok(syncer);
    };
    match cached {
        Ok(c) => {
            let age = SystemTime::now()
                .duration_since(c.mtime)
                .unwrap_or_default()
                .as_secs();
            info!(
                "config: starting from cache_file {}: version {}, written {age}s ago ({}); \
                 the control plane did not answer: {reason}",
                cp.cache_file.display(),
                c.customers.version,
                super::state::time(c.mtime)
            );
            Ok(syncer)
        }
        Err(cache_reason) if !node.customers.list.is_empty() => {
            warn!(
                "config: starting from the {} inline customers of {}: the control plane did not \
                 answer ({reason}) and cache_file is not usable ({cache_reason})",
                node.customers.list.len(),
                node.source.display()
            );
            Ok(syncer)
        }
        Err(cache_reason) => Err(StartError::NothingToServe {
            control_plane: reason,
            cache_file: cp.cache_file.display().to_string(),
            cache_reason,
            node_file: node.source.display().to_string(),
        }),
    }
}

/// Install the SIGHUP handler early: its default action ends the process, and the
/// sync service only listens once the server runs. The OS-level handler stays
/// installed after this listener is dropped.
async fn ignore_sighup_until_ready() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Err(e) = signal(SignalKind::hangup()) {
        warn!("cannot install the SIGHUP handler: {e}");
    }
}

/// A valid cache file.
struct Cached {
    customers: Arc<Customers>,
    text: Arc<str>,
    mtime: SystemTime,
}

/// The cache file's document, text and modification time; or why it is not usable.
fn read_cache_file(path: &Path, base: &Path) -> Result<Cached, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    match config::parse_customer_document(&path.display().to_string(), &text, base) {
        Ok(doc) => Ok(Cached {
            customers: Arc::new(doc.customers),
            text: text.into(),
            mtime,
        }),
        Err(e) => {
            warn!(
                "config: cache_file is corrupt and will not be used (it is replaced only by \
                 the next valid document from the control plane): {e}"
            );
            Err(format!("corrupt: {e}"))
        }
    }
}
