//! The answers the edge gives itself, before any cache or origin: one [`EdgeAnswer`]
//! variant per reason, each with its status, `Cache-Status` detail, body and whether the
//! connection ends, and one function, [`Edge::answer`], that writes every one of them.
//! A new early answer (a redirect, a refused signature, a rate limit) is one more
//! variant here.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::outcome::{Detail, Outcome};
use super::{head, Ctx, Edge};

/// What the edge answers itself instead of passing a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EdgeAnswer {
    /// No `Host` (400), or a host no customer serves (421): never an open proxy.
    UnknownHost { host: String },
    /// A TLS connection opened for `sni` asked for `host`, which another customer
    /// serves (421): no domain fronting (RFC 9110 §15.5.20).
    Misdirected { sni: String, host: String },
    /// The request has passed this node (`node` is its `CDN-Loop` entry), or too many
    /// Holdfast nodes, as `hops` says (508).
    Loop {
        hops: String,
        node: String,
        customer: String,
    },
    /// A method the customer does not allow (405, with `Allow`), or one HTTP does not
    /// define (501, `allow` is `None`).
    Method {
        method: http::Method,
        allow: Option<String>,
    },
    /// `OPTIONS` with `Max-Forwards: 0`, answered here (200, with `Allow`).
    MaxForwards { allow: String },
    /// `Content-Length` values that disagree (400).
    BadFraming,
    /// `PURGE` of `url` applied for `customer`; `persisted` unless the marker could not
    /// be written to disk (200).
    Purged {
        url: String,
        customer: String,
        persisted: bool,
    },
    /// `PURGE` without a valid token (401), or with another customer's (403).
    PurgeRefused {
        other_customers_token: bool,
        customer: String,
    },
}

impl EdgeAnswer {
    pub fn status(&self) -> u16 {
        match self {
            EdgeAnswer::UnknownHost { host } if host.is_empty() => 400,
            EdgeAnswer::UnknownHost { .. } | EdgeAnswer::Misdirected { .. } => 421,
            EdgeAnswer::Loop { .. } => 508,
            EdgeAnswer::Method { allow: Some(_), .. } => 405,
            EdgeAnswer::Method { allow: None, .. } => 501,
            EdgeAnswer::MaxForwards { .. } | EdgeAnswer::Purged { .. } => 200,
            EdgeAnswer::BadFraming => 400,
            EdgeAnswer::PurgeRefused {
                other_customers_token: true,
                ..
            } => 403,
            EdgeAnswer::PurgeRefused { .. } => 401,
        }
    }

    pub fn detail(&self) -> Detail {
        match self {
            EdgeAnswer::UnknownHost { .. } => Detail::UnknownHost,
            EdgeAnswer::Misdirected { .. } => Detail::Misdirected,
            EdgeAnswer::Loop { .. } => Detail::Loop,
            EdgeAnswer::Method { allow: Some(_), .. } => Detail::MethodNotAllowed,
            EdgeAnswer::Method { allow: None, .. } => Detail::MethodNotImplemented,
            EdgeAnswer::MaxForwards { .. } => Detail::MaxForwards,
            EdgeAnswer::BadFraming => Detail::BadFraming,
            EdgeAnswer::Purged { .. } => Detail::Purged,
            EdgeAnswer::PurgeRefused { .. } => Detail::PurgeRefused,
        }
    }

    /// The `Allow` field.
    pub fn allow(&self) -> Option<&str> {
        match self {
            EdgeAnswer::Method { allow, .. } => allow.as_deref(),
            EdgeAnswer::MaxForwards { allow } => Some(allow),
            _ => None,
        }
    }

    /// Whether the connection ends with this answer: after a refused request, what
    /// else the client sent on it is not worth reading.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            EdgeAnswer::Method { .. } | EdgeAnswer::BadFraming | EdgeAnswer::PurgeRefused { .. }
        )
    }

    /// The plain-text body: what happened, and what to do about it.
    pub fn body(&self) -> String {
        match self {
            EdgeAnswer::UnknownHost { host } if host.is_empty() => {
                "holdfast: the request has no Host header\n".to_string()
            }
            EdgeAnswer::UnknownHost { host } => {
                format!("holdfast: no customer is configured for host {host:?} on this edge\n")
            }
            EdgeAnswer::Misdirected { sni, host } => format!(
                "holdfast: this connection was opened for {sni:?}, which does not serve \
                 host {host:?}; open a new connection for it\n"
            ),
            EdgeAnswer::Loop {
                hops,
                node,
                customer,
            } => format!(
                "holdfast: request loop: {hops} (this node is {node}); check the origin of {customer:?}\n"
            ),
            EdgeAnswer::Method { method, .. } => {
                format!("holdfast: {method} is not passed on to this site's origin\n")
            }
            EdgeAnswer::MaxForwards { .. } => String::new(),
            EdgeAnswer::BadFraming => {
                "holdfast: the request's Content-Length values disagree\n".to_string()
            }
            EdgeAnswer::Purged {
                url,
                customer,
                persisted,
            } => format!(
                "holdfast: purged {url} for customer {customer:?}{}\n",
                if *persisted {
                    ""
                } else {
                    " (not kept on disk: a restart would forget it)"
                }
            ),
            EdgeAnswer::PurgeRefused {
                other_customers_token: true,
                customer,
            } => format!(
                "holdfast: this token purges another customer's content, not {customer:?}'s\n"
            ),
            EdgeAnswer::PurgeRefused { .. } => {
                "holdfast: PURGE needs Authorization: Bearer <one of this site's purge tokens>\n"
                    .to_string()
            }
        }
    }
}

impl Edge {
    /// Write `answer` as the request's whole answer, counted and recorded as its outcome.
    pub(super) async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        answer: EdgeAnswer,
    ) -> Result<()> {
        match answer {
            EdgeAnswer::UnknownHost { .. } => {
                self.metrics.unknown_host.fetch_add(1, Ordering::Relaxed);
            }
            EdgeAnswer::Misdirected { .. } => {
                self.metrics.misdirected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let outcome = Outcome::Edge {
            reason: answer.detail(),
        };
        ctx.outcome = Some(outcome.clone());
        if answer.closes() {
            session.set_keepalive(None);
        }
        let body = answer.body();
        respond_text(
            session,
            answer.status(),
            body,
            &outcome,
            answer.allow(),
            &self.sign,
        )
        .await
    }
}

/// A plain-text answer of the edge's own: `code`, `body`, the edge's fields for
/// `outcome`, and `Allow` when given.
pub(super) async fn respond_text(
    session: &mut Session,
    code: u16,
    body: String,
    outcome: &Outcome,
    allow: Option<&str>,
    sign: &super::status::Signature,
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(5))?;
    if let Some(allow) = allow {
        resp.insert_header(header::ALLOW, allow)?;
    }
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    head::edge_fields(&mut resp, outcome, sign)?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_has_its_status_detail_and_body() {
        let cases = [
            (
                EdgeAnswer::UnknownHost {
                    host: String::new(),
                },
                400,
                "unknown-host",
                "no Host header",
            ),
            (
                EdgeAnswer::UnknownHost {
                    host: "x.test".into(),
                },
                421,
                "unknown-host",
                "no customer is configured for host \"x.test\"",
            ),
            (
                EdgeAnswer::Misdirected {
                    sni: "a.test".into(),
                    host: "b.test".into(),
                },
                421,
                "misdirected",
                "opened for \"a.test\", which does not serve host \"b.test\"",
            ),
            (
                EdgeAnswer::Loop {
                    hops: "it has passed this node before".into(),
                    node: "holdfast; node=fra1-1".into(),
                    customer: "shop".into(),
                },
                508,
                "loop",
                "check the origin of \"shop\"",
            ),
            (
                EdgeAnswer::Method {
                    method: http::Method::TRACE,
                    allow: Some("GET, HEAD".into()),
                },
                405,
                "method-not-allowed",
                "TRACE is not passed on",
            ),
            (
                EdgeAnswer::Method {
                    method: http::Method::from_bytes(b"BREW").unwrap(),
                    allow: None,
                },
                501,
                "method-not-implemented",
                "BREW is not passed on",
            ),
            (
                EdgeAnswer::MaxForwards {
                    allow: "GET".into(),
                },
                200,
                "max-forwards",
                "",
            ),
            (EdgeAnswer::BadFraming, 400, "bad-framing", "disagree"),
            (
                EdgeAnswer::Purged {
                    url: "shop.test/a".into(),
                    customer: "shop".into(),
                    persisted: false,
                },
                200,
                "purged",
                "not kept on disk",
            ),
            (
                EdgeAnswer::PurgeRefused {
                    other_customers_token: true,
                    customer: "shop".into(),
                },
                403,
                "purge-refused",
                "another customer's content",
            ),
            (
                EdgeAnswer::PurgeRefused {
                    other_customers_token: false,
                    customer: "shop".into(),
                },
                401,
                "purge-refused",
                "PURGE needs Authorization",
            ),
        ];
        for (answer, status, detail, body) in cases {
            assert_eq!(answer.status(), status, "{answer:?}");
            assert_eq!(answer.detail().as_str(), detail, "{answer:?}");
            assert!(
                answer.body().contains(body),
                "{answer:?}: {}",
                answer.body()
            );
        }
        // A refused method or framing ends the connection; a well-formed request for a
        // host the edge does not serve does not.
        assert!(EdgeAnswer::BadFraming.closes());
        assert!(!EdgeAnswer::UnknownHost {
            host: "x.test".into()
        }
        .closes());
    }
}
