//! The request phase: which customer a request is for, the answers the edge gives on its
//! own before any cache or origin (unknown host, domain fronting, loops, purges, refused
//! requests), the request's plan from the policy, and then the fast path.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use pingora_error::Result;
use pingora_proxy::Session;

use super::outcome::{Fwd, Outcome};
use super::request::{self, normalize_request, request_host, screen};
use super::{respond_text, Ctx, Edge};
use crate::policy::{self, RequestPlan};
use crate::tls::{Sni, Transport};

impl Edge {
    /// `request_filter`: `true` when the edge answered (on its own or from the fast path).
    pub(super) async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
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
}

/// Fill in how the request arrived; the SNI of a TLS connection that sent one, for the
/// domain-fronting check.
fn transport<'a>(session: &'a Session, out: &mut Transport) -> Option<&'a str> {
    out.h2 = session.is_http2();
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    out.tls = true;
    ssl.extension.get::<Sni>()?.0.as_deref()
}
