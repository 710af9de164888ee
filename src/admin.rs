//! The admin listener: health, metrics and config state for operators.
//!
//! It must never be reachable from the data-plane listeners, and never mutate the cache
//! or config except through the explicit endpoints documented in the README.

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
                "text/plain; version=0.0.4",
                self.metrics.render(self.store)
                    + &self.sync.state().render_metrics(SystemTime::now()),
            ),
            ("GET", "/config") => {
                let body = self.sync.state().to_json(SystemTime::now());
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
                format!("holdfast admin: no endpoint {method} {path}; try GET /healthz, GET /metrics, GET /config, GET /explain?url=..., or POST /reload\n"),
            ),
        }
    }
}
