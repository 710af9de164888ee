//! Hostile requests, end to end: what one client sends must not shape what the cache
//! holds for everyone else. The real binary in front of a real origin that records what
//! it was asked.

mod common;

use common::{customer, request, Behavior, Holdfast, Origin};

const HOST: &str = "shop.test";

async fn shop(origin: &Origin, origin_extra: &str) -> Holdfast {
    let mut c = customer("shop", HOST, origin.addr, "", "");
    if !origin_extra.is_empty() {
        // Extra keys under the customer's `origin:` (after read_timeout).
        c = c.replace(
            "      read_timeout: 2s\n",
            &format!("      read_timeout: 2s\n{origin_extra}"),
        );
    }
    Holdfast::start(&format!("customers:\n{c}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_is_forwarded_as_it_is_keyed() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    // A port, upper case and a trailing dot route to the customer...
    let first = request(edge.addr, "GET", "SHOP.test.:1337", "/p", &[], b"").await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    // ...and the origin is asked for exactly the host the answer is stored under, so
    // the plain form is a hit on that same answer.
    let seen = origin.seen();
    assert_eq!(
        seen[0].headers.get("host").map(String::as_str),
        Some("shop.test")
    );
    let plain = edge.get(HOST, "/p").await;
    assert!(
        plain.cache_status().starts_with("holdfast; hit"),
        "{}",
        plain.cache_status()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_is_forwarded_in_origin_form_and_keyed_like_it() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    // A Host that disagrees with the target's authority is refused (by Pingora's own
    // check), before any origin.
    let r = request(
        edge.addr,
        "GET",
        "other.test",
        "http://shop.test/abs?q=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(origin.hits(), 0);

    let r = request(edge.addr, "GET", HOST, "http://shop.test/abs?q=1", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.seen();
    assert_eq!(seen[0].path, "/abs?q=1", "forwarded in origin form");
    assert_eq!(
        seen[0].headers.get("host").map(String::as_str),
        Some("shop.test")
    );
    let again = edge.get(HOST, "/abs?q=1").await;
    assert!(
        again.cache_status().starts_with("holdfast; hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_fields_that_redirect_an_origin_never_reach_it() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    let hostile = [
        ("X-Forwarded-Host", "evil.test"),
        ("X-Host", "evil.test"),
        ("Forwarded", "host=evil.test;proto=https"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = request(edge.addr, "GET", HOST, "/f", &hostile, b"").await;
    assert_eq!(r.status, 200);
    let seen = &origin.seen()[0].headers;
    for name in [
        "x-forwarded-host",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the origin: {seen:?}"
        );
    }
    // The edge's own: the client's address appended, the scheme it was asked in.
    assert_eq!(
        seen.get("x-forwarded-for").map(String::as_str),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        seen.get("forwarded").map(String::as_str),
        Some("for=127.0.0.1;host=shop.test;proto=http")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_fields_are_set_per_customer() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(
        &origin,
        "      forwarded: false\n      drop_request_headers: [x-debug]\n",
    )
    .await;
    let r = request(
        edge.addr,
        "GET",
        HOST,
        "/f",
        &[("X-Forwarded-Host", "kept.test"), ("X-Debug", "1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &origin.seen()[0].headers;
    assert_eq!(
        seen.get("x-forwarded-host").map(String::as_str),
        Some("kept.test")
    );
    assert!(!seen.contains_key("x-debug"));
    assert!(!seen.contains_key("x-forwarded-for") && !seen.contains_key("forwarded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_with_a_body_is_neither_served_from_nor_stored_in_the_cache() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    let with_body = request(edge.addr, "GET", HOST, "/q", &[], b"query=everything").await;
    assert_eq!(with_body.status, 200);
    assert_eq!(
        with_body.cache_status(),
        "holdfast; fwd=bypass; detail=request-body"
    );
    // Not stored: the next plain GET goes to the origin and is stored then.
    let plain = edge.get(HOST, "/q").await;
    assert!(
        plain.cache_status().contains("fwd=miss"),
        "{}",
        plain.cache_status()
    );
    assert_eq!(origin.hits(), 2);
    // And a stored answer is not handed to a GET with a body either.
    let again = request(edge.addr, "GET", HOST, "/q", &[], b"other").await;
    assert_eq!(
        again.cache_status(),
        "holdfast; fwd=bypass; detail=request-body"
    );
    assert_eq!(origin.hits(), 3);
}

/// One request written as raw bytes on a fresh connection; the response as parsed.
async fn raw(edge: &Holdfast, bytes: &[u8]) -> common::Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let headers = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    common::Resp {
        status,
        headers,
        body: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_and_methods_outside_the_allow_list_never_reach_the_origin() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    let trace = request(
        edge.addr,
        "TRACE",
        HOST,
        "/t",
        &[("Cookie", "secret=1")],
        b"",
    )
    .await;
    assert_eq!(trace.status, 405);
    assert_eq!(
        trace.cache_status(),
        "holdfast; fwd=bypass; detail=method-not-allowed"
    );
    assert_eq!(
        trace.header("allow"),
        Some("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
    );
    assert!(!trace.text().contains("secret"), "TRACE echoes nothing");
    let unknown = request(edge.addr, "BREW", HOST, "/pot", &[], b"").await;
    assert_eq!(unknown.status, 501);
    // OPTIONS with Max-Forwards: 0 is for this hop: answered here.
    let options = request(
        edge.addr,
        "OPTIONS",
        HOST,
        "/o",
        &[("Max-Forwards", "0")],
        b"",
    )
    .await;
    assert_eq!(options.status, 200);
    assert_eq!(
        options.header("allow"),
        Some("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(origin.hits(), 0, "{:?}", origin.seen());
    // Without it, OPTIONS is the origin's to answer.
    let options = request(
        edge.addr,
        "OPTIONS",
        HOST,
        "/o",
        &[("Max-Forwards", "3")],
        b"",
    )
    .await;
    assert_eq!(options.status, 200);
    assert_eq!(origin.hits(), 1);

    // A customer that allows fewer methods.
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let body = format!(
        "customers:\n{}    methods: [GET, HEAD]\n",
        customer("shop", HOST, origin.addr, "", "")
    );
    let strict = Holdfast::start(&body).await;
    let put = request(strict.addr, "PUT", HOST, "/x", &[], b"data").await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD"));
    assert_eq!(strict.get(HOST, "/x").await.status, 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_is_forwarded_as_one_value_or_refused() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("no-store", "ok"));
    let edge = shop(&origin, "").await;

    let list = raw(
        &edge,
        b"POST /l HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(list.status, 200);
    let repeated = raw(
        &edge,
        b"POST /r HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        matches!(repeated.status, 200 | 400),
        "repeated equal values: one value or refused, got {}",
        repeated.status
    );
    for seen in origin.seen() {
        let lengths: Vec<&str> = seen
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths, ["Content-Length: 5"], "{}", seen.head);
    }
    let hits = origin.hits();
    let differ = raw(
        &edge,
        b"POST /d HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello!",
    )
    .await;
    assert_eq!(differ.status, 400);
    assert_eq!(origin.hits(), hits, "never forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let body = format!(
        "idle_timeout: 1s\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "", "")
    );
    let edge = Holdfast::start(&body).await;
    // A miss (the full path) and a hit (the fast path) both leave the connection open...
    let mut conn = common::Conn::open(edge.addr).await;
    for _ in 0..2 {
        let r = conn.get(HOST, "/i").await.unwrap().expect("an answer");
        assert_eq!(r.status, 200);
    }
    // ...for idle_timeout, not for ever.
    let started = std::time::Instant::now();
    assert!(conn.closed_by_server().await, "still open after 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "closed after {waited:?}, before idle_timeout"
    );
}

/// Responses read off `conn` until it closes or `n` came, split by framing.
async fn read_answers(conn: &mut tokio::net::TcpStream, n: usize) -> Vec<common::Resp> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut answers = Vec::new();
    let mut buf = [0u8; 16384];
    while answers.len() < n {
        // Split off every complete answer (Content-Length framed, as the edge frames hits).
        while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if raw.len() < end + 4 + len {
                break;
            }
            let rest = raw.split_off(end + 4 + len);
            answers.push(common::parse_response(&raw, false).unwrap());
            raw = rest;
        }
        if answers.len() >= n {
            break;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => raw.extend_from_slice(&buf[..k]),
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    for p in ["/1", "/2", "/3"] {
        origin.route(p, Behavior::ok("max-age=600", &format!("body{p}")));
    }
    let edge = shop(&origin, "").await;
    origin.route("/form", Behavior::ok("no-store", "posted"));
    // Once with every answer a miss (the full path), once with every answer a hit (the
    // fast path).
    for round in ["misses", "hits"] {
        let mut conn = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        let mut pipeline = String::new();
        for p in ["/1", "/2", "/3"] {
            pipeline.push_str(&format!("GET {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
        }
        conn.write_all(pipeline.as_bytes()).await.unwrap();
        let answers = read_answers(&mut conn, 3).await;
        let bodies: Vec<String> = answers.iter().map(|a| a.text()).collect();
        assert_eq!(bodies, vec!["body/1", "body/2", "body/3"], "{round}");
        for a in &answers {
            assert_eq!(a.header("connection"), Some("keep-alive"), "{round}");
        }
    }
    assert_eq!(origin.hits(), 3);
    // A POST with a body between two hits: its body is not taken for a request.
    let mut conn = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let pipeline = format!(
        "GET /1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nPOST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    conn.write_all(pipeline.as_bytes()).await.unwrap();
    let bodies: Vec<String> = read_answers(&mut conn, 3)
        .await
        .iter()
        .map(|a| a.text())
        .collect();
    assert_eq!(bodies, vec!["body/1", "posted", "body/2"]);
    assert_eq!(origin.hits_for("/form"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_is_not_kept_is_never_called_stored() {
    let origin = Origin::start().await;
    let mut big = String::from(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        big.push_str(&format!("400\r\n{}\r\n", "x".repeat(1024)));
    }
    big.push_str("0\r\n\r\n");
    origin.route("/big", Behavior::Raw(big.into_bytes()));
    origin.route(
        "/cut",
        Behavior::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n{}",
                "y".repeat(50)
            )
            .into_bytes(),
        ),
    );
    origin.route("/whole", Behavior::ok("max-age=60", "whole"));
    let c = customer("shop", HOST, origin.addr, "", "");
    let edge = Holdfast::start(&format!("cache: {{ max_object: 2KiB }}\ncustomers:\n{c}")).await;

    // Chunked, and past max_object: the header cannot know, so it does not claim it.
    let r = request(edge.addr, "GET", HOST, "/big", &[], b"").await;
    assert_eq!(r.body.len(), 4096);
    assert!(!r.cache_status().contains("stored"), "{}", r.cache_status());
    // Cut short by the origin: the header went out claiming it, the log does not.
    let _ = common::try_request(edge.addr, "GET", HOST, "/cut", &[], b"").await;
    // A whole fill is stored, in the header and the log alike.
    let r = request(edge.addr, "GET", HOST, "/whole", &[], b"").await;
    assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    for path in ["/big", "/cut"] {
        request(edge.addr, "GET", HOST, path, &[], b"").await;
        assert_eq!(origin.hits_for(path), 2, "{path} was not kept");
    }
    let log = edge.log();
    let line = |path: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("holdfast::access") && l.contains(&format!("path={path} ")))
            .map(str::to_string)
            .collect()
    };
    for path in ["/big", "/cut"] {
        let lines = line(path);
        assert_eq!(lines.len(), 2, "{path}: {lines:?}");
        assert!(
            lines.iter().all(|l| !l.contains("stored")),
            "{path}: {lines:?}"
        );
    }
    assert!(line("/whole")[0].contains("stored"), "{:?}", line("/whole"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_the_origins_connection_names_never_reach_a_client() {
    let origin = Origin::start().await;
    origin.route(
        "/c",
        Behavior::status(
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("Connection", "X-Hop, keep-alive"),
                ("X-Hop", "secret"),
                ("X-Kept", "yes"),
            ],
            "c",
        ),
    );
    let edge = shop(&origin, "").await;
    for round in ["miss", "hit"] {
        let r = request(edge.addr, "GET", HOST, "/c", &[], b"").await;
        assert_eq!(r.header("x-hop"), None, "{round}");
        assert_eq!(r.header("x-kept"), Some("yes"), "{round}");
    }
    assert_eq!(origin.hits_for("/c"), 1);
}

/// The origin goes down and up (every request resets its connection, then answers
/// again) every half second while keep-alive clients keep asking: every request gets
/// an answer. A client that was told `Connection: close` opens a new connection, as
/// clients must; anything else, a close without an answer or a broken connection, is a
/// lost request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_origin_loses_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let origin = Origin::start().await;
    let up = |o: &Origin| {
        o.fallback(Behavior::ok("max-age=1, stale-if-error=600", "page"));
        o.route("/fresh", Behavior::ok("max-age=600", "fresh"));
    };
    up(&origin);
    let edge = shop(&origin, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Arc::new(origin);
    let flapper = {
        let (origin, stop) = (origin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut down = false;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                down = !down;
                if down {
                    origin.fallback(Behavior::Reset);
                } else {
                    up(&origin);
                }
            }
        })
    };
    let (answered, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let until = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for c in 0..8 {
        let (addr, answered, lost) = (edge.addr, answered.clone(), lost.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = common::Conn::open(addr).await;
            let mut i = 0usize;
            while Instant::now() < until {
                i += 1;
                let path = match i % 4 {
                    0 => "/fresh".to_string(),
                    1 => format!("/miss-{c}-{i}"),
                    _ => format!("/p{}", i % 10),
                };
                match conn.get(HOST, &path).await {
                    Ok(Some(r)) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if r.header("connection") == Some("close") {
                            conn = common::Conn::open(addr).await;
                        }
                    }
                    Ok(None) | Err(_) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        conn = common::Conn::open(addr).await;
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    flapper.await.unwrap();
    let (answered, lost) = (
        answered.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
    );
    assert!(answered > 500, "only {answered} answers");
    assert_eq!(
        lost,
        0,
        "{lost} of {} requests got no answer\n{}",
        answered + lost,
        edge.log()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_sent_slower_than_header_timeout_loses_its_connection() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    origin.route("/form", Behavior::ok("no-store", "posted"));
    let body = format!(
        "header_timeout: 1s\ncustomers:\n{}",
        customer("shop", HOST, origin.addr, "", "")
    );
    let edge = Holdfast::start(&body).await;

    // A slowloris: a header trickled a field every 300 ms, each read well inside
    // Pingora's per-read bound, the whole never done; on a new connection, and on one
    // that has had a request answered.
    let mut slow = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    common::assert_trickled_header_cut(&mut slow, HOST).await;
    let mut reused = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    reused
        .write_all(format!("GET /p HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answers(&mut reused, 1).await[0].text(), "page");
    common::assert_trickled_header_cut(&mut reused, HOST).await;
    assert_eq!(origin.hits_for("/slow"), 0);
    assert_eq!(
        common::metric(&edge.metrics().await, "holdfast_header_timeouts_total"),
        2
    );

    // A request body is not a header: one sent over 2 s is answered.
    let mut upload = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    upload
        .write_all(
            format!("POST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 8\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    for part in [b"ab", b"cd", b"ef", b"gh"] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        upload.write_all(part).await.unwrap();
    }
    let answers = read_answers(&mut upload, 1).await;
    assert_eq!(answers.len(), 1, "the slow upload got no answer");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].text(), "posted");

    // Nor is the wait between requests (that is idle_timeout's): a keep-alive connection
    // idle for twice header_timeout takes its next request, on both paths.
    let mut conn = common::Conn::open(edge.addr).await;
    for _ in 0..2 {
        let r = conn.get(HOST, "/p").await.unwrap().expect("an answer");
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let r = conn
        .get(HOST, "/p")
        .await
        .unwrap()
        .expect("an answer after idling");
    assert_eq!(r.text(), "page");
    assert_eq!(
        common::metric(&edge.metrics().await, "holdfast_header_timeouts_total"),
        2
    );
}
