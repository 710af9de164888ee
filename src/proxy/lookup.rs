//! The cache phases: whether pingora-cache looks up a request at all, its key, whether a
//! stored copy may be used (purges, rules, the origin's health), whether an origin's
//! answer is stored, and when a stale copy is served.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header;
use once_cell::sync::Lazy;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, ForcedFreshness, NoCacheReason, RespCacheable,
    Storage,
};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::outcome::{Fill, Stale, StoreDecision};
use super::stored::{Judgement, StoredCopy};
use super::{edge_status_for, key_for, Ctx, Edge};
use crate::policy::{self, ResponseDecision};

/// The cache lock shared by every request: N concurrent misses for one key reach the
/// origin once. The age timeout frees a lock whose writer died.
static CACHE_LOCK: Lazy<Box<CacheKeyLockImpl>> =
    Lazy::new(|| CacheLock::new_boxed(Duration::from_secs(30)));

impl Edge {
    /// `request_cache_filter`: pingora-cache looks up requests of a customer that are not bypassed.
    pub(super) fn enable_cache(&self, session: &mut Session, ctx: &Ctx) {
        if ctx.customer.is_some() && ctx.bypass.is_none() {
            session.cache.enable(
                self.store as &'static (dyn Storage + Sync),
                None,
                None,
                Some(CACHE_LOCK.as_ref()),
                Some(lock_overrides(self.lock_timeout)),
            );
        }
    }

    /// `cache_key_callback`: the key the fast path built, or the same built again.
    pub(super) fn cache_key(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        if let Some(key) = ctx.key.take() {
            return Ok(key);
        }
        let customer = ctx.customer().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache key without customer")
        })?;
        let key = key_for(customer, session.req_header(), ctx.transport.scheme());
        Ok(match ctx.slice {
            Some(slice) => slice.key(key),
            None => key,
        })
    }

    /// `cache_hit_filter`: whether a stored copy is used as stored, expired by a purge or a
    /// rule, or served stale at once because the origin is failing (see [`Edge::judge`]).
    pub(super) fn check_hit(
        &self,
        session: &Session,
        meta: &CacheMeta,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        let Some(customer) = ctx.customer() else {
            return Ok(None);
        };
        let path = session.req_header().uri.path();
        let key_text = session.cache.cache_key().primary_key_str().unwrap_or("");
        let copy = StoredCopy::of_meta(meta);
        let judged = self.judge(
            customer,
            ctx.rule(),
            key_text,
            path,
            &copy,
            self.clock.now(),
        );
        ctx.judged = Some(judged);
        Ok(match judged {
            Judgement::Fresh | Judgement::Stale => None,
            Judgement::StaleShortcut => {
                self.metrics.stale_if_error.fetch_add(1, Ordering::Relaxed);
                Some(ForcedFreshness::ForceFresh)
            }
            Judgement::Purged
            | Judgement::ExpiredByRule {
                serve_stale: false, ..
            } => Some(ForcedFreshness::ForceExpired),
            Judgement::SoftPurged { at }
            | Judgement::ScheduleMoved { at }
            | Judgement::ExpiredByRule {
                at,
                serve_stale: true,
            } => Some(ForcedFreshness::ForceExpiredServeStale {
                expired_at: Some(at),
            }),
        })
    }

    /// `response_cache_filter`: the policy's decision on storing the origin's answer.
    pub(super) fn cacheability(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        let Some(customer) = ctx.customer() else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let updated;
        let resp = match &ctx.origin.revalidated {
            Some(fields) => {
                updated = updated_by_304(resp, fields)?;
                &updated
            }
            None => resp,
        };
        let authorized = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        if crate::storage::content_length(&resp.headers)
            .is_some_and(|len| len > self.store.max_object())
        {
            // Proxied as it comes, never held: neither tier would keep it. (An answer
            // without a length that grows past it is not kept either, by the store.)
            return Ok(RespCacheable::Uncacheable(NoCacheReason::ResponseTooLarge));
        }
        // A slice's 206 is stored as its 200 would be: it is one piece of the object.
        let whole;
        let judged = if ctx.slice.is_some() && resp.status == http::StatusCode::PARTIAL_CONTENT {
            let mut as_whole = resp.clone();
            as_whole.set_status(http::StatusCode::OK)?;
            whole = as_whole;
            &whole
        } else {
            resp
        };
        let decision = policy::decide_response(
            customer,
            ctx.rule(),
            session.req_header().uri.path(),
            authorized,
            judged,
            self.clock.now(),
        );
        Ok(match decision {
            ResponseDecision::Store(f) => {
                ctx.origin.decision = Some(StoreDecision::Store(Fill {
                    created: f.created,
                    length_known: resp.headers.contains_key(header::CONTENT_LENGTH),
                }));
                RespCacheable::Cacheable(CacheMeta::new(
                    f.fresh_until,
                    f.created,
                    secs_u32(f.stale_while_revalidate),
                    secs_u32(f.stale_if_error),
                    resp.clone(),
                ))
            }
            ResponseDecision::DontStore(reason) => {
                ctx.origin.decision = Some(StoreDecision::DontStore(reason));
                RespCacheable::Uncacheable(NoCacheReason::Custom(reason.as_str()))
            }
        })
    }

    /// `should_serve_stale`: within stale-while-revalidate, or stale-if-error after `error`.
    pub(super) fn serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        let Some(customer) = ctx.customer() else {
            return false;
        };
        if ctx.judged == Some(Judgement::Purged) {
            return false;
        }
        let Some(e) = error else {
            let moved = matches!(ctx.judged, Some(Judgement::ScheduleMoved { .. }));
            if moved || ctx.judged.is_some_and(Judgement::purged) {
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
                .failed(&customer.name, edge_status_for(e), self.clock.instant());
            ctx.stale = Some(Stale::IfError);
            ctx.origin.failed = Some(edge_status_for(e));
            self.metrics.stale_if_error.fetch_add(1, Ordering::Relaxed);
        }
        serve
    }
}

/// Fields a `304` never changes in the stored response (RFC 9111 §3.2): its framing and
/// coding, which describe the stored body, and the hop-by-hop fields.
const KEPT_ON_304: [&str; 6] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// The stored header `merged` (pingora-cache's merge of a `304` into it) with every field
/// of the `304` in place of the stored one (RFC 9111 §4.3.4), but those in
/// [`KEPT_ON_304`]. The `304`'s `Date` counts: the copy's age is counted from it.
fn updated_by_304(merged: &ResponseHeader, fields: &http::HeaderMap) -> Result<ResponseHeader> {
    let mut out = merged.clone();
    let mut seen: Vec<&http::HeaderName> = Vec::new();
    for (name, value) in fields {
        if KEPT_ON_304.contains(&name.as_str()) {
            continue;
        }
        if seen.contains(&name) {
            out.append_header(name.clone(), value.clone())?;
        } else {
            seen.push(name);
            out.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(out)
}

fn lock_overrides(wait: Duration) -> CacheOptionOverrides {
    let mut o = CacheOptionOverrides::default();
    o.wait_timeout = Some(wait);
    o
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
