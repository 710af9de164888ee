//! The origin phases: which server of the customer's a request goes to, what happens when
//! one refuses or breaks, and the fields the edge adds to a request and takes from an
//! answer on the way.

use std::time::Duration;

use http::header;
use log::warn;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::request::{request_host, set_forwarded};
use super::stored::Judgement;
use super::{head, Ctx, Edge};
use crate::config::strip_port;
use crate::policy;

impl Edge {
    /// `upstream_peer`: the next server of the customer's that is up and not yet tried.
    pub(super) async fn pick_server(
        &self,
        session: &Session,
        ctx: &mut Ctx,
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
            let Some(i) = self.origins.pick(&pool, ctx.tried, self.clock.instant()) else {
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
                    self.origins.failed(&pool, i, self.clock.instant());
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
    pub(super) fn connect_failed(&self, ctx: &Ctx, mut e: Box<Error>) -> Box<Error> {
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
            self.origins.failed(pool, i, self.clock.instant());
            if pool.untried(ctx.tried) {
                e.set_retry(true);
            }
        }
        e
    }

    /// The connection broke after the request went out. An idempotent request whose
    /// answer had not begun is sent to another server; others are not repeated.
    pub(super) fn broke_after_send(
        &self,
        peer: &HttpPeer,
        session: &Session,
        e: Box<Error>,
        ctx: &mut Ctx,
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
        let other_server = ctx.origin.status.is_none()
            && ctx
                .pool
                .as_ref()
                .is_some_and(|pool| pool.untried(ctx.tried));
        if other_server && e.esource() == &ErrorSource::Upstream {
            if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
                self.origins.failed(pool, i, self.clock.instant());
            }
            e.set_retry(true);
        }
        e
    }

    /// `upstream_request_filter`: forwarding fields, the origin's `Host`, `Via`, `CDN-Loop`.
    pub(super) fn going_to_origin(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
        ctx: &Ctx,
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
        if ctx.judged == Some(Judgement::Purged) {
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

    /// `upstream_response_filter`: hop-by-hop fields dropped, the server and the
    /// customer's origin health updated from the status.
    pub(super) fn origin_answered(
        &self,
        session: &Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
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
        ctx.origin.status = Some(status);
        if status == 304 && session.cache.maybe_cache_meta().is_some() {
            // pingora-cache merges a few of the 304's fields into the stored header;
            // RFC 9111 §4.3.4 says all of them (see response_cache_filter).
            ctx.origin.revalidated = Some(upstream_response.headers.clone());
        }
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.server) {
            self.origins.answered(pool, i);
        }
        if let Some(customer) = ctx.customer() {
            if policy::is_stale_if_error_status(&customer.cache, status) {
                self.health
                    .failed(&customer.name, status, self.clock.instant());
            } else {
                self.health.recovered(&customer.name);
            }
        }
        Ok(())
    }
}
