//! Customer config sync: the control-plane poller, the last-known-good `cache_file`,
//! the start-up choice between them and the inline customers, and reloads (SIGHUP,
//! `POST /reload`).
//!
//! Every config is parsed and validated in full before anything changes, then swapped
//! in with one `ArcSwap::store`; a failure leaves the running config untouched, is
//! logged with its reason and counted in [`ConfigState`]. Nothing here may stop the
//! node from serving: a control plane that is down, slow or wrong, or a cache file that
//! cannot be written, only shows up in `GET /config`, `/metrics` and the log.

mod atomic;
mod fetch;
mod service;
mod start;
mod state;
mod syncer;

pub use atomic::write_atomic;
pub use service::SyncService;
pub use start::{bootstrap, StartError};
pub use state::{ConfigMetrics, ConfigState};
pub use syncer::{Outcome, Syncer};
