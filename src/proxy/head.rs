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

use std::ops::Range;
use std::sync::Arc;

use super::outcome::Outcome;
use crate::storage::Wire;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderValue, StatusCode};
use pingora_core::protocols::http::conditional_filter::not_modified_filter;
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{range_header_filter, RangeType};
use smallvec::SmallVec;

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

/// A stored header and the changes a hit makes to it, in the order made. Reading it
/// ([`Fields::first`], [`Fields::each`]) sees the changes; [`Plan::put_h1`] writes it,
/// [`HitHeader::into_header`] makes it a `ResponseHeader`.
pub(super) struct Plan<'a> {
    stored: &'a ResponseHeader,
    /// `stored`'s fields as HTTP/1 sends them, when the store keeps them so.
    wire: Option<&'a Wire>,
    status: StatusCode,
    reason_cleared: bool,
    edits: SmallVec<[Edit; 10]>,
}

struct Edit {
    field: &'static Field,
    op: Op,
}

enum Op {
    Put(HeaderValue),
    Add(HeaderValue),
    Remove,
}

impl<'a> Plan<'a> {
    /// `stored` as it is: changed by a hit's steps (only for a request without `Range`,
    /// see [`Fields::ranges`]), or written unchanged by [`Plan::put_h1`] (a header built
    /// whole, a ranged hit's), as Pingora's HTTP/1 writer would, with `Date` and
    /// `Connection`.
    pub(super) fn new(stored: &'a ResponseHeader) -> Plan<'a> {
        Plan::with_wire(stored, None)
    }

    /// [`Plan::new`], for a stored header whose fields `wire` holds as HTTP/1 sends
    /// them (see [`crate::storage::StoredResponse::wire`]).
    pub(super) fn with_wire(stored: &'a ResponseHeader, wire: Option<&'a Wire>) -> Plan<'a> {
        Plan {
            stored,
            wire,
            status: stored.status,
            reason_cleared: false,
            edits: SmallVec::new(),
        }
    }

    /// The stored header's first value of `name`: from the wire form when it keeps
    /// that name's (a plain hit then reads nothing of the header's maps).
    fn stored_first(&self, name: &HeaderName) -> Option<&HeaderValue> {
        match self.wire.and_then(|w| w.first(name)) {
            Some(first) => first,
            None => self.stored.headers.get(name),
        }
    }

    /// The last `Put` or `Remove` of `name`, by its place among the edits.
    fn last_set(&self, name: &HeaderName) -> Option<usize> {
        self.edits
            .iter()
            .rposition(|e| e.field.name == *name && !matches!(e.op, Op::Add(_)))
    }

    /// The additions to `name` after edit `from` (all of them for `None`).
    fn added<'s, 'n>(
        &'s self,
        name: &'n HeaderName,
        from: Option<usize>,
    ) -> impl Iterator<Item = &'s Edit> + use<'s, 'n> {
        let skip = from.map_or(0, |i| i + 1);
        self.edits[skip..]
            .iter()
            .filter(move |e| e.field.name == *name && matches!(e.op, Op::Add(_)))
    }

    /// The status line's reason phrase, as a `ResponseHeader` with the same changes
    /// gives it.
    fn reason(&self) -> Option<&str> {
        if self.reason_cleared {
            return self.status.canonical_reason();
        }
        // A stored phrase of its own stays; the stored status's own phrase follows the
        // status, as Pingora keeps only phrases that differ from the status's.
        match self.stored.get_reason_phrase() {
            Some(r) if Some(r) != self.stored.status.canonical_reason() => Some(r),
            _ => self.status.canonical_reason(),
        }
    }

    /// The status line and fields on the HTTP/1 wire, as Pingora's HTTP/1 writer puts
    /// them after inserting `Date` and `Connection`: a stored field in its place with
    /// its stored case; a replaced one in the place of its first value; added values
    /// after the others of their name; fields new to the header at the end, in the order
    /// they were first changed; `Date` and `Connection` in place of the stored ones or at
    /// the end. (A `ResponseHeader` moves the last field into the place of a removed
    /// one; the order of fields of different names carries no meaning.) With the stored
    /// fields' [`Wire`] form, the lines no change touches are copied from it in runs.
    pub(super) fn put_h1(&self, buf: &mut BytesMut, date: &HeaderValue, connection: &str) {
        buf.put_slice(b"HTTP/1.1 ");
        put_status(buf, self.status, self.reason());
        // Each changed name once: its last `Put` or `Remove`, and whether the stored
        // header has it.
        let mut changed: SmallVec<[Changed; 10]> = SmallVec::new();
        // Most stored fields are none of those, nor `Date` or `Connection`: a bit per
        // name tells them so without comparing names.
        let mut special = name_bit(&header::DATE) | name_bit(&header::CONNECTION);
        for (i, edit) in self.edits.iter().enumerate() {
            special |= name_bit(&edit.field.name);
            let set = !matches!(edit.op, Op::Add(_));
            // One `Field` per name: the same name is the same static.
            match changed
                .iter_mut()
                .find(|c| std::ptr::eq(c.field, edit.field))
            {
                Some(c) if set => (c.last_set, c.added) = (Some(i), false),
                Some(c) => c.added = true,
                None => changed.push(Changed {
                    field: edit.field,
                    last_set: set.then_some(i),
                    added: !set,
                    stored: false,
                }),
            }
        }
        let mut out = Lines {
            buf,
            wire: self.wire.map_or(&[][..], Wire::bytes),
            run: 0..0,
        };
        let head = Head {
            date: date.as_bytes(),
            connection: connection.as_bytes(),
            special,
        };
        let sent = match self.wire {
            Some(wire) => self.put_stored(
                &mut out,
                &head,
                &mut changed,
                wire.fields().map(|f| (f.name, f.value, Some(f.line))),
            ),
            None => self.put_stored(
                &mut out,
                &head,
                &mut changed,
                self.stored
                    .case_header_iter()
                    .map(|(case, value)| (case.as_slice(), value.as_bytes(), None)),
            ),
        };
        // Fields the stored header does not have, or had and lost before values were
        // added to them: in the order of their first change.
        for c in &changed {
            let last = c.last_set.map(|at| &self.edits[at]);
            match last {
                Some(Edit { op: Op::Remove, .. }) => {}
                _ if c.stored => continue,
                Some(Edit {
                    field,
                    op: Op::Put(v),
                }) => out.field(field.case.as_bytes(), v.as_bytes()),
                _ => {}
            }
            self.put_added(&mut out, c);
        }
        let (date_sent, connection_sent) = sent;
        if !date_sent {
            out.field(b"Date", head.date);
        }
        if !connection_sent {
            out.field(b"Connection", head.connection);
        }
        out.flush();
    }

    /// [`Plan::put_h1`]'s stored fields (name as stored, value, and the line in the
    /// wire form when there is one), each as it stands after the changes, with `Date`
    /// and `Connection` in place of the stored ones. Marks the changed names the stored
    /// header has; says whether `Date` and `Connection` were written.
    fn put_stored<'s>(
        &self,
        out: &mut Lines<'_>,
        head: &Head<'_>,
        changed: &mut [Changed],
        fields: impl Iterator<Item = (&'s [u8], &'s [u8], Option<Range<usize>>)>,
    ) -> (bool, bool) {
        let (mut date_sent, mut connection_sent) = (false, false);
        let mut fields = fields.peekable();
        while let Some((case, value, line)) = fields.next() {
            if head.special & bit_of(case) == 0 {
                out.stored(case, value, line);
                continue;
            }
            if is(&header::DATE, case) {
                if !std::mem::replace(&mut date_sent, true) {
                    out.field(b"Date", head.date);
                }
                continue;
            }
            if is(&header::CONNECTION, case) {
                if !std::mem::replace(&mut connection_sent, true) {
                    out.field(b"Connection", head.connection);
                }
                continue;
            }
            let Some(c) = changed.iter_mut().find(|c| is(&c.field.name, case)) else {
                out.stored(case, value, line);
                continue;
            };
            let first_of_name = !std::mem::replace(&mut c.stored, true);
            match c.last_set.map(|at| &self.edits[at]) {
                None => {
                    out.stored(case, value, line);
                    let last_of_name = fields
                        .peek()
                        .is_none_or(|(next, _, _)| !next.eq_ignore_ascii_case(case));
                    if last_of_name {
                        self.put_added(out, c);
                    }
                }
                Some(Edit {
                    field,
                    op: Op::Put(v),
                }) if first_of_name => {
                    out.field(field.case.as_bytes(), v.as_bytes());
                    self.put_added(out, c);
                }
                Some(_) => {}
            }
        }
        (date_sent, connection_sent)
    }

    /// The values added to `c` after its last `Put` or `Remove`. Found by the fields'
    /// addresses rather than through [`Plan::added`]'s name comparison, which costs a
    /// hit 140-350 instructions more.
    fn put_added(&self, out: &mut Lines<'_>, c: &Changed) {
        if !c.added {
            return;
        }
        let skip = c.last_set.map_or(0, |i| i + 1);
        for e in &self.edits[skip..] {
            if let (true, Op::Add(v)) = (std::ptr::eq(e.field, c.field), &e.op) {
                out.field(e.field.case.as_bytes(), v.as_bytes());
            }
        }
    }
}

/// What [`Plan::put_h1`] writes in place of stored fields: the `Date` and `Connection`
/// values, and the bits of the names a change touches ([`name_bit`]).
struct Head<'v> {
    date: &'v [u8],
    connection: &'v [u8],
    special: u64,
}

/// An HTTP/1 header being written: fields one by one, and stored lines of a [`Wire`]
/// gathered into runs, each copied at once.
struct Lines<'b> {
    buf: &'b mut BytesMut,
    wire: &'b [u8],
    /// Lines of `wire` not yet copied: neighbours, in order.
    run: Range<usize>,
}

impl Lines<'_> {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.flush();
        self.buf.put_slice(name);
        self.buf.put_slice(b": ");
        self.buf.put_slice(value);
        self.buf.put_slice(b"\r\n");
    }

    /// A stored field as it is: its line of the wire form, when it has one.
    fn stored(&mut self, name: &[u8], value: &[u8], line: Option<Range<usize>>) {
        let Some(line) = line else {
            return self.field(name, value);
        };
        if self.run.is_empty() {
            self.run = line;
        } else if self.run.end == line.start {
            self.run.end = line.end;
        } else {
            self.flush();
            self.run = line;
        }
    }

    fn flush(&mut self) {
        if !self.run.is_empty() {
            self.buf.put_slice(&self.wire[self.run.clone()]);
            self.run = 0..0;
        }
    }
}

/// One of 64 bits for a field name, from its length and last letter: equal names have
/// equal bits.
fn name_bit(name: &HeaderName) -> u64 {
    bit_of(name.as_str().as_bytes())
}

/// [`name_bit`] of a name in any case.
fn bit_of(name: &[u8]) -> u64 {
    let last = name.last().map_or(0, u8::to_ascii_lowercase) as usize;
    1 << ((name.len() + last) & 63)
}

/// Whether `case` is `name`, in any case.
fn is(name: &HeaderName, case: &[u8]) -> bool {
    name.as_str().as_bytes().eq_ignore_ascii_case(case)
}

/// A name [`Plan::put_h1`] changes.
struct Changed {
    field: &'static Field,
    last_set: Option<usize>,
    /// Values are added to it after `last_set`.
    added: bool,
    /// The stored header has it.
    stored: bool,
}

/// `status reason\r\n`, as Pingora's HTTP/1 writer ends a status line.
pub(super) fn put_status(buf: &mut BytesMut, status: StatusCode, reason: Option<&str>) {
    buf.put_slice(status.as_str().as_bytes());
    buf.put_u8(b' ');
    if let Some(reason) = reason {
        buf.put_slice(reason.as_bytes());
    }
    buf.put_slice(b"\r\n");
}

impl Fields for Plan<'_> {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn change_status(&mut self, status: StatusCode) {
        self.status = status;
    }

    fn clear_reason(&mut self) {
        self.reason_cleared = true;
    }

    fn first(&self, name: &HeaderName) -> Option<&HeaderValue> {
        match self.last_set(name) {
            Some(at) => match &self.edits[at].op {
                Op::Put(v) => Some(v),
                _ => self.added(name, Some(at)).next().and_then(Edit::value),
            },
            None => self
                .stored_first(name)
                .or_else(|| self.added(name, None).next().and_then(Edit::value)),
        }
    }

    fn each(&self, name: &HeaderName, f: &mut dyn FnMut(&HeaderValue)) {
        let last = self.last_set(name);
        match last.map(|at| &self.edits[at].op) {
            Some(Op::Put(v)) => f(v),
            Some(_) => {}
            // Without a first value there are none.
            None if self.stored_first(name).is_none() => {}
            None => self.stored.headers.get_all(name).iter().for_each(&mut *f),
        }
        self.added(name, last).filter_map(Edit::value).for_each(f);
    }

    fn put(&mut self, field: &'static Field, value: HeaderValue) -> Result<()> {
        self.edits.push(Edit {
            field,
            op: Op::Put(value),
        });
        Ok(())
    }

    fn add(&mut self, field: &'static Field, value: HeaderValue) -> Result<()> {
        self.edits.push(Edit {
            field,
            op: Op::Add(value),
        });
        Ok(())
    }

    fn remove(&mut self, field: &'static Field) {
        self.edits.push(Edit {
            field,
            op: Op::Remove,
        });
    }

    fn not_modified(&self, req: &RequestHeader) -> bool {
        // The status and the validators are the stored ones until a 304 is made.
        self.status == self.stored.status && not_modified_filter(req, self.stored)
    }

    fn ranges(&mut self, req: &RequestHeader) -> RangeType {
        debug_assert!(!req.headers.contains_key(header::RANGE));
        // Pingora's range filter on a request without `Range`: no range, and a 200
        // framed by a valid length says it could serve one.
        let framed = self
            .first(&header::CONTENT_LENGTH)
            .and_then(|v| {
                std::str::from_utf8(v.as_bytes())
                    .ok()?
                    .parse::<usize>()
                    .ok()
            })
            .is_some();
        if self.status == StatusCode::OK && framed {
            // Infallible: a plan only records the change.
            let _ = self.put(&ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        RangeType::None
    }
}

impl Edit {
    fn value(&self) -> Option<&HeaderValue> {
        match &self.op {
            Op::Put(v) | Op::Add(v) => Some(v),
            Op::Remove => None,
        }
    }
}

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

    /// [`Signature::cache_status`] at the end of the list `chain`.
    pub fn push_cache_status(&self, chain: &mut String, outcome: &Outcome) {
        outcome
            .cache_status()
            .render_into(chain, self.node.as_deref())
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

/// A hit's header, ready to send, and what of the body follows it.
pub(super) struct Hit<'a> {
    pub header: HitHeader<'a>,
    /// The span of the stored body to send; `None` for a header-only answer (HEAD, 304,
    /// a stored 204 or 304).
    pub body: Option<Range<usize>>,
}

/// A hit's header in one of its two forms (see the module's documentation).
// A plan lives on one request's stack (or its future) and is never stored: its edits
// inline spare the allocation a boxed one would take on every hit.
#[allow(clippy::large_enum_variant)]
pub(super) enum HitHeader<'a> {
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
pub(super) fn hit<'a>(
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
fn hit_fields(
    header: &mut impl Fields,
    req: &RequestHeader,
    age: u64,
    body_len: usize,
    outcome: &Outcome,
    sign: &Signature,
) -> Result<Option<Option<Range<usize>>>> {
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
    Ok(Some((!header_only).then_some(span)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fields a stored header may carry, several of them more than once.
    const FIELDS: [(&str, &str); 16] = [
        ("Content-Type", "text/plain"),
        ("content-length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("ETag", "\"v1\""),
        ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("Surrogate-Key", "a b"),
        ("Cache-Tag", "c"),
        ("Cache-Status", "origin; fwd=miss"),
        ("via", "1.1 shield"),
        ("accept-ranges", "none"),
        ("age", "3"),
        ("cache-status", "shield; hit"),
        ("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("Connection", "keep-alive"),
        ("X-Custom", "1"),
        ("Content-Encoding", "gzip"),
    ];

    fn stored(status: u16, reason: Option<&str>, fields: &[usize]) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).unwrap();
        h.set_reason_phrase(reason).unwrap();
        for &i in fields {
            let (name, value) = FIELDS[i];
            h.append_header(name.to_string(), value).unwrap();
        }
        h
    }

    fn request(method: &str, condition: Option<(&str, &str)>) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/a", None).unwrap();
        if let Some((name, value)) = condition {
            req.insert_header(name.to_string(), value).unwrap();
        }
        req
    }

    /// Status line, then the field lines, sorted by name only: the order of fields of
    /// one name is kept, the order across names (which carries no meaning) is not.
    fn lines(wire: &[u8]) -> (String, Vec<String>) {
        let text = String::from_utf8(wire.to_vec()).unwrap();
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let status = lines.next().unwrap().to_string();
        let mut fields: Vec<String> = lines.map(str::to_string).collect();
        fields.sort_by_key(|l| l.split(':').next().unwrap().to_ascii_lowercase());
        (status, fields)
    }

    /// The plan on the wire, and the header it makes through Pingora's writer's steps
    /// (`Date`, `Connection` inserted, then Pingora's own serialization).
    fn both(plan: Plan<'_>) -> ((String, Vec<String>), (String, Vec<String>)) {
        let date = HeaderValue::from_static("Wed, 02 Dec 2026 06:00:00 GMT");
        let mut wire = BytesMut::new();
        plan.put_h1(&mut wire, &date, "keep-alive");
        let mut header = HitHeader::Plan(plan).into_header().unwrap();
        header.insert_header(header::DATE, date).unwrap();
        header
            .insert_header(header::CONNECTION, "keep-alive")
            .unwrap();
        let mut built = BytesMut::new();
        built.put_slice(b"HTTP/1.1 ");
        put_status(&mut built, header.status, header.get_reason_phrase());
        header.header_to_h1_wire(&mut built);
        (lines(&wire), lines(&built))
    }

    #[test]
    fn a_plain_hit_changes_what_a_hit_changes() {
        let pick = |names: &[&str]| -> Vec<usize> {
            let at = |n: &&str| FIELDS.iter().position(|(f, _)| f == n).unwrap();
            names.iter().map(at).collect()
        };
        let fields = pick(&[
            "Content-Type",
            "content-length",
            "Surrogate-Key",
            "Cache-Status",
            "via",
            "Date",
            "X-Custom",
        ]);
        let stored = stored(200, None, &fields);
        let req = request("GET", None);
        let sign = Signature::new(&crate::config::NodeIdentity {
            name: "fra1".into(),
            max_hops: 4,
            advertise: false,
        });
        let outcome = Outcome::Hit {
            ttl: Some(60),
            stale: None,
        };
        let Some(hit) = hit(&stored, None, &req, 7, 5, &outcome, &sign).unwrap() else {
            panic!("a plain GET is a hit");
        };
        assert_eq!(hit.body, Some(0..5));
        let HitHeader::Plan(plan) = hit.header else {
            panic!("a GET without Range is planned");
        };
        let ((status, fields), built) = both(plan);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            fields,
            [
                "Accept-Ranges: bytes",
                "Age: 7",
                "Cache-Status: origin; fwd=miss, holdfast; hit; ttl=60",
                "Connection: keep-alive",
                "content-length: 5",
                "Content-Type: text/plain",
                "Date: Wed, 02 Dec 2026 06:00:00 GMT",
                "via: 1.1 shield",
                "Via: 1.1 holdfast",
                "X-Custom: 1",
            ]
        );
        assert_eq!((status, fields), built);
    }

    /// The plan [`hit_fields`] makes for these.
    fn plan_like<'a>(
        stored: &'a ResponseHeader,
        req: &RequestHeader,
        age: u64,
        outcome: &Outcome,
        sign: &Signature,
    ) -> Plan<'a> {
        let mut plan = Plan::new(stored);
        hit_fields(&mut plan, req, age, 5, outcome, sign).unwrap();
        plan
    }

    /// Status, then every field as lower-case name and value, in `http`'s order (each
    /// name's values together, in order).
    fn fields_of(header: Box<ResponseHeader>) -> (u16, Vec<(String, Vec<u8>)>) {
        let mut fields: Vec<(String, Vec<u8>)> = header
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        (header.status.as_u16(), fields)
    }

    proptest! {
        /// Whatever the stored fields, status and request, the plan written to the wire
        /// and the `ResponseHeader` it makes say the same.
        #[test]
        fn the_plan_on_the_wire_is_the_header_it_makes(
            fields in proptest::collection::vec(0..FIELDS.len(), 0..12),
            status in prop::sample::select(vec![200u16, 203, 204, 301, 304, 404]),
            reason in prop::sample::select(vec![None, Some("Fine")]),
            method in prop::sample::select(vec!["GET", "HEAD"]),
            condition in prop::sample::select(vec![
                None,
                Some(("If-None-Match", "\"v1\"")),
                Some(("If-None-Match", "\"v2\"")),
                Some(("If-Modified-Since", "Tue, 01 Dec 2026 10:00:00 GMT")),
            ]),
            age in 0u64..100_000,
        ) {
            let stored = stored(status, reason, &fields);
            let req = request(method, condition);
            let sign = Signature::new(&crate::config::NodeIdentity {
                name: "fra1".into(),
                max_hops: 4,
                advertise: true,
            });
            let outcome = Outcome::Hit { ttl: Some(1), stale: None };
            let mut plan = Plan::new(&stored);
            let body = hit_fields(&mut plan, &req, age, 5, &outcome, &sign).unwrap();
            prop_assert!(body.is_some());
            let h2 = fields_of(HitHeader::Plan(plan_like(&stored, &req, age, &outcome, &sign)).into_h2_header().unwrap());
            let h1 = fields_of(HitHeader::Plan(plan_like(&stored, &req, age, &outcome, &sign)).into_header().unwrap());
            prop_assert_eq!(h2, h1);
            let (wire, built) = both(plan);
            prop_assert_eq!(wire, built);
        }

        /// A plan over the store's packed copy of a header, copying the stored lines
        /// from its wire form, writes the very bytes a plan over the header itself does.
        #[test]
        fn the_wire_form_writes_what_the_fields_write(
            fields in proptest::collection::vec(0..FIELDS.len(), 0..12),
            status in prop::sample::select(vec![200u16, 203, 204, 304, 404]),
            condition in prop::sample::select(vec![None, Some(("If-None-Match", "\"v1\""))]),
            age in 0u64..100_000,
        ) {
            let stored = stored(status, None, &fields);
            let (packed, wire) = crate::storage::owned_header(&stored);
            let wire = wire.expect("a header that keeps its case is packed with its wire form");
            let req = request("GET", condition);
            let sign = Signature::new(&crate::config::NodeIdentity {
                name: "fra1".into(),
                max_hops: 4,
                advertise: false,
            });
            let outcome = Outcome::Hit { ttl: Some(1), stale: None };
            let date = HeaderValue::from_static("Wed, 02 Dec 2026 06:00:00 GMT");
            let mut by_fields = BytesMut::new();
            plan_like(&stored, &req, age, &outcome, &sign).put_h1(&mut by_fields, &date, "close");
            let mut plan = Plan::with_wire(&packed, Some(&wire));
            hit_fields(&mut plan, &req, age, 5, &outcome, &sign).unwrap();
            let mut by_wire = BytesMut::new();
            plan.put_h1(&mut by_wire, &date, "close");
            prop_assert_eq!(
                String::from_utf8_lossy(&by_wire),
                String::from_utf8_lossy(&by_fields)
            );
        }
    }
}
