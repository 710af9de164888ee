//! Active health checks (`origin.health_check`), run as a background service.
//!
//! Every `interval`, each server of each customer with a check is sent `GET path` with
//! the customer's `Host` (over TLS when the origin is), through Pingora's own HTTP
//! connector; an answer with the `expect`ed status (any 2xx by default) within `timeout`
//! passes. The result is kept on the server in [`super::Origins`]: a failing server
//! gets no requests until it passes again. Checks of one server never overlap, and a
//! slow server holds up no other. The same service looks up again, every
//! [`super::DNS_REFRESH`], the servers named by a host name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use super::{lookup, Origins, Pool};
use crate::config::{Customer, Customers, HealthCheck};

/// How often the service looks for checks that are due.
const TICK: Duration = Duration::from_millis(100);

pub struct HealthChecks {
    customers: Arc<ArcSwap<Customers>>,
    origins: Arc<Origins>,
}

impl HealthChecks {
    pub fn new(customers: Arc<ArcSwap<Customers>>, origins: Arc<Origins>) -> HealthChecks {
        HealthChecks { customers, origins }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(None));
        // (customer, server) → when its next check is due. A check ends within its
        // timeout, which is at most its interval: checks of one server never overlap.
        let mut due: HashMap<(String, String), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let snapshot = self.customers.load_full();
            let now = Instant::now();
            let mut configured = std::collections::HashSet::new();
            for customer in &snapshot.list {
                let Some(check) = customer.origin.health_check.clone() else {
                    continue;
                };
                let pool = self.origins.pool(customer);
                for i in 0..pool.len() {
                    let Some(addr) = pool.server(i).map(|s| s.addr.clone()) else {
                        continue;
                    };
                    let key = (customer.name.clone(), addr);
                    configured.insert(key.clone());
                    let slot = due.entry(key).or_insert(now);
                    if *slot > now {
                        continue;
                    }
                    *slot = now + check.interval;
                    let (origins, pool, connector) =
                        (self.origins.clone(), pool.clone(), connector.clone());
                    let (customer, check) = (customer.clone(), check.clone());
                    tokio::spawn(async move {
                        let passed = probe(&origins, &connector, &customer, &pool, i, &check).await;
                        origins.checked(&pool, i, passed);
                    });
                }
            }
            // Names of servers looked up again in the background, never on a request.
            for name in self.origins.names_to_refresh(now) {
                let origins = self.origins.clone();
                tokio::spawn(async move {
                    let result = lookup(&name).await.map_err(|e| e.to_string());
                    origins.store_lookup(&name, result, Instant::now());
                });
            }
            // Forget servers that are no longer checked.
            due.retain(|key, _| configured.contains(key));
        }
    }
}

/// One check of server `i`: whether it answered `check.expect` in time.
async fn probe(
    origins: &Origins,
    connector: &Connector,
    customer: &Customer,
    pool: &Pool,
    i: usize,
    check: &HealthCheck,
) -> bool {
    let Some(server) = pool.server(i) else {
        return false;
    };
    let host = customer
        .origin
        .host_header
        .clone()
        .or_else(|| {
            customer
                .hosts
                .iter()
                .map(|h| h.trim_start_matches("*.").to_string())
                .next()
        })
        .unwrap_or_default();
    let attempt = async {
        let addr = origins.address(&server.addr).await.ok()?;
        let sni = customer.origin.sni.clone().unwrap_or_else(|| host.clone());
        let mut peer = HttpPeer::new(addr, customer.origin.tls, sni);
        peer.options.connection_timeout = Some(check.timeout);
        peer.options.total_connection_timeout = Some(check.timeout);
        peer.options.read_timeout = Some(check.timeout);
        peer.options.write_timeout = Some(check.timeout);
        let (mut session, _) = connector.get_http_session(&peer).await.ok()?;
        let mut req = RequestHeader::build("GET", check.path.as_bytes(), None).ok()?;
        req.insert_header(http::header::HOST, host.as_str()).ok()?;
        req.insert_header(http::header::USER_AGENT, "holdfast-health-check")
            .ok()?;
        req.insert_header(http::header::CONNECTION, "close").ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status.as_u16();
        session.shutdown().await;
        Some(status)
    };
    let status = tokio::time::timeout(check.timeout, attempt)
        .await
        .ok()
        .flatten();
    match (status, check.expect) {
        (Some(got), Some(want)) => got == want,
        (Some(got), None) => (200..300).contains(&got),
        (None, _) => false,
    }
}
