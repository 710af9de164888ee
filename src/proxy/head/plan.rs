//! A hit's header as the stored header plus the changes a hit makes to it, and its
//! HTTP/1 writer: the form the fast path sends without copying the stored header.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderValue, StatusCode};
use pingora_core::protocols::http::conditional_filter::not_modified_filter;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;
use smallvec::SmallVec;

use super::{Field, Fields, ACCEPT_RANGES};
use crate::storage::Wire;

/// A stored header and the changes a hit makes to it, in the order made. Reading it
/// ([`Fields::first`], [`Fields::each`]) sees the changes; [`Plan::put_h1`] writes it,
/// [`HitHeader::into_header`] makes it a `ResponseHeader`.
pub(in crate::proxy) struct Plan<'a> {
    pub(super) stored: &'a ResponseHeader,
    /// `stored`'s fields as HTTP/1 sends them, when the store keeps them so.
    wire: Option<&'a Wire>,
    pub(super) status: StatusCode,
    pub(super) reason_cleared: bool,
    pub(super) edits: SmallVec<[Edit; 10]>,
}

/// One change a plan makes to the stored header, in the order made.
pub(super) struct Edit {
    pub(super) field: &'static Field,
    pub(super) op: Op,
}

pub(super) enum Op {
    Put(HeaderValue),
    Add(HeaderValue),
    Remove,
}

impl<'a> Plan<'a> {
    /// `stored` as it is: changed by a hit's steps (only for a request without `Range`,
    /// see [`Fields::ranges`]), or written unchanged by [`Plan::put_h1`] (a header built
    /// whole, a ranged hit's), as Pingora's HTTP/1 writer would, with `Date` and
    /// `Connection`.
    pub(in crate::proxy) fn new(stored: &'a ResponseHeader) -> Plan<'a> {
        Plan::with_wire(stored, None)
    }

    /// [`Plan::new`], for a stored header whose fields `wire` holds as HTTP/1 sends
    /// them (see [`crate::storage::StoredResponse::wire`]).
    pub(in crate::proxy) fn with_wire(
        stored: &'a ResponseHeader,
        wire: Option<&'a Wire>,
    ) -> Plan<'a> {
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
    pub(in crate::proxy) fn put_h1(
        &self,
        buf: &mut BytesMut,
        date: &HeaderValue,
        connection: &str,
    ) {
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
pub(in crate::proxy) fn put_status(buf: &mut BytesMut, status: StatusCode, reason: Option<&str>) {
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
