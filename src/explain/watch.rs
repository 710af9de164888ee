//! The one part of `explain` that reads a clock: a background service that logs each
//! [`schedule_warnings`](super::schedule_warnings) entry once, when the boundary that
//! causes it passes (or within a minute of the running config growing older than
//! `max_config_age`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::warn;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::{next_boundary, schedule_warnings};
use crate::policy::{to_system_time, to_timestamp};
use crate::sync::ConfigState;

/// How often the config's age is re-checked when no boundary is nearer.
const TICK: Duration = Duration::from_secs(60);

pub struct ScheduleWatch {
    state: Arc<ConfigState>,
    max_config_age: Duration,
}

impl ScheduleWatch {
    pub fn new(state: Arc<ConfigState>, max_config_age: Duration) -> ScheduleWatch {
        ScheduleWatch {
            state,
            max_config_age,
        }
    }
}

#[async_trait]
impl BackgroundService for ScheduleWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // (customer, rule, boundary, instant) already logged.
        let mut warned = HashSet::new();
        loop {
            let now = SystemTime::now();
            let customers = self.state.customers().load_full();
            let age = self.state.age(now);
            for w in schedule_warnings(&customers, age, self.max_config_age, to_timestamp(now)) {
                if warned.insert((w.customer.clone(), w.rule, w.boundary, w.at.clone())) {
                    warn!(target: "holdfast::schedule", "{w}");
                }
            }
            // Wake just after the next boundary, so its warning is on time.
            let wait = next_boundary(&customers, to_timestamp(now))
                .and_then(|t| to_system_time(t).duration_since(now).ok())
                .map_or(TICK, |d| (d + Duration::from_millis(10)).min(TICK));
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
