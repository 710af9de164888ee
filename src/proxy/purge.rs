//! Purges on the data plane: the purge verdict both hit paths ask, and `PURGE /path`.

use std::time::SystemTime;

use http::header;
use log::{info, warn};
use pingora_error::Result;
use pingora_proxy::Session;

use super::outcome::Outcome;
use super::{respond_text, Ctx, Edge};
use crate::config::Customer;
use crate::purge::Verdict;

impl Edge {
    /// What the purge markers say of a copy of `customer`'s: the node's own (admin
    /// purges) and those its synced document lists.
    pub(super) fn purge_verdict(
        &self,
        customer: &Customer,
        key_text: &str,
        path: &str,
        headers: &http::HeaderMap,
        validated: SystemTime,
    ) -> Verdict {
        let tags = || crate::purge::tags(headers);
        self.purges
            .check(&customer.name, key_text, path, tags, validated)
            .and(
                customer
                    .purges
                    .check(&customer.name, key_text, path, tags, validated),
            )
    }

    /// `PURGE /path` with one of the customer's purge tokens: a hard purge of that URL
    /// (every variant, both schemes), answered by the edge; without a valid token 401
    /// (403 for another customer's), and the origin is never asked.
    pub(super) async fn purge_url(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        customer: &Customer,
        host: &str,
    ) -> Result<()> {
        let token = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| crate::admin::access::bearer(Some(v.as_bytes())))
            .map(crate::admin::access::hash_token);
        let allowed = token
            .as_ref()
            .is_some_and(|t| crate::purge::holds(customer, t));
        let outcome = Outcome::Edge {
            reason: if allowed { "purged" } else { "purge-refused" },
        };
        ctx.outcome = Some(outcome.clone());
        if !allowed {
            session.set_keepalive(None);
            let (code, body) = match token {
                Some(t) if self.customers.load().list.iter().any(|c| crate::purge::holds(c, &t)) => {
                    (403, format!("holdfast: this token purges another customer's content, not {:?}'s\n", customer.name))
                }
                _ => (
                    401,
                    "holdfast: PURGE needs Authorization: Bearer <one of this site's purge tokens>\n".to_string(),
                ),
            };
            return respond_text(session, code, body, &outcome, None, &self.sign).await;
        }
        let req = session.req_header();
        let keys = crate::purge::url_keys(customer, host, req.uri.path(), req.uri.query());
        let entry = crate::purge::Entry {
            customer: customer.name.clone(),
            at_unix_ns: crate::purge::unix_ns(SystemTime::now()),
            keys: keys
                .iter()
                .filter_map(|k| k.primary_key_str().map(str::to_string))
                .collect(),
            prefixes: Vec::new(),
            tags: Vec::new(),
            all: false,
            soft: false,
        };
        self.metrics.purged(&customer.name, 1, 0, 0, false);
        let persisted = match self.purges.apply(entry) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    "customer={} PURGE applied but not kept on disk: {e}",
                    customer.name
                );
                false
            }
        };
        crate::purge::remove_now(self.store, &keys).await;
        info!(
            "purge: customer={} PURGE {}{}",
            customer.name,
            host,
            req.uri.path()
        );
        let body = format!(
            "holdfast: purged {host}{} for customer {:?}{}\n",
            req.uri.path(),
            customer.name,
            if persisted {
                ""
            } else {
                " (not kept on disk: a restart would forget it)"
            }
        );
        respond_text(session, 200, body, &outcome, None, &self.sign).await
    }
}
