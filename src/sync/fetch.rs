//! One conditional GET of the customer document from one control-plane URL.
//!
//! Uses Pingora's own HTTP client (the same rustls stack the proxy uses for origins:
//! HTTPS certificates and host names are verified against the platform's roots, or
//! `SSL_CERT_FILE`). The whole exchange is bounded by `timeout`, and the body by
//! `max_document` while it is read. The bearer token never reaches a log line.

use std::time::Duration;

use bytes::BytesMut;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use thiserror::Error;

/// Validators of the document last accepted from one URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What a control plane answered.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the document is the one the validators name.
    NotModified,
    /// 2xx with the whole body.
    Document {
        text: String,
        validators: Validators,
    },
}

/// Why a fetch failed; each message says what happened.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("no answer within control_plane.timeout ({0:?})")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error(
        "the document is larger than control_plane.max_document ({limit} bytes); \
         shrink it or raise max_document"
    )]
    TooLarge { limit: usize },
    #[error("the document is not UTF-8 text")]
    NotUtf8,
    #[error("{0}")]
    Http(String),
}

/// Fetches customer documents; one per node, shared by the poller and `/reload`.
pub struct Fetcher {
    connector: Connector,
    timeout: Duration,
    max_document: usize,
    token: Option<String>,
}

impl Fetcher {
    pub fn new(timeout: Duration, max_document: usize, token: Option<String>) -> Fetcher {
        Fetcher {
            connector: Connector::new(None),
            timeout,
            max_document,
            token,
        }
    }

    /// GET `url` with the validators of the copy we hold; bounded by `timeout`.
    pub async fn fetch(&self, url: &str, held: &Validators) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.timeout, self.exchange(url, held)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, url: &str, held: &Validators) -> Result<Fetched, FetchError> {
        let target = Target::parse(url)?;
        let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| FetchError::Resolve {
                host: target.host.clone(),
                reason: e.to_string(),
            })?
            .collect();
        let http = |e: Box<pingora_error::Error>| FetchError::Http(describe(&e));
        // Try each address in turn (e.g. `localhost` is ::1 and 127.0.0.1).
        let mut last = FetchError::Resolve {
            host: target.host.clone(),
            reason: "no addresses".into(),
        };
        let mut connected = None;
        for addr in addrs {
            let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
            peer.options.connection_timeout = Some(self.timeout);
            peer.options.total_connection_timeout = Some(self.timeout);
            peer.options.read_timeout = Some(self.timeout);
            peer.options.write_timeout = Some(self.timeout);
            match self.connector.get_http_session(&peer).await {
                Ok((session, _)) => {
                    connected = Some(session);
                    break;
                }
                Err(e) => last = http(e),
            }
        }
        let Some(mut session) = connected else {
            return Err(last);
        };
        let mut req = RequestHeader::build("GET", target.path.as_bytes(), None).map_err(http)?;
        req.insert_header("Host", target.authority.as_str())
            .map_err(http)?;
        req.insert_header(
            "User-Agent",
            concat!("holdfast/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(http)?;
        req.insert_header("Accept", "application/yaml, text/yaml, */*")
            .map_err(http)?;
        if let Some(etag) = &held.etag {
            req.insert_header("If-None-Match", etag.as_str())
                .map_err(http)?;
        }
        if let Some(lm) = &held.last_modified {
            req.insert_header("If-Modified-Since", lm.as_str())
                .map_err(http)?;
        }
        if let Some(token) = &self.token {
            req.insert_header("Authorization", format!("Bearer {token}"))
                .map_err(http)?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(http)?;
        session.finish_request_body().await.map_err(http)?;
        session.read_response_header().await.map_err(http)?;
        let resp = session
            .response_header()
            .ok_or_else(|| FetchError::Http("no response header".into()))?;
        let status = resp.status.as_u16();
        if status == 304 {
            return Ok(Fetched::NotModified);
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        let header = |name: http::header::HeaderName| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header(http::header::ETAG),
            last_modified: header(http::header::LAST_MODIFIED),
        };
        let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_document) {
            return Err(FetchError::TooLarge {
                limit: self.max_document,
            });
        }
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = session.read_response_body().await.map_err(http)? {
            if body.len() + chunk.len() > self.max_document {
                return Err(FetchError::TooLarge {
                    limit: self.max_document,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body.to_vec()).map_err(|_| FetchError::NotUtf8)?;
        Ok(Fetched::Document { text, validators })
    }
}

/// "ConnectRefused: Connection refused (os error 111)": the error type and the
/// innermost detail, without Pingora's nested context chain.
fn describe(e: &pingora_error::Error) -> String {
    let mut inner = e;
    while let Some(next) = inner.cause.as_deref().and_then(|c| {
        c.downcast_ref::<Box<pingora_error::Error>>()
            .map(|b| &**b)
            .or_else(|| c.downcast_ref::<pingora_error::Error>())
    }) {
        inner = next;
    }
    let cause = inner.cause.as_ref().map(|c| c.to_string());
    let detail = match (cause, &inner.context) {
        // A connect failure's cause only names the local address; the context says why.
        (Some(c), Some(context)) if c.starts_with("local address") => context.to_string(),
        (Some(c), _) => c,
        (None, Some(context)) => context.to_string(),
        (None, None) => String::new(),
    };
    // Some contexts embed a whole nested error; its last cause is the root.
    let detail = detail.rsplit("cause: ").next().unwrap_or_default().trim();
    if detail.is_empty() {
        e.etype().as_str().to_string()
    } else {
        format!("{}: {detail}", e.etype().as_str())
    }
}

/// The parts of a control-plane URL a request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Host name or IP, without brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, FetchError> {
        let bad = |why: &str| FetchError::Url(format!("{url}: {why}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("use http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Target {
            tls,
            host,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("/")
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("https://cp.example.net/pops/fra1/customers.yaml?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "cp.example.net".into(),
                port: 443,
                authority: "cp.example.net".into(),
                path: "/pops/fra1/customers.yaml?x=1".into(),
            }
        );
        let t = Target::parse("http://[::1]:8081").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8081, "/")
        );
        assert_eq!(t.authority, "[::1]:8081");
        assert!(Target::parse("ftp://x/y").is_err());
    }

    #[test]
    fn describes_pingora_errors_by_their_root() {
        use pingora_error::{Error, ErrorType};
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let inner = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to 10.0.0.1:80",
            io,
        );
        let outer = Error::because(ErrorType::ConnectRefused, "Fail to connect to addr", inner);
        assert_eq!(describe(&outer), "ConnectRefused: refused");

        let tls = Error::because(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed:  TLSHandshakeFailure context: tls connect error \
             cause: invalid peer certificate: UnknownIssuer, SNI: cp.example",
            std::io::Error::other("local address 127.0.0.1:5"),
        );
        assert_eq!(
            describe(&tls),
            "TLSHandshakeFailure: invalid peer certificate: UnknownIssuer, SNI: cp.example"
        );
        let closed = Error::explain(ErrorType::ConnectionClosed, "Peer prematurely closed");
        assert_eq!(
            describe(&closed),
            "ConnectionClosed: Peer prematurely closed"
        );
    }
}
