//! The end of a request: the edge's fields on every answer, the answer when the origin
//! failed and nothing stored may stand in, and the access log and metrics, all from the
//! request's one [`Outcome`].

use std::sync::atomic::Ordering;

use log::{info, warn};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

use super::answer::respond_text;
use super::outcome::{decide, Failure, Fwd, Outcome};
use super::request::request_host;
use super::stored::Judgement;
use super::{deadline, edge_status_for, head, is_timeout, key_for, Ctx, Edge};
use crate::policy;

impl Edge {
    /// `response_filter`: a successful unsafe request invalidates its URL; every answer
    /// gets the fields of its outcome.
    pub(super) async fn finish_header(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if policy::is_unsafe(&session.req_header().method) && resp.status.as_u16() < 400 {
            // RFC 9111 §4.4: a successful unsafe request invalidates the stored URL.
            if let Some(customer) = ctx.customer() {
                let key = key_for(customer, session.req_header(), ctx.transport.scheme());
                crate::purge::remove_now(self.store, &[key]).await;
            }
        }
        // An intermediary sends its own version (RFC 9110, 6.2), whatever the origin spoke.
        if matches!(
            resp.version,
            http::Version::HTTP_09 | http::Version::HTTP_10
        ) {
            resp.set_version(http::Version::HTTP_11);
        }
        let outcome = decide(session, ctx, self.clock.now());
        let outcome = ctx.outcome.insert(outcome);
        head::edge_fields(resp, outcome, &self.sign)
    }

    /// `fail_to_proxy`: the edge's answer when the origin failed and no stored copy stands in.
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
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
                self.health
                    .failed(&customer.name, code, self.clock.instant());
            }
        }
        let expired_by_rule = matches!(ctx.judged, Some(Judgement::ExpiredByRule { .. }));
        let failure = if expired_by_rule {
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
            None if expired_by_rule => Fwd::Stale,
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

    /// `logging`: the metrics and the access line, from the request's outcome.
    pub(super) fn log_request(&self, session: &Session, e: Option<&Error>, ctx: &Ctx) {
        deadline::next_request(session);
        // A slice is part of its client's request, which counts it (see `super::slice`):
        // it is logged, with its index, but not counted again.
        let counted = ctx.slice.is_none();
        if counted {
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        }
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
            None => decide(session, ctx, self.clock.now()),
        };
        if let Outcome::Forwarded { stored, ttl, .. } = &mut outcome {
            // Said before the body came; what the store holds now is the truth.
            let kept = ctx.origin.fill().is_some_and(|fill| {
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
        if !counted {
            let slices = match outcome {
                Outcome::Hit { .. } => &self.metrics.slice_hits,
                _ => &self.metrics.slice_fetches,
            };
            slices.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(customer) = ctx.customer().filter(|_| counted) {
            let origin_error =
                ctx.origin.status.is_some_and(|s| s >= 500) || outcome.origin_failed();
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
            "customer={customer} host={host} proto={} method={} path={} status={status} cache=\"{cache}\" origin={} bytes={} ms={} config_version={}{}{}",
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
            ctx.slice
                .map(|s| format!(" slice={}", s.index))
                .unwrap_or_default(),
            e.map(|e| format!(" error=\"{e}\"")).unwrap_or_default(),
        );
    }
}
