//! End-to-end tests of the edge: the real `holdfast` binary in front of a real origin
//! on loopback ports. Each test asserts what a client and the origin observe.

mod common;

use std::time::{Duration, Instant};

use common::{customer, metric, request, Behavior, Conn, Holdfast, Origin};

const HOST: &str = "shop.test";

/// One customer `shop` on `shop.test` with extra `cache:` lines and rules.
async fn shop(origin: &Origin, cache: &str, rules: &str) -> Holdfast {
    let body = format!(
        "customers:\n{}",
        customer("shop", HOST, origin.addr, cache, rules)
    );
    Holdfast::start(&body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_reaches_origin_once() {
    let origin = Origin::start().await;
    origin.route("/a.css", Behavior::ok("max-age=60", "body-a"));
    let edge = shop(&origin, "", "").await;

    let first = edge.get(HOST, "/a.css").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "body-a");
    assert!(
        first.cache_status().starts_with("holdfast; fwd=miss; ttl=")
            && first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let second = edge.get(HOST, "/a.css").await;
    assert_eq!(second.text(), "body-a");
    assert!(
        second.cache_status().starts_with("holdfast; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert!(second.header("via").unwrap_or("").contains("holdfast"));
    assert_eq!(origin.hits_for("/a.css"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_refetches() {
    let origin = Origin::start().await;
    origin.route("/t", Behavior::ok("max-age=1", "v1"));
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/t").await.text(), "v1");
    assert_eq!(edge.get(HOST, "/t").await.text(), "v1");
    assert_eq!(origin.hits_for("/t"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.route("/t", Behavior::ok("max-age=60", "v2"));
    let after = edge.get(HOST, "/t").await;
    assert_eq!(after.text(), "v2");
    assert!(
        after.cache_status().contains("fwd=stale"),
        "{}",
        after.cache_status()
    );
    assert_eq!(origin.hits_for("/t"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_customer_ttls_differ_and_keys_are_isolated() {
    let a = Origin::start().await;
    let b = Origin::start().await;
    // No origin freshness: each customer's default_ttl decides.
    a.route("/same", Behavior::status(200, &[], "from-a"));
    b.route("/same", Behavior::status(200, &[], "from-b"));
    let body = format!(
        "customers:\n{}{}",
        customer("alpha", "a.test", a.addr, "      default_ttl: 1s\n", ""),
        customer("beta", "b.test", b.addr, "      default_ttl: 1h\n", "")
    );
    let edge = Holdfast::start(&body).await;

    assert_eq!(edge.get("a.test", "/same").await.text(), "from-a");
    assert_eq!(edge.get("b.test", "/same").await.text(), "from-b");
    // Same path, other customer: never the other's entry.
    assert_eq!(edge.get("a.test", "/same").await.text(), "from-a");
    assert_eq!(edge.get("b.test", "/same").await.text(), "from-b");
    assert_eq!((a.hits(), b.hits()), (1, 1));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    edge.get("a.test", "/same").await;
    edge.get("b.test", "/same").await;
    assert_eq!(a.hits(), 2, "alpha's 1s TTL expired");
    assert_eq!(b.hits(), 1, "beta's 1h TTL still fresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_never_reaches_an_origin() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "secret"));
    let edge = shop(&origin, "", "").await;
    let r = edge.get("evil.test", "/").await;
    assert_eq!(r.status, 421);
    assert!(r.text().contains("evil.test"), "{}", r.text());
    assert!(r.cache_status().contains("detail=unknown-host"));
    // An absolute-form target naming the origin does not turn the edge into a proxy.
    let r = request(
        edge.addr,
        "GET",
        "evil.test",
        &format!("http://{}/", origin.addr),
        &[],
        b"",
    )
    .await;
    assert_ne!(r.status, 200);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_on_503_refused_and_timeout() {
    let origin = Origin::start().await;
    origin.route("/s", Behavior::ok("max-age=1", "good"));
    origin.route("/t", Behavior::ok("max-age=1", "good-t"));
    let edge = shop(&origin, "      stale_if_error: 1h\n", "").await;
    assert_eq!(edge.get(HOST, "/s").await.text(), "good");
    assert_eq!(edge.get(HOST, "/t").await.text(), "good-t");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // 503 from the origin: the stale copy is served.
    origin.route("/s", Behavior::status(503, &[], "down"));
    let r = edge.get(HOST, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status()
            .contains("fwd=stale; fwd-status=503; ttl=-")
            && r.cache_status().contains("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );

    // Origin times out (read_timeout 2s): stale, with 504 as the forward status. (Wait
    // out the edge's memory of the 503, so the request is forwarded.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route("/t", Behavior::Stall);
    let r = edge.get(HOST, "/t").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good-t"));
    assert!(
        r.cache_status().contains("fwd-status=504"),
        "{}",
        r.cache_status()
    );

    // Origin gone entirely: connections refused.
    origin.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = edge.get(HOST, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=502")
            && r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
    // Right after that failure the edge does not ask the origin again: the stale copy
    // is answered from the store (a hit, not forwarded).
    let r = edge.get(HOST, "/t").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good-t"));
    assert!(
        r.cache_status().starts_with("holdfast; hit; ttl=-")
            && r.cache_status().ends_with("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );
}

/// One request on a kept-alive connection; then the connection must keep the promise its
/// answer made: `Connection: close` and closed, or a next request answered on it.
/// Returns the answer and the connection to go on with (a new one after a close).
async fn on_kept_connection(edge: &Holdfast, mut conn: Conn, path: &str) -> (common::Resp, Conn) {
    let r = conn
        .get(HOST, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .unwrap_or_else(|| panic!("GET {path}: the edge closed the connection unanswered"));
    if r.header("connection") == Some("close") {
        assert!(
            conn.closed_by_server().await,
            "GET {path}: said close, stayed open"
        );
        return (r, Conn::open(edge.addr).await);
    }
    let next = conn.get(HOST, "/alive").await;
    match next {
        Ok(Some(next)) => assert_eq!(next.status, 200, "GET /alive after GET {path}"),
        other => panic!(
            "GET {path} answered {} with Connection: {:?} ({}), then the connection \
             failed: {other:?}\n{}",
            r.status,
            r.header("connection"),
            r.cache_status(),
            edge.log()
        ),
    }
    (r, conn)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_origin_failure_keep_alive_is_kept_or_refused_never_broken() {
    let origin = Origin::start().await;
    origin.route("/s", Behavior::ok("max-age=1", "good"));
    origin.route("/alive", Behavior::ok("max-age=3600", "alive"));
    let edge = shop(&origin, "      stale_if_error: 1h\n", "").await;
    let conn = Conn::open(edge.addr).await;
    let (r, conn) = on_kept_connection(&edge, conn, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The origin answers 503: stale-if-error.
    origin.route("/s", Behavior::status(503, &[], "down"));
    let (r, conn) = on_kept_connection(&edge, conn, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status().contains("fwd-status=503"),
        "{}",
        r.cache_status()
    );

    // The origin resets the connection: stale-if-error.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route("/s", Behavior::Reset);
    let (r, conn) = on_kept_connection(&edge, conn, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );

    // The origin refuses connections: stale-if-error, then the edge's own 502 for a URL
    // it has no copy of.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.stop();
    let (r, conn) = on_kept_connection(&edge, conn, "/s").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status().contains("fwd-status=502"),
        "{}",
        r.cache_status()
    );
    let (r, _conn) = on_kept_connection(&edge, conn, "/never-cached").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("did not answer"), "{}", r.text());
}

/// Hits larger than one write buffer (the fast path writes header and body corked) arrive
/// whole, byte for byte, one after another on a kept-alive connection, with their
/// headers; small hits between them too.
#[tokio::test(flavor = "multi_thread")]
async fn large_hits_arrive_whole_on_a_kept_alive_connection() {
    let origin = Origin::start().await;
    // Not one repeated byte: a misplaced or lost segment would show.
    let big: String = (0..300 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mid: String = big[..1500].to_string();
    origin.route("/big", Behavior::ok("max-age=60", &big));
    origin.route("/mid", Behavior::ok("max-age=60", &mid));
    origin.route("/small", Behavior::ok("max-age=60", "s"));
    let edge = shop(&origin, "", "").await;
    let mut conn = Conn::open(edge.addr).await;
    for round in 0..3 {
        for (path, body) in [("/big", &big), ("/small", &"s".to_string()), ("/mid", &mid)] {
            let r = conn
                .get(HOST, path)
                .await
                .unwrap_or_else(|e| panic!("round {round} {path}: {e}"))
                .unwrap_or_else(|| panic!("round {round} {path}: connection closed"));
            assert_eq!(r.status, 200, "round {round} {path}");
            assert_eq!(r.body.len(), body.len(), "round {round} {path}");
            assert!(
                r.body == body.as_bytes(),
                "round {round} {path}: body differs"
            );
            if round > 0 {
                assert!(
                    r.cache_status().starts_with("holdfast; hit"),
                    "round {round} {path}: {}",
                    r.cache_status()
                );
                assert_eq!(r.header("via"), Some("1.1 holdfast"));
                assert!(r.header("age").is_some(), "round {round} {path}: no Age");
            }
        }
    }
    // A large body (kept in a memory file) answers HEAD and Range from the cache too.
    let head = request(edge.addr, "HEAD", HOST, "/big", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("307200"));
    assert!(head.body.is_empty());
    for (range, first, last) in [
        ("bytes=200000-200009", 200_000, 200_009),
        ("bytes=0-0", 0, 0),
        ("bytes=-10", 307_190, 307_199),
        ("bytes=307000-", 307_000, 307_199),
        ("bytes=307100-999999", 307_100, 307_199),
    ] {
        let r = request(edge.addr, "GET", HOST, "/big", &[("Range", range)], b"").await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), big[first..=last], "{range}");
        let content_range = format!("bytes {first}-{last}/307200");
        assert_eq!(
            r.header("content-range"),
            Some(&content_range[..]),
            "{range}"
        );
        assert!(r.cache_status().starts_with("holdfast; hit"), "{range}");
    }
    assert_eq!(origin.hits(), 3);
}

/// Range requests get what Pingora's range filter decides, on the fast path (one range)
/// and on the full path (several, or none satisfiable) alike.
#[tokio::test(flavor = "multi_thread")]
async fn range_requests_are_answered_from_the_cache_as_the_rfc_says() {
    let origin = Origin::start().await;
    let big: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    origin.route(
        "/big",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("ETag", "\"v1\""),
                ("Accept-Ranges", "bytes"),
            ],
            &big,
        ),
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/big").await.body.len(), big.len());
    let whole = edge.get(HOST, "/big").await;
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let addr = edge.addr;
        async move { request(addr, "GET", HOST, "/big", headers, b"").await }
    };

    // One range: a 206 of it, as Pingora's range filter makes it.
    let r = get(&[("Range", "bytes=100-199")]).await;
    assert_eq!((r.status, r.text()), (206, big[100..200].to_string()));
    assert_eq!(r.header("content-range"), Some("bytes 100-199/102400"));
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.header("accept-ranges"), None);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );

    // Several ranges: one multipart answer.
    let r = get(&[("Range", "bytes=0-1,10-11")]).await;
    assert_eq!(r.status, 206);
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/byteranges"),
        "{content_type}"
    );
    assert!(
        r.text().contains("ab") && r.text().contains("kl"),
        "{}",
        r.text()
    );

    // None satisfiable: 416, with nothing from the body.
    let r = get(&[("Range", "bytes=200000-")]).await;
    assert_eq!(r.status, 416);

    // If-Range: the range when the validator matches, the whole body when it does not.
    let r = get(&[("Range", "bytes=5-9"), ("If-Range", "\"v1\"")]).await;
    assert_eq!((r.status, r.text()), (206, big[5..10].to_string()));
    let r = get(&[("Range", "bytes=5-9"), ("If-Range", "\"v0\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());

    // Not a byte range: ignored.
    let r = get(&[("Range", "lines=1-2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());

    // A conditional request that matches wins over the range.
    let r = get(&[("Range", "bytes=5-9"), ("If-None-Match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // HEAD with a range: the 206's header, no body.
    let r = request(
        edge.addr,
        "HEAD",
        HOST,
        "/big",
        &[("Range", "bytes=5-9")],
        b"",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(r.body.is_empty());
    assert_eq!(origin.hits_for("/big"), 1);
}

/// A hit keeps the origin's fields but for those that describe the origin's connection
/// or that the hit sets itself: `Keep-Alive` is dropped, `Age` and `Date` are replaced,
/// and `Cache-Status` and `Via` get Holdfast's entry after the origin's.
#[tokio::test(flavor = "multi_thread")]
async fn a_hit_keeps_the_origins_fields_but_its_own() {
    let origin = Origin::start().await;
    origin.route(
        "/fields",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("X-Shop-Region", "eu-1"),
                ("Keep-Alive", "timeout=5"),
                ("Cache-Status", "origin-cache; hit"),
                ("Age", "7"),
                ("Via", "1.0 shop-proxy"),
            ],
            "fields",
        ),
    );
    let edge = shop(&origin, "", "").await;
    let miss = edge.get(HOST, "/fields").await;
    assert!(
        miss.cache_status().contains("fwd=miss"),
        "{}",
        miss.cache_status()
    );
    assert_eq!(miss.header("keep-alive"), None, "passed on from the origin");
    assert_eq!(miss.header("x-shop-region"), Some("eu-1"));
    for method in ["GET", "HEAD"] {
        let r = request(edge.addr, method, HOST, "/fields", &[], b"").await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.header("x-shop-region"), Some("eu-1"), "{method}");
        assert_eq!(r.header("keep-alive"), None, "{method}");
        // The upstream cache's entry is kept, Holdfast's follows it (RFC 9211).
        assert!(
            r.cache_status()
                .starts_with("origin-cache; hit, holdfast; hit"),
            "{method}: {}",
            r.cache_status()
        );
        let age: u64 = r.header("age").unwrap().parse().unwrap();
        assert!((7..=9).contains(&age), "{method}: Age {age}");
        assert_eq!(
            r.header("via"),
            Some("1.0 shop-proxy, 1.1 holdfast"),
            "{method}"
        );
        assert_eq!(r.header("content-length"), Some("6"), "{method}");
        assert_eq!(r.header("accept-ranges"), Some("bytes"), "{method}");
        assert_eq!(r.header("connection"), Some("close"), "{method}");
    }
    assert_eq!(origin.hits_for("/fields"), 1);
}

/// Hits written by the fast path carry what Pingora's writer would have added: a
/// `Date`, and `Connection: close` for an HTTP/1.0 client, whose connection then closes.
#[tokio::test(flavor = "multi_thread")]
async fn hits_to_an_http_1_0_client_say_close_and_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    origin.route("/old", Behavior::ok("max-age=60", "for an old client"));
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/old").await.text(), "for an old client");

    let mut conn = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let req = format!("GET /old HTTP/1.0\r\nHost: {HOST}\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("the edge closes the connection after the answer")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let lower = text.to_lowercase();
    // The origin's own reason phrase is kept, as Pingora's writer keeps it.
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(lower.contains("cache-status: holdfast; hit"), "{text}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{text}");
    let date = text
        .split("\r\n")
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case("date"))
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no Date: {text}"));
    assert!(httpdate::parse_http_date(date).is_ok(), "Date {date:?}");
    assert!(text.ends_with("\r\n\r\nfor an old client"), "{text}");
    assert_eq!(origin.hits_for("/old"), 1);
}

/// A client that reads a large hit slowly, a little at a time, still gets all of it:
/// the edge goes on sending as the socket drains. Invalidating and refilling the object
/// meanwhile changes nothing in what that client gets (the body is sent from a memory
/// file, which the store lets go of at the invalidation).
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_gets_a_large_hit_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    origin.route(
        "/large",
        Behavior::Respond {
            status: 200,
            headers: vec![("Cache-Control".into(), "max-age=60".into())],
            body: big.clone(),
        },
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/large").await.body.len(), big.len());

    let mut conn = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let req = format!("GET /large HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut replaced = false;
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if !replaced && got.len() > 1024 * 1024 {
            replaced = true;
            origin.route("/large", Behavior::ok("max-age=60", "replaced"));
            let post = request(edge.addr, "POST", HOST, "/large", &[], b"x").await;
            assert_eq!(post.status, 200);
            let refilled = edge.get(HOST, "/large").await;
            assert_eq!(refilled.text(), "replaced", "the POST invalidated the copy");
        }
        // Far slower than the edge can send: its socket fills up again and again.
        if got.len() < 2 * 1024 * 1024 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "too slow");
    }
    assert!(replaced, "the object was replaced during the transfer");
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.contains("cache-status: holdfast; hit"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", big.len())),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert!(got[head_end..] == big[..], "the body differs");
    // The first fill, the POST, and the refill.
    assert_eq!(origin.hits_for("/large"), 3);
}

/// An origin answer framed by chunked encoding (no Content-Length) is served from the
/// cache with its length, for GET and HEAD alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_origin_answer_is_served_with_its_length() {
    let origin = Origin::start().await;
    origin.route(
        "/chunked",
        Behavior::Raw(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        ),
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/chunked").await.text(), "hello world");
    let r = edge.get(HOST, "/chunked").await;
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("transfer-encoding"), None);
    let head = request(edge.addr, "HEAD", HOST, "/chunked", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"));
    assert!(head.body.is_empty());
    assert_eq!(origin.hits_for("/chunked"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_on_reset() {
    let origin = Origin::start().await;
    origin.route("/r", Behavior::ok("max-age=1", "kept"));
    let edge = shop(&origin, "      stale_if_error: 1h\n", "").await;
    assert_eq!(edge.get(HOST, "/r").await.text(), "kept");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.route("/r", Behavior::Reset);
    let r = edge.get(HOST, "/r").await;
    assert_eq!((r.status, r.text().as_str()), (200, "kept"));
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_on_a_dead_origin_gets_only_stale_copies() {
    let origin = Origin::start().await;
    origin.route("/burst", Behavior::ok("max-age=1", "still-here"));
    let edge = shop(&origin, "      stale_if_error: 1h\n", "").await;
    assert_eq!(edge.get(HOST, "/burst").await.text(), "still-here");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Concurrent requests for the stale object: without remembering that the origin
    // just failed, they queue behind each other's cache locks and some end in 502s.
    for _round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let addr = edge.addr;
            tasks.push(tokio::spawn(async move {
                request(addr, "GET", HOST, "/burst", &[], b"").await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "still-here"));
            assert!(
                r.cache_status().contains("detail=stale-if-error"),
                "{}",
                r.cache_status()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_stale_window_the_error_passes_through() {
    let origin = Origin::start().await;
    origin.route("/p", Behavior::ok("max-age=1, stale-if-error=1", "old"));
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/p").await.text(), "old");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    origin.route("/p", Behavior::status(503, &[], "origin down"));
    let r = edge.get(HOST, "/p").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "origin down");

    origin.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = edge.get(HOST, "/never-cached").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("did not answer"), "{}", r.text());
    assert!(
        r.cache_status().contains("origin-unreachable"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_at_once_with_one_refresh() {
    let origin = Origin::start().await;
    origin.route("/swr", Behavior::ok("max-age=1", "v1"));
    let edge = shop(&origin, "      stale_while_revalidate: 1h\n", "").await;
    assert_eq!(edge.get(HOST, "/swr").await.text(), "v1");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The refresh is slow; stale answers must not wait for it.
    origin.route("/swr", Behavior::ok("max-age=60", "v2"));
    origin.delay(Duration::from_millis(1500));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = edge.addr;
        tasks.push(tokio::spawn(async move {
            request(addr, "GET", HOST, "/swr", &[], b"").await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.text(), "v1");
        assert!(
            r.cache_status().contains("detail=stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "stale answers waited for the refresh: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(origin.hits_for("/swr"), 2, "exactly one background refresh");
    origin.delay(Duration::ZERO);
    let r = edge.get(HOST, "/swr").await;
    assert_eq!(r.text(), "v2");
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cold_misses_are_coalesced() {
    let origin = Origin::start().await;
    origin.route("/hot", Behavior::ok("max-age=60", "hot-body"));
    origin.delay(Duration::from_millis(500));
    let edge = shop(&origin, "", "").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = edge.addr;
        tasks.push(tokio::spawn(async move {
            request(addr, "GET", HOST, "/hot", &[], b"").await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hot-body"));
    }
    assert_eq!(origin.hits_for("/hot"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_methods_pass_through_and_invalidate() {
    let origin = Origin::start().await;
    origin.route("/item", Behavior::ok("max-age=60", "item-v1"));
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/item").await.text(), "item-v1");
    assert_eq!(edge.get(HOST, "/item").await.text(), "item-v1");
    assert_eq!(origin.hits_for("/item"), 1);

    let post = request(edge.addr, "POST", HOST, "/item", &[], b"x=1").await;
    assert_eq!(post.status, 200);
    assert!(
        post.cache_status().contains("fwd=method"),
        "{}",
        post.cache_status()
    );
    assert_eq!(origin.hits_for("/item"), 2, "POST reached the origin");

    origin.route("/item", Behavior::ok("max-age=60", "item-v2"));
    let r = edge.get(HOST, "/item").await;
    assert_eq!(r.text(), "item-v2", "the POST invalidated the stored copy");
    assert_eq!(origin.hits_for("/item"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_range_are_served_from_the_cached_get() {
    let origin = Origin::start().await;
    origin.route("/file", Behavior::ok("max-age=60", "0123456789"));
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/file").await.text(), "0123456789");

    let head = request(edge.addr, "HEAD", HOST, "/file", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(
        head.cache_status().contains("hit"),
        "{}",
        head.cache_status()
    );

    let range = request(
        edge.addr,
        "GET",
        HOST,
        "/file",
        &[("Range", "bytes=2-5")],
        b"",
    )
    .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.text(), "2345");
    assert_eq!(range.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(origin.hits_for("/file"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_requests_get_304_from_the_cache() {
    let origin = Origin::start().await;
    origin.route(
        "/c",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=60"), ("ETag", "\"abc\"")],
            "cond",
        ),
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/c").await.text(), "cond");
    let r = request(
        edge.addr,
        "GET",
        HOST,
        "/c",
        &[("If-None-Match", "\"abc\"")],
        b"",
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    let r = request(
        edge.addr,
        "GET",
        HOST,
        "/c",
        &[("If-None-Match", "\"other\"")],
        b"",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "cond"));
    assert_eq!(origin.hits_for("/c"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_cookies_authorization_and_no_store_are_not_stored() {
    let origin = Origin::start().await;
    origin.route("/p", Behavior::ok("private, max-age=60", "p"));
    origin.route("/ns", Behavior::ok("no-store", "ns"));
    origin.route(
        "/cookie",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")],
            "c",
        ),
    );
    origin.route("/auth", Behavior::ok("max-age=60", "a"));
    origin.route("/auth-public", Behavior::ok("public, max-age=60", "ap"));
    let edge = shop(&origin, "", "").await;
    for path in ["/p", "/ns", "/cookie"] {
        edge.get(HOST, path).await;
        edge.get(HOST, path).await;
        assert_eq!(origin.hits_for(path), 2, "{path} must not be stored");
    }
    for _ in 0..2 {
        request(
            edge.addr,
            "GET",
            HOST,
            "/auth",
            &[("Authorization", "Bearer x")],
            b"",
        )
        .await;
        request(
            edge.addr,
            "GET",
            HOST,
            "/auth-public",
            &[("Authorization", "Bearer x")],
            b"",
        )
        .await;
    }
    assert_eq!(origin.hits_for("/auth"), 2);
    assert_eq!(
        origin.hits_for("/auth-public"),
        1,
        "public overrides Authorization"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revalidates_with_etag_and_serves_the_304_from_cache() {
    let origin = Origin::start().await;
    origin.route(
        "/e",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=1"), ("ETag", "\"v1\"")],
            "etagged",
        ),
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/e").await.text(), "etagged");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.route(
        "/e",
        Behavior::status(
            304,
            &[("Cache-Control", "max-age=60"), ("ETag", "\"v1\"")],
            "",
        ),
    );
    let r = edge.get(HOST, "/e").await;
    assert_eq!((r.status, r.text().as_str()), (200, "etagged"));
    assert!(
        r.cache_status().contains("fwd-status=304"),
        "{}",
        r.cache_status()
    );
    let seen = origin.seen();
    assert_eq!(
        seen.last()
            .unwrap()
            .headers
            .get("if-none-match")
            .map(String::as_str),
        Some("\"v1\"")
    );
    let r = edge.get(HOST, "/e").await;
    assert!(
        r.cache_status().contains("hit"),
        "refreshed by the 304: {}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for("/e"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    origin.route(
        "/v",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
            "varied",
        ),
    );
    let edge = shop(&origin, "", "").await;
    for lang in ["en", "de", "en", "de"] {
        request(
            edge.addr,
            "GET",
            HOST,
            "/v",
            &[("Accept-Language", lang)],
            b"",
        )
        .await;
    }
    assert_eq!(origin.hits_for("/v"), 2, "one fill per variant");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_method_invalidates_every_stored_variant() {
    let origin = Origin::start().await;
    let varied = |body: &str| {
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
            body,
        )
    };
    origin.route("/v", varied("v1"));
    let edge = shop(&origin, "", "").await;
    let get = |lang: &'static str| {
        let addr = edge.addr;
        async move {
            request(addr, "GET", HOST, "/v", &[("Accept-Language", lang)], b"")
                .await
                .text()
        }
    };
    for lang in ["en", "de", "fr", "en", "de", "fr"] {
        assert_eq!(get(lang).await, "v1", "{lang}");
    }
    assert_eq!(origin.hits_for("/v"), 3, "one fill per variant");

    let post = request(edge.addr, "POST", HOST, "/v", &[], b"x=1").await;
    assert_eq!(post.status, 200);
    origin.route("/v", varied("v2"));
    for lang in ["en", "de", "fr", "en", "de", "fr"] {
        assert_eq!(get(lang).await, "v2", "{lang} after the POST");
    }
    assert_eq!(
        origin.hits_for("/v"),
        3 + 1 + 3,
        "the POST, then one fill per variant"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_bypass_and_override_ttl() {
    let origin = Origin::start().await;
    origin.route("/api/x", Behavior::ok("max-age=60", "api"));
    origin.route("/static/x", Behavior::status(200, &[], "static"));
    let rules = "    rules:\n      - match: { path_prefix: /api/ }\n        cache: false\n      - match: { path_prefix: /static/ }\n        ttl: 7d\n";
    let edge = shop(&origin, "", rules).await;
    let r = edge.get(HOST, "/api/x").await;
    assert!(
        r.cache_status().contains("fwd=bypass; detail=rule"),
        "{}",
        r.cache_status()
    );
    edge.get(HOST, "/api/x").await;
    assert_eq!(origin.hits_for("/api/x"), 2);
    edge.get(HOST, "/static/x").await;
    let r = edge.get(HOST, "/static/x").await;
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(origin.hits_for("/static/x"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_max_object_are_proxied_not_stored() {
    let origin = Origin::start().await;
    let big = "x".repeat(200 * 1024);
    origin.route("/big", Behavior::ok("max-age=60", &big));
    let edge = Holdfast::start(&format!(
        "cache: {{ memory: 4MiB, max_object: 64KiB }}\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "", "")
    ))
    .await;
    for _ in 0..2 {
        let r = edge.get(HOST, "/big").await;
        assert_eq!(r.body.len(), big.len());
    }
    assert_eq!(origin.hits_for("/big"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_keeps_the_store_within_its_bound() {
    let origin = Origin::start().await;
    let chunk = "y".repeat(32 * 1024);
    origin.fallback(Behavior::ok("max-age=600", &chunk));
    let edge = Holdfast::start(&format!(
        "cache: {{ memory: 1MiB, max_object: 256KiB }}\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "", "")
    ))
    .await;
    // 10 MiB through a 1 MiB store.
    for i in 0..320 {
        let r = edge.get(HOST, &format!("/obj/{i}")).await;
        assert_eq!(r.body.len(), chunk.len());
    }
    let metrics = edge.metrics().await;
    let value = |name: &str| metric(&metrics, name);
    assert!(value("holdfast_cache_bytes") <= 1024 * 1024, "{metrics}");
    assert!(value("holdfast_cache_bytes") > 0, "{metrics}");
    assert!(value("holdfast_cache_evictions_total") > 0, "{metrics}");
    // The most recent object is still a hit.
    let r = edge.get(HOST, "/obj/319").await;
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());

    // Large bodies are held in memory files, one descriptor each, closed as they go.
    let large = "z".repeat(96 * 1024);
    origin.fallback(Behavior::ok("max-age=600", &large));
    for i in 0..30 {
        let r = edge.get(HOST, &format!("/large/{i}")).await;
        assert_eq!(r.body, large.as_bytes());
    }
    let r = edge.get(HOST, "/large/29").await;
    assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(r.body, large.as_bytes());
    let metrics = edge.metrics().await;
    let value = |name: &str| metric(&metrics, name);
    // 350 bodies of 32 KiB or more went through; only those still stored hold a file.
    let files = value("holdfast_cache_memory_files");
    assert!(files >= 1, "{metrics}");
    assert!(files <= value("holdfast_cache_objects"), "{metrics}");
    assert!(files <= 32, "{metrics}");
    assert!(value("holdfast_cache_bytes") <= 1024 * 1024, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_within_the_grace() {
    let origin = Origin::start().await;
    origin.route("/slow", Behavior::ok("max-age=60", "slow-body"));
    origin.delay(Duration::from_millis(800));
    let mut edge = Holdfast::start(&format!(
        "shutdown_grace: 5s\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "", "")
    ))
    .await;
    let addr = edge.addr;
    let inflight = tokio::spawn(async move { request(addr, "GET", HOST, "/slow", &[], b"").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = tokio::task::block_in_place(|| edge.signal_and_wait("TERM", Duration::from_secs(8)));
    let took = took.expect("holdfast exits after SIGTERM");
    assert!(took < Duration::from_secs(7), "took {took:?}");
    let r = inflight.await.unwrap();
    assert_eq!(r.text(), "slow-body", "the request in flight finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_encoding_spellings_share_few_variants() {
    let origin = Origin::start().await;
    origin.route(
        "/t.css",
        Behavior::status(
            200,
            &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")],
            "css",
        ),
    );
    let edge = shop(&origin, "", "").await;
    let spellings = [
        "gzip, deflate, br, zstd",
        "br;q=1.0, gzip;q=0.8, *;q=0.1",
        "br, gzip",
        "gzip",
        "gzip, deflate",
        "identity",
        "",
    ];
    let mut fast_before = 0;
    for round in 0..2 {
        if round == 1 {
            fast_before = metric(&edge.metrics().await, "holdfast_fast_path_hits_total");
        }
        for ae in spellings {
            let headers: Vec<(&str, &str)> = if ae.is_empty() {
                vec![]
            } else {
                vec![("Accept-Encoding", ae)]
            };
            let r = request(edge.addr, "GET", HOST, "/t.css", &headers, b"").await;
            assert_eq!(r.text(), "css");
            if round == 1 {
                assert!(
                    r.cache_status().starts_with("holdfast; hit"),
                    "{ae}: {}",
                    r.cache_status()
                );
            }
        }
    }
    // Every variant, the primary slot's and the others, came from the fast path.
    let fast = metric(&edge.metrics().await, "holdfast_fast_path_hits_total") - fast_before;
    assert_eq!(fast, spellings.len() as u64);
    // Three variants: br and gzip, gzip only, neither; the origin is asked in that form.
    assert_eq!(origin.hits_for("/t.css"), 3);
    let mut seen: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get("accept-encoding")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec!["", "br, gzip", "gzip"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_updates_the_stored_fields() {
    let origin = Origin::start().await;
    origin.route(
        "/u",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=1"),
                ("ETag", "\"v1\""),
                ("X-Version", "old"),
                ("Content-Type", "text/plain"),
            ],
            "body",
        ),
    );
    let edge = shop(&origin, "", "").await;
    assert_eq!(edge.get(HOST, "/u").await.header("x-version"), Some("old"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route(
        "/u",
        Behavior::Raw(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\nX-Version: new\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
    );
    let revalidated = edge.get(HOST, "/u").await;
    assert_eq!(revalidated.status, 200);
    assert!(
        revalidated.cache_status().contains("fwd-status=304"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(revalidated.header("x-version"), Some("new"));
    assert_eq!(revalidated.text(), "body");
    // The update is stored: the next answer is a hit with the 304's fields and freshness.
    let hit = edge.get(HOST, "/u").await;
    assert!(
        hit.cache_status().starts_with("holdfast; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.header("x-version"), Some("new"));
    assert_eq!(hit.header("content-length"), Some("4"));
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert_eq!(origin.hits_for("/u"), 2);
}

/// The status line a client reads for `path`, on a connection of its own.
async fn status_line(edge: &Holdfast, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// An intermediary sends its own HTTP version (RFC 9110, 6.2): an origin that speaks
/// HTTP/1.0 does not make the edge answer in HTTP/1.0, on a miss, a hit or a pass.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_origin_is_answered_in_http_1_1() {
    let origin = Origin::start().await;
    let old = |cc: &str| {
        Behavior::Raw(
            format!("HTTP/1.0 200 OK\r\nCache-Control: {cc}\r\nContent-Length: 5\r\n\r\nhello")
                .into_bytes(),
        )
    };
    origin.route("/cached", old("max-age=60"));
    origin.route("/passed", old("no-store"));
    let edge = shop(&origin, "", "").await;
    for path in ["/cached", "/cached", "/passed", "/passed"] {
        let line = status_line(&edge, path).await;
        assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line:?}");
    }
    assert_eq!(origin.hits_for("/cached"), 1);
    assert_eq!(origin.hits_for("/passed"), 2);
}
