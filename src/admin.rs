//! The admin listener: health, metrics and config state for operators.
//!
//! It must never be reachable from the data-plane listeners, and never mutate the cache
//! or config except through the explicit endpoints documented in the README.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::config::Customers;
use crate::metrics::Metrics;
use crate::storage::MemoryStore;

/// What the admin endpoints read.
pub struct Admin {
    pub customers: Arc<ArcSwap<Customers>>,
    pub metrics: Arc<Metrics>,
    pub store: &'static MemoryStore,
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
                self.metrics.render(self.store),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("holdfast admin: no endpoint {method} {path}; try GET /healthz or GET /metrics\n"),
            ),
        }
    }
}
