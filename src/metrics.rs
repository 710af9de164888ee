//! The edge's counters, and the one registry that renders every module's metrics for
//! the admin listener's `/metrics`.
//!
//! Counters stay plain atomics that the request path bumps; nothing on it touches the
//! registry. Each module that has something to show (the edge's [`Metrics`], the cache
//! store, the config sync, purge markers, origin servers) implements
//! [`Collector`] and is registered once where the server is assembled; a scrape asks each
//! for its values and `prometheus-client` writes the Prometheus text format (0.0.4): the
//! names, `HELP` and `TYPE` lines, label escaping. The helpers below ([`gauge`],
//! [`counter`], [`family`]) keep each collector to one call per family, under the names
//! dashboards already use.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
pub use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
/// A family's type, for [`family`]: `Kind::Counter` or `Kind::Gauge`.
pub use prometheus_client::metrics::MetricType as Kind;
use prometheus_client::registry::Registry;

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
    /// Slices of sliced answers (`cache.slice`) served from the store, and fetched from
    /// the origin.
    pub slice_hits: AtomicU64,
    pub slice_fetches: AtomicU64,
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

    /// The per-customer families.
    fn encode_customers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let customers = self.customers.read();
        type Field = fn(&CustomerCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 7] = [
            (
                "holdfast_customer_requests_total",
                "Requests handled for the customer.",
                |c| &c.requests,
            ),
            (
                "holdfast_customer_hits_total",
                "Answered from the cache, fresh.",
                |c| &c.hits,
            ),
            (
                "holdfast_customer_stale_total",
                "Answered with a stale copy (stale-if-error, stale-while-revalidate).",
                |c| &c.stale,
            ),
            (
                "holdfast_customer_misses_total",
                "Sent to the origin: misses, revalidations, expired copies.",
                |c| &c.misses,
            ),
            (
                "holdfast_customer_bypass_total",
                "Not cacheable by rule or method, refused or answered by the edge.",
                |c| &c.bypassed,
            ),
            (
                "holdfast_customer_bytes_total",
                "Body bytes sent to clients.",
                |c| &c.bytes,
            ),
            (
                "holdfast_customer_origin_errors_total",
                "Requests on which the origin failed (a 5xx, or no answer).",
                |c| &c.origin_errors,
            ),
        ];
        for (name, help, field) in families {
            family(
                enc,
                name,
                help,
                Kind::Counter,
                customers
                    .iter()
                    .map(|(customer, c)| ([("customer", customer.as_str())], get(field(c)))),
            )?;
        }
        family(
            enc,
            "holdfast_customer_purges_total",
            "Purges applied, by what they named.",
            Kind::Counter,
            customers.iter().flat_map(|(customer, c)| {
                [
                    ("url", &c.purges_urls),
                    ("prefix", &c.purges_prefixes),
                    ("tag", &c.purges_tags),
                    ("all", &c.purges_all),
                ]
                .map(|(kind, n)| ([("customer", customer.as_str()), ("kind", kind)], get(n)))
            }),
        )
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let enc = &mut enc;
        counter(
            enc,
            "holdfast_requests_total",
            "Requests handled by the edge.",
            get(&self.requests),
        )?;
        counter(
            enc,
            "holdfast_unknown_host_total",
            "Requests refused because no customer serves their Host.",
            get(&self.unknown_host),
        )?;
        counter(
            enc,
            "holdfast_misdirected_total",
            "Requests refused (421) because their Host belongs to another customer than their TLS connection's SNI.",
            get(&self.misdirected),
        )?;
        counter(
            enc,
            "holdfast_header_timeouts_total",
            "Client connections dropped because a request header did not arrive whole within header_timeout.",
            get(&self.header_timeouts),
        )?;
        counter(
            enc,
            "holdfast_fast_path_hits_total",
            "Hits answered straight from the store, before pingora-cache's phases.",
            get(&self.fast_path_hits),
        )?;
        counter(
            enc,
            "holdfast_slice_hits_total",
            "Slices of sliced answers (cache.slice) served from the store.",
            get(&self.slice_hits),
        )?;
        counter(
            enc,
            "holdfast_slice_fetches_total",
            "Slices of sliced answers (cache.slice) asked of the origin.",
            get(&self.slice_fetches),
        )?;
        counter(
            enc,
            "holdfast_stale_if_error_total",
            "Stale responses served because the origin failed.",
            get(&self.stale_if_error),
        )?;
        gauge(
            enc,
            "holdfast_inflight_requests",
            "Requests in flight.",
            self.inflight.load(Ordering::Relaxed) as u64,
        )?;
        self.encode_customers(enc)
    }
}

/// A counter's value, for a scrape.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One gauge without labels.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, Kind::Gauge)?
        .encode_gauge(&value)
}

/// One counter without labels; `name` is the sample's, which ends in `_total`.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    enc.encode_descriptor(family_name(name), help, None, Kind::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

/// One family of labelled samples (`kind` is `Counter` or `Gauge`; a counter's `name`
/// ends in `_total`, as its samples are named).
pub fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(family_name(name), help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            Kind::Counter => sample.encode_counter::<NoLabelSet, u64, u64>(&value, None)?,
            _ => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// The encoder appends `_total` to a counter's family name itself.
fn family_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Every collector of the node, rendered together for `/metrics`.
#[derive(Debug, Default)]
pub struct Exposition(Registry);

impl Exposition {
    /// The `Content-Type` of what [`Exposition::render`] writes.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// Add `collector`; its families follow those registered before it.
    pub fn register(&mut self, collector: impl Collector) {
        self.0.register_collector(Box::new(collector));
    }

    /// Every family, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a collector that returns an error leaves
        // what it wrote so far.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0);
        out
    }
}
