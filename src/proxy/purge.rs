//! Purges on the data plane: the purge verdict both hit paths ask, and `PURGE /path`.

use std::time::SystemTime;

use http::header;
use log::{info, warn};
use pingora_proxy::Session;

use super::answer::EdgeAnswer;
use super::Edge;
use crate::config::Customer;
use crate::purge::Verdict;

impl Edge {
    /// What the purge markers say of a copy of `customer`'s: the node's own (admin
    /// purges) and those its synced document lists (made from the config's list here).
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
                self.document_purges
                    .check(customer, key_text, path, tags, validated),
            )
    }

    /// `PURGE /path` with one of the customer's purge tokens: a hard purge of that URL
    /// (every variant, both schemes), answered by the edge; without a valid token 401
    /// (403 for another customer's), and the origin is never asked.
    pub(super) async fn purge_url(
        &self,
        session: &Session,
        customer: &Customer,
        host: &str,
    ) -> EdgeAnswer {
        let token = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| crate::admin::access::bearer(Some(v.as_bytes())))
            .map(crate::admin::access::hash_token);
        let allowed = token
            .as_ref()
            .is_some_and(|t| crate::purge::holds(customer, t));
        if !allowed {
            let customers = self.customers.load();
            return EdgeAnswer::PurgeRefused {
                other_customers_token: token
                    .is_some_and(|t| customers.list.iter().any(|c| crate::purge::holds(c, &t))),
                customer: customer.name.clone(),
            };
        }
        let req = session.req_header();
        let keys = crate::purge::url_keys(customer, host, req.uri.path(), req.uri.query());
        let entry = crate::purge::Entry {
            customer: customer.name.clone(),
            at_unix_ns: crate::purge::unix_ns(self.clock.now()),
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
        EdgeAnswer::Purged {
            url: format!("{host}{}", req.uri.path()),
            customer: customer.name.clone(),
            persisted,
        }
    }
}
