//! The response header, built in one place for every path and protocol.
//!
//! Every answer the edge sends on a customer's behalf ends with [`edge_fields`]: the
//! origin's purge tags and `Cache-Status` never reach the client, Holdfast's
//! `Cache-Status` and `Via` always do. The full path calls it from `response_filter`,
//! after pingora-cache has made a hit's header from the stored one; the fast path calls
//! [`hit`], which takes the same steps as pingora-cache in the same order (`Age`, a 304
//! for a matching conditional request with Pingora's `to_304`, a single range with
//! Pingora's range filter), then `edge_fields`. The fast path's HTTP/1 socket write and
//! Pingora's writers (HTTP/1 over TLS, HTTP/2) then only serialize what this built.
//! `tests/hitpath.rs` sends the same requests down both paths and compares the bytes.

use std::ops::Range;
use std::sync::Arc;

use super::outcome::Outcome;

use pingora_core::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{range_header_filter, RangeType};

/// Most ranges one request may ask for: the limit of Pingora's own range filter on the
/// full path, so that both paths decide a `Range` alike.
pub(super) const MAX_RANGES: Option<usize> = Some(200);

/// How this node signs the fields it adds (`Cache-Status`, `Via`, to clients and to
/// origins): as `holdfast`, or, with `node.advertise`, with its name too, so that a
/// chain of shields reads `holdfast; hit; node="fra1"` and `Via: 1.1 fra1 (holdfast)`.
#[derive(Debug, Clone)]
pub struct Signature {
    /// A ready value: the default is static, an advertised one shared, so that adding
    /// it to a response neither copies nor checks it.
    via: http::HeaderValue,
    node: Option<Arc<str>>,
}

impl Signature {
    pub fn new(node: &crate::config::NodeIdentity) -> Signature {
        if node.advertise {
            let via = format!("1.1 {} (holdfast)", node.name);
            Signature {
                // Node names are letters, digits, '.', '_' and '-' (config): always valid.
                via: http::HeaderValue::from_str(&via)
                    .unwrap_or(http::HeaderValue::from_static("1.1 holdfast")),
                node: Some(node.name.as_str().into()),
            }
        } else {
            Signature {
                via: http::HeaderValue::from_static("1.1 holdfast"),
                node: None,
            }
        }
    }

    /// This node's `Via` member.
    pub fn via(&self) -> http::HeaderValue {
        self.via.clone()
    }

    /// This node's `Cache-Status` member for `outcome`.
    pub fn cache_status(&self, outcome: &Outcome) -> String {
        outcome.cache_status().render(self.node.as_deref())
    }
}

/// What the edge sets on every response it sends for a customer: no purge tags; the
/// edge's `Cache-Status` entry for `outcome` after those of the caches upstream (a
/// shield tier), as RFC 9211 lists them, origin first; `Via`. A status the edge made of
/// a stored one (206, 304, 416) says its own reason phrase.
pub(super) fn edge_fields(
    resp: &mut ResponseHeader,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<()> {
    for tags in crate::purge::TAG_FIELDS {
        resp.remove_header(tags);
    }
    if matches!(resp.status.as_u16(), 206 | 304 | 416) {
        resp.set_reason_phrase(None)?;
    }
    let chain = list_ending_in(&resp.headers, "cache-status", sign.cache_status(outcome));
    resp.insert_header("Cache-Status", chain)?;
    resp.append_header("Via", sign.via())?;
    Ok(())
}

/// One list field (`Cache-Status`, `CDN-Loop`): the members the message already carries,
/// on however many lines, then `last`.
pub(super) fn list_ending_in(headers: &http::HeaderMap, name: &str, last: String) -> String {
    let before: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if before.is_empty() {
        last
    } else {
        format!("{}, {last}", before.join(", "))
    }
}

/// A hit's header, ready to send, and what of the body follows it.
pub(super) struct Hit {
    pub header: Box<ResponseHeader>,
    /// The span of the stored body to send; `None` for a header-only answer (HEAD, 304,
    /// a stored 204 or 304).
    pub body: Option<Range<usize>>,
}

/// The header of a hit on `stored` (whose complete body is `body_len` bytes, `age`
/// seconds old) for `req`, served as `outcome`; `None` when the request asks for several ranges or none
/// that is satisfiable, which the full path answers (multipart, 416).
pub(super) fn hit(
    stored: &ResponseHeader,
    req: &RequestHeader,
    age: u64,
    body_len: usize,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<Option<Hit>> {
    let mut header = Box::new(stored.clone());
    header.insert_header(http::header::AGE, age)?;
    header.set_version(http::Version::HTTP_11);
    let no_body = matches!(stored.status.as_u16(), 204 | 304);
    if !no_body && !header.headers.contains_key(http::header::CONTENT_LENGTH) {
        // Stored before fills were framed by their length: frame it now.
        header.remove_header(&http::header::TRANSFER_ENCODING);
        header.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    }
    let not_modified = not_modified_filter(req, &header);
    if not_modified {
        to_304(&mut header);
    }
    let mut span = 0..body_len;
    match range_header_filter(req, &mut header, MAX_RANGES) {
        RangeType::None => {}
        RangeType::Single(range) => span = range,
        RangeType::Multi(_) | RangeType::Invalid => return Ok(None),
    }
    edge_fields(&mut header, outcome, sign)?;
    let header_only = no_body || not_modified || req.method == http::Method::HEAD;
    Ok(Some(Hit {
        body: (!header_only).then_some(span),
        header,
    }))
}

/// Fields a `304` never changes in the stored response (RFC 9111 §3.2): its framing and
/// coding, which describe the stored body, and the hop-by-hop fields.
const KEPT_ON_304: [&str; 6] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// The stored header `merged` (pingora-cache's merge of a `304` into it) with every field
/// of the `304` in place of the stored one (RFC 9111 §4.3.4), but those in
/// [`KEPT_ON_304`]. The `304`'s `Date` counts: the copy's age is counted from it.
pub(super) fn updated_by_304(
    merged: &ResponseHeader,
    fields: &http::HeaderMap,
) -> Result<ResponseHeader> {
    let mut out = merged.clone();
    let mut seen: Vec<&http::HeaderName> = Vec::new();
    for (name, value) in fields {
        if KEPT_ON_304.contains(&name.as_str()) {
            continue;
        }
        if seen.contains(&name) {
            out.append_header(name.clone(), value.clone())?;
        } else {
            seen.push(name);
            out.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(out)
}
