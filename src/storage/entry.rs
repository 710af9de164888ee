//! One stored response, what it weighs, and how evictions are counted.
//!
//! An entry keeps the body as one exact-size `Bytes` (on the heap or mapped from a memory file,
//! see [`Body`]) and the parts of the `CacheMeta` as plain fields, so a hit clones a refcount
//! and a header instead of decoding pingora's serialized meta.

use super::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use quick_cache::{Lifecycle, Weighter};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Bytes charged to every entry on top of its body and headers.
///
/// An estimate of what an entry costs beyond its payload: the `Arc<Entry>` allocation with its two
/// counters, the cache's slot for it (key, pointer and quick_cache's 21 bytes of bookkeeping,
/// doubled for its ghost ring and power-of-two table growth), the shared header `Bytes` allocates
/// once the body is first cloned, and allocator rounding.
pub(super) const PER_ENTRY_OVERHEAD: usize = size_of::<Entry>()
    + 2 * size_of::<usize>()
    + 2 * (size_of::<HashBinary>() + size_of::<Arc<Entry>>() + 21)
    + 32
    + 64;

/// Bytes charged per header field on top of its name and value: the `HeaderMap` bucket and index
/// slot, and pingora's case-preserving map's own slot. (The weight counts each name twice; a
/// packed header holds it once, and the second count covers the field's `: ` and CRLF and its
/// span in the [`Wire`] form, 12 bytes.)
const HEADER_FIELD_OVERHEAD: usize = 128;

/// The parts of a [`CacheMeta`] an entry keeps, enough to rebuild an equivalent one on each hit.
#[derive(Clone)]
pub(super) struct MetaParts {
    pub(super) fresh_until: SystemTime,
    pub(super) created: SystemTime,
    pub(super) updated: SystemTime,
    pub(super) epoch_override: Option<SystemTime>,
    pub(super) stale_while_revalidate_sec: u32,
    pub(super) stale_if_error_sec: u32,
    pub(super) variance: Option<HashBinary>,
    pub(super) header: ResponseHeader,
    /// `header`'s fields on the HTTP/1 wire, when it was packed with them; it must
    /// change with the header (see [`MetaParts::frame_by_length`]).
    pub(super) wire: Option<Wire>,
}

impl MetaParts {
    pub(super) fn from_meta(meta: &CacheMeta) -> MetaParts {
        let (header, wire) = owned_header(meta.response_header());
        MetaParts {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            epoch_override: meta.epoch_override(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header,
            wire,
        }
    }

    /// Rebuild the meta handed out on a hit.
    ///
    /// `CacheMeta::new` sets `updated` to `created` and offers no setter for `updated`, yet age
    /// and freshness count from `epoch()`, which is the epoch override or else `updated`. So a
    /// revalidated entry (updated later than created) gets its `updated` as the epoch override:
    /// `age()` and `fresh_sec()` then count from the revalidation while `created()` stays the
    /// admission time, which pingora carries into the next `update_meta` and which identifies
    /// the admission there. `provenance()` comes back as `created` (pingora keeps the setter
    /// crate-private); that can only make variants of a Vary'd response look older than the
    /// primary, i.e. refetched, never served when they should not be.
    pub(super) fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        match self.epoch_override {
            Some(epoch) => meta.set_epoch_override(epoch),
            None if self.updated != self.created => meta.set_epoch_override(self.updated),
            None => {}
        }
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    /// When the entry was admitted; the same admission keeps it across revalidations.
    pub(super) fn created(&self) -> SystemTime {
        self.created
    }

    pub(super) fn fresh_until(&self) -> SystemTime {
        self.fresh_until
    }

    /// Where age counts from: the epoch override, else the last (re)validation.
    pub(super) fn epoch(&self) -> SystemTime {
        self.epoch_override.unwrap_or(self.updated)
    }

    pub(super) fn stale_if_error(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.stale_if_error_sec.into())
    }

    pub(super) fn has_variance(&self) -> bool {
        self.variance.is_some()
    }

    pub(super) fn header(&self) -> &ResponseHeader {
        &self.header
    }

    pub(super) fn wire(&self) -> Option<&Wire> {
        self.wire.as_ref()
    }

    /// A stored body is complete: its length frames it from now on, whatever framing it
    /// came with (chunked, or until the origin closed). Every hit then says
    /// `Content-Length`, on whichever path and protocol it leaves. A header that
    /// changes is packed again, with its wire form.
    pub(super) fn frame_by_length(&mut self, len: usize) {
        let header = &mut self.header;
        let status = header.status.as_u16();
        if status < 200 || status == 204 || status == 304 {
            return;
        }
        // Most origins frame by length already: that header stays as it was packed.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(len).as_bytes();
        let lengths = header.headers.get_all(http::header::CONTENT_LENGTH);
        let framed = !header.headers.contains_key(http::header::TRANSFER_ENCODING)
            && lengths.iter().count() == 1
            && lengths.iter().all(|v| v.as_bytes() == digits);
        if framed {
            return;
        }
        header.remove_header(&http::header::TRANSFER_ENCODING);
        if header
            .insert_header(http::header::CONTENT_LENGTH, len)
            .is_err()
        {
            log::debug!("could not frame a stored header by its length {len}");
        }
        (self.header, self.wire) = owned_header(&self.header);
    }

    /// Make the entry stale as of `instant` (never fresher than it was); stale windows untouched.
    pub(super) fn expire_at(&mut self, instant: SystemTime) {
        self.fresh_until = self.fresh_until.min(instant);
    }

    /// Estimated heap and inline bytes of the response header.
    fn header_weight(&self) -> usize {
        let reason = self.header.get_reason_phrase().map_or(0, str::len);
        self.header
            .headers
            .iter()
            .fold(reason, |acc, (name, value)| {
                acc.saturating_add(2 * name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD)
            })
    }
}

/// A copy of `header` that owns its bytes, and its fields' wire form.
///
/// Pingora parses an origin's response header without copying: every name and value is
/// a slice of the connection's read buffer. Stored as is, one entry would keep that
/// whole buffer alive, several kilobytes the weight never sees (measured: RSS grew by
/// ~7.7 KB per stored 1 KiB response against ~2.6 KB weighed). Copying the few hundred
/// bytes of names and values once, at admission, keeps the bound honest.
pub(crate) fn owned_header(header: &ResponseHeader) -> (ResponseHeader, Option<Wire>) {
    let mut fields: Vec<(&[u8], &[u8])> = Vec::with_capacity(header.headers.len());
    if header.has_case() {
        fields.extend(
            header
                .case_header_iter()
                .map(|(name, value)| (name.as_slice(), value.as_bytes())),
        );
    } else {
        fields.extend(
            header
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        );
    }
    let stored = StoredHeader {
        status: header.status.as_u16(),
        version: header.version,
        reason: header.get_reason_phrase(),
        has_case: header.has_case(),
    };
    // The fields came from a valid header; fall back to the shared copy if one did not.
    stored
        .pack(&fields)
        .unwrap_or_else(|| (header.clone(), None))
}

/// A response header to be stored: its status line and whether it keeps field-name case.
/// The fields come to [`StoredHeader::pack`].
pub(super) struct StoredHeader<'a> {
    pub(super) status: u16,
    pub(super) version: http::Version,
    pub(super) reason: Option<&'a str>,
    pub(super) has_case: bool,
}

impl StoredHeader<'_> {
    /// The header with `fields` (name as sent, value), whose names and values all live
    /// in one buffer, and, for a header that keeps its names' case, that buffer as the
    /// fields' [`Wire`] form. Built field by field, a stored header is two or three
    /// allocations per field (value, the name's case, a name `http` does not know),
    /// scattered over the heap; a hit reads every one of them, and on a node whose
    /// working set is larger than the CPU's caches (large bodies streaming through the
    /// page cache) each is a miss. In one buffer they are a few neighbouring cache lines,
    /// and admission allocates once. `None` when a name or value is not valid in HTTP.
    ///
    /// The buffer holds each field as HTTP/1 sends it, `Name: value\r\n`, in the order
    /// of the header's map: the fields of one name together, names in the order they
    /// first appear (the order `http` keeps and Pingora's writer sends). Grouping
    /// changes nothing in the header built: `http` groups a name's values the same way.
    pub(super) fn pack(&self, fields: &[(&[u8], &[u8])]) -> Option<(ResponseHeader, Option<Wire>)> {
        // Each field after the last of its name placed so far, or at the end if its
        // name is new: stable, and a few comparisons per field.
        let mut order: Vec<usize> = Vec::with_capacity(fields.len());
        for (i, (name, _)) in fields.iter().enumerate() {
            let at = order
                .iter()
                .rposition(|&j| fields[j].0.eq_ignore_ascii_case(name))
                .map_or(order.len(), |at| at + 1);
            order.insert(at, i);
        }
        let len = fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let mut buf = BytesMut::with_capacity(len);
        let mut lines = Vec::with_capacity(fields.len());
        for &i in &order {
            let (name, value) = fields[i];
            buf.put_slice(name);
            let name_end = u32::try_from(buf.len()).ok()?;
            buf.put_slice(b": ");
            buf.put_slice(value);
            buf.put_slice(b"\r\n");
            lines.push((name_end, u32::try_from(buf.len()).ok()?));
        }
        let buf = buf.freeze();
        let capacity = Some(fields.len());
        let mut header = if self.has_case {
            ResponseHeader::build(self.status, capacity).ok()?
        } else {
            ResponseHeader::build_no_case(self.status, capacity).ok()?
        };
        header.set_version(self.version);
        if self.reason.is_some() {
            header.set_reason_phrase(self.reason).ok()?;
        }
        let mut start = 0;
        for &(name_end, end) in &lines {
            let (name_end, end) = (name_end as usize, end as usize);
            let case = buf.slice(start..name_end);
            let value = buf.slice(name_end + 2..end - 2);
            start = end;
            let shared = HeaderValue::from_maybe_shared(value).ok()?;
            if self.has_case {
                header.append_header(case, shared).ok()?;
            } else {
                header
                    .append_header(HeaderName::from_bytes(&case).ok()?, shared)
                    .ok()?;
            }
        }
        let wire = self.has_case.then(|| Wire {
            content_length: header.headers.get(http::header::CONTENT_LENGTH).cloned(),
            cache_status: header.headers.get(CACHE_STATUS).cloned(),
            bytes: buf,
            lines: lines.into_boxed_slice(),
        });
        Some((header, wire))
    }
}

/// A stored header's fields as HTTP/1 sends them: `Name: value\r\n` each, names in
/// their stored case, in the order of the header's map (see [`StoredHeader::pack`]).
/// The stored `ResponseHeader`'s names and values are slices of these same bytes.
///
/// A hit that changes a few fields (`Age`, `Date`, `Cache-Status`, ...) copies the
/// runs of unchanged lines from here instead of walking the header's two maps and
/// writing each name and value on its own: that walk was the largest part of what
/// writing a hit's header cost.
///
/// It also keeps the first value of the two fields every hit reads (`Content-Length`,
/// `Cache-Status`; see [`Wire::first`]), so that a plain hit reads nothing of the
/// header's maps: on a working set larger than the CPU's caches, each map read is a
/// cache miss or two.
#[derive(Clone)]
pub struct Wire {
    bytes: Bytes,
    /// Each field's line: where its name ends and where the line ends (after `\r\n`).
    lines: Box<[(u32, u32)]>,
    content_length: Option<HeaderValue>,
    cache_status: Option<HeaderValue>,
}

/// The RFC 9211 field a shield tier's answer carries.
const CACHE_STATUS: &str = "cache-status";

/// One line of a [`Wire`].
pub struct WireField<'w> {
    /// The name as stored (its case kept).
    pub name: &'w [u8],
    pub value: &'w [u8],
    /// The whole line, `\r\n` included, in [`Wire::bytes`].
    pub line: std::ops::Range<usize>,
}

impl Wire {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first stored value of `name`, for a name whose value it keeps (`None`
    /// otherwise; `Some(None)`: the header has no such field).
    pub fn first(&self, name: &HeaderName) -> Option<Option<&HeaderValue>> {
        if *name == http::header::CONTENT_LENGTH {
            Some(self.content_length.as_ref())
        } else if name.as_str() == CACHE_STATUS {
            Some(self.cache_status.as_ref())
        } else {
            None
        }
    }

    /// The fields, in the order the header's map has them.
    pub fn fields(&self) -> impl Iterator<Item = WireField<'_>> + '_ {
        let mut start = 0;
        self.lines.iter().map(move |&(name_end, end)| {
            let (name_end, end) = (name_end as usize, end as usize);
            let line = start..end;
            start = end;
            WireField {
                name: &self.bytes[line.start..name_end],
                value: &self.bytes[name_end + 2..end - 2],
                line,
            }
        })
    }
}

/// One stored response: the whole body and its meta.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) body: Body,
    pub(super) meta: MetaParts,
    /// The cache key's text (customer, scheme, host, path, query), kept beside its hash
    /// so that a persistent tier can say what each file holds.
    pub(super) key_text: Arc<str>,
    weight: u64,
}

impl Entry {
    /// `body` should own an exact-size buffer: its length (or its pages) is what gets charged.
    pub(super) fn new(body: Body, meta: MetaParts, key_text: Arc<str>) -> Entry {
        let weight = body
            .charged_len()
            .saturating_add(meta.header_weight())
            .saturating_add(key_text.len())
            .saturating_add(PER_ENTRY_OVERHEAD);
        Entry {
            body,
            meta,
            key_text,
            weight: u64::try_from(weight).unwrap_or(u64::MAX),
        }
    }

    /// Body (see [`Body::charged_len`]) + header estimate + [`PER_ENTRY_OVERHEAD`]; never zero, so every entry is evictable.
    pub(super) fn weight(&self) -> u64 {
        self.weight
    }
}

/// Weighs entries by their precomputed weight (quick_cache calls this during eviction).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct EntryWeighter;

impl Weighter<HashBinary, Arc<Entry>> for EntryWeighter {
    fn weight(&self, _key: &HashBinary, entry: &Arc<Entry>) -> u64 {
        entry.weight
    }
}

/// Counts entries the cache pushed out to make room.
///
/// quick_cache reports a value replaced by a write to the same key, and a value too heavy to be
/// admitted at all, through the same hook as a real eviction; [`Displaced`] tells them apart.
#[derive(Clone, Debug, Default)]
pub(super) struct EvictionCounter(Arc<AtomicU64>);

impl EvictionCounter {
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one cache operation pushed out, released only after the shard lock is dropped.
#[derive(Default)]
pub(super) struct Displaced {
    /// The key and value this operation writes, if any.
    writing: Option<(HashBinary, Arc<Entry>)>,
    rejected: bool,
    released: Vec<Arc<Entry>>,
}

impl Displaced {
    pub(super) fn writing(key: HashBinary, entry: &Arc<Entry>) -> Displaced {
        Displaced {
            writing: Some((key, Arc::clone(entry))),
            ..Displaced::default()
        }
    }

    /// The value being written was turned away (heavier than its shard admits).
    pub(super) fn rejected(&self) -> bool {
        self.rejected
    }
}

impl Lifecycle<HashBinary, Arc<Entry>> for EvictionCounter {
    type RequestState = Displaced;

    fn on_evict(&self, state: &mut Displaced, key: HashBinary, entry: Arc<Entry>) {
        match &state.writing {
            Some((writing, new)) if *writing == key => {
                // Either the old value this write replaces, or the new one turned away.
                if Arc::ptr_eq(new, &entry) {
                    state.rejected = true;
                }
            }
            _ => {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.released.push(entry);
    }
}
