//! The steps of a hit, written once over [`Fields`], and the two forms its header takes.

use std::ops::Range;

use http::header;
use http::{HeaderValue, StatusCode};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;

use super::plan::{Op, Plan};
use super::{
    edge_fields, Fields, ACCEPT_RANGES, AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    TRANSFER_ENCODING,
};
use crate::proxy::outcome::Outcome;
use crate::proxy::status::Signature;
use crate::storage::Wire;

/// A hit's header, ready to send, and what of the body follows it.
pub(in crate::proxy) struct Hit<'a> {
    pub header: HitHeader<'a>,
    pub body: HitBody,
}

/// What of the stored body follows a hit's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::proxy) enum HitBody {
    /// Nothing: a HEAD, a 304, a stored 204 or 304.
    HeaderOnly,
    /// This span of the stored body: all of it, or the one range asked for.
    Span(Range<usize>),
}

/// A hit's header in one of its two forms (see the module's documentation).
// A plan lives on one request's stack (or its future) and is never stored: its edits
// inline spare the allocation a boxed one would take on every hit.
#[allow(clippy::large_enum_variant)]
pub(in crate::proxy) enum HitHeader<'a> {
    Plan(Plan<'a>),
    Built(Box<ResponseHeader>),
}

impl HitHeader<'_> {
    pub fn status(&self) -> StatusCode {
        match self {
            HitHeader::Plan(plan) => plan.status,
            HitHeader::Built(header) => header.status,
        }
    }

    /// The header for an HTTP/2 stream: the same fields and values as
    /// [`HitHeader::into_header`]'s, without the names' case, which HTTP/2 does not carry
    /// (HPACK sends names in lower case, and Pingora's HTTP/2 writer takes `http`'s
    /// parts of the header). So a plan's changes go straight into `http`'s map, a name
    /// already parsed, instead of through Pingora's case-keeping API.
    pub fn into_h2_header(self) -> Result<Box<ResponseHeader>> {
        let plan = match self {
            HitHeader::Built(header) => return Ok(header),
            HitHeader::Plan(plan) => plan,
        };
        let mut parts = plan.stored.as_owned_parts();
        parts.version = http::Version::HTTP_11;
        parts.status = plan.status;
        for edit in plan.edits {
            let name = edit.field.name.clone();
            match edit.op {
                Op::Put(v) => {
                    parts.headers.insert(name, v);
                }
                Op::Add(v) => {
                    parts.headers.append(name, v);
                }
                Op::Remove => {
                    parts.headers.remove(&name);
                }
            }
        }
        Ok(Box::new(ResponseHeader::from(parts)))
    }

    /// The header as Pingora's writers take it: for a plan, the stored header with its
    /// changes applied through Pingora's header API, in the order they were made.
    pub fn into_header(self) -> Result<Box<ResponseHeader>> {
        let plan = match self {
            HitHeader::Built(header) => return Ok(header),
            HitHeader::Plan(plan) => plan,
        };
        let mut header = Box::new(plan.stored.clone());
        header.set_version(http::Version::HTTP_11);
        header.change_status(plan.status);
        for edit in plan.edits {
            match edit.op {
                Op::Put(v) => header.put(edit.field, v)?,
                Op::Add(v) => header.add(edit.field, v)?,
                Op::Remove => header.remove(edit.field),
            }
        }
        if plan.reason_cleared {
            header.clear_reason();
        }
        Ok(header)
    }
}

/// The header of a hit on `stored` (whose complete body is `body_len` bytes, `age`
/// seconds old) for `req`, served as `outcome`; `None` when the request asks for several
/// ranges or none that is satisfiable, which the full path answers (multipart, 416).
pub(in crate::proxy) fn hit<'a>(
    stored: &'a ResponseHeader,
    wire: Option<&'a Wire>,
    req: &RequestHeader,
    age: u64,
    body_len: usize,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<Option<Hit<'a>>> {
    if !req.headers.contains_key(header::RANGE) && stored.has_case() {
        let mut plan = Plan::with_wire(stored, wire);
        let body = hit_fields(&mut plan, req, age, body_len, outcome, sign)?;
        return Ok(body.map(|body| Hit {
            header: HitHeader::Plan(plan),
            body,
        }));
    }
    let mut header = Box::new(stored.clone());
    header.set_version(http::Version::HTTP_11);
    let body = hit_fields(&mut *header, req, age, body_len, outcome, sign)?;
    Ok(body.map(|body| Hit {
        header: HitHeader::Built(header),
        body,
    }))
}

/// [`hit`]'s steps, on either form of a header: what of the body to send, `None` when
/// the full path must answer.
pub(super) fn hit_fields(
    header: &mut impl Fields,
    req: &RequestHeader,
    age: u64,
    body_len: usize,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<Option<HitBody>> {
    header.put(&AGE, HeaderValue::from(age))?;
    let no_body = matches!(header.status_code().as_u16(), 204 | 304);
    if !no_body && header.first(&header::CONTENT_LENGTH).is_none() {
        // Stored before fills were framed by their length: frame it now.
        header.remove(&TRANSFER_ENCODING);
        header.put(&CONTENT_LENGTH, HeaderValue::from(body_len))?;
    }
    let not_modified = header.not_modified(req);
    if not_modified {
        to_304(header);
    }
    let mut span = 0..body_len;
    match header.ranges(req) {
        RangeType::None => {}
        RangeType::Single(range) => span = range,
        RangeType::Multi(_) | RangeType::Invalid => return Ok(None),
    }
    edge_fields(header, outcome, sign)?;
    let header_only = no_body || not_modified || req.method == http::Method::HEAD;
    Ok(Some(if header_only {
        HitBody::HeaderOnly
    } else {
        HitBody::Span(span)
    }))
}

/// A 200 made a 304 (RFC 9110 §15.4.5) as Pingora's `to_304` makes it on the full
/// path: no framing, no `Content-Type`, `Content-Encoding` or `Accept-Ranges`.
fn to_304(header: &mut impl Fields) {
    header.change_status(StatusCode::NOT_MODIFIED);
    for field in [
        &CONTENT_LENGTH,
        &CONTENT_TYPE,
        &TRANSFER_ENCODING,
        &CONTENT_ENCODING,
        &ACCEPT_RANGES,
    ] {
        header.remove(field);
    }
}
