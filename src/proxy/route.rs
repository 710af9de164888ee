//! The request phase: which customer a request is for, the answers the edge gives on its
//! own before any cache or origin (unknown host, domain fronting, loops, purges, refused
//! requests: each an [`EdgeAnswer`]), the request's plan from the policy, and then the
//! fast path.

use std::sync::Arc;

use pingora_error::Result;
use pingora_proxy::Session;

use super::answer::EdgeAnswer;
use super::outcome::{Detail, Fwd};
use super::request::{self, normalize_request, request_host, screen};
use super::slice::Slice;
use super::{Ctx, Edge};
use crate::config::Customer;
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
        let host = request_host(session.req_header()).unwrap_or("");
        let customer = match self.admit(session, ctx, host) {
            Ok(customer) => customer,
            Err(answer) => {
                self.answer(session, ctx, answer).await?;
                return Ok(true);
            }
        };
        let host = crate::config::canonical_host(host).into_owned();
        normalize_request(session.req_header_mut(), &customer, &host)?;
        let early = if session.req_header().method.as_str() == "PURGE" {
            Some(self.purge_url(session, &customer, &host).await)
        } else {
            screen(session.req_header_mut(), &customer)
        };
        if let Some(answer) = early {
            ctx.customer = Some(customer);
            self.answer(session, ctx, answer).await?;
            return Ok(true);
        }
        let now = self.clock.now();
        let req = session.req_header();
        let plan = policy::plan_request(&customer, &req.method, req.uri.path(), now);
        ctx.rule = plan.rule().map(|r| r.index);
        if let RequestPlan::Bypass { reason, .. } = plan {
            let fwd = if policy::is_cacheable_method(&req.method) {
                Fwd::Bypass
            } else {
                Fwd::Method
            };
            ctx.bypass = Some((fwd, Detail::Bypass(reason)));
        } else if policy::has_request_body(&req.headers) {
            ctx.bypass = Some((Fwd::Bypass, Detail::RequestBody));
        }
        let slice = customer.cache.slice;
        ctx.customer = Some(customer);
        if ctx.bypass.is_none() {
            if let Some(part) = Slice::of(session) {
                // One slice of a sliced answer (see [`super::slice`]).
                ctx.slice = Some(part);
                Slice::clean(session.req_header_mut());
            } else if let Some(size) = slice {
                let method = &session.req_header().method;
                if (method == http::Method::GET || method == http::Method::HEAD)
                    && self.serve_sliced(session, ctx, size).await?
                {
                    return Ok(true);
                }
            }
            return self.serve_fresh_hit(session, ctx, now).await;
        }
        Ok(false)
    }

    /// The customer the request for `host` is for, from the current snapshot (whose
    /// version `ctx` keeps, with how the request arrived), or the edge's own answer: no
    /// such host, a TLS connection opened for another customer, a loop.
    fn admit(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        host: &str,
    ) -> Result<Arc<Customer>, EdgeAnswer> {
        let sni = transport(session, &mut ctx.transport);
        let snapshot = self.customers.load();
        ctx.config_version = snapshot.version;
        let Some(customer) = snapshot.route(host) else {
            return Err(EdgeAnswer::UnknownHost {
                host: host.to_string(),
            });
        };
        if let Some(sni) = sni {
            if !snapshot
                .route(sni)
                .is_some_and(|c| Arc::ptr_eq(c, customer))
            {
                return Err(EdgeAnswer::Misdirected {
                    sni: sni.to_string(),
                    host: crate::config::canonical_host(host).into_owned(),
                });
            }
        }
        if let Some(hops) =
            request::loop_detected(session.req_header(), &self.loop_entry, self.max_hops)
        {
            // This request has passed this very node, or too many Holdfast nodes: answer
            // now rather than send it round again until something times out.
            return Err(EdgeAnswer::Loop {
                hops,
                node: self.loop_entry.clone(),
                customer: customer.name.clone(),
            });
        }
        Ok(customer.clone())
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
