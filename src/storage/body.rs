//! Where a stored body lives: on the heap, or, for large bodies, in a sealed memory file.
//!
//! Writing a large hit from the heap costs a copy of the whole body into the socket on
//! every hit: at 100 KiB, over a quarter of the CPU a hit costs. A body of at least
//! [`FILE_BACKED_MIN`] bytes is therefore kept in an anonymous memory file (`memfd`),
//! sealed against every change, and mapped read-only: the fast path `sendfile`s it, so the
//! kernel hands its pages to the socket without copying them, and everything else reads
//! the mapping as ordinary `Bytes`. The pages are memory like any other (counted in the
//! process's cgroup as shared memory, not always in its RSS), and freed when the last
//! holder lets go: the store, a hit being written, or the socket still sending them.
//!
//! Each such body holds one file descriptor and one mapping. They come from a budget of
//! half the process's open-file limit and half the kernel's mappings per process
//! ([`FileBudget`]), so that connections and the heap always have the other half; past
//! it, or when the kernel refuses a file, a body simply stays on the heap.

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Bodies this long or longer are kept in a memory file. Measured on hits of one object
/// (server CPU per hit, a build with a lower threshold against one without): 19 % less
/// at 32 KiB, within the noise at 16 KiB, where the page rounding (up to 4 KiB) and the
/// descriptor would cost more than the copy they save.
pub const FILE_BACKED_MIN: usize = 32 * 1024;

/// Linux's default `vm.max_map_count`, assumed when it cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Bytes charged per memory file on top of its pages: the kernel's inode, dentry, open
/// file and mapping, rounded up.
const FILE_OVERHEAD: usize = 1024;

/// A stored body: on the heap, in a sealed memory file (mapped), or in a persistent
/// tier's object file, which is read or sent from where it is.
#[derive(Clone)]
pub(super) struct Body {
    kind: Kind,
    len: usize,
}

#[derive(Clone)]
enum Kind {
    Heap(Bytes),
    Memory { bytes: Bytes, file: Arc<MemFile> },
    Disk(Arc<DiskFile>),
}

/// Where a body's bytes can be had without a copy: in memory, or at an offset of a file
/// (for `sendfile`).
#[derive(Clone, Copy)]
pub enum BodyRef<'a> {
    Memory(&'a [u8]),
    File { file: &'a File, offset: u64 },
}

/// An open object file of the persistent tier, the sums of its body's blocks, and the
/// descriptor it holds from its [`FileBudget`].
struct DiskFile {
    file: File,
    offset: u64,
    blocks: Blocks,
    _ticket: Ticket,
}

/// The checksums of a body's blocks in its object file, and which of them this process
/// has checked. A block is checked the first time any of it is to be sent (read once,
/// on the blocking pool); files are never changed in place, so a checked block stays
/// what was checked and is sent with `sendfile` from then on.
pub(super) struct Blocks {
    shift: u32,
    sums: Box<[u64]>,
    checked: Box<[AtomicBool]>,
}

impl Blocks {
    /// Blocks of `1 << shift` bytes with these sums; `checked` when this process took the
    /// sums from the bytes it wrote (or checked the whole file already).
    pub(super) fn new(shift: u32, sums: Vec<u64>, checked: bool) -> Blocks {
        let checked = sums.iter().map(|_| AtomicBool::new(checked)).collect();
        Blocks {
            shift,
            sums: sums.into_boxed_slice(),
            checked,
        }
    }

    /// The blocks `span` touches.
    fn of(&self, span: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        if span.is_empty() {
            return 0..0;
        }
        let first = span.start >> self.shift;
        let last = (span.end - 1) >> self.shift;
        first..(last + 1).min(self.sums.len())
    }

    fn all_checked(&self, span: &std::ops::Range<usize>) -> bool {
        self.of(span)
            .all(|b| self.checked[b].load(Ordering::Relaxed))
    }

    /// Read and check each block of `span` not checked yet (`len` is the body's length):
    /// `Ok(false)` when one does not match its sum. Blocking.
    fn check(
        &self,
        file: &File,
        offset: u64,
        len: usize,
        span: &std::ops::Range<usize>,
    ) -> io::Result<bool> {
        let size = 1usize << self.shift;
        let mut buf = Vec::new();
        for b in self.of(span) {
            if self.checked[b].load(Ordering::Relaxed) {
                continue;
            }
            let start = b * size;
            let n = size.min(len - start);
            buf.resize(n, 0);
            std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset + start as u64)?;
            if xxhash_rust::xxh3::xxh3_64(&buf) != self.sums[b] {
                return Ok(false);
            }
            self.checked[b].store(true, Ordering::Relaxed);
        }
        Ok(true)
    }
}

impl Body {
    /// A body on the heap, charged for its length.
    pub(super) fn heap(bytes: Bytes) -> Body {
        Body {
            len: bytes.len(),
            kind: Kind::Heap(bytes),
        }
    }

    /// The concatenation of `chunks` (`len` bytes in all), as one exact-size allocation, or
    /// in a memory file when it is large enough and `budget` has a descriptor left.
    pub(super) fn from_chunks(chunks: &[Bytes], len: usize, budget: &Arc<FileBudget>) -> Body {
        if len >= FILE_BACKED_MIN {
            if let Some(ticket) = budget.take() {
                match MemFile::create(chunks, len, ticket) {
                    Ok((bytes, file)) => {
                        return Body {
                            kind: Kind::Memory {
                                bytes,
                                file: Arc::new(file),
                            },
                            len,
                        }
                    }
                    Err(e) => budget.report_failure(&e),
                }
            }
        }
        // One exact-size copy: incoming chunks may be views into larger network buffers,
        // which would pin more memory than the entry is charged for.
        let mut body = Vec::with_capacity(len);
        for chunk in chunks {
            body.extend_from_slice(chunk);
        }
        Body::heap(Bytes::from(body))
    }

    /// `len` bytes of the open object file `file` from `offset`, left where they are:
    /// sent from the file and read from it when asked. `None` when `budget` has no
    /// descriptor left to keep the file open.
    pub(super) fn on_disk(
        file: File,
        offset: u64,
        len: usize,
        blocks: Blocks,
        budget: &Arc<FileBudget>,
    ) -> Option<Body> {
        let ticket = budget.take()?;
        Some(Body {
            kind: Kind::Disk(Arc::new(DiskFile {
                file,
                offset,
                blocks,
                _ticket: ticket,
            })),
            len,
        })
    }

    /// The bytes are in a memory file of their own.
    pub(super) fn in_memory_file(&self) -> bool {
        matches!(self.kind, Kind::Memory { .. })
    }

    /// The bytes, when they are in memory.
    pub(super) fn in_memory(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Heap(bytes) | Kind::Memory { bytes, .. } => Some(bytes),
            Kind::Disk(_) => None,
        }
    }

    /// Where the bytes can be sent or read from without a copy.
    pub(super) fn as_ref(&self) -> BodyRef<'_> {
        match &self.kind {
            Kind::Heap(bytes) => BodyRef::Memory(bytes),
            Kind::Memory { file, .. } => BodyRef::File {
                file: &file.file,
                offset: 0,
            },
            Kind::Disk(disk) => BodyRef::File {
                file: &disk.file,
                offset: disk.offset,
            },
        }
    }

    /// The bytes of `span`: shared when in memory, else read from the file.
    pub(super) fn read(&self, span: std::ops::Range<usize>) -> io::Result<Bytes> {
        match &self.kind {
            Kind::Heap(bytes) | Kind::Memory { bytes, .. } => Ok(bytes.slice(span)),
            Kind::Disk(disk) => {
                let mut out = vec![0; span.len()];
                std::os::unix::fs::FileExt::read_exact_at(
                    &disk.file,
                    &mut out,
                    disk.offset + span.start as u64,
                )?;
                Ok(Bytes::from(out))
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The object file a body is kept in: the file, where the body starts, and its
    /// blocks' size (as a shift) and sums.
    pub(super) fn in_file(&self) -> Option<(&File, u64, u32, &[u64])> {
        match &self.kind {
            Kind::Disk(disk) => Some((
                &disk.file,
                disk.offset,
                disk.blocks.shift,
                &disk.blocks.sums,
            )),
            Kind::Heap(_) | Kind::Memory { .. } => None,
        }
    }

    /// Every block `span` touches has been checked (always so in memory): it can be sent
    /// without reading it first.
    pub(super) fn checked(&self, span: &std::ops::Range<usize>) -> bool {
        match &self.kind {
            Kind::Heap(_) | Kind::Memory { .. } => true,
            Kind::Disk(disk) => disk.blocks.all_checked(span),
        }
    }

    /// Check the blocks `span` touches that are not checked yet; `Ok(false)` when one is
    /// corrupt. Reads the file: call it on the blocking pool.
    pub(super) fn check(&self, span: &std::ops::Range<usize>) -> io::Result<bool> {
        match &self.kind {
            Kind::Heap(_) | Kind::Memory { .. } => Ok(true),
            Kind::Disk(disk) => disk.blocks.check(&disk.file, disk.offset, self.len, span),
        }
    }

    /// What the body costs in memory: its length; for a memory file its whole pages plus
    /// the kernel's per-file objects; for an object file only those objects (its pages
    /// are the page cache's, which the kernel reclaims as it needs).
    pub(super) fn charged_len(&self) -> usize {
        match self.kind {
            Kind::Heap(_) => self.len,
            Kind::Memory { .. } => {
                let page = rustix::param::page_size();
                self.len
                    .div_ceil(page)
                    .saturating_mul(page)
                    .saturating_add(FILE_OVERHEAD)
            }
            Kind::Disk(_) => FILE_OVERHEAD,
        }
    }
}

/// A sealed memory file and the descriptor it holds from its [`FileBudget`].
struct MemFile {
    file: File,
    _ticket: Ticket,
}

impl MemFile {
    /// Write `chunks` into a new memory file, seal it, and map it read-only.
    fn create(chunks: &[Bytes], len: usize, ticket: Ticket) -> io::Result<(Bytes, MemFile)> {
        let mut file = new_memfd(len)?;
        for chunk in chunks {
            file.write_all(chunk)?;
        }
        MemFile::seal(file, len, ticket)
    }

    fn seal(file: File, len: usize, ticket: Ticket) -> io::Result<(Bytes, MemFile)> {
        // From here on the contents can neither change nor move: what was mapped or handed
        // to a socket stays what was stored.
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
        )?;
        let map = map_sealed(&file, len)?;
        Ok((
            Bytes::from_owner(map),
            MemFile {
                file,
                _ticket: ticket,
            },
        ))
    }
}

/// A new memory file, sized `len`, that can be sealed.
fn new_memfd(len: usize) -> io::Result<File> {
    let fd = rustix::fs::memfd_create(
        "holdfast-body",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    // Hits `sendfile` from it: no access-time bookkeeping on each (see the disk tier's
    // `open_to_read`). The file is this process's own, so the flag is allowed; were it
    // refused, the file works as well without it.
    let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NOATIME);
    let file = File::from(fd);
    file.set_len(len as u64)?;
    Ok(file)
}

#[allow(unsafe_code)]
fn map_sealed(file: &File, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: mapping a file is unsafe because another party could change or truncate it
    // underneath the mapping. This one is a memory file only this process has, sealed
    // against writing, shrinking and growing (and against removing those seals) before it
    // is mapped, and `len` is its exact size: the mapped bytes cannot change or go away.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }
}

/// How many memory files bodies may hold at once, and how many they do.
#[derive(Debug)]
pub struct FileBudget {
    limit: usize,
    in_use: AtomicUsize,
    warned: AtomicBool,
}

impl FileBudget {
    /// Half the process's current open-file limit (see [`raise_open_file_limit`]), and
    /// at most half the kernel's limit on memory mappings per process
    /// (`vm.max_map_count`): every other mapping, the heap's included, fails past that.
    pub fn from_system_limits() -> Arc<FileBudget> {
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
        let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_MAX_MAP_COUNT);
        FileBudget::with_limit(files.min(maps / 2))
    }

    /// At most `limit` memory files at once; 0 keeps every body on the heap.
    pub fn with_limit(limit: usize) -> Arc<FileBudget> {
        Arc::new(FileBudget {
            limit,
            in_use: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Memory files held by stored bodies (and by hits still being written) right now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> Option<Ticket> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        Some(Ticket(Arc::clone(self)))
    }

    fn report_failure(&self, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "cannot keep a large body in a memory file ({e}); keeping it on the heap, \
                 where each hit copies it (warned once)"
            );
        } else {
            log::debug!("cannot keep a large body in a memory file: {e}");
        }
    }
}

/// One descriptor of a [`FileBudget`], given back when dropped.
struct Ticket(Arc<FileBudget>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raise the soft open-file limit to the hard one, so that large bodies can use memory
/// files without crowding out connections. Returns the soft limit now in force (`None`:
/// unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => log::warn!("cannot raise the open-file limit to its maximum: {e}"),
        }
    }
    limit.current
}
