//! The bounded in-memory cache store.
//!
//! [`MemoryStore`] is the pingora-cache [`Storage`] behind Holdfast: whole responses (body and
//! meta) kept in memory under a byte bound, evicting on its own (quick_cache's S3-FIFO-like
//! policy, sharded, concurrent) so that a PoP never grows without limit. Hits hand out refcounted
//! views of the stored body and a `CacheMeta` rebuilt from plain fields, never a decoded copy.
//! Large bodies live in sealed memory files, which the fast path sends without copying
//! (see [`body`]).
//!
//! What it must never do:
//! - hold more than its `memory` bound, as weighed by body + header estimate + a fixed
//!   per-entry overhead (see [`MemoryStore::per_entry_overhead`]);
//! - store a body larger than `max_object` in memory, or fail a response because it is too
//!   large to keep: such a response is streamed to the disk tier when there is one and it
//!   fits (see [`fill`]), and otherwise streams to the client and is simply not stored;
//! - store a response whose miss handler was dropped unfinished, or a fill that was already
//!   under way when its key was purged;
//! - pair a body with another admission's headers: `update_meta` only touches the admission its
//!   meta came from;
//! - panic on a missing, evicted or purged entry: lookups miss and updates report `false`.
//!
//! Bodies being written are held outside the bound until the fill ends (at most `max_object`
//! each; a fill streamed to disk holds a few MiB). Readers follow a fill as it grows: a
//! lookup finds the fill under way before the stored entry (see [`fill`]).

mod body;
pub mod disk;
mod entry;
mod fill;
mod handlers;
#[cfg(test)]
mod tests;
mod tiered;

use async_trait::async_trait;
use body::Body;
pub use body::{raise_open_file_limit, BodyRef, FileBudget, FILE_BACKED_MIN};
#[cfg(test)]
pub(crate) use entry::owned_header;
use entry::{Displaced, Entry, EntryWeighter, EvictionCounter, MetaParts, PER_ENTRY_OVERHEAD};
pub use entry::{Wire, WireField};
use fill::{FillWriter, Fills};
use handlers::{hex, hit_for};
use http::header::CONTENT_LENGTH;
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{counter, gauge};
use pingora_error::{Error, ErrorType, Result};
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, OptionsBuilder};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub use tiered::Tiered;

type Entries = Cache<HashBinary, Arc<Entry>, EntryWeighter, DefaultHashBuilder, EvictionCounter>;

/// Share of each shard quick_cache keeps for its main ("hot") queue; its default. An entry
/// heavier than this share of a shard is never admitted, so it also bounds the largest entry.
const HOT_ALLOCATION: f64 = 0.97;
/// Header bytes assumed for the largest response when sizing shards.
const HEADER_ALLOWANCE: usize = 64 * 1024;
/// Each shard can hold at least this many responses of `max_object` size.
const LARGEST_PER_SHARD: usize = 4;
/// Upper bound on shards, whatever the core count.
const MAX_SHARDS: usize = 64;
/// Average entry weight assumed to size the tables; a guess within an order of magnitude will do.
const TYPICAL_ENTRY: usize = 16 * 1024;
/// Most bytes read from an object file at once for a hit that is not sent with
/// `sendfile` (TLS, HTTP/2): what a hit holds in memory, however large the object.
pub const READ_CHUNK: usize = 1 << 20;
/// Recently purged keys remembered to cancel fills that were under way at the purge.
pub(crate) const PURGE_MEMORY: usize = 4096;
/// How long `update_meta`/`expire` wait for another update of the same key to land.
const BUSY_WAIT: Duration = Duration::from_millis(10);

/// A size-bounded in-memory pingora-cache [`Storage`].
///
/// Pingora wants storage as `&'static`: build it once (`Box::leak`, a `static` `Lazy`) and hand
/// out that reference.
pub struct MemoryStore {
    entries: Entries,
    evictions: EvictionCounter,
    /// Key → write sequence number of its last invalidation purge.
    purged: Cache<HashBinary, u64>,
    /// Orders fills against purges.
    sequence: AtomicU64,
    capacity: usize,
    max_entry_weight: u64,
    /// Largest body buffered: `max_object`, or less when a shard could not admit that much.
    body_limit: usize,
    /// Memory files large bodies may hold.
    files: Arc<FileBudget>,
    /// Responses being stored, which lookups join.
    fills: Fills,
}

impl MemoryStore {
    /// `memory`: upper bound in bytes for everything stored (bodies + headers + per-entry
    /// overhead estimate). `max_object`: largest body stored; bigger responses are silently not
    /// stored (the proxy still streams them to the client).
    pub fn new(memory: usize, max_object: usize) -> MemoryStore {
        MemoryStore::with_file_budget(memory, max_object, FileBudget::from_system_limits())
    }

    /// As [`MemoryStore::new`], with bodies of [`FILE_BACKED_MIN`] bytes or more kept in at
    /// most as many memory files as `files` allows.
    pub fn with_file_budget(
        memory: usize,
        max_object: usize,
        files: Arc<FileBudget>,
    ) -> MemoryStore {
        let shards = shard_count(memory, max_object);
        // A multiple of the shard count, so the shards' equal shares add up to no more than `memory`.
        let capacity = memory / shards * shards;
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity((capacity / TYPICAL_ENTRY).max(1))
            .weight_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
            .hot_allocation(HOT_ALLOCATION)
            .build()
            .expect("both required options (weight and item capacity) are set");
        let evictions = EvictionCounter::default();
        let entries = Cache::with_options(
            options,
            EntryWeighter,
            DefaultHashBuilder::default(),
            evictions.clone(),
        );
        // quick_cache's own admission limit, computed the same way it does.
        let shard_capacity = entries.shard_capacity();
        let max_entry_weight = ((shard_capacity as f64 * HOT_ALLOCATION) as u64)
            .clamp(shard_capacity.min(1), shard_capacity);
        let admissible = usize::try_from(max_entry_weight)
            .unwrap_or(usize::MAX)
            .saturating_sub(PER_ENTRY_OVERHEAD);
        MemoryStore {
            entries,
            evictions,
            purged: Cache::new(PURGE_MEMORY),
            sequence: AtomicU64::new(0),
            capacity,
            max_entry_weight,
            body_limit: max_object.min(admissible),
            files,
            fills: Fills::default(),
        }
    }

    /// Memory files held by large bodies right now (stored, or in a hit still being sent).
    pub fn memory_files(&self) -> usize {
        self.files.in_use()
    }

    /// How many memory files large bodies may hold at once; past it they stay on the heap.
    pub fn memory_file_limit(&self) -> usize {
        self.files.limit()
    }

    /// Current weight of everything stored, in bytes; never above [`Self::capacity`].
    pub fn used_bytes(&self) -> usize {
        usize::try_from(self.entries.weight()).unwrap_or(usize::MAX)
    }

    /// The bound actually enforced: `memory` rounded down to a multiple of the shard count.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of stored responses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted to make room so far (not counting purges, replacements or `clear`).
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    /// The fixed estimate added to each entry's weight, on top of its body length and an
    /// estimate of its headers (name twice + value + 128 bytes per field): the entry's
    /// allocation, its cache slot, the body's shared header and allocator rounding.
    pub fn per_entry_overhead() -> usize {
        PER_ENTRY_OVERHEAD
    }

    /// Drop every stored response (fills under way still store when they finish).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The stored response for `key`, for the fast hit path: no `CacheMeta` is built and
    /// nothing is copied but a refcount. Counts as an access for eviction.
    pub fn peek(&self, key: &CacheKey) -> Option<StoredResponse> {
        self.entry(&key.combined_bin()).map(StoredResponse)
    }

    /// The stored entry for `key`; counts as an access.
    fn entry(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    /// A new write sequence number: fills and purges are ordered by these.
    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Memory files and their budget, for bodies read back from another tier.
    fn file_budget(&self) -> &Arc<FileBudget> {
        &self.files
    }

    fn body_limit(&self) -> usize {
        self.body_limit
    }

    fn fills(&self) -> &Fills {
        &self.fills
    }

    /// Responses being stored right now.
    pub fn fills_in_progress(&self) -> usize {
        self.fills.len()
    }

    /// What a lookup of `key` finds: the newest fill under way, which readers follow as
    /// it grows, or else the stored entry.
    fn find(&self, key: &HashBinary) -> Option<Result<(CacheMeta, HitHandler)>> {
        if let Some(fill) = self.fills.latest(key) {
            return Some(Ok((fill.meta(), Box::new(fill.reader()))));
        }
        self.entry(key).map(|entry| hit_for(&entry))
    }

    /// The reader pingora-cache gives the client of the request that fills `key`.
    fn own_fill(
        &self,
        key: &CacheKey,
        tag: Option<&[u8]>,
    ) -> Option<Result<(CacheMeta, HitHandler)>> {
        let fill = self.fills.tagged(&key.combined_bin(), tag?)?;
        Some(Ok((fill.meta(), Box::new(fill.reader()))))
    }

    /// Store a finished fill unless it is too heavy or its key was purged since it began.
    /// Returns the stored weight.
    fn admit(&self, key: HashBinary, entry: Arc<Entry>, started: u64) -> Option<usize> {
        let weight = entry.weight();
        if weight > self.max_entry_weight {
            log::debug!(
                "not storing {weight} byte entry for key {}: over the {} bytes one shard admits",
                hex(&key),
                self.max_entry_weight
            );
            return None;
        }
        if self.purged_since(&key, started) {
            return None;
        }
        let mut displaced = Displaced::writing(key, &entry);
        self.entries
            .insert_with_lifecycle(key, Arc::clone(&entry), &mut displaced);
        if displaced.rejected() {
            return None;
        }
        if self.purged_since(&key, started) {
            // A purge landed between the check above and the insert: take this fill back out,
            // unless a newer one already replaced it.
            self.entries
                .remove_if(&key, |stored| Arc::ptr_eq(stored, &entry));
            return None;
        }
        usize::try_from(weight).ok()
    }

    /// Give `key`'s entry `body` in place of its own, while the entry is still `stored`
    /// (not replaced, expired in place, purged or evicted since). The disk tier calls this
    /// once it has written a body that lives in a memory file: the entry then keeps the
    /// object file open instead, so the body is held once (in the page cache, as nginx
    /// holds its cache files) rather than twice, and the entry weighs a descriptor's
    /// charge instead of the body's pages. Whether it was swapped.
    fn move_body(&self, key: &HashBinary, stored: &Arc<Entry>, body: Body) -> bool {
        let moved = Entry::new(body, stored.meta.clone(), Arc::clone(&stored.key_text));
        if moved.weight() > stored.weight() {
            return false;
        }
        let result = self.entries.entry(key, Some(BUSY_WAIT), |_, current| {
            if !Arc::ptr_eq(current, stored) {
                return EntryAction::Retain(None);
            }
            EntryAction::Retain(Some(std::mem::replace(current, Arc::new(moved))))
        });
        // The memory file's entry, if it was swapped out, is let go here, outside the
        // shard's lock (unmapping and closing it is a system call or two).
        matches!(result, EntryResult::Retained(Some(_)))
    }

    /// `key` was purged (invalidated) after write sequence number `started`.
    fn purged_since(&self, key: &HashBinary, started: u64) -> bool {
        self.purged
            .get(key)
            .is_some_and(|purged_at| purged_at > started)
    }
}

/// The cache as the edge sees it: one store, whatever tiers stand behind it.
///
/// The proxy, the admin listener and the metrics hold a `&'static dyn CacheStore` and
/// never learn which tier answered: a memory-only [`MemoryStore`], or [`Tiered`] (memory
/// in front of a persistent [`disk::DiskTier`]). Purges and invalidations go through
/// pingora-cache's [`Storage::purge`], which every tier honours.
#[async_trait]
pub trait CacheStore: Storage + Send + Sync + 'static {
    /// The response memory holds for `key`, for the fast hit path; counts as an access.
    /// Never reads a file: a tier behind memory is [`CacheStore::read_through`]'s.
    fn peek(&'static self, key: &CacheKey) -> Option<StoredResponse>;

    /// The response a tier behind memory holds for `key`, read and checked on the
    /// blocking pool (never on the request's worker) and promoted to memory; `None`
    /// where there is no such tier or it holds none. Asked after [`CacheStore::peek`]
    /// misses.
    async fn read_through(&'static self, _key: &CacheKey) -> Option<StoredResponse> {
        None
    }

    /// The largest body stored, in bytes: a response declaring more is proxied unstored.
    fn max_object(&self) -> u64;

    /// A stored copy failed a check when it was to be sent (a block of its body does not
    /// match its sum): count it. The caller removes it from every tier (a purge).
    fn count_corrupt(&self) {}

    /// Append this store's gauges and counters in the Prometheus text format.
    fn encode_metrics(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result;

    /// Finish what is pending (writes to a persistent tier) before the process exits,
    /// waiting at most `timeout`.
    fn flush(&self, timeout: Duration);
}

impl CacheStore for MemoryStore {
    fn peek(&'static self, key: &CacheKey) -> Option<StoredResponse> {
        MemoryStore::peek(self, key)
    }

    fn max_object(&self) -> u64 {
        self.body_limit as u64
    }

    fn encode_metrics(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        gauge(
            enc,
            "holdfast_cache_bytes",
            "Bytes held by the cache store.",
            self.used_bytes() as u64,
        )?;
        gauge(
            enc,
            "holdfast_cache_objects",
            "Objects held by the cache store.",
            self.len() as u64,
        )?;
        gauge(
            enc,
            "holdfast_cache_memory_files",
            "Open files holding large bodies: memory files, and disk-tier object files kept open (one descriptor each).",
            self.memory_files() as u64,
        )?;
        counter(
            enc,
            "holdfast_cache_evictions_total",
            "Objects evicted to stay within cache.memory.",
            self.evictions(),
        )?;
        gauge(
            enc,
            "holdfast_cache_fills",
            "Responses being stored right now (fills other clients can follow).",
            self.fills.len() as u64,
        )?;
        gauge(
            enc,
            "holdfast_cache_fill_readers",
            "Clients reading a response as it is being stored (each filling request's own client too).",
            self.fills.readers() as u64,
        )?;
        counter(
            enc,
            "holdfast_cache_fills_broken_total",
            "Fills that broke off (origin failed, reset or cut short); none of them was stored.",
            self.fills.broken(),
        )
    }

    fn flush(&self, _timeout: Duration) {}
}

/// The cache key for `primary` (a key text from `policy::cache_key`), with its hash
/// computed once. pingora-cache asks a key for its hash at every step of a miss (the
/// store lookup, the fill lock and its release, the miss handler) and hashes the key
/// text with BLAKE2b each time unless the key carries it: about 2,100 instructions a
/// time, 7 % of a miss (`bench/instructions.sh`'s method). The value is the same hash,
/// so stored objects and their files keep their names.
pub fn key(primary: String) -> CacheKey {
    let hash = primary_hash(&primary);
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// pingora-cache's hash of a primary key, BLAKE2b with a 16-byte digest of its text,
/// computed by `blake2b_simd`, which gives the same digest with the CPU's vector
/// instructions: every request hashes its key once, and the portable code pingora-cache
/// uses took 2,100 instructions of a 1 KiB hit's 49,000 for it.
pub(crate) fn primary_hash(primary: &str) -> HashBinary {
    let digest = blake2b_simd::Params::new()
        .hash_length(16)
        .hash(primary.as_bytes());
    let mut hash = [0u8; 16];
    hash.copy_from_slice(digest.as_bytes());
    hash
}

/// The store's families on `/metrics`.
pub struct StoreMetrics(pub &'static dyn CacheStore);

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreMetrics")
    }
}

impl crate::metrics::Collector for StoreMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode_metrics(&mut enc)
    }
}

/// A read-only view of one stored response (see [`CacheStore::peek`]).
pub struct StoredResponse(Arc<Entry>);

impl StoredResponse {
    pub fn header(&self) -> &pingora_http::ResponseHeader {
        self.0.meta.header()
    }

    /// The header's fields as HTTP/1 sends them, for a header that keeps its case.
    pub fn wire(&self) -> Option<&Wire> {
        self.0.meta.wire()
    }

    /// Where the body can be sent from without a copy: memory, or a file at an offset
    /// (a sealed memory file for a large body, or the disk tier's object file).
    pub fn body_ref(&self) -> BodyRef<'_> {
        self.0.body.as_ref()
    }

    /// The bytes of `span` of the body: shared with the store when it is in memory,
    /// read from its file otherwise (blocking: tests and the blocking pool only).
    pub fn read_body(&self, span: std::ops::Range<usize>) -> std::io::Result<bytes::Bytes> {
        self.0.body.read(span)
    }

    /// The first bytes of `span`: all of it when the body is in memory (shared, no
    /// copy); else at most [`READ_CHUNK`] bytes, read from the file and their blocks
    /// checked on the blocking pool. Send in a loop until `span` is done.
    pub async fn read_chunk(&self, span: std::ops::Range<usize>) -> std::io::Result<bytes::Bytes> {
        if self.0.body.in_memory().is_some() {
            return self.0.body.read(span);
        }
        let span = span.start..span.end.min(span.start.saturating_add(READ_CHUNK));
        let body = self.0.body.clone();
        tokio::task::spawn_blocking(move || handlers::read_checked(&body, span))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Whether `span` of the body can be sent: its blocks are checked (on the blocking
    /// pool, the first time each is sent) and match their sums. `false` for a corrupt
    /// block, or a file that cannot be read: the object is not to be served.
    pub async fn check(&self, span: std::ops::Range<usize>) -> bool {
        if self.0.body.checked(&span) {
            return true;
        }
        let body = self.0.body.clone();
        let checked = tokio::task::spawn_blocking(move || body.check(&span)).await;
        match checked {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => false,
            Ok(Err(e)) => {
                log::warn!("disk cache: cannot read a stored body to check it: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// The whole body (see [`StoredResponse::read_body`]).
    pub fn body(&self) -> std::io::Result<bytes::Bytes> {
        self.read_body(0..self.body_len())
    }

    /// The file the body can be sent from, when it has one.
    pub fn body_file(&self) -> Option<&std::fs::File> {
        match self.body_ref() {
            BodyRef::File { file, .. } => Some(file),
            BodyRef::Memory(_) => None,
        }
    }

    pub fn fresh_until(&self) -> SystemTime {
        self.0.meta.fresh_until()
    }

    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        self.0.body.len()
    }

    /// When the response was stored or last revalidated: where its age counts from.
    pub fn validated(&self) -> SystemTime {
        self.0.meta.epoch()
    }

    /// When the response was stored (or last revalidated).
    pub fn created(&self) -> SystemTime {
        self.0.meta.created()
    }

    /// Age at `now`, counted like pingora's `CacheMeta::age`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.0.meta.epoch()).unwrap_or_default()
    }

    /// How long past `fresh_until` the response may be served when the origin fails.
    pub fn stale_if_error(&self) -> Duration {
        self.0.meta.stale_if_error()
    }

    /// The response varies (`Vary`); the primary slot alone does not say which variant.
    pub fn has_variance(&self) -> bool {
        self.0.meta.has_variance()
    }

    /// Which variant of a `Vary` response this is (pingora-cache's variance hash).
    pub fn variance(&self) -> Option<pingora_cache::key::HashBinary> {
        self.0.meta.variance
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("used_bytes", &self.used_bytes())
            .field("len", &self.len())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

/// Shards for quick_cache: a power of two, up to four per core (its default), fewer when that
/// would leave a shard too small for [`LARGEST_PER_SHARD`] of the largest responses.
pub(crate) fn shard_count(memory: usize, max_object: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let largest = max_object
        .saturating_add(HEADER_ALLOWANCE)
        .saturating_add(PER_ENTRY_OVERHEAD)
        .saturating_mul(LARGEST_PER_SHARD);
    let mut shards = cores
        .saturating_mul(4)
        .clamp(1, MAX_SHARDS)
        .next_power_of_two();
    while shards > 1 && memory / shards < largest {
        shards /= 2;
    }
    shards
}

/// The `Content-Length` a response's fields declare, when there is one and a number:
/// what the store decides by (and the edge, before it asks the store for a fill).
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Purges aimed at an identified generation: this store never hands out entry IDs.
fn targets_identified(target: PurgeTarget<'_>) -> bool {
    matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. }))
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.find(&key.combined_bin()).transpose()
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.own_fill(key, tag).transpose()
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(FillWriter::begin(self, None, key, meta).await))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if targets_identified(target) {
            return Ok(PurgeOutcome::NotFound);
        }
        // Same bytes as the CacheKey's combined_bin(): primary hash, mixed with the variance if any.
        let key = target.key().combined_bin();
        if matches!(purge_type, PurgeType::Invalidation) {
            let purged_at = self.next_sequence();
            self.purged.insert(key, purged_at);
            // Readers no longer join a fill that began before it (it is not stored).
            self.fills.forget(&key);
        }
        Ok(match self.entries.remove(&key) {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    /// Keep the entry and its body but make it stale now, so the next read revalidates it
    /// (or serves it stale within its windows).
    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if targets_identified(target) {
            return Ok(PurgeOutcome::NotFound);
        }
        let key = target.key().combined_bin();
        let now = SystemTime::now();
        // The weight does not change, so the entry can be rewritten in place.
        let result = self.entries.entry(&key, Some(BUSY_WAIT), |_, stored| {
            Arc::make_mut(stored).meta.expire_at(now);
            EntryAction::Retain(())
        });
        match result {
            EntryResult::Retained(()) => Ok(PurgeOutcome::Expired),
            EntryResult::Timeout => Error::e_explain(
                ErrorType::InternalError,
                format!("cache entry {} is busy, not expired", hex(&key)),
            ),
            _ => Ok(PurgeOutcome::NotFound),
        }
    }

    /// Replace the stored meta after a revalidation, keeping the body.
    ///
    /// Only the admission `meta` describes is updated: its `created()` must equal the stored
    /// one's (pingora's `revalidate_cache_meta` carries it over from the hit). If the entry is
    /// gone, or a newer fill replaced it, nothing changes and this returns `Ok(false)`.
    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let key = key.combined_bin();
        let created = meta.created();
        let parts = MetaParts::from_meta(meta);
        let mut grown = None;
        let grown_slot = &mut grown;
        let result = self.entries.entry(&key, Some(BUSY_WAIT), move |_, stored| {
            if stored.meta.created() != created {
                log::debug!("not updating cache entry {}: replaced since", hex(&key));
                return EntryAction::Retain(false);
            }
            let updated = Entry::new(stored.body.clone(), parts, Arc::clone(&stored.key_text));
            if updated.weight() <= stored.weight() {
                *stored = Arc::new(updated);
                EntryAction::Retain(true)
            } else {
                // Heavier: reinsert through the cache so it evicts to stay under the bound.
                *grown_slot = Some(Arc::new(updated));
                EntryAction::ReplaceWithGuard
            }
        });
        match result {
            EntryResult::Retained(updated) => Ok(updated),
            EntryResult::Replaced(guard, _old) => {
                let Some(updated) = grown else {
                    return Ok(false);
                };
                let mut displaced = Displaced::writing(key, &updated);
                let stored = guard.insert_with_lifecycle(updated, &mut displaced).is_ok();
                Ok(stored && !displaced.rejected())
            }
            _ => Ok(false),
        }
    }

    /// Readers follow a fill as it grows (see [`fill`]): pingora-cache releases its lock
    /// once the fill begins, and serves the filling request's own client through a reader.
    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
