//! The Pingora background service that keeps the config current: polls the control
//! plane every `interval` and answers SIGHUP. It stops when the server shuts down.

use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::syncer::Syncer;

pub struct SyncService {
    syncer: Arc<Syncer>,
}

impl SyncService {
    pub fn new(syncer: Arc<Syncer>) -> SyncService {
        SyncService { syncer }
    }
}

/// Wait for the next SIGHUP, or forever when no handler could be installed.
async fn hangup(sig: &mut Option<Signal>) {
    match sig {
        Some(s) => {
            if s.recv().await.is_none() {
                *sig = None;
            }
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl BackgroundService for SyncService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("config: cannot listen for SIGHUP: {e}");
                None
            }
        };
        // Without a control plane there is nothing to poll; only SIGHUP.
        let interval = self.syncer.interval();
        let tick = || async move {
            match interval {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            let work = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick() => None,
                _ = hangup(&mut hup) => Some("SIGHUP"),
            };
            if let Some(why) = work {
                info!("config: {why}: reloading");
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = async {
                    if work.is_some() {
                        self.syncer.reload().await
                    } else {
                        self.syncer.sync_now().await
                    }
                } => {}
            }
        }
        info!("config: sync stopped (shutdown)");
    }
}
