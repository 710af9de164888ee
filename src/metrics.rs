//! Process-wide counters, rendered in the Prometheus text format by the admin listener.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests in flight (including background refreshes); shutdown drains to zero.
    pub inflight: AtomicUsize,
    pub requests: AtomicU64,
    pub unknown_host: AtomicU64,
    /// Requests refused with 421 because their Host is not the customer their TLS
    /// connection's SNI named.
    pub misdirected: AtomicU64,
    /// Client connections dropped because a request header did not arrive whole within
    /// `header_timeout`.
    pub header_timeouts: AtomicU64,
    pub stale_if_error: AtomicU64,
    /// Hits answered straight from the store in `request_filter` (the fast path).
    pub fast_path_hits: AtomicU64,
    /// Per customer, by name: created at a customer's first request or purge.
    customers: RwLock<BTreeMap<String, Arc<CustomerCounters>>>,
}

/// What one customer's traffic did, for `holdfast_customer_*{customer="..."}`.
#[derive(Debug, Default)]
pub struct CustomerCounters {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Stale copies served (stale-if-error and stale-while-revalidate).
    pub stale: AtomicU64,
    pub bypassed: AtomicU64,
    pub bytes: AtomicU64,
    /// Answers that were an origin's failure: a 5xx it sent, or none at all.
    pub origin_errors: AtomicU64,
    /// Purges, by what they named: URLs, prefixes, tags, whole customer.
    pub purges_urls: AtomicU64,
    pub purges_prefixes: AtomicU64,
    pub purges_tags: AtomicU64,
    pub purges_all: AtomicU64,
}

impl CustomerCounters {
    fn count(&self, served: Served, bytes: usize, origin_error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match served {
            Served::Hit => &self.hits,
            Served::Stale => &self.stale,
            Served::Miss => &self.misses,
            Served::Bypass => &self.bypassed,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if origin_error {
            self.origin_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How one request went, for a customer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Hit,
    Stale,
    Miss,
    Bypass,
}

impl Metrics {
    /// The counters of `customer`, created on first use.
    pub fn customer(&self, customer: &str) -> Arc<CustomerCounters> {
        if let Some(c) = self.customers.read().get(customer) {
            return Arc::clone(c);
        }
        Arc::clone(
            self.customers
                .write()
                .entry(customer.to_string())
                .or_default(),
        )
    }

    /// Count one request of `customer`, under the read lock once the customer is known:
    /// no reference count moves on the request path.
    pub fn served(&self, customer: &str, served: Served, bytes: usize, origin_error: bool) {
        {
            let customers = self.customers.read();
            if let Some(c) = customers.get(customer) {
                c.count(served, bytes, origin_error);
                return;
            }
        }
        // First request of this customer: created under the write lock, the read one
        // released first.
        self.customer(customer).count(served, bytes, origin_error);
    }

    /// Count a purge of `customer` naming `urls` URLs, `prefixes` prefixes, `tags` tags
    /// and maybe the whole customer.
    pub fn purged(&self, customer: &str, urls: usize, prefixes: usize, tags: usize, all: bool) {
        let c = self.customer(customer);
        c.purges_urls.fetch_add(urls as u64, Ordering::Relaxed);
        c.purges_prefixes
            .fetch_add(prefixes as u64, Ordering::Relaxed);
        c.purges_tags.fetch_add(tags as u64, Ordering::Relaxed);
        c.purges_all.fetch_add(u64::from(all), Ordering::Relaxed);
    }

    /// The per-customer counters, in the Prometheus text format.
    fn render_customers(&self, out: &mut String) {
        let customers = self.customers.read();
        type Field = fn(&CustomerCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 7] = [
            (
                "requests_total",
                "Requests handled for the customer.",
                |c| &c.requests,
            ),
            ("hits_total", "Answered from the cache, fresh.", |c| &c.hits),
            (
                "stale_total",
                "Answered with a stale copy (stale-if-error, stale-while-revalidate).",
                |c| &c.stale,
            ),
            (
                "misses_total",
                "Sent to the origin: misses, revalidations, expired copies.",
                |c| &c.misses,
            ),
            (
                "bypass_total",
                "Not cacheable by rule or method, refused or answered by the edge.",
                |c| &c.bypassed,
            ),
            ("bytes_total", "Body bytes sent to clients.", |c| &c.bytes),
            (
                "origin_errors_total",
                "Requests on which the origin failed (a 5xx, or no answer).",
                |c| &c.origin_errors,
            ),
        ];
        for (name, help, field) in families {
            let _ = writeln!(
                out,
                "# HELP holdfast_customer_{name} {help}\n# TYPE holdfast_customer_{name} counter"
            );
            for (customer, c) in customers.iter() {
                let _ = writeln!(
                    out,
                    "holdfast_customer_{name}{{customer=\"{customer}\"}} {}",
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP holdfast_customer_purges_total Purges applied, by what they named.\n# TYPE holdfast_customer_purges_total counter");
        for (customer, c) in customers.iter() {
            for (kind, n) in [
                ("url", &c.purges_urls),
                ("prefix", &c.purges_prefixes),
                ("tag", &c.purges_tags),
                ("all", &c.purges_all),
            ] {
                let _ = writeln!(
                    out,
                    "holdfast_customer_purges_total{{customer=\"{customer}\",kind=\"{kind}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }

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
            "holdfast_misdirected_total",
            "Requests refused (421) because their Host belongs to another customer than their TLS connection's SNI.",
            "counter",
            get(&self.misdirected),
        );
        line(
            "holdfast_header_timeouts_total",
            "Client connections dropped because a request header did not arrive whole within header_timeout.",
            "counter",
            get(&self.header_timeouts),
        );
        line(
            "holdfast_fast_path_hits_total",
            "Hits answered straight from the store, before pingora-cache's phases.",
            "counter",
            get(&self.fast_path_hits),
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
        self.render_customers(&mut out);
        out
    }
}
