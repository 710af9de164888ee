//! One stored response, what it weighs, and how evictions are counted.
//!
//! An entry keeps the body as one exact-size `Bytes` (on the heap or mapped from a memory file,
//! see [`Body`]) and the parts of the `CacheMeta` as plain fields, so a hit clones a refcount
//! and a header instead of decoding pingora's serialized meta.

use super::body::Body;
use bytes::{BufMut, BytesMut};
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
/// slot, the name's second copy in pingora's case-preserving map, and that map's own slot.
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
}

impl MetaParts {
    pub(super) fn from_meta(meta: &CacheMeta) -> MetaParts {
        MetaParts {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            epoch_override: meta.epoch_override(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: owned_header(meta.response_header()),
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

/// A copy of `header` that owns its bytes.
///
/// Pingora parses an origin's response header without copying: every name and value is
/// a slice of the connection's read buffer. Stored as is, one entry would keep that
/// whole buffer alive, several kilobytes the weight never sees (measured: RSS grew by
/// ~7.7 KB per stored 1 KiB response against ~2.6 KB weighed). Copying the few hundred
/// bytes of names and values once, at admission, keeps the bound honest.
fn owned_header(header: &ResponseHeader) -> ResponseHeader {
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
    stored.pack(&fields).unwrap_or_else(|| header.clone())
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
    /// in one buffer, in order. Built field by field, a stored header is two or three
    /// allocations per field (value, the name's case, a name `http` does not know),
    /// scattered over the heap; a hit reads every one of them, and on a node whose
    /// working set is larger than the CPU's caches (large bodies streaming through the
    /// page cache) each is a miss. In one buffer they are a few neighbouring cache lines,
    /// and admission allocates once. `None` when a name or value is not valid in HTTP.
    pub(super) fn pack(&self, fields: &[(&[u8], &[u8])]) -> Option<ResponseHeader> {
        let len = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut buf = BytesMut::with_capacity(len);
        for (name, value) in fields {
            buf.put_slice(name);
            buf.put_slice(value);
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
        let mut at = 0;
        for (name, value) in fields {
            let case = buf.slice(at..at + name.len());
            at += name.len();
            let shared = HeaderValue::from_maybe_shared(buf.slice(at..at + value.len())).ok()?;
            at += value.len();
            if self.has_case {
                header.append_header(case, shared).ok()?;
            } else {
                header
                    .append_header(HeaderName::from_bytes(&case).ok()?, shared)
                    .ok()?;
            }
        }
        Some(header)
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
