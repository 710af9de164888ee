//! The hit and miss handlers pingora drives to read and write one [`MemoryStore`] entry.

use super::body::Body;
use super::entry::{Entry, MetaParts};
use super::MemoryStore;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::storage::{HandleHit, HandleMiss, HitHandler, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::Arc;

/// What pingora-cache's lookup hands out for a stored entry: its meta and a hit handler.
/// A body kept in an object file is read into memory for it (the fast path sends such
/// bodies from the file instead).
pub(super) fn hit_for(entry: &Entry) -> Result<(CacheMeta, HitHandler)> {
    let body = entry.body.read(0..entry.body.len()).map_err(|e| {
        Error::because(
            ErrorType::InternalError,
            "reading a cached body from its file",
            e,
        )
    })?;
    let hit = MemoryHit::new(body, entry.weight());
    Ok((entry.meta.to_meta(), Box::new(hit)))
}

/// Serves one stored body, whole or one range of it, without copying it.
pub(super) struct MemoryHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    weight: usize,
}

impl MemoryHit {
    pub(super) fn new(body: Bytes, weight: u64) -> MemoryHit {
        MemoryHit {
            start: 0,
            end: body.len(),
            body,
            done: false,
            weight: usize::try_from(weight).unwrap_or(usize::MAX),
        }
    }

    /// The selected range once, then `None`; an empty range gives `None` straight away.
    pub(super) fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done || self.start >= self.end {
            self.done = true;
            return None;
        }
        self.done = true;
        Some(self.body.slice(self.start..self.end))
    }

    /// Select `start..end` (end exclusive, clamped to the body) and rewind, so one handler can
    /// serve several ranges. A start at or past the end of the body is an error.
    pub(super) fn select(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("range start {start} is past the end of the {len} byte cached body"),
            );
        }
        let end = end.map_or(len, |end| end.min(len));
        if end < start {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("range end {end} is before its start {start}"),
            );
        }
        self.start = start;
        self.end = end;
        self.done = false;
        Ok(())
    }
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        Ok(self.next_chunk())
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.select(start, end)
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Buffers one response body and stores it on `finish`, unless it grew past `max_object`.
///
/// Dropped without `finish` (the response failed or was cut), it stores nothing.
pub(super) struct MemoryMiss {
    store: &'static MemoryStore,
    key: HashBinary,
    key_text: Arc<str>,
    meta: MetaParts,
    chunks: Vec<Bytes>,
    size: usize,
    oversized: bool,
    /// The store's write sequence number when this fill began; a later purge cancels it.
    started: u64,
}

impl MemoryMiss {
    pub(super) fn new(
        store: &'static MemoryStore,
        key: HashBinary,
        key_text: Arc<str>,
        meta: MetaParts,
        started: u64,
        oversized: bool,
    ) -> MemoryMiss {
        MemoryMiss {
            store,
            key,
            key_text,
            meta,
            chunks: Vec::new(),
            size: 0,
            oversized,
            started,
        }
    }
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.oversized {
            return Ok(());
        }
        self.size = self.size.saturating_add(data.len());
        if self.size > self.store.body_limit() {
            // Not an error: the response keeps streaming to the client, it just isn't kept.
            log::debug!(
                "not storing a response body over {} bytes for key {}",
                self.store.body_limit(),
                hex(&self.key)
            );
            self.oversized = true;
            self.chunks = Vec::new();
            return Ok(());
        }
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        Ok(self.finish_stored().0)
    }
}

impl MemoryMiss {
    /// Store the fill; what pingora is told, and the entry when it was stored (with
    /// the write sequence number its fill began at).
    pub(super) fn finish_stored(self: Box<Self>) -> (MissFinishType, Option<(Arc<Entry>, u64)>) {
        let mut this = *self;
        if this.oversized {
            return (MissFinishType::Created(0), None);
        }
        this.meta.frame_by_length(this.size);
        let body = Body::from_chunks(&this.chunks, this.size, &this.store.files);
        let entry = Arc::new(Entry::new(body, this.meta, this.key_text));
        match this.store.admit(this.key, Arc::clone(&entry), this.started) {
            Some(weight) => (MissFinishType::Created(weight), Some((entry, this.started))),
            None => (MissFinishType::Created(0), None),
        }
    }
}

/// Lowercase hex of a key, for logs.
pub(super) fn hex(key: &HashBinary) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
