//! Pingora glue: the `ProxyHttp` implementation of the edge.
//!
//! This module only routes, calls the pure [`crate::policy`] functions and moves data
//! between Pingora's phases. It must never make a cache decision of its own: every
//! "store or not", "how long", "serve stale or not" lives in the policy.
//!
//! The trait's callbacks are one line each here; each phase's code has its own file:
//! [`route`] (the request phase, up to the [`fast`] path), [`lookup`] (pingora-cache's
//! phases), [`upstream`] (the origin's) and [`finish`] (the edge's fields on every answer,
//! failures, the access log). What a phase learns is a typed fact in [`Ctx`] (the
//! [`stored::Judgement`] of a stored copy, the [`outcome::OriginRecord`]); the result is
//! one [`Outcome`]. The edge's own answers are [`answer::EdgeAnswer`]s. docs/phases.md
//! maps which file produces which fact.

mod answer;
mod clock;
pub mod deadline;
mod direct;
mod fast;
mod finish;
mod head;
mod health;
mod lookup;
mod outcome;
mod purge;
mod request;
mod route;
mod slice;
mod status;
mod stored;
mod upstream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clock::Clock;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_cache::{
    key::HashBinary, CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{strip_port, Customer, Customers, Rule};
use crate::metrics::Metrics;
use crate::origin::{Origins, Pool};
use crate::policy;
use crate::purge::{DocumentPurges, Purges};
use crate::storage::CacheStore;
use crate::tls::Transport;
use health::OriginHealth;
use outcome::{Detail, Fwd, OriginRecord, Outcome, Stale};
use request::request_host;
pub use status::CacheStatus;
use stored::Judgement;

/// The edge: routes by Host, applies the customer's policy, fills and serves the cache.
/// Clones share everything (a second listening service, e.g. for h2c, is the same edge).
#[derive(Clone)]
pub struct Edge {
    customers: Arc<ArcSwap<Customers>>,
    store: &'static dyn CacheStore,
    lock_timeout: Duration,
    metrics: Arc<Metrics>,
    origins: Arc<Origins>,
    health: Arc<OriginHealth>,
    purges: Arc<Purges>,
    /// The markers of the purges customers' synced documents list.
    document_purges: Arc<DocumentPurges>,
    /// Seconds a client connection may wait idle between requests.
    idle_timeout: u64,
    /// Fresh hits answered from `request_filter` (`cache.fast_path`).
    fast_path: bool,
    /// This running node's `CDN-Loop` entry, and the most Holdfast hops allowed.
    loop_entry: String,
    max_hops: u32,
    /// How this node names itself in `Cache-Status` and `Via`.
    sign: status::Signature,
    /// Where every phase reads the time.
    clock: Arc<dyn Clock>,
}

impl Edge {
    /// The edge of the node `config` describes (its cache settings, timeouts and
    /// name), over the shared customers, store, metrics, purges and origin pools.
    pub fn new(
        config: &crate::config::NodeConfig,
        customers: Arc<ArcSwap<Customers>>,
        store: &'static dyn CacheStore,
        metrics: Arc<Metrics>,
        purges: Arc<Purges>,
        origins: Arc<Origins>,
    ) -> Edge {
        let cache = &config.cache;
        Edge {
            loop_entry: request::loop_entry(&config.node.name),
            max_hops: config.node.max_hops,
            sign: status::Signature::new(&config.node),
            idle_timeout: config.idle_timeout.as_secs().max(1),
            purges,
            document_purges: Arc::default(),
            customers,
            store,
            lock_timeout: cache.lock_timeout,
            fast_path: cache.fast_path,
            metrics,
            origins,
            health: Arc::new(OriginHealth::default()),
            clock: Arc::new(clock::SystemClock),
        }
    }
}

impl Edge {
    /// This running node's `CDN-Loop` entry.
    pub fn loop_entry(&self) -> &str {
        &self.loop_entry
    }
}

/// Per-request state. The customer is an `Arc` taken once from the current snapshot, so
/// a request finishes on the config it started with even if a reload swaps it.
pub struct Ctx {
    customer: Option<Arc<Customer>>,
    /// TLS or not, HTTP/1 or HTTP/2: the scheme the request is keyed by.
    transport: Transport,
    config_version: u64,
    rule: Option<usize>,
    /// Passed around the cache: as what RFC 9211 calls it, and why.
    bypass: Option<(Fwd, Detail)>,
    /// What the edge judged of the stored copy it looked at, if any (see [`stored`]).
    judged: Option<Judgement>,
    /// A stale copy is being served, and why.
    stale: Option<Stale>,
    /// What the origin did (see [`OriginRecord`]).
    origin: OriginRecord,
    /// The customer's origin servers, once the request goes to one; which one it is
    /// talking to, and the ones it tried (a bit per server).
    pool: Option<Arc<Pool>>,
    server: Option<usize>,
    tried: u64,
    /// The cache key, built once by the fast path and handed to pingora-cache.
    key: Option<CacheKey>,
    /// This request is one slice of a sliced answer (see [`slice`]).
    slice: Option<slice::Slice>,
    /// What happened, once decided (see [`outcome`]).
    outcome: Option<Outcome>,
    /// The fast path wrote the answer to the socket itself: its status and body bytes
    /// (Pingora's session saw neither).
    sent_directly: Option<(u16, usize)>,
    started: Instant,
    _inflight: InflightGuard,
}

/// Counts requests in flight, so shutdown can drain them.
struct InflightGuard(Arc<Metrics>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ctx {
    fn customer(&self) -> Option<&Customer> {
        self.customer.as_deref()
    }

    fn rule(&self) -> Option<&Rule> {
        let customer = self.customer.as_deref()?;
        customer.rules.get(self.rule?)
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The status the edge answers with when it has nothing better to give.
fn edge_status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if is_timeout(e) => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 400,
            _ => 500,
        },
    }
}

fn unix_secs_diff(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    /// Boxed: Pingora keeps the context in its per-request future, which it copies twice
    /// for every request when it boxes that future (`ServerApp::process_new`). Outside
    /// it, the context's 472 bytes cost one allocation instead of those copies: 1,430
    /// instructions less per hit, 1,390 per miss (docs/benchmarks.md).
    type CTX = Box<Ctx>;

    /// No response compression at the edge: bodies are served as the origin sent them
    /// (the default module would run on every response to do nothing).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        self.metrics.inflight.fetch_add(1, Ordering::AcqRel);
        Box::new(Ctx {
            customer: None,
            transport: Transport::default(),
            config_version: 0,
            rule: None,
            bypass: None,
            judged: None,
            stale: None,
            origin: OriginRecord::default(),
            pool: None,
            server: None,
            tried: 0,
            key: None,
            slice: None,
            outcome: None,
            sent_directly: None,
            started: self.clock.instant(),
            _inflight: InflightGuard(self.metrics.clone()),
        })
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        self.route(session, ctx).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        self.enable_cache(session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        self.cache_key(session, ctx)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        self.check_hit(session, meta, ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        self.cacheability(session, resp, ctx)
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        match ctx.slice {
            Some(slice) => Some(slice.variance()),
            None => stored::variance(meta.headers(), req),
        }
    }

    /// Sliced answers are made of subrequests (see [`slice`]): allowed while some
    /// customer has slices (a request of another pays nothing for it).
    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &Self::CTX) -> bool {
        self.customers.load().sliced
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        self.serve_stale(session, ctx, error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        self.pick_server(session, ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        self.broke_after_send(peer, session, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.going_to_origin(session, upstream_request, ctx)?;
        if let Some(slice) = ctx.slice {
            upstream_request.insert_header(http::header::RANGE, slice.range())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.origin_answered(session, upstream_response, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.finish_header(session, resp, ctx).await
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        self.log_request(session, e, ctx)
    }
}

/// The cache key of a request for `customer` that arrived by `scheme` (that of its
/// connection: HTTP/1.1 over TLS carries none, and a client's word is not taken for it).
fn key_for(customer: &Customer, req: &RequestHeader, scheme: &str) -> CacheKey {
    let host = request_host(req).map(strip_port).unwrap_or("");
    let primary = policy::cache_key(customer, scheme, host, req.uri.path(), req.uri.query());
    crate::storage::key(primary)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn strips_ports_but_not_ipv6_colons() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("shop.example.com"), "shop.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }
}
