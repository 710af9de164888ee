//! Pingora glue: the `ProxyHttp` implementation of the edge.
//!
//! This module only routes, calls the pure [`crate::policy`] functions and moves data
//! between Pingora's phases. It must never make a cache decision of its own: every
//! "store or not", "how long", "serve stale or not" lives in the policy.

pub mod deadline;
mod direct;
mod fast;
mod head;
mod health;
mod outcome;
mod purge;
mod request;
mod status;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use log::{info, warn};
use once_cell::sync::Lazy;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{
    key::HashBinary, CacheKey, CacheMeta, CacheOptionOverrides, ForcedFreshness, HitHandler,
    NoCacheReason, RespCacheable, Storage,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{strip_port, Customer, Customers, Rule};
use crate::metrics::Metrics;
use crate::origin::{Origins, Pool};
use crate::policy::{self, HitCheck, RequestPlan, ResponseDecision};
use crate::purge::{Purges, Verdict};
use crate::storage::CacheStore;
use crate::tls::{Sni, Transport};
use health::OriginHealth;
use outcome::{decide, Failure, Fwd, Outcome, Stale};
use request::{normalize_request, request_host, screen, set_forwarded};
pub use status::CacheStatus;

/// The cache lock shared by every request: N concurrent misses for one key reach the
/// origin once. The age timeout frees a lock whose writer died.
static CACHE_LOCK: Lazy<Box<CacheKeyLockImpl>> =
    Lazy::new(|| CacheLock::new_boxed(Duration::from_secs(30)));

/// The edge: routes by Host, applies the customer's policy, fills and serves the cache.
/// Clones share everything (a second listening service, e.g. for h2c, is the same edge).
#[derive(Clone)]
pub struct Edge {
    customers: Arc<ArcSwap<Customers>>,
    store: &'static dyn CacheStore,
    lock_timeout: Duration,
    max_object: usize,
    metrics: Arc<Metrics>,
    origins: Arc<Origins>,
    health: Arc<OriginHealth>,
    purges: Arc<Purges>,
    /// Seconds a client connection may wait idle between requests.
    idle_timeout: u64,
    /// Fresh hits answered from `request_filter` (`cache.fast_path`).
    fast_path: bool,
    /// This running node's `CDN-Loop` entry, and the most Holdfast hops allowed.
    loop_entry: String,
    max_hops: u32,
    /// How this node names itself in `Cache-Status` and `Via`.
    sign: head::Signature,
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
            sign: head::Signature::new(&config.node),
            idle_timeout: config.idle_timeout.as_secs().max(1),
            purges,
            customers,
            store,
            lock_timeout: cache.lock_timeout,
            max_object: cache.max_object,
            fast_path: cache.fast_path,
            metrics,
            origins,
            health: Arc::new(OriginHealth::default()),
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
    /// Passed around the cache: why, and as what RFC 9211 calls it.
    bypass: Option<(Fwd, &'static str)>,
    no_store: Option<&'static str>,
    /// The fields of the origin's `304` to a revalidation, to update the stored ones.
    revalidated_fields: Option<http::HeaderMap>,
    /// The customer's origin servers, once the request goes to one; which one it is
    /// talking to, and the ones it tried (a bit per server).
    pool: Option<Arc<Pool>>,
    server: Option<usize>,
    tried: u64,
    /// The origin's answer is being stored (see [`Fill`]).
    fill: Option<Fill>,
    /// A stale copy is being served, and why.
    stale: Option<Stale>,
    stale_fwd_status: Option<u16>,
    /// A stale copy served without asking an origin that failed a moment ago.
    stale_shortcut: bool,
    expired_by_rule: bool,
    /// A stored copy expired because an `active` window moved since it was stored.
    schedule_moved: bool,
    /// A purge marker applies to the stored copy (see [`crate::purge`]).
    purged: Option<Verdict>,
    origin_status: Option<u16>,
    /// The cache key, built once by the fast path and handed to pingora-cache.
    key: Option<CacheKey>,
    /// What happened, once decided (see [`outcome`]).
    outcome: Option<Outcome>,
    /// The fast path wrote the answer to the socket itself: its status and body bytes
    /// (Pingora's session saw neither).
    sent_directly: Option<(u16, usize)>,
    started: Instant,
    _inflight: InflightGuard,
}

/// A fill the policy decided to store. Whether it is kept is known only once its body
/// has come whole: `Cache-Status` says `stored` up front only for an answer framed by a
/// length (one without may still grow past `max_object`), and the access log says it
/// only when the store holds this very fill at the end.
#[derive(Debug, Clone, Copy)]
struct Fill {
    /// The `created` of the meta it is stored with, which tells it from an older copy.
    created: SystemTime,
    length_known: bool,
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

async fn respond_text(
    session: &mut Session,
    code: u16,
    body: String,
    outcome: &Outcome,
    allow: Option<&str>,
    sign: &head::Signature,
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(5))?;
    if let Some(allow) = allow {
        resp.insert_header(header::ALLOW, allow)?;
    }
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    head::edge_fields(&mut resp, outcome, sign)?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
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
            no_store: None,
            fill: None,
            pool: None,
            server: None,
            tried: 0,
            revalidated_fields: None,
            stale: None,
            stale_fwd_status: None,
            stale_shortcut: false,
            expired_by_rule: false,
            schedule_moved: false,
            purged: None,
            origin_status: None,
            key: None,
            outcome: None,
            sent_directly: None,
            started: Instant::now(),
            _inflight: InflightGuard(self.metrics.clone()),
        })
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // A client that pipelines (sends its next request before reading this answer)
        // gets every answer in order on the same connection (RFC 9112 §9.3.2), rather
        // than a keep-alive answer and then a close that drops the rest.
        session.set_pipelining_enabled(true);
        // Pingora waits for a keep-alive connection's next request without a bound (or
        // as long as the client's Keep-Alive asks): cap it, so idle clients let go.
        if let Some(wait) = session.get_keepalive() {
            let capped = if wait == 0 {
                self.idle_timeout
            } else {
                wait.min(self.idle_timeout)
            };
            session.set_keepalive(Some(capped));
        }
        let sni = transport(session, &mut ctx.transport);
        let snapshot = self.customers.load();
        ctx.config_version = snapshot.version;
        let host = request_host(session.req_header()).unwrap_or("");
        let Some(customer) = snapshot.route(host) else {
            // Never an open proxy: an unknown host is refused here, before any origin.
            self.metrics.unknown_host.fetch_add(1, Ordering::Relaxed);
            let host = host.to_string();
            let outcome = Outcome::Edge {
                reason: "unknown-host",
            };
            ctx.outcome = Some(outcome.clone());
            let body = if host.is_empty() {
                "holdfast: the request has no Host header\n".to_string()
            } else {
                format!("holdfast: no customer is configured for host {host:?} on this edge\n")
            };
            let code = if host.is_empty() { 400 } else { 421 };
            respond_text(session, code, body, &outcome, None, &self.sign).await?;
            return Ok(true);
        };
        if let Some(sni) = sni {
            // No domain fronting: a TLS connection opened for one customer's name serves
            // that customer only (RFC 9110 §15.5.20), and no origin hears of the rest.
            if !snapshot
                .route(sni)
                .is_some_and(|c| Arc::ptr_eq(c, customer))
            {
                self.metrics.misdirected.fetch_add(1, Ordering::Relaxed);
                let outcome = Outcome::Edge {
                    reason: "misdirected",
                };
                ctx.outcome = Some(outcome.clone());
                let body = format!(
                    "holdfast: this connection was opened for {sni:?}, which does not serve \
                     host {:?}; open a new connection for it\n",
                    crate::config::canonical_host(host)
                );
                respond_text(session, 421, body, &outcome, None, &self.sign).await?;
                return Ok(true);
            }
        }
        if let Some(hops) =
            request::loop_detected(session.req_header(), &self.loop_entry, self.max_hops)
        {
            // This request has passed this very node, or too many Holdfast nodes: answer
            // now rather than send it round again until something times out.
            let outcome = Outcome::Edge { reason: "loop" };
            ctx.outcome = Some(outcome.clone());
            let body = format!(
                "holdfast: request loop: {hops} (this node is {}); check the origin of {:?}\n",
                self.loop_entry, customer.name
            );
            respond_text(session, 508, body, &outcome, None, &self.sign).await?;
            return Ok(true);
        }
        let customer = customer.clone();
        let host = crate::config::canonical_host(host).into_owned();
        normalize_request(session.req_header_mut(), &customer, &host)?;
        if session.req_header().method.as_str() == "PURGE" {
            ctx.customer = Some(customer.clone());
            self.purge_url(session, ctx, &customer, &host).await?;
            return Ok(true);
        }
        if let Some(answer) = screen(session.req_header_mut(), &customer) {
            ctx.customer = Some(customer);
            let outcome = Outcome::Edge {
                reason: answer.detail,
            };
            ctx.outcome = Some(outcome.clone());
            if answer.status >= 400 {
                // What else the client sent on this connection is not worth reading.
                session.set_keepalive(None);
            }
            let allow = answer.allow.as_deref();
            respond_text(
                session,
                answer.status,
                answer.body,
                &outcome,
                allow,
                &self.sign,
            )
            .await?;
            return Ok(true);
        }
        let now = SystemTime::now();
        let req = session.req_header();
        let plan = policy::plan_request(&customer, &req.method, req.uri.path(), now);
        ctx.rule = plan.rule().map(|r| r.index);
        if let RequestPlan::Bypass { reason, .. } = plan {
            let fwd = if policy::is_cacheable_method(&req.method) {
                Fwd::Bypass
            } else {
                Fwd::Method
            };
            ctx.bypass = Some((fwd, reason));
        } else if policy::has_request_body(&req.headers) {
            ctx.bypass = Some((Fwd::Bypass, "request-body"));
        }
        ctx.customer = Some(customer);
        if ctx.bypass.is_none() {
            return self.serve_fresh_hit(session, ctx, now).await;
        }
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if ctx.customer.is_some() && ctx.bypass.is_none() {
            session.cache.enable(
                self.store as &'static (dyn Storage + Sync),
                None,
                None,
                Some(CACHE_LOCK.as_ref()),
                Some(lock_overrides(self.lock_timeout)),
            );
            session.cache.set_max_file_size_bytes(self.max_object);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        if let Some(key) = ctx.key.take() {
            return Ok(key);
        }
        let customer = ctx.customer().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache key without customer")
        })?;
        Ok(key_for(
            customer,
            session.req_header(),
            ctx.transport.scheme(),
        ))
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        let now = SystemTime::now();
        let Some(customer) = ctx.customer() else {
            return Ok(None);
        };
        let path = session.req_header().uri.path();
        let key_text = session.cache.cache_key().primary_key_str();
        let verdict = self.purge_verdict(
            customer,
            key_text.unwrap_or(""),
            path,
            meta.headers(),
            meta.epoch(),
        );
        match verdict {
            Verdict::Keep => {}
            // Not usable: fetched again in full (no conditional request, which could
            // bring the purged copy back with a 304) and never served stale.
            Verdict::Gone => {
                ctx.purged = Some(verdict);
                return Ok(Some(ForcedFreshness::ForceExpired));
            }
            // Stale from the purge on: revalidated before any use, still good for
            // stale-if-error.
            Verdict::Stale { at } => {
                ctx.purged = Some(verdict);
                return Ok(Some(ForcedFreshness::ForceExpiredServeStale {
                    expired_at: Some(at),
                }));
            }
        }
        let (stored, fresh_until) = (meta.created(), meta.fresh_until());
        match policy::check_stored(customer, ctx.rule(), path, stored, fresh_until, now) {
            HitCheck::AsStored if !is_fresh && meta.serve_stale_if_error(now) => {
                // A stale copy while the origin is known to be failing: serve it now
                // rather than queue behind other requests' attempts at a dead origin.
                let customer = ctx.customer().map(|c| c.name.as_str()).unwrap_or("");
                match self.health.recent_failure(customer, Instant::now()) {
                    Some(_) => {
                        ctx.stale_shortcut = true;
                        self.metrics.stale_if_error.fetch_add(1, Ordering::Relaxed);
                        Ok(Some(ForcedFreshness::ForceFresh))
                    }
                    None => Ok(None),
                }
            }
            HitCheck::AsStored => Ok(None),
            HitCheck::ScheduleMoved { at } => {
                // Stored before a window moved: expired from that boundary on.
                ctx.schedule_moved = true;
                Ok(Some(ForcedFreshness::ForceExpiredServeStale {
                    expired_at: Some(at),
                }))
            }
            HitCheck::ExpiredAt { at, serve_stale } => {
                ctx.expired_by_rule = true;
                Ok(Some(if serve_stale {
                    ForcedFreshness::ForceExpiredServeStale {
                        expired_at: Some(at),
                    }
                } else {
                    ForcedFreshness::ForceExpired
                }))
            }
        }
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let Some(customer) = ctx.customer() else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let updated;
        let resp = match &ctx.revalidated_fields {
            Some(fields) => {
                updated = head::updated_by_304(resp, fields)?;
                &updated
            }
            None => resp,
        };
        let authorized = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        let decision = policy::decide_response(
            customer,
            ctx.rule(),
            session.req_header().uri.path(),
            authorized,
            resp,
            SystemTime::now(),
        );
        Ok(match decision {
            ResponseDecision::Store(f) => {
                ctx.fill = Some(Fill {
                    created: f.created,
                    length_known: resp.headers.contains_key(header::CONTENT_LENGTH),
                });
                RespCacheable::Cacheable(CacheMeta::new(
                    f.fresh_until,
                    f.created,
                    secs_u32(f.stale_while_revalidate),
                    secs_u32(f.stale_if_error),
                    resp.clone(),
                ))
            }
            ResponseDecision::DontStore(reason) => {
                ctx.no_store = Some(reason);
                RespCacheable::Uncacheable(NoCacheReason::Custom(reason))
            }
        })
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        fast::variance(meta.headers(), req)
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        let Some(customer) = ctx.customer() else {
            return false;
        };
        if matches!(ctx.purged, Some(Verdict::Gone)) {
            return false;
        }
        let Some(e) = error else {
            if ctx.schedule_moved || ctx.purged.is_some() {
                // The rule that now applies takes over at once, as for a copy capped at
                // the boundary when stored: no serving the old copy while revalidating.
                return false;
            }
            // Within stale-while-revalidate: serve now, one background refresh.
            ctx.stale = Some(Stale::WhileRevalidate);
            return true;
        };
        let serve = match e.etype() {
            ErrorType::HTTPStatus(code) => policy::is_stale_if_error_status(&customer.cache, *code),
            _ => e.esource() == &ErrorSource::Upstream,
        };
        if serve {
            if !matches!(e.etype(), ErrorType::HTTPStatus(_)) {
                // After a failed exchange with the origin (refused, reset, timed out),
                // Pingora does not reuse the client's connection, whatever it answers.
                // Say so in the stale answer (`Connection: close`), so the client does
                // not send its next request into a connection that is about to close.
                session.set_keepalive(None);
            }
            self.health
                .failed(&customer.name, edge_status_for(e), Instant::now());
            ctx.stale = Some(Stale::IfError);
            ctx.stale_fwd_status = Some(edge_status_for(e));
            self.metrics.stale_if_error.fetch_add(1, Ordering::Relaxed);
        }
        serve
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let customer = ctx
            .customer
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no customer for request"))?;
        let origin = &customer.origin;
        let pool = match &ctx.pool {
            Some(pool) => pool.clone(),
            None => {
                let pool = self.origins.pool(&customer);
                ctx.pool = Some(pool.clone());
                pool
            }
        };
        // The next server up that this request has not tried; one that cannot be
        // resolved counts as failed, and the next is tried at once.
        let addr = loop {
            let Some(i) = self.origins.pick(&pool, ctx.tried, Instant::now()) else {
                return Err(Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!(
                        "no origin server of {:?} could be reached ({} tried)",
                        customer.name,
                        pool.len()
                    ),
                )
                .into_up());
            };
            ctx.tried |= crate::origin::tried_bit(i);
            ctx.server = Some(i);
            let server = pool.server(i).map(|s| s.addr.as_str()).unwrap_or("");
            match self.origins.address(server).await {
                Ok(addr) => break addr,
                Err(e) => {
                    warn!("customer={} origin {server}: {e}", customer.name);
                    self.origins.failed(&pool, i, Instant::now());
                    if !pool.untried(ctx.tried) {
                        return Err(e);
                    }
                }
            }
        };
        let host = request_host(session.req_header())
            .map(strip_port)
            .unwrap_or("");
        let sni = origin.sni.clone().unwrap_or_else(|| host.to_string());
        let mut peer = HttpPeer::new(addr, origin.tls, sni);
        peer.options.connection_timeout = Some(origin.connect_timeout);
        peer.options.total_connection_timeout = Some(origin.connect_timeout);
        peer.options.read_timeout = Some(origin.read_timeout);
        peer.options.write_timeout = Some(origin.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// A server refused, timed out connecting, or failed its TLS handshake: it is down
    /// for a moment, and the request goes to another server of the customer, whatever
    /// its method (nothing was sent).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
            self.origins.failed(pool, i, Instant::now());
            if pool.untried(ctx.tried) {
                e.set_retry(true);
            }
        }
        e
    }

    /// The connection broke after the request went out. An idempotent request whose
    /// answer had not begun is sent to another server; others are not repeated.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
            return e;
        }
        e.retry.decide_reuse(client_reused);
        if client_reused {
            // A pooled connection the server had closed: not the server's failure, and
            // the retry may go to the same server on a new connection.
            if let Some(i) = ctx.server {
                ctx.tried &= !crate::origin::tried_bit(i);
            }
            return e;
        }
        let other_server = ctx.origin_status.is_none()
            && ctx
                .pool
                .as_ref()
                .is_some_and(|pool| pool.untried(ctx.tried));
        if other_server && e.esource() == &ErrorSource::Upstream {
            if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
                self.origins.failed(pool, i, Instant::now());
            }
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.customer().is_some_and(|c| c.origin.forwarded) {
            let peer = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            set_forwarded(upstream_request, peer, ctx.transport.scheme())?;
        }
        if let Some(host) = ctx.customer().and_then(|c| c.origin.host_header.clone()) {
            upstream_request.insert_header(header::HOST, host)?;
        }
        if matches!(ctx.purged, Some(Verdict::Gone)) {
            // A purged copy is fetched again whole: its validators must not revive it.
            upstream_request.remove_header(&header::IF_NONE_MATCH);
            upstream_request.remove_header(&header::IF_MODIFIED_SINCE);
        }
        upstream_request.append_header("Via", self.sign.via())?;
        // One CDN-Loop list, the hops before this one first (RFC 8586).
        let cdn_loop = head::list_ending_in(
            &upstream_request.headers,
            "cdn-loop",
            self.loop_entry.clone(),
        );
        upstream_request.insert_header("CDN-Loop", cdn_loop)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Hop-by-hop: the parameters of the origin's connection to Holdfast, neither
        // stored nor passed on (Pingora replaces `Connection` itself).
        upstream_response.remove_header("keep-alive");
        // So are the fields its `Connection` names (RFC 9110 §7.6.1).
        let named: Vec<String> = upstream_response
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty() && n != "close" && n != "keep-alive")
            .collect();
        for name in named {
            upstream_response.remove_header(name.as_str());
        }
        let status = upstream_response.status.as_u16();
        ctx.origin_status = Some(status);
        if status == 304 && session.cache.maybe_cache_meta().is_some() {
            // pingora-cache merges a few of the 304's fields into the stored header;
            // RFC 9111 §4.3.4 says all of them (see response_cache_filter).
            ctx.revalidated_fields = Some(upstream_response.headers.clone());
        }
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
            self.origins.answered(pool, i);
        }
        if let Some(customer) = ctx.customer() {
            if policy::is_stale_if_error_status(&customer.cache, status) {
                self.health.failed(&customer.name, status, Instant::now());
            } else {
                self.health.recovered(&customer.name);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if policy::is_unsafe(&session.req_header().method) && resp.status.as_u16() < 400 {
            // RFC 9111 §4.4: a successful unsafe request invalidates the stored URL.
            if let Some(customer) = ctx.customer() {
                let key = key_for(customer, session.req_header(), ctx.transport.scheme());
                crate::purge::remove_now(self.store, &[key]).await;
            }
        }
        let outcome = decide(session, ctx);
        let outcome = ctx.outcome.insert(outcome);
        head::edge_fields(resp, outcome, &self.sign)
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
        let code = edge_status_for(e);
        if ctx.sent_directly.is_some() {
            // The fast path's own write to the client failed part-way: close.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if matches!(e.esource(), ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            )
        {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if e.esource() == &ErrorSource::Upstream {
            if let Some(customer) = ctx.customer() {
                self.health.failed(&customer.name, code, Instant::now());
            }
        }
        let failure = if ctx.expired_by_rule {
            // A stored copy exists but its rule's expires_at forbids serving it stale.
            Failure::ExpiresAt
        } else if is_timeout(e) {
            Failure::OriginTimeout
        } else if e.esource() == &ErrorSource::Upstream {
            Failure::OriginUnreachable
        } else {
            Failure::Edge
        };
        let fwd = match ctx.bypass {
            Some((fwd, _)) => fwd,
            None if ctx.expired_by_rule => Fwd::Stale,
            None => Fwd::Miss,
        };
        let outcome = Outcome::Failed { fwd, failure };
        ctx.outcome = Some(outcome.clone());
        let body = match ctx.customer() {
            Some(c) => format!(
                "holdfast: the origin of {:?} did not answer ({}) and no stale copy may be served\n",
                c.name,
                e.etype().as_str()
            ),
            None => format!("holdfast: {}\n", e.etype().as_str()),
        };
        if session.response_written().is_none() {
            // The connection is not reused after this answer (below): say so in it.
            session.set_keepalive(None);
            if let Err(write_err) =
                respond_text(session, code, body, &outcome, None, &self.sign).await
            {
                warn!("could not send the error response: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        deadline::next_request(session);
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let (status, bytes) = match ctx.sent_directly {
            Some(sent) => sent,
            None => (
                session
                    .response_written()
                    .map(|r| r.status.as_u16())
                    .unwrap_or(0),
                session.body_bytes_sent(),
            ),
        };
        let mut outcome = match &ctx.outcome {
            Some(outcome) => outcome.clone(),
            None => decide(session, ctx),
        };
        if let Outcome::Forwarded { stored, ttl, .. } = &mut outcome {
            // Said before the body came; what the store holds now is the truth.
            let kept = ctx.fill.is_some_and(|fill| {
                session
                    .cache
                    .maybe_cache_key()
                    .and_then(|key| self.store.peek(key))
                    .is_some_and(|held| held.created() == fill.created)
            });
            if *stored != kept {
                *stored = kept;
                if !kept {
                    *ttl = None;
                }
            }
        }
        if let Some(customer) = ctx.customer() {
            let origin_error =
                ctx.origin_status.is_some_and(|s| s >= 500) || outcome.origin_failed();
            self.metrics
                .served(&customer.name, outcome.served(), bytes, origin_error);
        }
        if !log::log_enabled!(target: "holdfast::access", log::Level::Info) {
            return;
        }
        let req = session.req_header();
        let cache = self.sign.cache_status(&outcome);
        let customer = ctx.customer().map(|c| c.name.as_str()).unwrap_or("-");
        let host = request_host(req).unwrap_or("-");
        info!(
            target: "holdfast::access",
            "customer={customer} host={host} proto={} method={} path={} status={status} cache=\"{cache}\" origin={} bytes={} ms={} config_version={}{}",
            ctx.transport.name(),
            req.method,
            req.uri.path(),
            ctx.pool
                .as_ref()
                .zip(ctx.server)
                .and_then(|(pool, i)| pool.server(i))
                .map_or("-", |s| s.addr.as_str()),
            bytes,
            ctx.started.elapsed().as_millis(),
            ctx.config_version,
            e.map(|e| format!(" error=\"{e}\"")).unwrap_or_default(),
        );
    }
}

/// Fill in how the request arrived; the SNI of a TLS connection that sent one, for the
/// domain-fronting check.
fn transport<'a>(session: &'a Session, out: &mut Transport) -> Option<&'a str> {
    out.h2 = session.is_http2();
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    out.tls = true;
    ssl.extension.get::<Sni>()?.0.as_deref()
}

fn lock_overrides(wait: Duration) -> CacheOptionOverrides {
    let mut o = CacheOptionOverrides::default();
    o.wait_timeout = Some(wait);
    o
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The cache key of a request for `customer` that arrived by `scheme` (that of its
/// connection: HTTP/1.1 over TLS carries none, and a client's word is not taken for it).
fn key_for(customer: &Customer, req: &RequestHeader, scheme: &str) -> CacheKey {
    let host = request_host(req).map(strip_port).unwrap_or("");
    let primary = policy::cache_key(customer, scheme, host, req.uri.path(), req.uri.query());
    crate::storage::key(primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports_but_not_ipv6_colons() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("shop.example.com"), "shop.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }
}
