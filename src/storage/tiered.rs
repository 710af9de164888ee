//! Memory in front of disk, as one [`CacheStore`].
//!
//! A response up to `cache.max_object` goes to memory and, behind it, to the disk tier's
//! writer; a larger one (up to `cache.disk.max_object`) is streamed to the disk tier as
//! it arrives and memory keeps only an entry that sends from its file (see
//! [`super::fill`]). A lookup finds a fill under way first, then memory; one that memory
//! misses reads the disk tier on the blocking pool, checks the object's head and block
//! table, puts it back in memory (promotion) and answers from there, so every hit,
//! whichever tier held it, leaves through the same code. Purges and invalidations reach
//! both tiers before they return.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::Result;

use super::disk::DiskTier;
use super::entry::Entry;
use super::fill::FillWriter;
use super::handlers::hit_for;
use super::{CacheStore, MemoryStore, StoredResponse};
use crate::metrics::{counter, gauge, get};
use prometheus_client::encoding::DescriptorEncoder;

/// The memory store with a persistent tier behind it.
pub struct Tiered {
    memory: &'static MemoryStore,
    disk: &'static DiskTier,
}

impl Tiered {
    pub fn new(memory: &'static MemoryStore, disk: &'static DiskTier) -> Tiered {
        Tiered { memory, disk }
    }

    pub fn memory(&self) -> &'static MemoryStore {
        self.memory
    }

    pub fn disk(&self) -> &'static DiskTier {
        self.disk
    }

    /// `key`'s entry from memory, or else read back from disk and promoted to memory.
    async fn find(&'static self, key: &HashBinary) -> Option<Arc<Entry>> {
        if let Some(entry) = self.memory.entry(key) {
            return Some(entry);
        }
        self.read_disk(key).await
    }

    /// `key`'s entry read back from disk and promoted to memory. The read and the check
    /// of its body (a checksum over every byte) run on the blocking pool: a request's
    /// worker serves other requests meanwhile, however large the object or slow the disk.
    async fn read_disk(&'static self, key: &HashBinary) -> Option<Arc<Entry>> {
        // Taken before the read: a purge that lands during it wins.
        let started = self.memory.next_sequence();
        let (disk, budget, hash) = (self.disk, Arc::clone(self.memory.file_budget()), *key);
        let read = tokio::task::spawn_blocking(move || disk.read(&hash, &budget)).await;
        let entry = Arc::new(read.ok().flatten()?);
        if self.memory.purged_since(key, started) {
            return None;
        }
        self.memory.admit(*key, Arc::clone(&entry), started);
        Some(entry)
    }

    /// Write memory's current entry for `key` to disk again (after its meta changed).
    fn rewrite(&self, key: &HashBinary) {
        let started = self.memory.next_sequence();
        if let Some(entry) = self.memory.entry(key) {
            self.disk.write(*key, entry, started, self.memory);
        }
    }
}

#[async_trait]
impl Storage for Tiered {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let key = key.combined_bin();
        if let Some(found) = self.memory.find(&key) {
            return found.map(Some);
        }
        self.read_disk(&key)
            .await
            .map(|entry| hit_for(&entry))
            .transpose()
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.memory.own_fill(key, tag).transpose()
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(
            FillWriter::begin(self.memory, Some(self.disk), key, meta).await,
        ))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = target.key().combined_bin();
        // Disk first: a lookup that misses memory after the memory purge must not find
        // the file and promote it back. One that opened it just before gets an entry
        // that memory refuses, being older than the purge (see `find`).
        let was_on_disk = self.disk.remove(&key, self.memory.next_sequence());
        let outcome = self.memory.purge(target, purge_type, trace).await?;
        Ok(match outcome {
            PurgeOutcome::NotFound if was_on_disk => PurgeOutcome::Purged(None),
            other => other,
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = target.key().combined_bin();
        // Expired where it is served from, memory, after a promotion if need be; then
        // on disk, so that it stays expired after a restart.
        self.find(&key).await;
        let outcome = self.memory.expire(target, trace).await?;
        if matches!(outcome, PurgeOutcome::Expired) {
            self.rewrite(&key);
        }
        Ok(outcome)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        self.find(&hash).await;
        let updated = self.memory.update_meta(key, meta, trace).await?;
        if updated {
            self.rewrite(&hash);
        }
        Ok(updated)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[async_trait]
impl CacheStore for Tiered {
    fn peek(&'static self, key: &CacheKey) -> Option<StoredResponse> {
        self.memory.peek(key)
    }

    async fn read_through(&'static self, key: &CacheKey) -> Option<StoredResponse> {
        self.read_disk(&key.combined_bin())
            .await
            .map(StoredResponse)
    }

    fn max_object(&self) -> u64 {
        let memory = self.memory.body_limit() as u64;
        if self.disk.enabled() {
            memory.max(self.disk.max_object())
        } else {
            memory
        }
    }

    fn count_corrupt(&self) {
        self.disk.count_corrupt();
    }

    fn encode_metrics(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        self.memory.encode_metrics(enc)?;
        let disk = self.disk;
        let (objects, bytes) = disk.usage();
        let stats = disk.stats();
        gauge(
            enc,
            "holdfast_disk_enabled",
            "1 when the disk tier is in use; 0 when its directory could not be set up.",
            u64::from(disk.disabled().is_none()),
        )?;
        gauge(
            enc,
            "holdfast_disk_loading",
            "1 while the disk tier's index is being rebuilt after a start.",
            u64::from(disk.loading()),
        )?;
        gauge(
            enc,
            "holdfast_disk_bytes",
            "Bytes the disk tier's objects take, in whole 4 KiB blocks.",
            bytes,
        )?;
        gauge(
            enc,
            "holdfast_disk_capacity_bytes",
            "The bound on holdfast_disk_bytes (cache.disk.size).",
            disk.capacity(),
        )?;
        gauge(
            enc,
            "holdfast_disk_objects",
            "Objects held by the disk tier.",
            objects as u64,
        )?;
        counter(
            enc,
            "holdfast_disk_hits_total",
            "Objects read back from the disk tier and checked (then promoted to memory).",
            get(&stats.hits),
        )?;
        counter(
            enc,
            "holdfast_disk_writes_total",
            "Objects written to the disk tier.",
            get(&stats.writes),
        )?;
        counter(
            enc,
            "holdfast_disk_streamed_bytes_total",
            "Body bytes written to the disk tier as they arrived (objects above cache.max_object).",
            get(&stats.streamed_bytes),
        )?;
        counter(
            enc,
            "holdfast_disk_write_failures_total",
            "Writes to the disk tier that failed (disk full, unwritable); the objects stay in memory.",
            get(&stats.write_failures),
        )?;
        counter(
            enc,
            "holdfast_disk_writes_skipped_total",
            "Objects not written because the disk tier's write queue was full.",
            get(&stats.writes_skipped),
        )?;
        counter(
            enc,
            "holdfast_disk_checksum_failures_total",
            "Object files that failed their checks when read (corrupt or torn); each was dropped.",
            get(&stats.checksum_failures),
        )?;
        counter(
            enc,
            "holdfast_disk_evictions_total",
            "Objects evicted to stay within cache.disk.size.",
            disk.evictions(),
        )?;
        gauge(
            enc,
            "holdfast_disk_recovered_objects",
            "Object files found at start.",
            get(&stats.recovered),
        )?;
        gauge(
            enc,
            "holdfast_disk_dropped_at_start",
            "Torn or foreign files removed at start.",
            get(&stats.dropped_at_start),
        )?;
        Ok(())
    }

    fn flush(&self, timeout: Duration) {
        self.disk.flush(timeout);
    }
}

#[cfg(test)]
mod tests;
