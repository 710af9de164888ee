//! The hit handlers pingora drives to read one stored entry (the miss handler, and the
//! reader of a fill under way, are in [`super::fill`]).

use super::body::Body;
use super::entry::Entry;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::storage::{HandleHit, HitHandler};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;

/// What pingora-cache's lookup hands out for a stored entry: its meta and a hit handler.
/// A body in memory is handed out whole; one kept in an object file is read a chunk at a
/// time on the blocking pool, each block checked before it leaves (the fast path sends
/// such bodies from the file instead).
pub(super) fn hit_for(entry: &Entry) -> Result<(CacheMeta, HitHandler)> {
    let hit: HitHandler = match entry.body.in_memory() {
        Some(bytes) => Box::new(MemoryHit::new(bytes.clone(), entry.weight())),
        None => Box::new(FileHit {
            body: entry.body.clone(),
            pos: 0,
            end: entry.body.len(),
        }),
    };
    Ok((entry.meta.to_meta(), hit))
}

/// Most bytes a [`FileHit`] reads at once.
const FILE_CHUNK: usize = 1 << 20;

/// Serves a body from its object file, a chunk at a time, off the worker.
struct FileHit {
    body: Body,
    pos: usize,
    end: usize,
}

#[async_trait]
impl HandleHit for FileHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let span = self.pos..self.end.min(self.pos + FILE_CHUNK);
        let body = self.body.clone();
        let read = tokio::task::spawn_blocking(move || read_checked(&body, span)).await;
        let bytes = read
            .map_err(std::io::Error::other)
            .and_then(|read| read)
            .map_err(|e| {
                Error::because(
                    ErrorType::InternalError,
                    "reading a cached body from its file",
                    e,
                )
            })?;
        self.pos += bytes.len();
        Ok(Some(bytes))
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
        let span = seek_span(start, end, self.body.len())?;
        (self.pos, self.end) = (span.start, span.end);
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        0
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// The span a hit handler's `seek(start, end)` selects of a body of `len` bytes: `end`
/// exclusive and clamped to the body. A start at or past the end of the body, or an end
/// before the start, is an error.
fn seek_span(start: usize, end: Option<usize>, len: usize) -> Result<std::ops::Range<usize>> {
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
    Ok(start..end)
}

/// The bytes of `span` of `body`, its blocks checked first. Blocking.
pub(super) fn read_checked(body: &Body, span: std::ops::Range<usize>) -> std::io::Result<Bytes> {
    if !body.check(&span)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a block of the cached body does not match its checksum",
        ));
    }
    body.read(span)
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
        let span = seek_span(start, end, self.body.len())?;
        (self.start, self.end) = (span.start, span.end);
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

/// Lowercase hex of a key, for logs.
pub(super) fn hex(key: &HashBinary) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
