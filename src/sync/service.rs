//! The Pingora background service that keeps the config current: polls the control
//! plane about every `interval` and answers SIGHUP. It stops when the server shuts down.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

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
        // A random phase, then a random spread on every wait: PoPs started together (a
        // fleet rollout, a region coming back) do not poll the control plane in step.
        let random = RandomState::new();
        let mut polls: u64 = 0;
        let mut tick = move || {
            let wait = interval.map(|d| poll_wait(d, polls, unit_random(&random, polls)));
            polls += 1;
            async move {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
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

/// How long to wait before poll number `poll` (0 = the first after start), given a
/// uniform random `r` in [0, 1): the first wait is anywhere in [0, interval), so nodes
/// started together spread over one interval at once; every later one is the interval
/// ±10 %, so they do not fall back into step.
pub(crate) fn poll_wait(interval: Duration, poll: u64, r: f64) -> Duration {
    let r = if r.is_nan() { 0.5 } else { r.clamp(0.0, 1.0) };
    if poll == 0 {
        interval.mul_f64(r)
    } else {
        interval.mul_f64(0.9 + 0.2 * r)
    }
}

/// A uniform number in [0, 1) from the process's randomly keyed hasher.
fn unit_random(random: &RandomState, n: u64) -> f64 {
    (random.hash_one(n) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_wait_spreads_over_one_interval_later_ones_stay_within_ten_percent() {
        let d = Duration::from_secs(30);
        assert_eq!(poll_wait(d, 0, 0.0), Duration::ZERO);
        assert_eq!(poll_wait(d, 0, 0.5), Duration::from_secs(15));
        assert_eq!(poll_wait(d, 1, 0.0), Duration::from_secs(27));
        assert_eq!(poll_wait(d, 7, 0.5), Duration::from_secs(30));
        assert_eq!(poll_wait(d, 7, 1.0), Duration::from_secs(33));
        // Out-of-range input cannot make a wait negative or unbounded.
        assert_eq!(poll_wait(d, 3, -4.0), Duration::from_secs(27));
        assert_eq!(poll_wait(d, 3, f64::INFINITY), Duration::from_secs(33));
        assert_eq!(poll_wait(d, 3, f64::NAN), Duration::from_secs(30));
    }

    #[test]
    fn random_units_are_in_range_and_spread() {
        let random = RandomState::new();
        let draws: Vec<f64> = (0..1000).map(|n| unit_random(&random, n)).collect();
        assert!(draws.iter().all(|r| (0.0..1.0).contains(r)));
        // Each tenth of [0, 1) gets some of 1000 draws (expected 100 each).
        for tenth in 0..10 {
            let lo = tenth as f64 / 10.0;
            let n = draws.iter().filter(|r| **r >= lo && **r < lo + 0.1).count();
            assert!((40..=160).contains(&n), "tenth {tenth}: {n} draws");
        }
    }
}
