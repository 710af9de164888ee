//! One hit path: the same requests sent to a node answering fresh hits from its fast
//! path and to one sending every hit through pingora-cache's phases (`cache.fast_path:
//! false`) get the same status, header fields and body bytes. `Date` is the moment of
//! sending and is left out; `Age` may differ by the second the two fills straddle.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{customer, Behavior, Holdfast, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "shop.test";

/// A request: method, path, extra header fields.
type Request<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// What came back: status line, sorted fields, body.
type Answer = (String, Vec<(String, String)>, Vec<u8>);

/// Status line, header fields (name as sent, value) sorted, and body of one request
/// on a fresh connection.
async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut bytes))
        .await
        .expect("answer in time")
        .unwrap();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let mut fields: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
        .collect();
    fields.sort();
    (status, fields, bytes[end + 4..].to_vec())
}

fn age(fields: &[(String, String)]) -> Option<i64> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("age"))
        .map(|(_, v)| v.parse().unwrap())
}

/// The fields but `Age`, and `ttl=` in `Cache-Status` (which moves with `Age`).
fn without_age(fields: &[(String, String)]) -> Vec<(String, String)> {
    fields
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("age"))
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("cache-status") {
                v.split("; ")
                    .filter(|p| !p.starts_with("ttl="))
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_and_full_paths_answer_alike() {
    let origin = Origin::start().await;
    let body = "0123456789abcdefghijklmnopqrstuvwxyz";
    origin.route(
        "/plain",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=300"),
                ("ETag", "\"v1\""),
                ("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
                ("Content-Type", "text/plain"),
                ("X-Custom-Case", "Kept"),
                ("Surrogate-Key", "tag-a tag-b"),
            ],
            body,
        ),
    );
    origin.route(
        "/vary",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=300"),
                ("Vary", "Accept-Encoding"),
            ],
            "varied",
        ),
    );
    origin.route(
        "/stale",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=1, stale-if-error=600")],
            "old",
        ),
    );
    let node = |extra: &'static str| {
        let c = customer("shop", HOST, origin.addr, "", "");
        async move { Holdfast::start(&format!("{extra}customers:\n{c}")).await }
    };
    let fast = node("").await;
    let full = node("cache: { fast_path: false }\n").await;

    let requests: Vec<Request> = vec![
        ("GET", "/plain", vec![]),
        ("HEAD", "/plain", vec![]),
        ("GET", "/plain", vec![("Range", "bytes=2-5")]),
        ("GET", "/plain", vec![("Range", "bytes=-4")]),
        ("GET", "/plain", vec![("If-None-Match", "\"v1\"")]),
        (
            "GET",
            "/plain",
            vec![("If-Modified-Since", "Tue, 01 Dec 2026 00:00:00 GMT")],
        ),
        ("GET", "/vary", vec![("Accept-Encoding", "gzip")]),
        ("GET", "/vary", vec![("Accept-Encoding", "br")]),
    ];
    // Fill both stores.
    for edge in [&fast, &full] {
        for path in ["/plain", "/vary", "/stale"] {
            raw(edge.addr, "GET", path, &[]).await;
        }
        raw(edge.addr, "GET", "/vary", &[("Accept-Encoding", "gzip")]).await;
        raw(edge.addr, "GET", "/vary", &[("Accept-Encoding", "br")]).await;
    }
    let mut compared = 0;
    let check = |a: &Answer, b: &Answer, what: &str| {
        assert_eq!(a.0, b.0, "{what}: status");
        assert_eq!(without_age(&a.1), without_age(&b.1), "{what}: fields");
        let (x, y) = (age(&a.1), age(&b.1));
        assert_eq!(x.is_some(), y.is_some(), "{what}: Age on one only");
        assert!(
            (x.unwrap_or(0) - y.unwrap_or(0)).abs() <= 1,
            "{what}: Age {x:?} vs {y:?}"
        );
        assert_eq!(a.2, b.2, "{what}: body");
    };
    for (method, path, headers) in &requests {
        let a = raw(fast.addr, method, path, headers).await;
        let b = raw(full.addr, method, path, headers).await;
        let what = format!("{method} {path} {headers:?}");
        assert!(
            a.1.iter()
                .any(|(k, v)| k == "Cache-Status" && v.starts_with("holdfast; hit")),
            "{what}: not a hit: {:?}",
            a.1
        );
        check(&a, &b, &what);
        compared += 1;
    }
    // Stale while the origin fails: the first failure is seen on both paths alike, and
    // the next answer comes straight from the store.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route("/stale", Behavior::status(503, &[], "down"));
    let a = raw(fast.addr, "GET", "/stale", &[]).await;
    let b = raw(full.addr, "GET", "/stale", &[]).await;
    check(&a, &b, "stale, origin failing");
    let a = raw(fast.addr, "GET", "/stale", &[]).await;
    let b = raw(full.addr, "GET", "/stale", &[]).await;
    assert_eq!(a.2, b"old");
    check(&a, &b, "stale, origin known to fail");
    assert_eq!(compared, requests.len());
    // The two nodes did take the two paths.
    let fast_hits = common::metric(&fast.metrics().await, "holdfast_fast_path_hits_total");
    let full_hits = common::metric(&full.metrics().await, "holdfast_fast_path_hits_total");
    assert!(
        fast_hits > requests.len() as u64,
        "fast path hits: {fast_hits}"
    );
    assert_eq!(full_hits, 0);
}
