//! A response being stored, readable while it arrives.
//!
//! Every fill is a [`Fill`]: the response's meta and its body as it grows. The request
//! that fetches it writes through a [`FillWriter`] (pingora-cache's miss handler); every
//! reader, that request's own client included, reads through a [`FillReader`] (a hit
//! handler that follows the fill). pingora-cache releases its cache lock as soon as the
//! fill begins (`Storage::support_streaming_partial_write`), so a client that asks for
//! the object meanwhile is answered from what has arrived instead of waiting for the
//! whole: one origin request however many clients come.
//!
//! A fill is in one of three modes:
//! - **Memory**: the body (at most the memory tier's `max_object`) is kept whole, then
//!   stored in memory (and queued for the disk tier) when it ends.
//! - **Disk**: the body (above `max_object`, up to `cache.disk.max_object`) is written
//!   to a temporary object file as it arrives, on the blocking pool, and renamed into
//!   place when it ends. Memory holds only what the disk has not taken yet, at most
//!   [`DISK_WINDOW`]: past it the fill waits for the disk, and when the disk does not
//!   keep up for [`DISK_STALL`] the fill gives up storing and becomes a pass.
//! - **Pass**: not stored (too large, or the disk stalled or failed). Memory holds what
//!   the slowest reader has not read yet; new clients do not join it.
//!
//! What it must never do:
//! - hand a later client a body that broke off as if whole: a fill dropped unfinished
//!   ends `Broken`, its readers get an error (the client sees the transfer break), and
//!   nothing of it is stored;
//! - read or write a file on a tokio worker: file I/O runs on the blocking pool;
//! - hold a streamed object whole in memory.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::body::Body;
use super::disk::{DiskTier, Spool};
use super::entry::{Entry, MetaParts};
use super::handlers::hex;
use super::MemoryStore;

/// Bytes a disk fill keeps in memory ahead of the disk at most.
pub(super) const DISK_WINDOW: u64 = 8 << 20;
/// How long a fill waits for a disk that does not keep up before it stops storing.
pub(super) const DISK_STALL: Duration = Duration::from_secs(2);
/// Bytes a pass keeps for a reader that does not keep up; past it the transfer breaks
/// rather than memory growing without bound.
pub(super) const PASS_WINDOW: u64 = 64 << 20;
/// Most bytes a reader reads from a file at once.
const READ_CHUNK: usize = 256 * 1024;

/// What becomes of a fill's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Memory,
    Disk,
    Pass,
}

/// How a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte arrived.
    Complete,
    /// It broke off: readers must not take what they have for the whole.
    Broken,
}

/// One response being stored (see the module docs).
pub(super) struct Fill {
    tag: [u8; 8],
    key: HashBinary,
    meta: MetaParts,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    mode: Mode,
    /// The body bytes memory keeps, each with its offset in the body.
    chunks: VecDeque<(u64, Bytes)>,
    /// Offset of the first byte memory keeps.
    kept_from: u64,
    /// Bytes received so far.
    received: u64,
    end: Option<End>,
    /// The temporary object file, for readers, and where the body starts in it.
    file: Option<(Arc<File>, u64)>,
    /// Bytes of the body on disk.
    on_disk: u64,
    /// Where each reader is, for a pass to let go of what all have read.
    readers: Vec<Weak<AtomicU64>>,
}

impl State {
    /// Let go of the chunks no reader needs from memory any more.
    fn trim(&mut self) {
        let keep_from = match self.mode {
            Mode::Memory => return,
            Mode::Disk => self.on_disk,
            Mode::Pass => {
                self.readers.retain(|r| r.strong_count() > 0);
                let slowest = self
                    .readers
                    .iter()
                    .filter_map(|r| r.upgrade())
                    .map(|r| r.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(self.received);
                slowest.max(self.on_disk)
            }
        };
        while let Some((at, chunk)) = self.chunks.front() {
            if at + chunk.len() as u64 > keep_from {
                break;
            }
            self.kept_from = at + chunk.len() as u64;
            self.chunks.pop_front();
        }
    }

    /// Bytes memory holds.
    fn backlog(&self) -> u64 {
        self.received - self.kept_from
    }
}

impl Fill {
    fn new(id: u64, key: HashBinary, meta: MetaParts, mode: Mode) -> Fill {
        Fill {
            tag: id.to_le_bytes(),
            key,
            meta,
            state: Mutex::new(State {
                mode,
                chunks: VecDeque::new(),
                kept_from: 0,
                received: 0,
                end: None,
                file: None,
                on_disk: 0,
                readers: Vec::new(),
            }),
            changed: Notify::new(),
        }
    }

    /// The tag pingora-cache matches a writer's own reader with.
    pub(super) fn tag(&self) -> &[u8] {
        &self.tag
    }

    pub(super) fn meta(&self) -> CacheMeta {
        self.meta.to_meta()
    }

    pub(super) fn mode(&self) -> Mode {
        self.state.lock().mode
    }

    /// A reader from the start of the body.
    pub(super) fn reader(self: &Arc<Self>) -> FillReader {
        let position = Arc::new(AtomicU64::new(0));
        self.state.lock().readers.push(Arc::downgrade(&position));
        FillReader {
            fill: Arc::clone(self),
            position,
            end: None,
        }
    }

    /// Append `data`; the fill's mode, bytes received and bytes memory holds after it,
    /// read under the same lock.
    fn push(&self, data: Bytes) -> (Mode, u64, u64) {
        let mut state = self.state.lock();
        let at = state.received;
        state.received += data.len() as u64;
        state.chunks.push_back((at, data));
        state.trim();
        let after = (state.mode, state.received, state.backlog());
        drop(state);
        self.changed.notify_waiters();
        after
    }

    fn end(&self, end: End) {
        self.state.lock().end.get_or_insert(end);
        self.changed.notify_waiters();
    }

    fn set_mode(&self, mode: Mode) {
        let mut state = self.state.lock();
        state.mode = mode;
        state.trim();
        drop(state);
        self.changed.notify_waiters();
    }

    /// The chunks the disk has not taken yet.
    fn unwritten(&self) -> Vec<Bytes> {
        let state = self.state.lock();
        state
            .chunks
            .iter()
            .filter(|(at, chunk)| at + chunk.len() as u64 > state.on_disk)
            .map(|(at, chunk)| chunk.slice(state.on_disk.saturating_sub(*at) as usize..))
            .collect()
    }

    fn written(&self, n: u64) {
        let mut state = self.state.lock();
        state.on_disk += n;
        state.trim();
        drop(state);
        self.changed.notify_waiters();
    }

    fn backlog(&self) -> u64 {
        self.state.lock().backlog()
    }

    /// Every chunk, for a memory fill that ends.
    fn chunks(&self) -> (Vec<Bytes>, u64) {
        let state = self.state.lock();
        let chunks = state.chunks.iter().map(|(_, c)| c.clone()).collect();
        (chunks, state.received)
    }
}

/// The fills under way, by key, for lookups to join.
#[derive(Default)]
pub(super) struct Fills {
    by_key: Mutex<std::collections::HashMap<HashBinary, Vec<Arc<Fill>>>>,
    ids: AtomicU64,
    /// Fills that broke off (their origin failed or was cut) so far.
    broken: AtomicU64,
}

impl Fills {
    /// The newest fill of `key` that new readers may join (not a pass).
    pub(super) fn latest(&self, key: &HashBinary) -> Option<Arc<Fill>> {
        let fills = self.by_key.lock();
        fills
            .get(key)?
            .iter()
            .rev()
            .find(|f| f.mode() != Mode::Pass)
            .cloned()
    }

    /// The fill of `key` with this `tag`.
    pub(super) fn tagged(&self, key: &HashBinary, tag: &[u8]) -> Option<Arc<Fill>> {
        let fills = self.by_key.lock();
        fills.get(key)?.iter().find(|f| f.tag() == tag).cloned()
    }

    fn add(&self, fill: &Arc<Fill>) {
        self.by_key
            .lock()
            .entry(fill.key)
            .or_default()
            .push(Arc::clone(fill));
    }

    /// Take `fill` out: it is over.
    fn remove(&self, fill: &Arc<Fill>) {
        let mut fills = self.by_key.lock();
        if let Some(list) = fills.get_mut(&fill.key) {
            list.retain(|f| !Arc::ptr_eq(f, fill));
            if list.is_empty() {
                fills.remove(&fill.key);
            }
        }
    }

    /// `key` was purged: its fills under way are not stored and new readers no longer
    /// join them. They stay listed until they end, for pingora-cache to find a writer's
    /// own reader by its tag.
    pub(super) fn forget(&self, key: &HashBinary) {
        let fills: Vec<Arc<Fill>> = self.by_key.lock().get(key).cloned().unwrap_or_default();
        for fill in fills {
            fill.set_mode(Mode::Pass);
        }
    }

    /// The fills under way.
    fn all(&self) -> Vec<Arc<Fill>> {
        self.by_key.lock().values().flatten().cloned().collect()
    }

    /// Fills under way.
    pub(super) fn len(&self) -> usize {
        self.all().len()
    }

    /// Readers following the fills under way (each filling request's own client too).
    pub(super) fn readers(&self) -> usize {
        let fills = self.all();
        fills
            .iter()
            .map(|f| {
                let state = f.state.lock();
                state
                    .readers
                    .iter()
                    .filter(|r| r.strong_count() > 0)
                    .count()
            })
            .sum()
    }

    /// Fills that broke off so far.
    pub(super) fn broken(&self) -> u64 {
        self.broken.load(Ordering::Relaxed)
    }
}

/// Writes one fill (pingora-cache's miss handler).
pub(super) struct FillWriter {
    fill: Arc<Fill>,
    memory: &'static MemoryStore,
    disk: Option<&'static DiskTier>,
    key_text: Arc<str>,
    /// The store's write sequence number when this fill began; a later purge cancels it.
    started: u64,
    /// The temporary object file of a disk fill, while no write to it is under way.
    spool: Option<Spool>,
    /// The write to it under way: the spool comes back with the bytes written.
    flushing: Option<JoinHandle<(Spool, std::io::Result<u64>)>>,
    finished: bool,
}

impl FillWriter {
    /// Begin a fill of `key`: kept in memory when its declared length fits there, streamed
    /// to `disk` when it fits there, else passed through unstored.
    pub(super) async fn begin(
        memory: &'static MemoryStore,
        disk: Option<&'static DiskTier>,
        key: &CacheKey,
        meta: &CacheMeta,
    ) -> FillWriter {
        let started = memory.next_sequence();
        let length = super::content_length(meta.headers());
        let mode = match length {
            Some(len) if len > memory.body_limit() as u64 => {
                if disk.is_some_and(|d| d.enabled() && len <= d.max_object()) {
                    Mode::Disk
                } else {
                    Mode::Pass
                }
            }
            _ => Mode::Memory,
        };
        let fills = memory.fills();
        let id = fills.ids.fetch_add(1, Ordering::Relaxed);
        let fill = Arc::new(Fill::new(
            id,
            key.combined_bin(),
            MetaParts::from_meta(meta),
            mode,
        ));
        // A pass too: pingora-cache finds the writer's own reader by its tag.
        fills.add(&fill);
        let mut writer = FillWriter {
            fill,
            memory,
            disk,
            key_text: Arc::from(key.primary_key_str().unwrap_or_default()),
            started,
            spool: None,
            flushing: None,
            finished: false,
        };
        if mode == Mode::Disk {
            writer.start_spool().await;
        }
        writer
    }

    /// Stop storing: what arrives from now on only passes to the readers there are.
    fn pass(&mut self, why: &str) {
        if self.fill.mode() != Mode::Pass {
            log::debug!(
                "not storing the response for key {}: {why}",
                hex(&self.fill.key)
            );
            // New readers no longer join it (see `Fills::latest`).
            self.fill.set_mode(Mode::Pass);
        }
    }

    /// Start writing to disk: create the temporary file (on the blocking pool).
    async fn start_spool(&mut self) {
        let Some(disk) = self.disk else {
            return self.pass("no disk tier");
        };
        let (key, key_text, meta) = (
            self.fill.key,
            Arc::clone(&self.key_text),
            self.fill.meta.clone(),
        );
        let spool = tokio::task::spawn_blocking(move || disk.spool(&key, &key_text, &meta)).await;
        match spool {
            Ok(Some(Ok(spool))) => {
                match spool.reader() {
                    Ok(reader) => {
                        self.fill.state.lock().file = Some((Arc::new(reader), spool.body_offset()))
                    }
                    Err(e) => return self.pass(&format!("cannot open the spool file: {e}")),
                }
                self.spool = Some(spool);
            }
            Ok(Some(Err(e))) => self.pass(&format!("cannot create a file to stream to: {e}")),
            _ => self.pass("the disk tier is off"),
        }
    }

    /// Collect the write under way, waiting at most `wait` (None: until it is done).
    /// Whether the writer may go on (false: the disk failed or stalled, and the fill
    /// became a pass).
    async fn collect(&mut self, wait: Option<Duration>) -> bool {
        let Some(handle) = self.flushing.as_mut() else {
            return true;
        };
        let joined = match wait {
            Some(wait) => match tokio::time::timeout(wait, handle).await {
                Ok(joined) => joined,
                Err(_) => {
                    // The write goes on in the background; its spool is let go there.
                    self.flushing = None;
                    self.pass("the disk does not keep up");
                    return false;
                }
            },
            None => handle.await,
        };
        self.flushing = None;
        match joined {
            Ok((spool, Ok(n))) => {
                self.spool = Some(spool);
                self.fill.written(n);
                true
            }
            Ok((_, Err(e))) => {
                self.pass(&format!("writing it to disk failed: {e}"));
                false
            }
            Err(e) => {
                self.pass(&format!("the disk write stopped: {e}"));
                false
            }
        }
    }

    /// Hand what the disk has not taken yet to a write on the blocking pool.
    fn flush(&mut self) {
        let Some(mut spool) = self.spool.take() else {
            return;
        };
        let chunks = self.fill.unwritten();
        if chunks.is_empty() {
            self.spool = Some(spool);
            return;
        }
        self.flushing = Some(tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            for chunk in &chunks {
                if let Err(e) = spool.write(chunk) {
                    return (spool, Err(e));
                }
                n += chunk.len() as u64;
            }
            (spool, Ok(n))
        }));
    }

    /// Keep the disk fed; wait for it while memory holds more than [`DISK_WINDOW`] ahead
    /// of it, up to [`DISK_STALL`].
    async fn feed_disk(&mut self) {
        if self.flushing.as_ref().is_some_and(|h| h.is_finished()) && !self.collect(None).await {
            return;
        }
        if self.flushing.is_none() {
            self.flush();
        }
        if self.fill.backlog() > DISK_WINDOW {
            if !self.collect(Some(DISK_STALL)).await {
                return;
            }
            self.flush();
        }
    }

    /// A disk fill's end: everything written, then the file made the key's object and
    /// memory given an entry that sends from it.
    async fn finish_disk(&mut self) -> usize {
        while self.fill.mode() == Mode::Disk {
            if !self.collect(None).await {
                return 0;
            }
            if self.fill.unwritten().is_empty() {
                break;
            }
            if self.spool.is_none() {
                self.pass("it has no file to be written to");
                return 0;
            }
            self.flush();
        }
        let (Some(disk), Some(spool)) = (self.disk, self.spool.take()) else {
            return 0;
        };
        let len = self.fill.state.lock().received;
        let mut meta = self.fill.meta.clone();
        meta.frame_by_length(len as usize);
        let (key, key_text, started) = (self.fill.key, Arc::clone(&self.key_text), self.started);
        let framed = meta.clone();
        let finished = tokio::task::spawn_blocking(move || {
            disk.finish_spool(&key, &key_text, &framed, spool, started)
        })
        .await;
        let (file, offset, blocks) = match finished {
            Ok(Ok(Some(done))) => done,
            Ok(Ok(None)) => return 0,
            Ok(Err(e)) => {
                log::warn!(
                    "disk cache: cannot store the object for key {}: {e}",
                    hex(&self.fill.key)
                );
                return 0;
            }
            Err(_) => return 0,
        };
        let Some(body) = Body::on_disk(
            file,
            offset,
            len as usize,
            blocks,
            self.memory.file_budget(),
        ) else {
            // On disk; memory has no descriptor to spare, lookups read it back.
            return 0;
        };
        let entry = Arc::new(Entry::new(body, meta, Arc::clone(&self.key_text)));
        self.memory
            .admit(self.fill.key, entry, self.started)
            .unwrap_or(0)
    }
}

#[async_trait]
impl HandleMiss for FillWriter {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let (mode, received, backlog) = self.fill.push(data);
        match mode {
            Mode::Memory => {
                if received > self.memory.body_limit() as u64 {
                    // Longer than it said, or it said nothing: on to disk when it fits.
                    if self
                        .disk
                        .is_some_and(|d| d.enabled() && received <= d.max_object())
                    {
                        self.fill.set_mode(Mode::Disk);
                        self.start_spool().await;
                        self.feed_disk().await;
                    } else {
                        self.pass("larger than the store takes");
                    }
                }
            }
            Mode::Disk => {
                if self.disk.is_some_and(|d| received > d.max_object()) {
                    self.pass("larger than cache.disk.max_object");
                } else {
                    self.feed_disk().await;
                }
            }
            Mode::Pass if backlog > PASS_WINDOW => {
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "a reader of an unstored response fell {backlog} bytes behind its origin"
                    ),
                );
            }
            Mode::Pass => {}
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let weight = match self.fill.mode() {
            Mode::Memory => {
                let (chunks, len) = self.fill.chunks();
                let mut meta = self.fill.meta.clone();
                meta.frame_by_length(len as usize);
                let body = Body::from_chunks(&chunks, len as usize, self.memory.file_budget());
                let entry = Arc::new(Entry::new(body, meta, Arc::clone(&self.key_text)));
                let stored = self
                    .memory
                    .admit(self.fill.key, Arc::clone(&entry), self.started);
                if let (Some(_), Some(disk)) = (stored, self.disk) {
                    disk.write(self.fill.key, entry, self.started, self.memory);
                }
                stored.unwrap_or(0)
            }
            Mode::Disk => self.finish_disk().await,
            Mode::Pass => 0,
        };
        // Stored (or not): lookups find the entry from now on, not the fill. (A finish
        // cut short before here, its task dropped, ends the fill `Broken` on drop.)
        self.finished = true;
        self.memory.fills().remove(&self.fill);
        self.fill.end(End::Complete);
        Ok(MissFinishType::Created(weight))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.fill.tag())
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.finished {
            log::debug!(
                "the fill of key {} broke off after {} bytes; nothing of it is stored",
                hex(&self.fill.key),
                self.fill.state.lock().received
            );
            self.memory.fills().remove(&self.fill);
            self.memory.fills().broken.fetch_add(1, Ordering::Relaxed);
            self.fill.end(End::Broken);
        }
    }
}

/// Reads one fill as it grows (a pingora-cache hit handler): from memory what memory
/// keeps, from the temporary file (on the blocking pool) what the disk took.
pub(super) struct FillReader {
    fill: Arc<Fill>,
    /// Where this reader is, also seen by the fill (see [`State::trim`]).
    position: Arc<AtomicU64>,
    /// Where to stop, exclusive (a range).
    end: Option<u64>,
}

/// What a reader does next.
enum Next {
    Bytes(Bytes),
    File(Arc<File>, u64, usize),
    Done,
    Broken,
    Wait,
}

impl FillReader {
    fn next(&self) -> Next {
        let pos = self.position.load(Ordering::Relaxed);
        let state = self.fill.state.lock();
        let stop = self.end.unwrap_or(u64::MAX);
        if pos >= stop {
            return Next::Done;
        }
        if pos < state.kept_from {
            return match &state.file {
                Some((file, offset)) if pos < state.on_disk => {
                    let n = (state.on_disk.min(stop) - pos).min(READ_CHUNK as u64) as usize;
                    Next::File(Arc::clone(file), offset + pos, n)
                }
                // Let go of by a pass while this reader lagged: cannot happen, as a pass
                // keeps what its slowest reader has not read.
                _ => Next::Broken,
            };
        }
        if pos < state.received {
            let i = state
                .chunks
                .partition_point(|(at, c)| at + c.len() as u64 <= pos);
            if let Some((at, chunk)) = state.chunks.get(i) {
                let from = (pos - at) as usize;
                let to = chunk.len().min((stop - at) as usize);
                return Next::Bytes(chunk.slice(from..to));
            }
        }
        match state.end {
            Some(End::Complete) => Next::Done,
            Some(End::Broken) => Next::Broken,
            None => Next::Wait,
        }
    }

    fn advance(&self, n: usize) {
        self.position.fetch_add(n as u64, Ordering::Relaxed);
        let mut state = self.fill.state.lock();
        if state.mode == Mode::Pass {
            state.trim();
        }
    }
}

#[async_trait]
impl HandleHit for FillReader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let changed = self.fill.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.next() {
                Next::Bytes(bytes) => {
                    self.advance(bytes.len());
                    return Ok(Some(bytes));
                }
                Next::File(file, at, n) => {
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n];
                        file.read_exact_at(&mut buf, at).map(|()| buf)
                    })
                    .await;
                    let buf = read
                        .map_err(std::io::Error::other)
                        .and_then(|read| read)
                        .map_err(|e| {
                            Error::because(
                                ErrorType::InternalError,
                                "reading a body being filled",
                                e,
                            )
                        })?;
                    self.advance(buf.len());
                    return Ok(Some(Bytes::from(buf)));
                }
                Next::Done => return Ok(None),
                Next::Broken => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "the response being stored broke off",
                    )
                }
                Next::Wait => changed.await,
            }
        }
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
        let end = end.map(|e| e as u64);
        if end.is_some_and(|e| e < start as u64) {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("range end {end:?} is before its start {start}"),
            );
        }
        self.position.store(start as u64, Ordering::Relaxed);
        self.end = end;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        0
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn std::any::Any + Send + Sync) {
        self
    }
}
