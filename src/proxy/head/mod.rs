//! The response header, built in one place for every path and protocol.
//!
//! Every answer the edge sends on a customer's behalf ends with [`edge_fields`]: the
//! origin's purge tags and `Cache-Status` never reach the client, Holdfast's
//! `Cache-Status` and `Via` always do. The full path calls it from `response_filter`,
//! after pingora-cache has made a hit's header from the stored one; the fast path calls
//! [`hit`], which takes the same steps as pingora-cache in the same order (`Age`, a 304
//! for a matching conditional request, a single range with Pingora's range filter),
//! then `edge_fields`. `tests/hitpath.rs` sends the same requests down both paths and
//! compares what comes back.
//!
//! The steps are written once, over [`Fields`], which two forms of a header implement:
//! a `ResponseHeader` (the full path, ranged hits) and a [`Plan`], the stored header as
//! it is plus the changes a hit makes to it. A hit without `Range` (nearly all) is a
//! `Plan`: the fast path writes it to an HTTP/1 socket without copying the stored header
//! first (a copy, four field insertions through Pingora's header API and the drop of the
//! copy were a sixth of a hit's instructions). HTTP/1 over TLS turns it into the
//! `ResponseHeader` Pingora's writers take ([`HitHeader::into_header`]), which applies
//! the same changes in the same order; HTTP/2, which carries no field-name case, does the
//! same on `http`'s map alone ([`HitHeader::into_h2_header`]).
//!
//! Here: the fields the edge sets, [`Fields`] and its `ResponseHeader` form, and
//! [`edge_fields`]. [`plan`] holds the plan and its HTTP/1 writer, [`hit`] the steps of a
//! hit and its two header forms.

mod hit;
mod plan;

pub(super) use hit::{hit, Hit, HitBody, HitHeader};
pub(super) use plan::{put_status, Plan};

use http::header::{self, HeaderName};
use http::{HeaderValue, StatusCode};
use pingora_core::protocols::http::conditional_filter::not_modified_filter;
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{range_header_filter, RangeType};

use super::outcome::Outcome;
use super::status::Signature;

/// Most ranges one request may ask for: the limit of Pingora's own range filter on the
/// full path, so that both paths decide a `Range` alike.
pub(super) const MAX_RANGES: Option<usize> = Some(200);

/// A field the edge sets or removes: its name, and the case it is written in, which is
/// the case Pingora's header API writes when the field is inserted by that name (so that
/// both forms of a header send the same bytes). There is one, a `static`, per name: a
/// plan tells its fields apart by address.
pub(super) struct Field {
    name: HeaderName,
    case: &'static str,
}

impl Field {
    const fn new(name: HeaderName, case: &'static str) -> Field {
        Field { name, case }
    }
}

static AGE: Field = Field::new(header::AGE, "Age");
static CONTENT_LENGTH: Field = Field::new(header::CONTENT_LENGTH, "Content-Length");
static CONTENT_TYPE: Field = Field::new(header::CONTENT_TYPE, "Content-Type");
static CONTENT_ENCODING: Field = Field::new(header::CONTENT_ENCODING, "Content-Encoding");
static TRANSFER_ENCODING: Field = Field::new(header::TRANSFER_ENCODING, "Transfer-Encoding");
static ACCEPT_RANGES: Field = Field::new(header::ACCEPT_RANGES, "Accept-Ranges");
static CACHE_STATUS: Field = Field::new(HeaderName::from_static("cache-status"), "Cache-Status");
static VIA: Field = Field::new(header::VIA, "Via");
/// The purge tag fields ([`crate::purge::TAG_FIELDS`]).
static TAGS: [Field; 2] = {
    use crate::purge::TAG_FIELDS;
    [
        Field::new(HeaderName::from_static(TAG_FIELDS[0]), TAG_FIELDS[0]),
        Field::new(HeaderName::from_static(TAG_FIELDS[1]), TAG_FIELDS[1]),
    ]
};

/// A response header the edge's rules change: what [`edge_fields`] and [`hit`] need of
/// one, for a `ResponseHeader` and for a [`Plan`] alike.
pub(super) trait Fields {
    fn status_code(&self) -> StatusCode;
    fn change_status(&mut self, status: StatusCode);
    /// Send the status's own reason phrase rather than the stored one.
    fn clear_reason(&mut self);
    /// The first value of `name`, as the header now stands.
    fn first(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Every value of `name`, in order, as the header now stands.
    fn each(&self, name: &HeaderName, f: &mut dyn FnMut(&HeaderValue));
    /// `field` with `value` in place of every value it had.
    fn put(&mut self, field: &'static Field, value: HeaderValue) -> Result<()>;
    /// `value` after the values `field` has.
    fn add(&mut self, field: &'static Field, value: HeaderValue) -> Result<()>;
    fn remove(&mut self, field: &'static Field);
    /// Whether `req` is a conditional request this (200) response satisfies.
    fn not_modified(&self, req: &RequestHeader) -> bool;
    /// Pingora's range filter: the range `req` asks for, the status and framing fields
    /// set to match.
    fn ranges(&mut self, req: &RequestHeader) -> RangeType;
}

impl Fields for ResponseHeader {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn change_status(&mut self, status: StatusCode) {
        // Infallible: a `StatusCode` is one.
        let _ = self.set_status(status);
    }

    fn clear_reason(&mut self) {
        // Infallible: no phrase is checked.
        let _ = self.set_reason_phrase(None);
    }

    fn first(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.get(name)
    }

    fn each(&self, name: &HeaderName, f: &mut dyn FnMut(&HeaderValue)) {
        self.headers.get_all(name).iter().for_each(f)
    }

    fn put(&mut self, field: &'static Field, value: HeaderValue) -> Result<()> {
        self.insert_header(field.case, value)
    }

    fn add(&mut self, field: &'static Field, value: HeaderValue) -> Result<()> {
        self.append_header(field.case, value).map(|_| ())
    }

    fn remove(&mut self, field: &'static Field) {
        self.remove_header(&field.name);
    }

    fn not_modified(&self, req: &RequestHeader) -> bool {
        not_modified_filter(req, self)
    }

    fn ranges(&mut self, req: &RequestHeader) -> RangeType {
        range_header_filter(req, self, MAX_RANGES)
    }
}

/// What the edge sets on every response it sends for a customer: no purge tags; the
/// edge's `Cache-Status` entry for `outcome` after those of the caches upstream (a
/// shield tier), as RFC 9211 lists them, origin first; `Via`. A status the edge made of
/// a stored one (206, 304, 416) says its own reason phrase.
pub(super) fn edge_fields(
    resp: &mut impl Fields,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<()> {
    for tags in &TAGS {
        resp.remove(tags);
    }
    if matches!(resp.status_code().as_u16(), 206 | 304 | 416) {
        resp.clear_reason();
    }
    // Long enough for this node's member with every parameter, after a shield's.
    let mut chain = String::with_capacity(160);
    resp.each(&CACHE_STATUS.name, &mut |v| push_member(&mut chain, v));
    sign.push_cache_status(&mut chain, outcome);
    let chain =
        HeaderValue::try_from(chain).or_err(ErrorType::InternalError, "a Cache-Status value")?;
    resp.put(&CACHE_STATUS, chain)?;
    resp.add(&VIA, sign.via())
}

/// One list field (`Cache-Status`, `CDN-Loop`): the members the message already carries,
/// on however many lines, then `last`.
pub(super) fn list_ending_in(headers: &http::HeaderMap, name: &str, last: String) -> String {
    let mut list = String::new();
    for value in headers.get_all(name) {
        push_member(&mut list, value);
    }
    if list.is_empty() {
        last
    } else {
        list.push_str(&last);
        list
    }
}

/// The members of one line of a list field, each followed by `, `.
fn push_member(list: &mut String, value: &HeaderValue) {
    if let Ok(v) = value.to_str() {
        let v = v.trim();
        if !v.is_empty() {
            list.push_str(v);
            list.push_str(", ");
        }
    }
}

#[cfg(test)]
mod tests;
