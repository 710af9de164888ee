//! A tiny static-file origin for demos and quick starts (`demo_origin:` in the node file).
//!
//! It serves files under one directory with a short `Cache-Control` so the edge has
//! something to cache with no other process running. It is not a production web server:
//! it never serves anything outside its root.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

pub struct DemoOrigin {
    pub root: PathBuf,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Map a URL path to a file under `root`, refusing anything that climbs out of it.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_string()
    };
    let rel = Path::new(&rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let file = resolve(&self.root, &path);
        let body = match &file {
            Some(f) => tokio::fs::read(f).await.ok(),
            None => None,
        };
        let builder = Response::builder().header("Server", "holdfast-demo-origin");
        let resp = match (body, file) {
            (Some(body), Some(file)) => builder
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, content_type(&file))
                .header(http::header::CACHE_CONTROL, "public, max-age=60")
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(body),
            _ => {
                let body = format!("not found: {path}\n").into_bytes();
                builder
                    .status(StatusCode::NOT_FOUND)
                    .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(body)
            }
        };
        resp.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_leaves_its_root() {
        let root = Path::new("/srv/demo");
        assert_eq!(resolve(root, "/"), Some(root.join("index.html")));
        assert_eq!(resolve(root, "/a/b.txt"), Some(root.join("a/b.txt")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
    }
}
