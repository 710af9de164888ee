//! The persistent tier, end to end: the real binary with `cache.disk`, stopped (SIGTERM,
//! SIGKILL) and started again on the same directory with its origin gone; files under
//! the directory corrupted by hand; a tier smaller than what streams through it; a path
//! that cannot be a directory.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{body, customer, metric, request, Behavior, Holdfast, Origin};

const HOST: &str = "shop.test";

fn ok(cache_control: &str, body: Vec<u8>) -> Behavior {
    Behavior::Respond {
        status: 200,
        headers: vec![
            ("Cache-Control".into(), cache_control.into()),
            ("X-Origin".into(), "v1".into()),
        ],
        body,
    }
}

/// A node with the disk tier at `cache` beside its node file.
async fn node(origin: &Origin, cache: &str) -> Holdfast {
    Holdfast::start(&format!(
        "{cache}\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "      stale_if_error: 1d\n", "")
    ))
    .await
}

const DISK: &str = "cache: { memory: 32MiB, max_object: 4MiB, disk: { path: cache, size: 64MiB } }";

/// Wait until the disk tier has written `n` objects in all (or give up after 10 s: the
/// assertions that follow then say what is missing).
async fn wait_for_writes(edge: &Holdfast, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&edge.metrics().await, "holdfast_disk_writes_total") < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every object file under the tier's directory.
fn object_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(root.join("objects")).expect("objects dir") {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files.sort();
    files
}

async fn restart_serves_everything_with_the_origin_down(signal: &str) {
    let origin = Origin::start().await;
    let small: Vec<Vec<u8>> = (0..20).map(|i| body(i, 1024 + i as usize)).collect();
    for (i, b) in small.iter().enumerate() {
        origin.route(&format!("/s{i}"), ok("max-age=600", b.clone()));
    }
    let big = body(99, 1536 * 1024 + 7);
    origin.route("/big", ok("max-age=600", big.clone()));
    let stale = body(7, 3000);
    origin.route("/stale", ok("max-age=1", stale.clone()));
    let mut edge = node(&origin, DISK).await;

    for i in 0..small.len() {
        let r = edge.get(HOST, &format!("/s{i}")).await;
        assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    }
    assert!(edge
        .get(HOST, "/big")
        .await
        .cache_status()
        .contains("stored"));
    assert!(edge
        .get(HOST, "/stale")
        .await
        .cache_status()
        .contains("stored"));
    wait_for_writes(&edge, 22).await;
    // Stored more than a second before the stop, and old enough to show an Age.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    assert!(
        edge.signal_and_wait(signal, Duration::from_secs(10))
            .is_some(),
        "holdfast did not exit on SIG{signal}"
    );
    origin.stop();
    edge.restart().await;

    // A range of the large object first: answered from the disk copy as a 206.
    let r = request(
        edge.addr,
        "GET",
        HOST,
        "/big",
        &[("Range", "bytes=100-199")],
        b"",
    )
    .await;
    assert_eq!(r.status, 206, "{}", r.cache_status());
    assert_eq!(r.body, &big[100..200]);
    let r = edge.get(HOST, "/big").await;
    assert_eq!(r.status, 200);
    assert!(r.body == big, "the large body came back different");
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );
    for (i, b) in small.iter().enumerate() {
        let r = edge.get(HOST, &format!("/s{i}")).await;
        assert_eq!(r.status, 200, "/s{i}: {}", r.text());
        assert!(r.body == *b, "/s{i} came back different");
        assert!(
            r.cache_status().starts_with("holdfast; hit; ttl="),
            "{}",
            r.cache_status()
        );
        assert_eq!(
            r.header("x-origin"),
            Some("v1"),
            "stored header fields are kept"
        );
        let age: u64 = r.header("age").expect("Age").parse().unwrap();
        assert!(
            (1..600).contains(&age),
            "Age {age} counts from when it was stored"
        );
    }
    // Past its freshness, within stale-if-error: served stale, as it would have been
    // before the restart.
    let r = edge.get(HOST, "/stale").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == stale);
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );

    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_disk_recovered_objects"), 22);
    assert_eq!(metric(&m, "holdfast_disk_checksum_failures_total"), 0);
    assert!(metric(&m, "holdfast_disk_hits_total") >= 22);
    assert!(
        edge.log().contains("recovered 22 objects"),
        "{}",
        edge.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_and_restarted_with_its_origin_down_serves_what_it_had() {
    restart_serves_everything_with_the_origin_down("KILL").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_and_restarted_with_its_origin_down_serves_what_it_had() {
    restart_serves_everything_with_the_origin_down("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_files_are_never_served_and_do_not_stop_the_node() {
    let origin = Origin::start().await;
    let paths: Vec<String> = (0..12).map(|i| format!("/c{i}")).collect();
    for (i, p) in paths.iter().enumerate() {
        let len = if i == 0 { 300 * 1024 } else { 2000 };
        origin.route(p, ok("max-age=600", body(i as u32, len)));
    }
    let intact = body(500, 5000);
    origin.route("/intact", ok("max-age=600", intact.clone()));
    let mut edge = node(&origin, DISK).await;
    for p in paths.iter().chain([&"/intact".to_string()]) {
        assert_eq!(edge.get(HOST, p).await.status, 200);
    }
    wait_for_writes(&edge, 13).await;
    assert!(edge
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());
    origin.stop();

    // Every file but /intact's (the one holding its bytes) gets one bit flipped, each
    // somewhere else: in the magic, the lengths, the head, the body.
    let root = edge.dir.path().join("cache");
    let files = object_files(&root);
    assert_eq!(files.len(), 13, "{files:?}");
    let mut corrupted = Vec::new();
    for f in &files {
        let mut bytes = std::fs::read(f).unwrap();
        if bytes.windows(intact.len()).any(|w| w == intact) {
            continue;
        }
        let at = [3, 20, 60, bytes.len() - 10][corrupted.len() % 4];
        bytes[at] ^= 0x10;
        std::fs::write(f, &bytes).unwrap();
        corrupted.push(f.clone());
    }
    assert_eq!(corrupted.len(), 12);
    // A torn write and files that are no object at all.
    let torn = &corrupted[1];
    let len = std::fs::metadata(torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(torn)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::write(
        root.join("objects/ab/abababababababababababababababab"),
        b"junk",
    )
    .unwrap();
    std::fs::write(root.join("tmp/half-written"), b"HFOBJ").unwrap();

    edge.restart().await;
    for p in &paths {
        let r = edge.get(HOST, p).await;
        // Nothing usable is cached and the origin is down: an error, never wrong bytes.
        assert_eq!(r.status, 502, "{p}: {} {}", r.cache_status(), r.text());
    }
    let r = edge.get(HOST, "/intact").await;
    assert_eq!(
        r.status,
        200,
        "the intact file is still served: {}",
        r.text()
    );
    assert!(r.body == intact);
    let m = edge.metrics().await;
    let dropped = metric(&m, "holdfast_disk_dropped_at_start");
    let failed = metric(&m, "holdfast_disk_checksum_failures_total");
    // Twelve flipped files (one of them also torn) and a junk file.
    assert_eq!(
        dropped + failed,
        13,
        "dropped at start {dropped}, failed when read {failed}"
    );
    assert!(failed >= 1, "some flips are only found by the checksum");
    assert!(!root.join("tmp/half-written").exists());
    assert_eq!(object_files(&root).len(), 1, "bad files are removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_tier_stays_within_its_size() {
    let origin = Origin::start().await;
    origin.fallback(ok("max-age=600", body(1, 100 * 1024)));
    let edge = node(
        &origin,
        "cache: { memory: 1MiB, max_object: 256KiB, disk: { path: cache, size: 2MiB } }",
    )
    .await;
    // 10 MiB through a 2 MiB tier.
    for i in 0..100 {
        assert_eq!(edge.get(HOST, &format!("/o{i}")).await.status, 200);
    }
    wait_for_writes(&edge, 100).await;
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_disk_writes_total"), 100);
    let capacity = metric(&m, "holdfast_disk_capacity_bytes");
    assert!(capacity <= 2 << 20);
    assert!(metric(&m, "holdfast_disk_bytes") <= capacity);
    assert!(metric(&m, "holdfast_disk_evictions_total") >= 75, "{m}");
    let on_disk: u64 = object_files(&edge.dir.path().join("cache"))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(on_disk <= 2 << 20, "{on_disk} bytes on disk");
    assert!(on_disk >= 1 << 20, "the tier is used: {on_disk} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_path_that_cannot_be_a_directory_leaves_the_node_serving_from_memory() {
    let origin = Origin::start().await;
    origin.route("/a", ok("max-age=600", b"body-a".to_vec()));
    // The node file itself stands where a directory would have to be.
    let edge = node(
        &origin,
        "cache: { memory: 8MiB, max_object: 1MiB, disk: { path: holdfast.yaml/cache, size: 8MiB } }",
    )
    .await;
    let first = edge.get(HOST, "/a").await;
    assert_eq!((first.status, first.text().as_str()), (200, "body-a"));
    let second = edge.get(HOST, "/a").await;
    assert!(
        second.cache_status().starts_with("holdfast; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.hits_for("/a"), 1);
    let m = edge.metrics().await;
    assert_eq!(metric(&m, "holdfast_disk_enabled"), 0);
    assert!(
        edge.log().contains("the disk tier is off"),
        "{}",
        edge.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalidated_object_does_not_come_back_after_a_restart() {
    let origin = Origin::start().await;
    origin.route("/gone", ok("max-age=600", b"old".to_vec()));
    origin.route("/kept", ok("max-age=600", b"kept".to_vec()));
    let mut edge = node(&origin, DISK).await;
    assert_eq!(edge.get(HOST, "/gone").await.text(), "old");
    assert_eq!(edge.get(HOST, "/kept").await.text(), "kept");
    wait_for_writes(&edge, 2).await;
    // A successful POST invalidates the stored GET (RFC 9111 §4.4), on disk too.
    let post = request(edge.addr, "POST", HOST, "/gone", &[], b"x=1").await;
    assert_eq!(post.status, 200);
    assert!(edge
        .signal_and_wait("KILL", Duration::from_secs(10))
        .is_some());
    origin.stop();
    edge.restart().await;

    let gone = edge.get(HOST, "/gone").await;
    assert_eq!(gone.status, 502, "{}: {}", gone.cache_status(), gone.text());
    let kept = edge.get(HOST, "/kept").await;
    assert_eq!((kept.status, kept.text().as_str()), (200, "kept"));
}
