//! Memory in front of disk, on real files in a temporary directory. Two `Tiered` stores
//! opened on one directory one after the other stand for a node and its restart.

use super::*;
use crate::storage::{BodyRef, FILE_BACKED_MIN};
use bytes::Bytes;
use pingora_cache::trace::Span;
use pingora_http::ResponseHeader;
use std::path::Path;
use std::time::SystemTime;

fn span() -> SpanHandle {
    Span::inactive().handle()
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(path, "test")
}

fn meta() -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).expect("status");
    header.append_header("Content-Type", "text/plain").unwrap();
    header.append_header("X-Kept", "yes").unwrap();
    let created = SystemTime::now() - Duration::from_secs(5);
    CacheMeta::new(created + Duration::from_secs(300), created, 30, 600, header)
}

/// A node's store on `dir`: 8 MiB of memory, 64 MiB of disk.
fn open(dir: &Path) -> &'static Tiered {
    let memory: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(8 << 20, 1 << 20)));
    let disk = DiskTier::open(dir, 64 << 20, 1 << 20);
    assert!(disk.disabled().is_none(), "{:?}", disk.disabled());
    Box::leak(Box::new(Tiered::new(memory, disk)))
}

/// Store `body` under `key`; the bytes the memory tier charged for it at admission.
async fn put(store: &'static Tiered, key: &CacheKey, body: &[u8]) -> usize {
    let mut miss = store.get_miss_handler(key, &meta(), &span()).await.unwrap();
    miss.write_body(Bytes::copy_from_slice(body), true)
        .await
        .unwrap();
    match miss.finish().await.unwrap() {
        pingora_cache::storage::MissFinishType::Created(charged) => charged,
        pingora_cache::storage::MissFinishType::Appended(..) => panic!("a fill creates"),
    }
}

/// Invalidate `key` in both tiers, as an unsafe method or the purge API does.
async fn invalidate(store: &'static Tiered, key: &CacheKey) -> PurgeOutcome {
    store
        .purge(
            PurgeTarget::Active(&key.to_compact()),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .unwrap()
}

async fn get(store: &'static Tiered, key: &CacheKey) -> Option<(CacheMeta, Vec<u8>)> {
    let (meta, mut hit) = store.lookup(key, &span()).await.unwrap()?;
    let mut body = Vec::new();
    while let Some(chunk) = hit.read_body().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some((meta, body))
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("objects")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

fn large() -> Vec<u8> {
    (0..FILE_BACKED_MIN * 3 + 5)
        .map(|i| (i * 7 % 251) as u8)
        .collect()
}

#[tokio::test]
async fn what_one_store_wrote_the_next_one_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let (small, big) = (b"small body".to_vec(), large());
    put(first, &key("/small"), &small).await;
    put(first, &key("/big"), &big).await;
    first.flush(Duration::from_secs(5));
    assert_eq!(files(dir.path()).len(), 2);

    let second = open(dir.path());
    let (meta, body) = get(second, &key("/small")).await.expect("small from disk");
    assert_eq!(body, small);
    assert!(
        meta.age() >= Duration::from_secs(5),
        "age counts from when it was stored"
    );
    assert_eq!(meta.headers().get("x-kept").unwrap(), "yes");
    assert_eq!(meta.stale_if_error_sec(), 600);
    let (_, body) = get(second, &key("/big")).await.expect("big from disk");
    assert_eq!(body, big);
    // Promoted: memory holds both now.
    assert_eq!(second.memory().len(), 2);
}

#[tokio::test]
async fn a_large_body_read_back_is_sent_from_its_page_aligned_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let big = large();
    put(first, &key("/big"), &big).await;
    first.flush(Duration::from_secs(5));

    let second = open(dir.path());
    assert!(
        second.peek(&key("/big")).is_none(),
        "peek never reads a file"
    );
    let stored = second.read_through(&key("/big")).await.expect("on disk");
    match stored.body_ref() {
        BodyRef::File { file, offset } => {
            assert_eq!(offset % 4096, 0, "the body starts on a page boundary");
            let on_disk = file.metadata().unwrap().len();
            assert_eq!(
                on_disk,
                offset + big.len() as u64 + table_len(big.len()),
                "it is the object file: the body, then its block table"
            );
        }
        BodyRef::Memory(_) => panic!("a large body read back from disk stays in its file"),
    }
    assert_eq!(&stored.body().unwrap()[..], &big[..]);
    assert_eq!(&stored.read_body(10..20).unwrap()[..], &big[10..20]);
}

#[tokio::test]
async fn a_corrupt_file_is_dropped_counted_and_missed() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    put(first, &key("/a"), b"0123456789").await;
    put(first, &key("/big"), &large()).await;
    first.flush(Duration::from_secs(5));
    for f in files(dir.path()) {
        let mut bytes = std::fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // in the body
        std::fs::write(&f, bytes).unwrap();
    }

    let second = open(dir.path());
    assert!(get(second, &key("/a")).await.is_none());
    assert!(second.read_through(&key("/big")).await.is_none());
    let failures = &second.disk().stats().checksum_failures;
    assert_eq!(failures.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(files(dir.path()).is_empty(), "corrupt files are removed");
}

#[tokio::test]
async fn a_purge_removes_the_file_and_cancels_a_fill_begun_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(store, &key("/gone"), b"old").await;
    store.flush(Duration::from_secs(5));
    assert_eq!(files(dir.path()).len(), 1);

    // A fill that began before the purge and finishes after it.
    let k = key("/gone");
    let mut miss = store.get_miss_handler(&k, &meta(), &span()).await.unwrap();
    miss.write_body(Bytes::from_static(b"racing"), true)
        .await
        .unwrap();
    assert!(matches!(
        invalidate(store, &k).await,
        PurgeOutcome::Purged(_)
    ));
    assert!(
        files(dir.path()).is_empty(),
        "unlinked before purge returns"
    );
    miss.finish().await.unwrap();
    store.flush(Duration::from_secs(5));
    assert!(
        files(dir.path()).is_empty(),
        "the older fill is not written"
    );

    let restarted = open(dir.path());
    assert!(get(restarted, &key("/gone")).await.is_none());
}

#[tokio::test]
async fn a_revalidation_is_written_to_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let k = key("/doc");
    put(first, &k, b"doc").await;
    first.flush(Duration::from_secs(5));

    // pingora's revalidation: the hit's meta, fresh again from now.
    let (stored, _) = get(first, &k).await.unwrap();
    let now = SystemTime::now();
    let mut revalidated = CacheMeta::new(
        now + Duration::from_secs(3600),
        stored.created(),
        30,
        600,
        stored.response_header().clone(),
    );
    revalidated.set_epoch_override(now);
    assert!(first.update_meta(&k, &revalidated, &span()).await.unwrap());
    first.flush(Duration::from_secs(5));

    let second = open(dir.path());
    let (meta, body) = get(second, &k).await.unwrap();
    assert_eq!(body, b"doc");
    assert!(meta.fresh_until() > now + Duration::from_secs(3000));
    assert!(
        meta.age() < Duration::from_secs(5),
        "age counts from the revalidation"
    );
}

#[tokio::test]
async fn a_large_body_once_on_disk_is_sent_from_its_file_and_not_held_twice() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = large();
    let k = key("/big");
    // What admission charged, the body in its memory file: the disk writer may move
    // the body before the store's total could be read here.
    let in_memory_file = put(store, &k, &big).await;
    assert!(in_memory_file > big.len());
    store.flush(Duration::from_secs(5));

    let written = files(dir.path());
    assert_eq!(written.len(), 1);
    let stored = store.peek(&k).expect("still in memory");
    match stored.body_ref() {
        BodyRef::File { file, offset } => {
            let object = std::fs::metadata(&written[0]).unwrap();
            assert_eq!(
                file.metadata().unwrap().ino(),
                object.ino(),
                "the object file"
            );
            assert_eq!(
                object.len(),
                offset + big.len() as u64 + table_len(big.len())
            );
        }
        BodyRef::Memory(_) => panic!("a large body is sent from a file"),
    }
    assert_eq!(&stored.body().unwrap()[..], &big[..]);
    drop(stored);
    let charged = store.memory().used_bytes();
    assert!(
        charged + big.len() <= in_memory_file,
        "charged {charged} bytes after the move, {in_memory_file} before"
    );
    assert_eq!(
        store.memory().memory_files(),
        1,
        "the memory file is closed"
    );
    let read_back = &store.disk().stats().hits;
    assert_eq!(read_back.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The moved entry is purged like any other, from both tiers.
    assert!(matches!(
        invalidate(store, &k).await,
        PurgeOutcome::Purged(_)
    ));
    assert!(store.peek(&k).is_none());
    assert!(store.read_through(&k).await.is_none());
    assert!(files(dir.path()).is_empty());
}

/// A disk read (and the checksum over its body) runs on the blocking pool, never on the
/// thread of the runtime that asked for it: here a runtime of one worker, this thread.
#[test]
fn disk_reads_run_off_the_requests_worker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = open(dir.path());
    rt.block_on(put(first, &key("/big"), &large()));
    first.flush(Duration::from_secs(5));

    let second = open(dir.path());
    let worker = std::thread::current().id();
    let stored = rt.block_on(second.read_through(&key("/big")));
    assert!(stored.is_some(), "read back from disk");
    let readers = crate::storage::disk::reader_threads().clone();
    assert!(!readers.is_empty(), "the read went through DiskTier::read");
    assert!(
        readers.iter().all(|t| *t != worker),
        "a disk read ran on the request's worker"
    );
}

/// Bytes of the block table after a body of `len` bytes: one sum per MiB block.
fn table_len(len: usize) -> u64 {
    8 * len.div_ceil(1 << 20) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_does_not_keep_up_does_not_hold_up_the_fill() {
    let dir = tempfile::tempdir().unwrap();
    let memory: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(8 << 20, 1 << 20)));
    let disk = DiskTier::open(dir.path(), 64 << 20, 32 << 20);
    crate::storage::disk::slow_writes(disk, Duration::from_secs(3));
    let store: &'static Tiered = Box::leak(Box::new(Tiered::new(memory, disk)));
    let body: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .append_header("Content-Length", body.len().to_string())
        .unwrap();
    let now = SystemTime::now();
    let meta = CacheMeta::new(now + Duration::from_secs(300), now, 0, 0, header);
    let k = key("/slow-disk");
    let mut miss = store.get_miss_handler(&k, &meta, &span()).await.unwrap();
    let (_, mut reader) = store
        .lookup_streaming_write(&k, miss.streaming_write_tag(), &span())
        .await
        .unwrap()
        .expect("the writer's own reader");
    let began = std::time::Instant::now();
    for chunk in body.chunks(1 << 20) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    let took = began.elapsed();
    // Sixteen writes of 3 s each had the fill waited for them: it gave up on the disk
    // after DISK_STALL and went on.
    assert!(took < Duration::from_secs(6), "the fill waited {took:?}");
    assert!(matches!(
        miss.finish().await.unwrap(),
        pingora_cache::storage::MissFinishType::Created(0)
    ));
    let mut read = Vec::new();
    while let Some(chunk) = reader.read_body().await.unwrap() {
        read.extend_from_slice(&chunk);
    }
    assert!(read == body, "its reader got every byte");
    assert!(get(store, &k).await.is_none(), "not stored");
    // The abandoned file goes once the write under way returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(dir.path().join("tmp")).unwrap().count() > 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
