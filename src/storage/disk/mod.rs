//! The persistent tier: one file per stored response, so that a node restarted while its
//! origins are unreachable still serves what it held.
//!
//! Layout under `cache.disk.path`:
//! - `objects/ab/abcdef…`: one file per object, named by the hex of its cache key hash
//!   (the first byte picks one of 256 directories). The format is in [`format`]: the key
//!   text, the meta and the header, then the body whole, then a checksum per MiB block.
//! - `tmp/`: files being written: a whole object from memory, or a large body streamed
//!   as it arrives ([`Spool`]). A write goes to `tmp/` and is renamed into place when
//!   complete, so a crash leaves either the old file, the new one, or a stray temporary
//!   that the next start removes: never half a file under an object's name.
//!
//! Because a file's name is its key's hash, a lookup needs no index: it opens the one
//! path the key names. The index ([`quick_cache`], weighed by bytes on disk) exists to
//! keep the tier within `size` (evicting, S3-FIFO-like, by unlinking) and to answer
//! misses without a system call once it is loaded. At start it is rebuilt in the
//! background from the files' prefixes (nginx's cache loader, without a snapshot to go
//! stale); lookups meanwhile open the path and find what is there.
//!
//! What it must never do:
//! - serve bytes whose checksum did not match: the head and block table are checked on
//!   every read; a small body is read into memory and checked on every read; a large one
//!   is kept open and each block is checked the first time this process is to send any of
//!   it (files it wrote itself were summed from the bytes written), then sent from the
//!   file with `sendfile`, never copied through this process. Files are never changed in
//!   place (a rewrite is a new file renamed over the old), so an open, checked block stays
//!   what was checked. A file that fails is unlinked and counted;
//! - bring back what was purged: an invalidation unlinks the file at once, and a write
//!   that began before it removes its own file again (see [`DiskTier::remove`]);
//! - fail a request: every error here degrades to "not on disk", with a warning and a
//!   metric. A directory that cannot be created leaves the node memory-only.
//!
//! Durability: files are not fsynced one by one. A killed process loses nothing that was
//! renamed into place (the kernel has it); a power loss may lose the last seconds of
//! writes, and what it tears is caught by the checksum and dropped.

mod format;
mod index;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pingora_cache::key::HashBinary;

use super::body::{Blocks, Body, FileBudget, FILE_BACKED_MIN};
use super::entry::{Entry, MetaParts};
use super::MemoryStore;
use format::{Prefix, PREFIX_LEN};
use index::Index;

/// Objects waiting to be written at most; past it a store is not written to disk.
const WRITE_QUEUE: usize = 4096;
/// Body bytes waiting to be written at most (they are shared with memory, but a queue
/// that holds them keeps them alive after memory lets go).
const WRITE_QUEUE_BYTES: u64 = 64 << 20;
/// Bytes read at once from the start of a file: the prefix, the head, and for a small
/// object the body too, in one system call.
const FIRST_READ: usize = 8 * 1024;
/// Largest body read into memory when no descriptor is left to keep its file open.
const HEAP_FALLBACK: usize = 16 << 20;
/// How often the same kind of failure is logged at warning level.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The persistent tier. Build it with [`DiskTier::open`]; it lives for the process.
pub struct DiskTier {
    /// Tests: how long each streamed write sleeps first (a disk that does not keep up).
    #[cfg(test)]
    write_delay: Mutex<Duration>,
    root: PathBuf,
    /// The largest body the tier takes.
    max_object: u64,
    /// `None` when the directory could not be set up: the node runs memory-only.
    state: Option<Active>,
    stats: Stats,
    /// Why the tier is disabled, when it is.
    disabled: Option<String>,
}

/// The working parts of an enabled tier.
struct Active {
    objects: PathBuf,
    tmp: PathBuf,
    index: Index,
    loading: AtomicBool,
    queue: SyncSender<Job>,
    queued_bytes: AtomicU64,
    /// Jobs sent and not yet finished, for [`DiskTier::flush`].
    pending: AtomicU64,
    /// Key → write sequence number of its last invalidation.
    purged: quick_cache::sync::Cache<HashBinary, u64>,
    temp_names: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// Counters shown on `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    /// Body bytes written to disk as they arrived (fills above `cache.max_object`).
    pub streamed_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_failures: AtomicU64,
    pub writes_skipped: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub recovered: AtomicU64,
    pub dropped_at_start: AtomicU64,
}

/// One object to write: the entry as memory stored it, when its fill began, and the
/// memory store that holds it.
struct Job {
    key: HashBinary,
    entry: Arc<Entry>,
    started: u64,
    memory: &'static MemoryStore,
}

/// An object file just renamed into place, still open.
struct Written {
    /// Its length.
    size: u64,
    file: File,
    body_offset: u64,
    sums: Vec<u64>,
}

/// A body being written to a temporary object file as it arrives (see
/// [`DiskTier::spool`]); the temporary file goes when this is dropped unfinished.
pub(super) struct Spool {
    #[cfg(test)]
    delay: Duration,
    stats: &'static Stats,
    file: File,
    temp: PathBuf,
    body_offset: u64,
    written: u64,
    sums: Vec<u64>,
    block: xxhash_rust::xxh3::Xxh3,
    in_block: usize,
}

impl Spool {
    /// Append `data` to the body, summing its blocks as they fill. Blocking.
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        std::thread::sleep(self.delay);
        self.file
            .write_all_at(data, self.body_offset + self.written)?;
        let size = 1usize << format::BLOCK_SHIFT;
        let mut rest = data;
        while !rest.is_empty() {
            let n = (size - self.in_block).min(rest.len());
            self.block.update(&rest[..n]);
            self.in_block += n;
            rest = &rest[n..];
            if self.in_block == size {
                self.sums.push(self.block.digest());
                self.block.reset();
                self.in_block = 0;
            }
        }
        self.written += data.len() as u64;
        self.stats
            .streamed_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A second descriptor of the file, for readers following the fill.
    pub(super) fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Where the body starts in the file.
    pub(super) fn body_offset(&self) -> u64 {
        self.body_offset
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Gone already when it was renamed into place.
        if let Err(e) = std::fs::remove_file(&self.temp) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("disk cache: cannot remove {}: {e}", self.temp.display());
            }
        }
    }
}

/// Why a read found nothing usable.
enum ReadError {
    /// No such file.
    Missing,
    /// The file is not a whole, matching object file: drop it.
    Corrupt(&'static str),
    /// Reading failed (I/O error): leave the file, count nothing.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => ReadError::Missing,
            io::ErrorKind::UnexpectedEof => ReadError::Corrupt("shorter than its prefix says"),
            _ => ReadError::Io(e),
        }
    }
}

impl DiskTier {
    /// Set up the tier at `root` with room for `size` bytes, then start loading its index
    /// and its writer in the background. When the directory cannot be set up, the tier
    /// is disabled (logged, and `holdfast_disk_enabled 0`), never an error.
    /// `max_object`: the largest body it takes (`cache.disk.max_object`).
    pub fn open(root: &Path, size: u64, max_object: u64) -> &'static DiskTier {
        let largest = usize::try_from(max_object).unwrap_or(usize::MAX);
        let tier = match Active::create(root, size, largest) {
            Ok((active, jobs)) => DiskTier {
                #[cfg(test)]
                write_delay: Mutex::new(Duration::ZERO),
                root: root.to_path_buf(),
                max_object,
                state: Some(active),
                stats: Stats::default(),
                disabled: None,
            }
            .start(jobs),
            Err(e) => {
                let why = format!("cannot use cache.disk.path {}: {e}", root.display());
                log::warn!("{why}; the disk tier is off and this node caches in memory only");
                Box::leak(Box::new(DiskTier {
                    #[cfg(test)]
                    write_delay: Mutex::new(Duration::ZERO),
                    root: root.to_path_buf(),
                    max_object,
                    state: None,
                    stats: Stats::default(),
                    disabled: Some(why),
                }))
            }
        };
        tier
    }

    fn start(self, jobs: Receiver<Job>) -> &'static DiskTier {
        let tier: &'static DiskTier = Box::leak(Box::new(self));
        let spawned = std::thread::Builder::new()
            .name("holdfast-disk-load".into())
            .spawn(move || tier.load_index())
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("holdfast-disk-write".into())
                    .spawn(move || tier.write_loop(jobs))
            });
        if let Err(e) = spawned {
            log::error!("cannot start the disk tier's threads: {e}");
        }
        tier
    }

    /// The directory, as configured.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Why the tier is off, when it is.
    pub fn disabled(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Objects and bytes the index holds.
    pub fn usage(&self) -> (usize, u64) {
        self.state
            .as_ref()
            .map_or((0, 0), |a| (a.index.len(), a.index.weight()))
    }

    /// The bound actually enforced on bytes on disk.
    pub fn capacity(&self) -> u64 {
        self.state.as_ref().map_or(0, |a| a.index.capacity())
    }

    /// Evictions to stay within `size`.
    pub fn evictions(&self) -> u64 {
        self.state.as_ref().map_or(0, |a| a.index.evictions())
    }

    /// The index is still being rebuilt from the directory.
    pub fn loading(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|a| a.loading.load(Ordering::Acquire))
    }

    /// Read `key`'s object back, checked: `None` when it is not on disk or its file
    /// fails its checks (then the file is dropped and counted). Large bodies come back
    /// in sealed memory files from `budget`.
    pub(super) fn read(&self, key: &HashBinary, budget: &Arc<FileBudget>) -> Option<Entry> {
        #[cfg(test)]
        reader_threads().push(std::thread::current().id());
        let active = self.state.as_ref()?;
        if !active.index.contains(key) && !active.loading.load(Ordering::Acquire) {
            return None;
        }
        let path = active.object_path(key);
        match read_object(&path, key, active.index.verified(key), budget) {
            Ok(entry) => {
                // Not marked verified: a large body's blocks are checked as they are
                // sent, and only those (see `read_object`).
                active.index.touch(key);
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Err(ReadError::Missing) => {
                active.index.forget(key);
                None
            }
            Err(ReadError::Corrupt(why)) => {
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "disk cache: dropping {}: {why}; the request goes to the origin",
                    path.display()
                );
                active.index.forget(key);
                remove_file(&path);
                None
            }
            Err(ReadError::Io(e)) => {
                active.warn(&format!("disk cache: cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Queue `entry`, as `memory` holds it, to be written as `key`'s object. `started`
    /// is the write sequence number its fill (or update) began at: a purge after it
    /// cancels the write. When the queue is full the object is simply not written
    /// (counted). Once written, a body in a memory file moves to its object file (see
    /// [`MemoryStore::move_body`]).
    pub(super) fn write(
        &self,
        key: HashBinary,
        entry: Arc<Entry>,
        started: u64,
        memory: &'static MemoryStore,
    ) {
        let Some(active) = self.state.as_ref() else {
            return;
        };
        // What the queue keeps alive in memory: a body already in a file costs nothing.
        let bytes = entry.body.in_memory().map_or(0, |b| b.len() as u64);
        if active.queued_bytes.load(Ordering::Relaxed) + bytes > WRITE_QUEUE_BYTES {
            self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        active.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        active.pending.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            key,
            entry,
            started,
            memory,
        };
        if let Err(e) = active.queue.try_send(job) {
            active.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            active.pending.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed),
                TrySendError::Disconnected(_) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    /// A body of this tier failed a block check when it was to be sent.
    pub(super) fn count_corrupt(&self) {
        self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The tier is in use (its directory could be set up).
    pub fn enabled(&self) -> bool {
        self.state.is_some()
    }

    /// The largest body the tier takes (`cache.disk.max_object`).
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Start streaming a body for `key` into a temporary file, to become its object
    /// when [`DiskTier::finish_spool`] is called; dropped before, the file goes. `None`
    /// when the tier is off. Blocking (it creates a file).
    pub(super) fn spool(
        &'static self,
        key: &HashBinary,
        key_text: &str,
        meta: &MetaParts,
    ) -> Option<io::Result<Spool>> {
        let active = self.state.as_ref()?;
        let temp = active.temp_path(key);
        Some(create_to_write(&temp).map(|file| Spool {
            #[cfg(test)]
            delay: *self.write_delay.lock(),
            stats: &self.stats,
            file,
            temp,
            body_offset: format::streamed_body_offset(key, key_text, meta),
            written: 0,
            sums: Vec::new(),
            block: xxhash_rust::xxh3::Xxh3::new(),
            in_block: 0,
        }))
    }

    /// Make the streamed body `spool` the object of `key`, with `meta` (the final one:
    /// framed by its length): the block table and the head go in, the file is renamed
    /// into place and indexed. `started` is the write sequence number its fill began at:
    /// a purge since then discards it (`Ok(None)`). Returns the file, open, and where its
    /// body starts, with the blocks' sums. Blocking.
    pub(super) fn finish_spool(
        &self,
        key: &HashBinary,
        key_text: &str,
        meta: &MetaParts,
        mut spool: Spool,
        started: u64,
    ) -> io::Result<Option<(File, u64, Blocks)>> {
        let Some(active) = self.state.as_ref() else {
            return Ok(None);
        };
        if spool.in_block > 0 {
            spool.sums.push(spool.block.digest());
            spool.in_block = 0;
        }
        let head = format::head_at(key, key_text, meta, spool.body_offset)
            .ok_or_else(|| io::Error::other("the object's head outgrew the room left for it"))?;
        let table = format::table(&spool.sums);
        let prefix = format::prefix(&head, spool.written, &spool.sums);
        let table_at = spool.body_offset + spool.written;
        let written = (|| {
            spool.file.write_all_at(&table, table_at)?;
            spool.file.write_all_at(&prefix, 0)?;
            spool.file.write_all_at(&head, PREFIX_LEN as u64)?;
            if active.purged_since(key, started) {
                return Ok(false);
            }
            std::fs::rename(&spool.temp, active.object_path(key))?;
            Ok(true)
        })();
        match written {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let size = table_at + table.len() as u64;
        active.index.insert(*key, size, true, &active.objects);
        if active.purged_since(key, started) || !active.index.contains(key) {
            // Purged while it was renamed, or too large for the tier as it stands.
            active.index.forget(key);
            remove_file(&active.object_path(key));
            return Ok(None);
        }
        let file = spool.file.try_clone()?;
        let sums = std::mem::take(&mut spool.sums);
        Ok(Some((
            file,
            spool.body_offset,
            Blocks::new(format::BLOCK_SHIFT, sums, true),
        )))
    }

    /// Remove `key`'s object now, and cancel writes of it that began before write
    /// sequence number `purged_at`. Whether there was a file to remove.
    pub(super) fn remove(&self, key: &HashBinary, purged_at: u64) -> bool {
        let Some(active) = self.state.as_ref() else {
            return false;
        };
        active.purged.insert(*key, purged_at);
        active.index.forget(key);
        remove_file(&active.object_path(key))
    }

    /// Wait until queued writes are on disk, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let Some(active) = self.state.as_ref() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while active.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                log::warn!(
                    "disk cache: {} writes still queued at exit; those objects are not on disk",
                    active.pending.load(Ordering::Acquire)
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn write_loop(&self, jobs: Receiver<Job>) {
        let Some(active) = self.state.as_ref() else {
            return;
        };
        for job in jobs {
            let bytes = job.entry.body.in_memory().map_or(0, |b| b.len() as u64);
            if !active.purged_since(&job.key, job.started) {
                match active.write_object(&job) {
                    Ok(written) => {
                        self.stats.writes.fetch_add(1, Ordering::Relaxed);
                        // Written from the bytes its checksum was taken over.
                        active
                            .index
                            .insert(job.key, written.size, true, &active.objects);
                        if active.purged_since(&job.key, job.started) {
                            // A purge landed while this was being written: it must not
                            // survive it.
                            active.index.forget(&job.key);
                            remove_file(&active.object_path(&job.key));
                        } else if job.entry.body.in_memory_file() {
                            // Sent from the object file from now on, as a promoted
                            // body is; the memory file goes with the entry it leaves.
                            let len = job.entry.body.len();
                            let budget = job.memory.file_budget();
                            let blocks = Blocks::new(format::BLOCK_SHIFT, written.sums, true);
                            if let Some(body) = Body::on_disk(
                                written.file,
                                written.body_offset,
                                len,
                                blocks,
                                budget,
                            ) {
                                job.memory.move_body(&job.key, &job.entry, body);
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                        active.warn(&format!(
                            "disk cache: cannot write an object under {}: {e}; it stays in memory only",
                            self.root.display()
                        ));
                    }
                }
            }
            active.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            active.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Rebuild the index from the files' prefixes; drop torn and foreign files.
    fn load_index(&self) {
        let Some(active) = self.state.as_ref() else {
            return;
        };
        let began = Instant::now();
        let (mut found, mut dropped) = (0u64, 0u64);
        for shard in 0..=255u8 {
            let dir = active.objects.join(format!("{shard:02x}"));
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let Some(key) = f.file_name().to_str().and_then(parse_hex_key) else {
                    log::warn!(
                        "disk cache: leaving {} alone: not an object file name",
                        path.display()
                    );
                    continue;
                };
                match check_prefix(&path) {
                    Some(size) => {
                        found += 1;
                        active.index.insert_if_absent(key, size, &active.objects);
                    }
                    None => {
                        dropped += 1;
                        remove_file(&path);
                    }
                }
            }
        }
        active.loading.store(false, Ordering::Release);
        self.stats.recovered.store(found, Ordering::Relaxed);
        self.stats
            .dropped_at_start
            .store(dropped, Ordering::Relaxed);
        let (objects, bytes) = self.usage();
        log::info!(
            "disk cache {}: recovered {found} objects in {} ms ({objects} kept, {bytes} bytes); \
             dropped {dropped} torn or foreign files",
            self.root.display(),
            began.elapsed().as_millis()
        );
    }
}

impl Active {
    fn create(root: &Path, size: u64, max_object: usize) -> io::Result<(Active, Receiver<Job>)> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        // Writes a crash cut short, removed before this process's own writes begin (a
        // background sweep could take a temporary file from under a write).
        for f in std::fs::read_dir(&tmp)?.flatten() {
            remove_file(&f.path());
        }
        for shard in 0..=255u8 {
            std::fs::create_dir_all(objects.join(format!("{shard:02x}")))?;
        }
        // Prove the directory takes writes now, not at the first miss.
        let probe = tmp.join(format!("probe-{}", std::process::id()));
        File::create(&probe)?.write_all(b"holdfast")?;
        std::fs::remove_file(&probe)?;
        let (queue, jobs) = sync_channel(WRITE_QUEUE);
        Ok((
            Active {
                objects,
                tmp,
                index: Index::new(size, max_object),
                loading: AtomicBool::new(true),
                queue,
                queued_bytes: AtomicU64::new(0),
                pending: AtomicU64::new(0),
                purged: quick_cache::sync::Cache::new(super::PURGE_MEMORY),
                temp_names: AtomicU64::new(0),
                last_warning: Mutex::new(None),
            },
            jobs,
        ))
    }

    fn object_path(&self, key: &HashBinary) -> PathBuf {
        object_path(&self.objects, key)
    }

    fn purged_since(&self, key: &HashBinary, started: u64) -> bool {
        self.purged.get(key).is_some_and(|at| at > started)
    }

    /// Write the object to a temporary file and rename it into place. Returns the file,
    /// open to read.
    fn write_object(&self, job: &Job) -> io::Result<Written> {
        let entry = &job.entry;
        let len = entry.body.len();
        let head = format::head(&job.key, &entry.key_text, &entry.meta, len);
        let body_offset = (PREFIX_LEN + head.len()) as u64;
        // A body kept in an object file already (a rewrite after a revalidation) is
        // copied file to file by the kernel, with the sums it had: never read into
        // memory, however large.
        let in_file = entry
            .body
            .in_file()
            .filter(|(_, _, shift, _)| *shift == format::BLOCK_SHIFT);
        let (body, sums) = match in_file {
            Some((_, _, _, sums)) => (None, sums.to_vec()),
            None => {
                let body = entry.body.read(0..len)?;
                let sums = format::block_sums(&body);
                (Some(body), sums)
            }
        };
        let table = format::table(&sums);
        let prefix = format::prefix(&head, len as u64, &sums);
        let temp = self.temp_path(&job.key);
        let written = (|| {
            let mut file = create_to_write(&temp)?;
            file.write_all(&prefix)?;
            file.write_all(&head)?;
            match (&body, in_file) {
                (Some(body), _) => file.write_all(body)?,
                (None, Some((source, offset, _, _))) => {
                    copy_range(source, offset, &file, body_offset, len)?
                }
                (None, None) => {
                    return Err(io::Error::other("a body neither in memory nor in a file"))
                }
            }
            file.write_all_at(&table, body_offset + len as u64)?;
            std::fs::rename(&temp, self.object_path(&job.key))?;
            Ok(file)
        })();
        match written {
            Ok(file) => Ok(Written {
                size: body_offset + len as u64 + table.len() as u64,
                file,
                body_offset,
                sums,
            }),
            Err(e) => {
                remove_file(&temp);
                Err(e)
            }
        }
    }

    /// A new temporary file name for `key`.
    fn temp_path(&self, key: &HashBinary) -> PathBuf {
        let n = self.temp_names.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}.{n}", super::handlers::hex(key)))
    }

    /// Log at warning level at most once per [`WARN_EVERY`], else at debug level.
    fn warn(&self, message: &str) {
        let mut last = self.last_warning.lock();
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            log::warn!("{message} (repeats are logged at debug level for a minute)");
        } else {
            log::debug!("{message}");
        }
    }
}

/// Open an object file to read it, without access-time updates: hits `sendfile` from
/// the file the entry keeps open, and the kernel would check (and now and then write)
/// the file's access time on every one, which nothing here reads. A file this process
/// does not own may not be opened so (EPERM): it is opened as it is.
fn open_to_read(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let no_atime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(no_atime)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            File::open(path)
        }
        opened => opened,
    }
}

/// Create a temporary object file, open to read as well: once renamed into place, the
/// memory tier may keep this very descriptor to send the body from (this thread is the
/// only writer, so the file under the object's name is this one). Without access-time
/// updates, as [`open_to_read`] explains.
fn create_to_write(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::NOATIME.bits() as i32)
        .open(path)
}

fn object_path(objects: &Path, key: &HashBinary) -> PathBuf {
    let hex = super::handlers::hex(key);
    objects.join(&hex[..2]).join(hex)
}

fn parse_hex_key(name: &str) -> Option<HashBinary> {
    if name.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The file's size when its prefix is an object file's and its length what the prefix
/// says; `None` for a torn or foreign file. The checksum is checked when it is read.
fn check_prefix(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact_at(&mut prefix, 0).ok()?;
    let prefix = Prefix::parse(&prefix)?;
    let len = file.metadata().ok()?.len();
    (len == prefix.file_len()).then_some(len)
}

/// Read and check one object file: its prefix, head and block table always (they are
/// small). A small body is read into memory and its blocks checked every time. A large
/// one is left in the file, which the entry keeps open and hits send from; its blocks
/// are checked as they are first sent (all of them already when `verified`: this
/// process wrote the file). With no descriptor to spare in `budget`, a body of at most
/// [`HEAP_FALLBACK`] bytes is read into memory and checked; a larger one is not served.
fn read_object(
    path: &Path,
    key: &HashBinary,
    verified: bool,
    budget: &Arc<FileBudget>,
) -> Result<Entry, ReadError> {
    let file = open_to_read(path)?;
    let len = file.metadata()?.len();
    let first_len = usize::try_from(len.min(FIRST_READ as u64)).unwrap_or(FIRST_READ);
    let mut first = vec![0u8; first_len];
    file.read_exact_at(&mut first, 0)?;
    let prefix = Prefix::parse(&first).ok_or(ReadError::Corrupt("not an object file"))?;
    if len != prefix.file_len() {
        return Err(ReadError::Corrupt("its length is not what its prefix says"));
    }
    let head_end = PREFIX_LEN + prefix.head_len;
    if first.len() < head_end {
        let mut rest = vec![0u8; head_end - first.len()];
        file.read_exact_at(&mut rest, first.len() as u64)?;
        first.extend_from_slice(&rest);
    }
    let head = &first[PREFIX_LEN..head_end];
    let table_len = usize::try_from(len - prefix.table_offset())
        .map_err(|_| ReadError::Corrupt("its block table is too large"))?;
    let mut table = vec![0u8; table_len];
    file.read_exact_at(&mut table, prefix.table_offset())?;
    if !prefix.matches(head, &table) {
        return Err(ReadError::Corrupt("its checksum does not match"));
    }
    let head = format::decode_head(head).ok_or(ReadError::Corrupt("its head does not decode"))?;
    if head.key != *key {
        return Err(ReadError::Corrupt("it holds another key"));
    }
    let body_len = usize::try_from(prefix.body_len)
        .map_err(|_| ReadError::Corrupt("its body length is too large"))?;
    let offset = prefix.body_offset();
    let sums = format::parse_table(&table);
    let in_memory = |bytes: Vec<u8>| -> Result<Body, ReadError> {
        if format::block_sums(&bytes) != sums {
            return Err(ReadError::Corrupt(
                "a block of its body does not match its sum",
            ));
        }
        Ok(Body::heap(bytes::Bytes::from(bytes)))
    };
    let body = if body_len < FILE_BACKED_MIN {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = match first.get(at..at.saturating_add(body_len)) {
            // The first read had it all.
            Some(bytes) => bytes.to_vec(),
            None => {
                let mut bytes = vec![0u8; body_len];
                file.read_exact_at(&mut bytes, offset)?;
                bytes
            }
        };
        in_memory(bytes)?
    } else {
        let blocks = Blocks::new(prefix.block_shift, sums.clone(), verified);
        match Body::on_disk(file, offset, body_len, blocks, budget) {
            Some(body) => body,
            None if body_len <= HEAP_FALLBACK => {
                let file = File::open(path)?;
                let mut bytes = vec![0u8; body_len];
                file.read_exact_at(&mut bytes, offset)?;
                in_memory(bytes)?
            }
            None => {
                return Err(ReadError::Io(io::Error::other(
                    "no file descriptor to spare to send a large body from",
                )))
            }
        }
    };
    Ok(Entry::new(body, head.meta, head.key_text))
}

/// Copy `len` bytes of `source` from `from` into `target` at `to`, in the kernel.
fn copy_range(source: &File, from: u64, target: &File, to: u64, len: usize) -> io::Result<()> {
    let (mut from, mut to, mut left) = (from, to, len);
    while left > 0 {
        let n = rustix::fs::copy_file_range(source, Some(&mut from), target, Some(&mut to), left)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(())
}

/// Unlink `path`; whether it was there.
fn remove_file(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            log::warn!("disk cache: cannot remove {}: {e}", path.display());
            false
        }
    }
}

/// Make every streamed write of `tier` sleep `delay` first, as a disk that does not keep
/// up would.
#[cfg(test)]
pub(crate) fn slow_writes(tier: &DiskTier, delay: Duration) {
    *tier.write_delay.lock() = delay;
}

/// The threads [`DiskTier::read`] ran on, for the test that keeps reads off the
/// request's worker.
#[cfg(test)]
pub(crate) fn reader_threads() -> parking_lot::MutexGuard<'static, Vec<std::thread::ThreadId>> {
    static THREADS: parking_lot::Mutex<Vec<std::thread::ThreadId>> =
        parking_lot::Mutex::new(Vec::new());
    THREADS.lock()
}
