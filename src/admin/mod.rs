//! The admin listener: health, metrics and config state for operators.
//!
//! It must never be reachable from the data-plane listeners, and never mutate the cache
//! or config except through the explicit endpoints documented in the README, for callers
//! [`access`] lets through.

pub mod access;
mod purge;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::config::Customers;
use crate::metrics::Metrics;
use crate::storage::CacheStore;
use crate::sync::{Outcome, Syncer};

/// What the admin endpoints read.
pub struct Admin {
    pub customers: Arc<ArcSwap<Customers>>,
    pub metrics: Arc<Metrics>,
    pub store: &'static dyn CacheStore,
    /// Config state (`GET /config`) and reloads (`POST /reload`).
    pub sync: Arc<Syncer>,
    /// The operator's token (`admin.token_env`).
    pub operator_token: access::OperatorToken,
    /// `admin.hosts`: names the listener answers to besides addresses and `localhost`.
    pub hosts: Vec<String>,
    /// Purge markers (`POST /purge`).
    pub purges: Arc<crate::purge::Purges>,
    /// Origin servers and their health (`GET /config`).
    pub origins: Arc<crate::origin::Origins>,
    /// Every module's metrics (`/metrics`).
    pub exposition: crate::metrics::Exposition,
}

impl Admin {
    /// `POST /purge`: see [`purge`].
    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let error = |purge::Refused(status, message)| {
            reply(
                status,
                "application/json",
                format!("{}\n", serde_json::json!({ "error": message })),
            )
        };
        let req = session.req_header();
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let post = access::authorize_post(&self.operator_token, authorization.as_deref(), peer);
        let caller = match purge::caller(post, &self.operator_token, authorization.as_deref()) {
            Ok(caller) => caller,
            Err(refused) => return error(refused),
        };
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > 1 << 20 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return error(purge::Refused(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    ))
                }
            }
        }
        let customers = self.customers.load();
        let (entry, keys) = match purge::parse(&body, &caller, &customers, SystemTime::now()) {
            Ok(parsed) => parsed,
            Err(refused) => return error(refused),
        };
        let persisted = match self.purges.apply(entry.clone()) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "purge: customer={} applied, but not kept on disk ({e}): a restart would \
                     forget it",
                    entry.customer
                );
                false
            }
        };
        self.metrics.purged(
            &entry.customer,
            keys.len() / 2,
            entry.prefixes.len(),
            entry.tags.len(),
            entry.all,
        );
        if !entry.soft {
            crate::purge::remove_now(self.store, &keys).await;
        }
        log::info!(
            "purge: customer={} soft={} urls={} prefixes={:?} tags={:?} all={}",
            entry.customer,
            entry.soft,
            keys.len() / 2,
            entry.prefixes,
            entry.tags,
            entry.all
        );
        reply(
            StatusCode::OK,
            "application/json",
            format!("{}\n", purge::applied(&entry, keys.len() / 2, persisted)),
        )
    }

    /// Refuse what `access` does not let through: a Host that is not this listener's,
    /// or a POST without the token (or, without one configured, from off loopback).
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}"));
        if !access::host_allowed(host, &self.hosts) {
            return Some(reply(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                format!(
                    "holdfast admin: Host {:?} does not name this listener; use its address \
                     (or localhost), or add the name to admin.hosts\n",
                    host.unwrap_or("")
                ),
            ));
        }
        // A purge decides its caller itself: customers' tokens count there too.
        if req.method != http::Method::POST || req.uri.path() == "/purge" {
            return None;
        }
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        match access::authorize_post(&self.operator_token, authorization, peer) {
            access::Post::Allowed => None,
            access::Post::Unauthorized => {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "holdfast admin: this needs Authorization: Bearer <the token in \
                     admin.token_env's variable>\n"
                        .to_string(),
                );
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"holdfast admin\""),
                );
                Some(r)
            }
            access::Post::NotLoopback => Some(reply(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                format!("holdfast admin: {}\n", self.operator_token.loopback_only()),
            )),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(refused) = self.refusal(session) {
            return refused;
        }
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => {
                let customers = self.customers.load();
                let body = serde_json::json!({
                    "status": "ok",
                    "config_version": customers.version,
                    "customers": customers.list.len(),
                });
                reply(StatusCode::OK, "application/json", format!("{body}\n"))
            }
            ("GET", "/metrics") => reply(
                StatusCode::OK,
                crate::metrics::Exposition::CONTENT_TYPE,
                self.exposition.render(),
            ),
            ("GET", "/config") => {
                let mut body = self.sync.state().to_json(SystemTime::now());
                let mut purges: Vec<serde_json::Value> = self
                    .purges
                    .entries()
                    .iter()
                    .map(|e| purge::describe(e, "admin"))
                    .collect();
                for c in &self.customers.load().list {
                    purges.extend(c.purges.iter().map(|p| {
                        purge::describe(&crate::purge::entry_of(c, p), "control-plane")
                    }));
                }
                // Per customer, its origin servers as the edge last saw them (a customer
                // no request has gone forward for yet is not listed).
                let origins: serde_json::Map<String, serde_json::Value> = self
                    .customers
                    .load()
                    .list
                    .iter()
                    .filter_map(|c| {
                        let servers = self.origins.servers_of(&c.name);
                        (!servers.is_empty()).then(|| {
                            let list = servers
                                .into_iter()
                                .map(|(server, up, failures)| {
                                    serde_json::json!({ "server": server, "up": up, "failures": failures })
                                })
                                .collect();
                            (c.name.clone(), serde_json::Value::Array(list))
                        })
                    })
                    .collect();
                if let Some(map) = body.as_object_mut() {
                    map.insert("purges".into(), serde_json::Value::Array(purges));
                    map.insert("origins".into(), serde_json::Value::Object(origins));
                }
                reply(StatusCode::OK, "application/json", format!("{body:#}\n"))
            }
            ("GET", "/explain") => {
                // What this edge does with ?url= at ?at= (default now); see crate::explain.
                let customers = self.customers.load();
                let query = session.req_header().uri.query();
                match crate::explain::explain_query(&customers, query, jiff::Timestamp::now()) {
                    Ok(e) => reply(
                        StatusCode::OK,
                        "application/json",
                        format!("{:#}\n", serde_json::json!(e)),
                    ),
                    Err(e) => reply(
                        StatusCode::BAD_REQUEST,
                        "application/json",
                        format!("{}\n", serde_json::json!({ "error": e.to_string() })),
                    ),
                }
            }
            ("POST", "/purge") => self.purge(session).await,
            ("POST", "/reload") => {
                let outcome = self.sync.reload().await;
                let status = match outcome {
                    // The control plane failed us; or the node file is invalid.
                    Outcome::Failed { .. } if self.sync.interval().is_some() => {
                        StatusCode::BAD_GATEWAY
                    }
                    Outcome::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::OK,
                };
                reply(status, "application/json", format!("{}\n", outcome.to_json()))
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("holdfast admin: no endpoint {method} {path}; try GET /healthz, GET /metrics, GET /config, GET /explain?url=..., POST /reload or POST /purge\n"),
            ),
        }
    }
}
