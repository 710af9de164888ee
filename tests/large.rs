//! Objects of any size, end to end: the real binary with a small memory tier and a disk
//! tier, a real origin that sends large bodies in pieces (throttled, or cut off), and
//! clients that read as the bytes come. What is checked: a body larger than memory is
//! streamed to disk and served from there with the node's memory bounded; it survives a
//! SIGKILL with the origin gone; clients that come during a fill are answered from it at
//! once, with one origin request; a cold `Range` is answered before the fill ends; a fill
//! that breaks off is never stored; a corrupt block is never served.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{customer, metric, Behavior, Holdfast, Origin, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "files.test";
const MIB: usize = 1 << 20;

/// A body of `len` bytes that differs from every other `seed`'s, shared with the origin.
fn body(seed: u32, len: usize) -> Arc<Vec<u8>> {
    Arc::new(common::body(seed, len))
}

/// A node that keeps at most 1 MiB objects in a memory tier of `memory`, and streams
/// larger ones (up to 512 MiB) to its disk tier.
async fn node(origin: &Origin, memory: &str) -> Holdfast {
    Holdfast::start(&format!(
        "cache: {{ memory: {memory}, max_object: 1MiB, disk: {{ path: cache, size: 2GiB, max_object: 512MiB }} }}\n\
         customers:\n{}",
        customer("files", HOST, origin.addr, "      stale_if_error: 1d\n", "")
    ))
    .await
}

/// One response as a client reading it as it comes saw it.
struct Fetched {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// When the head, and the first byte of the body, arrived after the request went.
    head_at: Duration,
    first_byte_at: Option<Duration>,
    /// The body came whole (as long as `Content-Length` said).
    complete: bool,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }
}

/// GET `path` with `headers`, reading the body as it comes; a connection cut before the
/// end gives what came (`complete: false`).
async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let began = Instant::now();
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let mut piece = vec![0u8; 256 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut piece))
            .await
            .expect("head in time")
            .expect("read head");
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&piece[..n]);
    };
    let head_at = began.elapsed();
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head[9..12].parse().expect("status");
    let mut body = buf[head_end..].to_vec();
    let mut first_byte_at = (!body.is_empty()).then(|| began.elapsed());
    let length: Option<usize> = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    loop {
        if length.is_some_and(|len| body.len() >= len) {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(60), conn.read(&mut piece)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first_byte_at.get_or_insert_with(|| began.elapsed());
                body.extend_from_slice(&piece[..n]);
            }
            Err(_) => panic!("{path}: no byte for 60 s"),
        }
    }
    Fetched {
        status,
        complete: length.is_some_and(|len| body.len() == len),
        head,
        body,
        head_at,
        first_byte_at,
    }
}

/// The resident memory of process `pid`, in bytes (`VmRSS`: heap, stacks, and the
/// memory files' pages it maps).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Files under the tier's `objects/` and `tmp/`.
fn files(root: &Path, under: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join(under)) else {
        return out;
    };
    for entry in dirs.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        } else {
            out.push(path);
        }
    }
    out
}

async fn wait_for_metric(edge: &Holdfast, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&edge.metrics().await, name) < at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_larger_than_memory_streams_to_disk_within_bounded_memory_and_survives_a_kill() {
    let origin = Origin::start().await;
    let big = body(1, 200 * MIB);
    origin.route(
        "/big.iso",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&big))),
    );
    let mut edge = node(&origin, "64MiB").await;
    let pid = edge.pid();
    let before = rss(pid);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let miss = fetch(edge.addr, "/big.iso", &[]).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    assert_eq!(miss.status, 200, "{}", miss.head);
    assert!(miss.complete, "{} of {} bytes", miss.body.len(), big.len());
    assert!(miss.body == *big, "the bytes the origin sent");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, {} MiB at the peak of a 200 MiB fill",
        before >> 20,
        peak >> 20
    );
    assert!(
        metric(&edge.metrics().await, "holdfast_disk_streamed_bytes_total") >= big.len() as u64,
        "written to disk as it came"
    );
    assert!(
        grown < 64 * MIB as u64,
        "streaming 200 MiB grew the node's memory by {} MiB (from {} MiB)",
        grown >> 20,
        before >> 20
    );

    let hit = fetch(edge.addr, "/big.iso", &[]).await;
    assert_eq!(hit.status, 200);
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert!(hit.body == *big);
    assert_eq!(origin.hits_for("/big.iso"), 1);
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_disk_objects"), 1);

    // Killed, started again with the origin gone: the object is still whole, and a
    // range of it is served from the restored file.
    edge.kill();
    origin.stop();
    edge.restart().await;
    let after = fetch(edge.addr, "/big.iso", &[]).await;
    assert_eq!(after.status, 200, "{}", after.head);
    assert!(after.body == *big, "restored whole");
    let at = 150_000_000;
    let range = format!("bytes={at}-{}", at + 99);
    let part = fetch(edge.addr, "/big.iso", &[("Range", &range)]).await;
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, big[at..at + 100]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {at}-{}/{}", at + 99, big.len()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_come_during_a_fill_are_served_from_it_at_once() {
    let origin = Origin::start().await;
    // Two seconds to fill; on disk (above max_object) and in memory (below it).
    let large = body(2, 8 * MIB);
    let small = body(3, 768 * 1024);
    origin.route(
        "/large",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large)).rate(4 * MIB as u64)),
    );
    origin.route(
        "/small",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&small)).rate(384 * 1024)),
    );
    let edge = node(&origin, "64MiB").await;
    for (path, expected) in [("/large", &large), ("/small", &small)] {
        let began = Instant::now();
        let first = tokio::spawn(fetch(edge.addr, path, &[]));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let joined_at = began.elapsed();
        let second = tokio::spawn(fetch(edge.addr, path, &[]));
        let third = tokio::spawn(fetch(edge.addr, path, &[("Range", "bytes=100-199")]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = edge.metrics().await;
        assert_eq!(metric(&m, "holdfast_cache_fills"), 1, "{path}: one fill");
        assert!(
            metric(&m, "holdfast_cache_fill_readers") >= 2,
            "{path}: followed by the clients still reading"
        );
        let (first, second, third) = (
            first.await.unwrap(),
            second.await.unwrap(),
            third.await.unwrap(),
        );
        let filled_at = began.elapsed();
        assert!(first.body == **expected, "{path}: the first client");
        assert!(second.body == **expected, "{path}: the second client");
        assert_eq!(third.status, 206, "{path}: {}", third.head);
        assert_eq!(third.body, expected[100..200]);
        let second_first_byte = joined_at + second.first_byte_at.expect("a body");
        assert!(
            second_first_byte + Duration::from_millis(700) < filled_at,
            "{path}: the second client's first byte at {second_first_byte:?}, the fill done at {filled_at:?}"
        );
        assert!(
            third.head_at < Duration::from_millis(700),
            "{path}: the range was answered after {:?}",
            third.head_at
        );
        assert_eq!(origin.hits_for(path), 1, "{path}: one origin request");
    }
    let hit = fetch(edge.addr, "/large", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert!(hit.body == *large);
    assert_eq!(origin.hits_for("/large"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_of_a_varying_response_join_the_fill_of_their_variant() {
    let origin = Origin::start().await;
    let large = body(7, 4 * MIB);
    origin.route(
        "/vary",
        Behavior::Stream(
            Stream::new("max-age=600", Arc::clone(&large))
                .header("Vary", "Accept-Language")
                .rate(4 * MIB as u64),
        ),
    );
    let edge = node(&origin, "64MiB").await;
    let began = Instant::now();
    let first = tokio::spawn(fetch(edge.addr, "/vary", &[("Accept-Language", "de")]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let joined_at = began.elapsed();
    let second = tokio::spawn(fetch(edge.addr, "/vary", &[("Accept-Language", "de")]));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let filled_at = began.elapsed();
    assert!(first.body == *large && second.body == *large);
    assert!(
        joined_at + second.first_byte_at.expect("a body") + Duration::from_millis(300) < filled_at,
        "the second client was answered from the fill"
    );
    assert_eq!(
        origin.hits_for("/vary"),
        1,
        "one origin request for one variant"
    );
    // Another variant is a fill of its own.
    let other = fetch(edge.addr, "/vary", &[("Accept-Language", "fr")]).await;
    assert!(other.body == *large);
    assert_eq!(origin.hits_for("/vary"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_range_is_answered_before_the_fill_ends_and_the_whole_object_is_stored() {
    let origin = Origin::start().await;
    let large = body(4, 8 * MIB);
    origin.route(
        "/video.mp4",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large)).rate(4 * MIB as u64)),
    );
    let edge = node(&origin, "64MiB").await;
    let part = fetch(edge.addr, "/video.mp4", &[("Range", "bytes=1000-1999")]).await;
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, large[1000..2000]);
    assert!(
        part.head_at < Duration::from_millis(700),
        "answered after {:?} of a two-second fill",
        part.head_at
    );
    // The fill goes on: the whole object is stored from that one origin request.
    wait_for_metric(&edge, "holdfast_disk_writes_total", 1).await;
    let whole = fetch(edge.addr, "/video.mp4", &[]).await;
    assert!(
        whole.cache_status().contains("hit"),
        "{}",
        whole.cache_status()
    );
    assert!(whole.body == *large);
    assert_eq!(origin.hits_for("/video.mp4"), 1);
    let seen = origin.seen();
    assert!(
        seen.iter().all(|s| !s.headers.contains_key("range")),
        "the origin is asked for the whole object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_breaks_off_is_never_stored_or_served_whole() {
    let origin = Origin::start().await;
    let large = body(5, 50 * MIB);
    origin.route(
        "/cut",
        Behavior::Stream(
            Stream::new("max-age=600", Arc::clone(&large))
                .rate(40 * MIB as u64)
                .cut_at(10 * MIB),
        ),
    );
    let edge = node(&origin, "64MiB").await;
    let first = tokio::spawn(fetch(edge.addr, "/cut", &[]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = tokio::spawn(fetch(edge.addr, "/cut", &[]));
    let (first, follower) = (first.await.unwrap(), follower.await.unwrap());
    for (who, r) in [("first", &first), ("follower", &follower)] {
        assert_eq!(r.status, 200, "{who}: {}", r.head);
        assert!(
            !r.complete,
            "{who}: the transfer breaks, never a short body called whole"
        );
        assert!(r.body.len() <= 10 * MIB, "{who}: {}", r.body.len());
        assert!(
            r.body[..] == large[..r.body.len()],
            "{who}: what came is right"
        );
    }
    let m = edge.metrics().await;
    assert!(metric(&m, "holdfast_cache_fills_broken_total") >= 1);
    assert_eq!(metric(&m, "holdfast_cache_fills"), 0);
    // Nothing of it was kept: the next request goes to the origin, and the tier holds
    // no object and no temporary file.
    origin.route(
        "/cut",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let again = fetch(edge.addr, "/cut", &[]).await;
    assert!(again.complete && again.body == *large);
    assert!(
        !again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert!(origin.hits_for("/cut") >= 2);
    wait_for_metric(&edge, "holdfast_disk_writes_total", 1).await;
    let root = edge.dir.path().join("cache");
    assert_eq!(files(&root, "objects").len(), 1, "only the whole one");
    assert!(files(&root, "tmp").is_empty(), "{:?}", files(&root, "tmp"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_block_is_never_sent_and_the_object_is_fetched_again() {
    let origin = Origin::start().await;
    let large = body(6, 5 * MIB);
    origin.route(
        "/blocks",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let mut edge = node(&origin, "64MiB").await;
    assert!(fetch(edge.addr, "/blocks", &[]).await.complete);
    wait_for_metric(&edge, "holdfast_disk_writes_total", 1).await;
    assert!(edge
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());
    // One bit flipped in the fourth block of the body.
    let root = edge.dir.path().join("cache");
    let objects = files(&root, "objects");
    assert_eq!(objects.len(), 1);
    let mut bytes = std::fs::read(&objects[0]).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &large[3 * MIB + 5..3 * MIB + 69])
        .expect("the body in the file");
    bytes[at] ^= 0x01;
    std::fs::write(&objects[0], &bytes).unwrap();

    edge.restart().await;
    // A range in an intact block is served from the file.
    let part = fetch(edge.addr, "/blocks", &[("Range", "bytes=0-99")]).await;
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, large[..100]);
    assert_eq!(origin.hits_for("/blocks"), 1);
    // The whole object touches the corrupt block: it is dropped, and fetched again.
    let whole = fetch(edge.addr, "/blocks", &[]).await;
    assert!(whole.complete);
    assert!(whole.body == *large, "never the flipped byte");
    assert_eq!(origin.hits_for("/blocks"), 2);
    let m = edge.metrics().await;
    assert!(metric(&m, "holdfast_disk_checksum_failures_total") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ranges_on_a_cold_object_are_answered_per_rfc_from_one_fill() {
    let origin = Origin::start().await;
    let large = body(8, 4 * MIB);
    origin.route(
        "/r",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large)).rate(8 * MIB as u64)),
    );
    let edge = node(&origin, "64MiB").await;
    let many = format!(
        "bytes={}",
        (0..200)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 4))
            .collect::<Vec<_>>()
            .join(",")
    );
    let overlapping = format!(
        "bytes={}",
        (0..50).map(|_| "0-").collect::<Vec<_>>().join(",")
    );
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "bytes=abc".to_string()),
        ("another unit", "pages=1-2".to_string()),
        ("too many ranges", many),
        ("overlapping", overlapping),
        ("past the end", format!("bytes={}-", 5 * MIB)),
    ];
    let mut answers = Vec::new();
    for (what, range) in cases {
        let addr = edge.addr;
        answers.push((
            what,
            tokio::spawn(async move { fetch(addr, "/r", &[("Range", range.as_str())]).await }),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (what, answer) in answers {
        let r = answer.await.unwrap();
        match what {
            "past the end" => {
                assert_eq!(r.status, 416, "{what}: {}", r.head);
                assert_eq!(
                    r.header("content-range"),
                    Some(format!("bytes */{}", large.len()).as_str()),
                    "{what}"
                );
            }
            _ => {
                // Ignored (RFC 9110 14.2: a server may ignore a Range it does not
                // take): the whole object.
                assert_eq!(r.status, 200, "{what}: {}", r.head);
                assert!(r.body == *large, "{what}: the whole body");
            }
        }
    }
    assert_eq!(origin.hits_for("/r"), 1, "one fill answered them all");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_cut_by_a_kill_leaves_no_object_and_its_file_goes_at_start() {
    let origin = Origin::start().await;
    let large = body(9, 16 * MIB);
    origin.route(
        "/slow",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large)).rate(4 * MIB as u64)),
    );
    let mut edge = node(&origin, "64MiB").await;
    let client = tokio::spawn(fetch(edge.addr, "/slow", &[]));
    wait_for_metric(&edge, "holdfast_disk_streamed_bytes_total", 2 * MIB as u64).await;
    let root = edge.dir.path().join("cache");
    assert_eq!(
        files(&root, "tmp").len(),
        1,
        "the fill's file, being written"
    );
    edge.kill();
    let cut = client.await.unwrap();
    assert!(!cut.complete, "the client's transfer broke with the node");
    assert_eq!(
        files(&root, "tmp").len(),
        1,
        "a crash leaves the partial file"
    );

    edge.restart().await;
    assert!(files(&root, "tmp").is_empty(), "removed at start");
    assert!(files(&root, "objects").is_empty());
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "holdfast_disk_objects"),
        0,
        "never counted as an object"
    );
    origin.route(
        "/slow",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let again = fetch(edge.addr, "/slow", &[]).await;
    assert!(again.body == *large);
    assert!(
        !again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_hit_of_a_large_object_is_sent_whole_in_pieces() {
    let origin = Origin::start().await;
    let large = body(10, 24 * MIB);
    origin.route(
        "/h2.bin",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let edge = Holdfast::start_h2c(&format!(
        "cache: {{ memory: 64MiB, max_object: 1MiB, disk: {{ path: cache, size: 1GiB }} }}\n\
         customers:\n{}",
        customer("files", HOST, origin.addr, "", "")
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = edge.addr;
    let get = |name: &'static str| {
        let out = dir.path().join(name);
        tokio::task::spawn_blocking(move || {
            let o = std::process::Command::new("curl")
                .args(["-s", "--http2-prior-knowledge", "-D", "-", "-o"])
                .arg(&out)
                .args(["-H", &format!("Host: {HOST}")])
                .arg(format!("http://{addr}/h2.bin"))
                .output()
                .expect("curl runs (scripts/setup installs it)");
            (
                String::from_utf8_lossy(&o.stdout).to_string(),
                std::fs::read(&out).unwrap_or_default(),
            )
        })
    };
    let (miss_head, miss) = get("miss").await.unwrap();
    assert!(miss_head.starts_with("HTTP/2 200"), "{miss_head}");
    assert!(miss == *large, "the miss: {} bytes", miss.len());
    let (hit_head, hit) = get("hit").await.unwrap();
    assert!(hit_head.contains("hit"), "{hit_head}");
    assert!(
        hit == *large,
        "the hit, read from its file a MiB at a time: {} bytes",
        hit.len()
    );
    assert_eq!(origin.hits_for("/h2.bin"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_reading_an_object_the_disk_evicts_gets_it_whole() {
    let origin = Origin::start().await;
    let a = body(11, 40 * MIB);
    let b = body(12, 40 * MIB);
    origin.route(
        "/a",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&a))),
    );
    origin.route(
        "/b",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&b))),
    );
    // Room on disk for one of them only.
    let edge = Holdfast::start(&format!(
        "cache: {{ memory: 64MiB, max_object: 1MiB, disk: {{ path: cache, size: 64MiB, max_object: 48MiB }} }}\n\
         customers:\n{}",
        customer("files", HOST, origin.addr, "", "")
    ))
    .await;
    assert!(fetch(edge.addr, "/a", &[]).await.complete);
    // A slow client of /a's hit: it reads a little, then waits while /b is stored.
    let mut conn = TcpStream::connect(edge.addr).await.unwrap();
    conn.write_all(
        format!("GET /a HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = conn.read(&mut got).await.unwrap();
    got.truncate(n);
    assert!(fetch(edge.addr, "/b", &[]).await.complete);
    wait_for_metric(&edge, "holdfast_disk_evictions_total", 1).await;
    assert_eq!(metric(&edge.metrics().await, "holdfast_disk_objects"), 1);
    let kept = files(&edge.dir.path().join("cache"), "objects");
    let kept = std::fs::read(&kept[0]).unwrap();
    assert!(
        kept.windows(64).any(|w| w == &b[..64]),
        "the disk holds /b: /a's file was evicted (unlinked) while its client read it"
    );
    conn.read_to_end(&mut got).await.unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        got[head_end..] == a[..],
        "{} of {} bytes",
        got.len() - head_end,
        a.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revalidated_large_object_is_rewritten_on_disk_file_to_file() {
    let origin = Origin::start().await;
    let large = body(13, 100 * MIB);
    origin.route(
        "/reval",
        Behavior::Stream(Stream::new("max-age=1", Arc::clone(&large))),
    );
    let mut edge = node(&origin, "64MiB").await;
    assert!(fetch(edge.addr, "/reval", &[]).await.complete);
    wait_for_metric(&edge, "holdfast_disk_writes_total", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = rss(edge.pid());
    let again = fetch(edge.addr, "/reval", &[]).await;
    assert!(again.body == *large);
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v1\""),
        "revalidated, not fetched again"
    );
    // The new meta goes to disk with the body copied in the kernel: written, not
    // skipped for its size, and the node's memory does not take the body.
    wait_for_metric(&edge, "holdfast_disk_writes_total", 2).await;
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_disk_writes_total"), 2);
    assert_eq!(metric(&m, "holdfast_disk_writes_skipped_total"), 0);
    let grown = rss(edge.pid()).saturating_sub(before);
    assert!(grown < 32 * MIB as u64, "grew {} MiB", grown >> 20);
    // Restarted with the origin down, the rewritten file serves the object whole.
    edge.kill();
    origin.stop();
    edge.restart().await;
    let after = fetch(edge.addr, "/reval", &[]).await;
    assert_eq!(after.status, 200, "{}", after.head);
    assert!(after.body == *large);
}

/// A node whose customer fetches objects in slices of 1 MiB.
async fn sliced_node(origin: &Origin) -> Holdfast {
    Holdfast::start(&format!(
        "cache: {{ memory: 64MiB, max_object: 1MiB, disk: {{ path: cache, size: 1GiB }} }}\n\
         customers:\n{}",
        customer("files", HOST, origin.addr, "      slice: 1MiB\n", "")
    ))
    .await
}

/// The `Range` fields the origin was asked with, in order.
fn ranges_asked(origin: &Origin, path: &str) -> Vec<String> {
    origin
        .seen()
        .iter()
        .filter(|s| s.path == path)
        .map(|s| s.headers.get("range").cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn slices_fetch_only_what_a_range_covers_and_assemble_the_whole() {
    let origin = Origin::start().await;
    let large = body(14, 20 * MIB);
    origin.route(
        "/movie",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let edge = sliced_node(&origin).await;
    let at = 15_000_000;
    let range = format!("bytes={at}-{}", at + 99);
    let part = fetch(edge.addr, "/movie", &[("Range", &range)]).await;
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, large[at..at + 100]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {at}-{}/{}", at + 99, large.len()).as_str())
    );
    // Only the slice that holds it: the 15th MiB.
    assert_eq!(
        ranges_asked(&origin, "/movie"),
        [format!("bytes={}-{}", 14 * MIB, 15 * MIB - 1)]
    );

    let whole = fetch(edge.addr, "/movie", &[]).await;
    assert_eq!(whole.status, 200, "{}", whole.head);
    assert_eq!(whole.header("content-length"), Some("20971520"));
    assert!(
        whole.complete && whole.body == *large,
        "assembled from the slices"
    );
    assert_eq!(
        origin.hits_for("/movie"),
        20,
        "every slice once; the 15th was stored already"
    );
    let again = fetch(edge.addr, "/movie", &[]).await;
    assert!(again.body == *large);
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.hits_for("/movie"), 20, "all from the stored slices");
    // A range across a slice boundary, and a suffix.
    let across = fetch(edge.addr, "/movie", &[("Range", "bytes=1048000-1049000")]).await;
    assert_eq!(across.status, 206);
    assert_eq!(across.body, large[1_048_000..1_049_001]);
    let tail = fetch(edge.addr, "/movie", &[("Range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, large[large.len() - 10..]);
    assert_eq!(origin.hits_for("/movie"), 20);
    // Past the end: its slice is asked for once (the origin cannot give it), then 416.
    let past = fetch(edge.addr, "/movie", &[("Range", "bytes=30000000-")]).await;
    assert_eq!(past.status, 416, "{}", past.head);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", large.len()).as_str())
    );
    assert_eq!(origin.hits_for("/movie"), 21);
    // Conditions are the client's, answered against the object's ETag ("v1").
    let same = fetch(edge.addr, "/movie", &[("If-None-Match", "\"v1\"")]).await;
    assert_eq!(same.status, 304, "{}", same.head);
    let stale_range = fetch(
        edge.addr,
        "/movie",
        &[("Range", "bytes=0-9"), ("If-Range", "\"v0\"")],
    )
    .await;
    assert_eq!(
        stale_range.status, 200,
        "If-Range of another version: the whole object"
    );
    assert!(stale_range.body == *large);
    let head = common::request(edge.addr, "HEAD", HOST, "/movie", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("20971520"));
    assert!(head.body.is_empty());
    let log = edge.log();
    let slice_lines = log
        .lines()
        .filter(|l| l.contains("holdfast::access") && l.contains(" slice=14"))
        .count();
    assert!(slice_lines >= 1, "a slice's log line says which it is");
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "holdfast_requests_total"),
        9,
        "client requests only, not their slices"
    );
    // 21 slices asked of the origin (20, and the probe past the end, whose subrequest
    // runs to its end in the background); the rest hits.
    wait_for_metric(&edge, "holdfast_slice_fetches_total", 21).await;
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_slice_fetches_total"), 21);
    assert!(metric(&m, "holdfast_slice_hits_total") >= 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_ignores_ranges_is_stored_whole_for_a_sliced_customer() {
    let origin = Origin::start().await;
    let whole: Vec<u8> = (*body(15, 3 * MIB)).clone();
    origin.route(
        "/plain",
        Behavior::Respond {
            status: 200,
            headers: vec![("Cache-Control".into(), "max-age=600".into())],
            body: whole.clone(),
        },
    );
    let edge = sliced_node(&origin).await;
    let r = fetch(edge.addr, "/plain", &[]).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.complete && r.body == whole);
    let part = fetch(edge.addr, "/plain", &[("Range", "bytes=100-199")]).await;
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, whole[100..200]);
    assert_eq!(
        origin.hits_for("/plain"),
        1,
        "stored whole, then served from it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slices_of_an_object_that_changed_are_never_mixed() {
    let origin = Origin::start().await;
    let old = body(16, 3 * MIB);
    let new = body(17, 3 * MIB);
    origin.route(
        "/changing",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&old)).etag("old")),
    );
    let edge = sliced_node(&origin).await;
    // The first slice is stored from the old object.
    let first = fetch(edge.addr, "/changing", &[("Range", "bytes=0-99")]).await;
    assert_eq!(first.body, old[..100]);
    origin.route(
        "/changing",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&new)).etag("new")),
    );
    // The second slice comes from the new one: the transfer breaks rather than mix them.
    let mixed = fetch(edge.addr, "/changing", &[]).await;
    assert!(
        !mixed.complete,
        "{} bytes of {}",
        mixed.body.len(),
        new.len()
    );
    assert!(mixed.body[..] == old[..mixed.body.len()]);
    // The stale slices were dropped: the next answer is the new object, whole.
    let after = fetch(edge.addr, "/changing", &[]).await;
    assert!(after.complete && after.body == *new, "{}", after.head);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_of_a_sliced_url_reaches_every_slice() {
    let origin = Origin::start().await;
    let large = body(18, 3 * MIB);
    origin.route(
        "/p",
        Behavior::Stream(Stream::new("max-age=600", Arc::clone(&large))),
    );
    let edge = sliced_node(&origin).await;
    assert!(fetch(edge.addr, "/p", &[]).await.complete);
    assert_eq!(origin.hits_for("/p"), 3);
    let purged = common::request(
        edge.admin,
        "POST",
        &edge.admin.to_string(),
        "/purge",
        &[("Content-Type", "application/json")],
        format!(r#"{{"customer": "files", "urls": ["http://{HOST}/p"]}}"#).as_bytes(),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let after = fetch(edge.addr, "/p", &[]).await;
    assert!(after.complete && after.body == *large);
    assert_eq!(origin.hits_for("/p"), 6, "every slice fetched again");
}
