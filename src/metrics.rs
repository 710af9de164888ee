//! Process-wide counters, rendered in the Prometheus text format by the admin listener.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests in flight (including background refreshes); shutdown drains to zero.
    pub inflight: AtomicUsize,
    pub requests: AtomicU64,
    pub unknown_host: AtomicU64,
    pub stale_if_error: AtomicU64,
}

impl Metrics {
    /// Render the counters; `store` adds the cache store's gauges.
    pub fn render(&self, store: &dyn crate::storage::CacheStore) -> String {
        let mut out = String::new();
        let mut line = crate::storage::metric_writer(&mut out);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        line(
            "holdfast_requests_total",
            "Requests handled by the edge.",
            "counter",
            get(&self.requests),
        );
        line(
            "holdfast_unknown_host_total",
            "Requests refused because no customer serves their Host.",
            "counter",
            get(&self.unknown_host),
        );
        line(
            "holdfast_stale_if_error_total",
            "Stale responses served because the origin failed.",
            "counter",
            get(&self.stale_if_error),
        );
        line(
            "holdfast_inflight_requests",
            "Requests in flight.",
            "gauge",
            self.inflight.load(Ordering::Relaxed) as u64,
        );
        drop(line);
        store.render_metrics(&mut out);
        out
    }
}
